"""The interface every mail source implements: files, EWS and Microsoft Graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, TypeVar

from bot.errors import ConfigError
from bot.mail.types import Batch, FolderRole

SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True)
class FolderRef:
    """A folder of a mailbox: a stable key for its cursor, a display name and its role."""

    key: str
    name: str
    role: FolderRole


class MailSource(Protocol):
    """Reads a mailbox folder by folder, resuming from stored cursors.

    The importer stores every item of a batch, then saves ``batch.cursor`` for the folder in
    the same transaction, so an interrupted run resumes after the last stored batch. A
    source raises ``SyncStateExpired`` when the server rejects a cursor, and the importer then
    reads the folder again from the start, recognising duplicates by fingerprint. A source
    raises ``SourceDeferred`` when the server requests a wait longer than allowed.
    """

    kind: str

    def folders(self) -> list[FolderRef]: ...

    def read(self, folder: FolderRef, cursor: str | None) -> Iterator[Batch]: ...


def settings_from_config(
    cls: type[SettingsT], label: str, owner: str, config: dict[str, Any], timezone_name: str
) -> SettingsT:
    """Build a source's settings dataclass from a mailbox's source_config and check it.

    ``cls`` has ``owner`` and ``timezone`` fields and a ``check()`` method; any other key of
    ``config`` must be one of its fields, or ConfigError names the unknown keys.
    """
    known = set(cls.__dataclass_fields__) - {"owner", "timezone"}  # type: ignore[attr-defined]
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(
            f"{label} settings of {owner} contain unknown keys {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(known))}"
        )
    settings = cls(owner=owner.lower(), timezone=timezone_name, **config)  # type: ignore[call-arg]
    settings.check()  # type: ignore[attr-defined]
    return settings
