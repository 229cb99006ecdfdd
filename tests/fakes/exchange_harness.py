"""Helpers shared by the EWS and Graph tests and the benchmark: the Enron mailbox, snapshots."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from bot.storage.models import Address, Relationship
from tests.fakes.mailstore import FakeMailbox, FakeMessage, enron_files, message_from_file, unpack_enron, write_maildir

ROOT = Path(__file__).resolve().parents[2]
ENRON_CACHE = ROOT / ".cache" / "enron"

# 5,939 messages: all of fossum-d (4,796, of which 2,067 in sent folders) and the inbox of
# buy-r (1,143), served to drew.fossum@enron.com as Inbox and Sent Items.
ENRON_OWNER = "drew.fossum@enron.com"
ENRON_SELECTION: list[tuple[str, set[str] | None, int | None]] = [
    ("fossum-d", None, None),
    ("buy-r", {"inbox"}, None),
]


def newest_time(box: FakeMailbox) -> datetime:
    """Return the newest sent time of a mailbox, the reference time both imports use."""
    return max(m.sent for m in box.messages.values() if m.sent is not None)


def file_import_snapshot(box: FakeMailbox, directory: Path, now: datetime) -> tuple[dict, int]:
    """Import the mailbox's source files with the file source; return the snapshot and message count.

    The files are laid out as ``inbox/`` and ``sent_items/`` folders, the roles the fake
    servers give them.
    """
    from bot.config import Settings
    from bot.mail.files import FilesSource
    from bot.mail.ingest import ensure_mailbox, import_source
    from bot.relationships.compute import recompute
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema

    root = write_maildir(box, directory / "maildir" / box.owner.split("@", 1)[0])
    engine = make_engine(f"sqlite:///{directory / 'files.db'}")
    create_schema(engine)
    settings = Settings(database_url="sqlite://")
    mailbox = ensure_mailbox(engine, box.owner, source_kind="files", source_config={"path": str(root)})
    import_source(engine, mailbox, FilesSource(root), settings=settings)
    recompute(engine, mailbox.id, now, settings=settings)
    snapshot = relationship_snapshot(engine, mailbox.id)
    count = message_count(engine, mailbox.id)
    engine.dispose()
    return snapshot, count


def message_count(engine, mailbox_id: int) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import func

    from bot.storage.models import Message

    with Session(engine) as session:
        return session.execute(select(func.count(Message.id)).where(Message.mailbox_id == mailbox_id)).scalar_one()


def enron_mailbox(tarball: Path, drop_body_only_distinct: bool = True) -> FakeMailbox:
    """Build the Enron test mailbox from the corpus tarball, unpacked once under .cache/.

    With ``drop_body_only_distinct``, messages that share the minute, sender, recipients
    and subject with another message of a different body are left out. The file import
    distinguishes them by their bodies, but EWS and Graph sources read no bodies and count
    them once (see ``test_same_metadata_different_body_counts_once``). In this selection that
    leaves out 6 of 5,939 messages.
    """
    maildir = unpack_enron(tarball, ENRON_CACHE)
    messages = []
    for owner, folders, limit in ENRON_SELECTION:
        files = enron_files(maildir, owner, folders)
        messages.extend(message_from_file(path, role) for path, role in files[:limit])
    if drop_body_only_distinct:
        bodies: dict[tuple, set[str | None]] = {}
        for message in messages:
            bodies.setdefault(metadata_key(message), set()).add(message.body_hash)
        messages = [m for m in messages if len(bodies[metadata_key(m)]) == 1]
    box = FakeMailbox(ENRON_OWNER)
    for message in messages:
        box.add_message(message)
    return box


def metadata_key(message: FakeMessage) -> tuple:
    """What the importer's fingerprint compares when a message has no body digest."""
    sent = message.sent.strftime("%Y-%m-%dT%H:%M") if message.sent else ""
    sender = (message.sender.address or "") if message.sender else ""
    recipients = ",".join(sorted({p.address.lower() for p in message.to + message.cc + message.bcc if p.address}))
    return (sent, sender.lower(), recipients, (message.subject or "").strip())


RelationshipKey = frozenset[str]


def relationship_snapshot(engine, mailbox_id: int) -> dict[RelationshipKey, tuple]:  # type: ignore[no-untyped-def]
    """Return every Relationship row of a mailbox keyed by its person's addresses.

    The value contains the inbound and outbound counts, the first and last contact times, the
    two-way thread count, whether the person is internal and the strength rounded to six
    decimals.
    """
    with Session(engine) as session:
        addresses: dict[int, set[str]] = {}
        for person_id, address in session.execute(select(Address.person_id, Address.address)):
            addresses.setdefault(person_id, set()).add(address)
        rows = session.execute(select(Relationship).where(Relationship.mailbox_id == mailbox_id)).scalars().all()
        snapshot = {}
        for row in rows:
            key = frozenset(addresses.get(row.person_id, set()))
            snapshot[key] = (
                row.inbound_count,
                row.outbound_count,
                _iso(row.first_contact),
                _iso(row.last_inbound),
                _iso(row.last_outbound),
                row.two_way_threads,
                row.is_internal,
                round(row.strength, 6),
            )
        return snapshot


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot_differences(expected: dict, actual: dict, limit: int = 10) -> list[str]:
    """Describe how two snapshots differ, at most ``limit`` lines."""
    lines = []
    for key in sorted(set(expected) | set(actual), key=lambda k: sorted(k)):
        if expected.get(key) != actual.get(key):
            lines.append(f"{sorted(key)}: files={expected.get(key)} server={actual.get(key)}")
            if len(lines) >= limit:
                break
    return lines
