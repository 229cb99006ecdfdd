"""Building blocks for engine tests: messages as MailItems and a source that serves them."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

from bot.config import Settings
from bot.errors import SourceError
from bot.mail import ingest
from bot.mail.ingest import ImportSummary, ensure_mailbox, import_source
from bot.mail.source import FolderRef
from bot.mail.types import Batch, FolderRole, MailItem, Participant
from bot.relationships.compute import recompute

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
OWNER = "robin.hale@example.org"


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def mail(
    sender: str,
    to: list[str],
    days: float,
    subject: str = "Hello",
    *,
    cc: list[str] | None = None,
    folder: FolderRole | None = None,
    names: dict[str, str] | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    bulk: bool = False,
    auto_reply: bool = False,
    body: str | None = None,
) -> MailItem:
    names = names or {}
    role = folder or (FolderRole.SENT if sender == OWNER else FolderRole.INBOX)

    def p(address: str) -> Participant:
        return Participant(address, names.get(address))

    return MailItem(
        source_ref=f"mem:{sender}:{days}:{subject}",
        folder=role.value,
        folder_role=role,
        sent_at=at(days),
        sender=p(sender),
        to=[p(a) for a in to],
        cc=[p(a) for a in cc or []],
        subject=subject,
        message_id=message_id,
        in_reply_to=in_reply_to,
        is_bulk=bulk,
        is_auto_reply=auto_reply,
        body_hash=body or f"{sender}{days}{subject}",
    )


class ListSource:
    """A MailSource over items held in memory, grouped into folders by role."""

    kind = "memory"

    def __init__(self, items: list[MailItem], batch_size: int = 2, fail_after_batches: int | None = None):
        self.items = items
        self.batch_size = batch_size
        self.fail_after_batches = fail_after_batches
        self.batches_served = 0

    def folders(self) -> list[FolderRef]:
        roles = sorted({item.folder_role for item in self.items}, key=lambda r: r.value)
        return [FolderRef(key=r.value, name=r.value, role=r) for r in roles]

    def read(self, folder: FolderRef, cursor: str | None) -> Iterator[Batch]:
        items = [i for i in self.items if i.folder_role == folder.role]
        start = int(cursor or 0)
        for offset in range(start, len(items), self.batch_size):
            if self.fail_after_batches is not None and self.batches_served >= self.fail_after_batches:
                raise SourceError("connection lost (simulated)")
            chunk = items[offset : offset + self.batch_size]
            self.batches_served += 1
            end = offset + len(chunk)
            yield Batch(folder.key, folder.role, chunk, cursor=str(end), complete=end >= len(items))


def load(engine, items: list[MailItem], *, owner: str = OWNER, now: datetime | None = None,
         settings: Settings | None = None, name: str | None = None) -> tuple[int, ImportSummary]:
    settings = settings or Settings(database_url="sqlite://")
    mailbox = ensure_mailbox(engine, owner, owner_name=name)
    summary = import_source(engine, mailbox, ListSource(items), settings=settings)
    recompute(engine, mailbox.id, now or at(400), settings=settings)
    return mailbox.id, summary


@contextmanager
def crash_on_cursor_save(call: int, error: BaseException) -> Iterator[None]:
    """Raise ``error`` from the importer's ``call``-th folder-cursor save, before its commit."""
    original = ingest.Importer._save_cursor
    calls = {"count": 0}

    def failing(self, connection, batch, stored):  # type: ignore[no-untyped-def]
        calls["count"] += 1
        if calls["count"] == call:
            raise error
        return original(self, connection, batch, stored)

    ingest.Importer._save_cursor = failing  # type: ignore[method-assign]
    try:
        yield
    finally:
        ingest.Importer._save_cursor = original  # type: ignore[method-assign]
