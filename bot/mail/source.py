"""The interface every mail source implements: files, EWS and Microsoft Graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from bot.mail.types import Batch, FolderRole


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
    source raises ``SyncStateExpired`` when the server rejects a cursor (the importer then
    reads the folder again from the start; duplicates are recognised by fingerprint) and
    ``SourceDeferred`` when the server asks to wait longer than allowed.
    """

    kind: str

    def folders(self) -> list[FolderRef]: ...

    def read(self, folder: FolderRef, cursor: str | None) -> Iterator[Batch]: ...
