"""Store the items of a mail source: idempotent, resumable, one short transaction per batch.

Each batch is written together with the folder cursor that follows it, so a crash loses at
most the batch in flight and a new run resumes after the last stored batch. Batches that
reader processes delivered while the writer was busy are written together, in one
transaction with all their cursors, up to GROUP_MESSAGES messages. A message that
is already stored (same Message-ID, or the same fingerprint of date, sender, recipients,
subject and body digest) counts as a duplicate and adds nothing.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import re
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.config import Settings
from bot.errors import InputError, SourceDeferred, SyncStateExpired
from bot.mail.source import FolderRef, MailSource
from bot.mail.threads import subject_key
from bot.mail.types import Batch, MailItem, Participant
from bot.relationships.addresses import address_kind, normalize_address, split_via_name
from bot.relationships.domains import DomainPolicy
from bot.storage.db import BackgroundCheckpoints, retry_write
from bot.storage.models import (
    LOCAL_TEAM,
    FolderState,
    Mailbox,
    Message,
    OwnerAddress,
    SyncRun,
)
from bot.timeutil import utcnow

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


@dataclass
class ImportSummary:
    """Counts and outcome of one import or sync run."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)
    folders: int = 0
    resynced_folders: list[str] = field(default_factory=list)
    outcome: str = "ok"  # ok | deferred | failed
    retry_after_seconds: float | None = None
    error: str | None = None

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "skipped": dict(self.skipped),
            "folders": self.folders,
            "outcome": self.outcome,
        }


def ensure_mailbox(
    engine: Engine,
    owner_address: str,
    *,
    source_kind: str = "files",
    team_id: str = LOCAL_TEAM,
    owner_name: str | None = None,
    timezone: str | None = None,
    source_config: dict | None = None,
    credentials_ref: str | None = None,
) -> Mailbox:
    """Return the mailbox of an owner, creating it and its first owner address if needed."""
    address = normalize_address(owner_address)
    if address is None:
        raise InputError(
            f"invalid owner address {owner_address!r}: give the owner's e-mail address, e.g. --owner jane@example.com"
        )

    def _write() -> Mailbox:
        with Session(engine, expire_on_commit=False) as session:
            mailbox = session.execute(
                select(Mailbox).where(Mailbox.team_id == team_id, Mailbox.owner_address == address)
            ).scalar_one_or_none()
            if mailbox is None:
                mailbox = Mailbox(
                    team_id=team_id,
                    owner_address=address,
                    owner_name=owner_name,
                    source_kind=source_kind,
                    source_config=source_config or {},
                    credentials_ref=credentials_ref,
                    timezone=timezone or "UTC",
                    created_at=utcnow(),
                )
                session.add(mailbox)
                session.flush()
                session.add(
                    OwnerAddress(team_id=team_id, mailbox_id=mailbox.id, address=address, origin="given")
                )
                log.info("created mailbox %s for %s", mailbox.id, address)
            else:
                changed = False
                for name, value in (
                    ("owner_name", owner_name),
                    ("timezone", timezone),
                    ("credentials_ref", credentials_ref),
                ):
                    if value is not None and getattr(mailbox, name) != value:
                        setattr(mailbox, name, value)
                        changed = True
                if source_config is not None and mailbox.source_config != source_config:
                    mailbox.source_config = source_config
                    changed = True
                if source_kind != mailbox.source_kind and source_config is not None:
                    mailbox.source_kind = source_kind
                    changed = True
                if changed:
                    session.add(mailbox)
            session.commit()
            return mailbox

    return retry_write(_write)


def fingerprint(item: MailItem, sender: str | None, recipient_key: str, minute: str | None = None) -> str:
    """Return the digest of what makes two copies the same message, whatever their Message-IDs.

    ``recipient_key`` is the message's distinct recipient addresses, sorted and joined with
    commas. ``minute`` is the sent time as 'YYYY-MM-DDTHH:MM', when the caller has it.
    """
    sent = item.sent_at
    if minute is None:
        # The same text as strftime("%Y-%m-%dT%H:%M"), which is slower.
        minute = sent.isoformat(timespec="minutes")[:16] if sent else ""
    parts = [
        minute,
        sender or (item.sender.name if item.sender and item.sender.name else ""),
        recipient_key,
        (item.subject or "").strip(),
        item.body_hash or "",
    ]
    if not item.body_hash and not any(parts[:4]) and item.message_id:
        parts.append(item.message_id)
    return hashlib.sha1("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


# Local-part words and domain labels of machine senders that the address classifier does not
# know by themselves: newsletters sent from "webmaster@" or "*_daily@", and list servers on
# subdomains such as lists.example.net or mailer.example.com.
_MACHINE_WORDS = frozenset({"webmaster", "daily", "weekly", "listserv", "majordomo", "mailinglist"})
_MACHINE_LABELS = frozenset({"list", "lists", "listserv", "mailer", "mailers", "bounce", "bounces", "news", "newsletter", "newsletters", "mailing", "mailings"})


def machine_sender(address: str) -> bool:
    """Return True for addresses that look like list servers or newsletters."""
    local, _, domain = address.rpartition("@")
    words = {w for w in re.split(r"[._+\-]+", local.lower()) if w}
    if words & _MACHINE_WORDS or local.startswith("owner-"):
        return True
    labels = domain.lower().split(".")
    return any(label in _MACHINE_LABELS or label.endswith("lists") for label in labels[:-1])


class AddressBook:
    """In-memory map of a team's addresses to their ids, creating rows in bulk as they appear.

    New ids stay pending until the caller's transaction commits, so a retried transaction
    never reuses ids that were rolled back.
    """

    def __init__(self, connection, team_id: str, policy: DomainPolicy):  # type: ignore[no-untyped-def]
        self.team_id = team_id
        self.policy = policy
        self.ids: dict[str, int] = {}
        self.named: set[str] = set()
        self.lists: set[str] = set()
        self._pending: tuple[dict[str, int], set[str], set[str]] = ({}, set(), set())
        rows = _driver_rows(
            connection, "SELECT address, id, display_name, kind FROM address WHERE team_id = {}", (team_id,)
        )
        for address, address_id, name, kind in rows:
            self.ids[address] = address_id
            if name:
                self.named.add(address)
            if kind == "list":
                self.lists.add(address)

    def resolve(self, connection, wanted: dict[str, tuple[str | None, str | None]]) -> dict[str, int]:  # type: ignore[no-untyped-def]
        """Return ids for addresses, given as address -> (display name, kind or None).

        Each unknown address gets a new person. A known address gets its missing display
        name, and a list address seen as a list for the first time is marked as one.
        Several calls in one transaction see each other's changes, which stay pending
        until ``commit``.
        """
        result: dict[str, int] = {}
        new: list[tuple[str, str | None, str]] = []
        named: list[tuple[str | None, int]] = []  # (display name, address id)
        listed: list[tuple[str | None, int]] = []
        pending_ids, pending_named, pending_lists = self._pending
        for address, (name, kind) in wanted.items():
            known = self.ids.get(address)
            if known is None:
                known = pending_ids.get(address)
            if known is None:
                if kind is None:
                    kind = address_kind(address)
                    if kind in ("person", "role") and machine_sender(address):
                        kind = "noreply"
                new.append((address, name, kind))
                continue
            result[address] = known
            if kind == "list" and address not in self.lists and address not in pending_lists:
                listed.append((name, known))
            elif name and address not in self.named and address not in pending_named:
                named.append((name, known))
        if new:
            now = _driver_now(connection)
            team_id = self.team_id
            person_ids = _insert_rows(
                connection,
                "person",
                ("team_id", "display_name", "kind", "created_at"),
                [(team_id, name, kind, now) for _, name, kind in new],
            )
            classify = self.policy.classify
            address_rows = []
            for (address, name, kind), person_id in zip(new, person_ids):
                info = classify(address)
                address_rows.append((team_id, address, info.domain, name, person_id, info.is_freemail, kind))
            address_ids = _insert_rows(
                connection,
                "address",
                ("team_id", "address", "domain", "display_name", "person_id", "is_freemail", "kind"),
                address_rows,
            )
            for (address, _, _), address_id in zip(new, address_ids):
                pending_ids[address] = address_id
                result[address] = address_id
        if named:
            _driver_many(connection, "UPDATE address SET display_name = {} WHERE id = {}", named)
        if listed:
            _driver_many(connection, "UPDATE address SET kind = 'list' WHERE id = {}", [(i,) for _, i in listed])
            _driver_many(
                connection,
                "UPDATE person SET kind = 'list', display_name = {} "
                "WHERE id = (SELECT person_id FROM address WHERE id = {})",
                listed,
            )
        pending_named.update(a for a, (n, _) in wanted.items() if n)
        pending_lists.update(a for a, (_, k) in wanted.items() if k == "list")
        return result

    def ensure(self, session: Session, address: str, name: str | None, kind: str | None = None) -> int:
        """Return the id of one address, creating it when it is new.

        The id is cached at once: a caller whose transaction rolls back must discard this
        AddressBook.
        """
        address_id = self.resolve(session.connection(), {address: (name, kind)})[address]
        self.commit()
        return address_id

    def commit(self) -> None:
        """Keep what the calls of ``resolve`` since the last commit or discard added."""
        ids, named, lists = self._pending
        self.ids.update(ids)
        self.named |= named
        self.lists |= lists
        self._pending = ({}, set(), set())

    def discard(self) -> None:
        """Forget what ``resolve`` added since the last commit, after a rolled-back transaction."""
        self._pending = ({}, set(), set())


# Columns of a prepared message row, in order; the writer appends from_address_id.
MESSAGE_COLUMNS = (
    "team_id",
    "mailbox_id",
    "internet_message_id",
    "in_reply_to",
    "subject_key",
    "conversation_hint",
    "fingerprint",
    "source_ref",
    "folder_role",
    "direction",
    "sent_at",
    "date_defect",
    "thread_key",
    "subject",
    "recipient_count",
    "is_bulk",
    "is_auto_reply",
    "is_reply",
    "copies",
)
_MID = MESSAGE_COLUMNS.index("internet_message_id")
_FINGERPRINT = MESSAGE_COLUMNS.index("fingerprint")

# A prepared message: (row, sender, participants), where row follows MESSAGE_COLUMNS and
# participants are groups of (address, role) pairs. The first group contains the
# recipients, and messages with the same recipient lists share it, so the pipe from a
# reader sends it once per batch.
_Pairs = tuple[tuple[str, str], ...]
_Triples = tuple[tuple[str, "str | None", "str | None"], ...]
Prepared = tuple[tuple, "str | None", tuple[_Pairs, _Pairs]]
# The result of prepare_item: a Prepared message and the groups of (address, display name,
# kind or None) triples it wants ids for, recipients first.
PreparedItem = tuple[tuple, "str | None", tuple[_Pairs, _Pairs], tuple[_Triples, _Triples]]
# The addresses a batch wants ids for: address -> (display name, kind or None), merged
# over all its messages, copies included.
Wanted = dict[str, tuple["str | None", "str | None"]]
# The recipient part of a prepared message: participants, needed, the number of distinct
# recipient addresses and those addresses sorted and joined for the fingerprint.
_RecipientWork = tuple[_Pairs, _Triples, int, str]
# Recipient work kept per Preparer. The cache keeps a reference to the lists, so the ids
# in its keys cannot be reused by other objects.
_RECIPIENT_CACHE_LIMIT = 20_000
_SUBJECT_CACHE_LIMIT = 20_000


@dataclass(frozen=True)
class PrepareContext:
    """Mailbox and settings values that building message rows depends on.

    It contains only plain values, so a reader process can build rows too.
    """

    team_id: str
    mailbox_id: int
    store_subjects: bool
    bulk_recipient_threshold: int
    fold_plus: bool
    sqlite_times: bool  # write sent_at in SQLAlchemy's SQLite text form

    @classmethod
    def of(cls, engine: Engine, mailbox: Mailbox, settings: Settings) -> PrepareContext:
        return cls(
            team_id=mailbox.team_id,
            mailbox_id=mailbox.id,
            store_subjects=bool(settings.store_subjects or mailbox.store_subjects),
            bulk_recipient_threshold=settings.bulk_recipient_threshold,
            fold_plus=settings.fold_plus_addresses,
            sqlite_times=engine.dialect.name == "sqlite",
        )


@dataclass
class PreparedBatch:
    """The rows of one batch, ready for the writer, with the batch's cursor and counts."""

    folder_key: str
    folder_role: str
    cursor: str | None
    complete: bool
    entries: list[Prepared]
    counts: Counter  # "read" and "skip:<reason>"
    wanted: Wanted = field(default_factory=dict)


def sqlite_time(value: datetime) -> str:
    """Return an aware datetime in SQLAlchemy's storage format for SQLite."""
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    # 'YYYY-MM-DD HH:MM:SS.ffffff' and the offset, which is cut off.
    return value.isoformat(" ", "microseconds")[:26]


class Preparer:
    """Builder of message rows from the mail items of a batch, without a database."""

    def __init__(self, context: PrepareContext, *, normalized: dict[str, str | None] | None = None):
        """``normalized`` is a cache of normalised addresses to share with other preparers
        of the same ``fold_plus`` setting."""
        self.context = context
        self._normalized: dict[str, str | None] = {} if normalized is None else normalized
        self._recipient_cache: dict[tuple[int, int, int], tuple[object, object, object, _RecipientWork]] = {}
        self._subject_keys: dict[str | None, str | None] = {}

    def normalize(self, participant: Participant | None) -> str | None:
        if participant is None or not participant.address:
            return None
        raw = participant.address
        try:
            return self._normalized[raw]
        except KeyError:
            value = self._normalized[raw] = normalize_address(raw, fold_plus=self.context.fold_plus)
            return value

    def prepare(self, batch: Batch) -> PreparedBatch:
        counts: Counter = Counter()
        entries: list[Prepared] = []
        wanted: Wanted = {}
        # Recipient groups merged already, by id. The values keep the groups alive, so
        # that no other group gets the same id within the batch.
        merged: dict[int, _Triples] = {}
        for item in batch.items:
            if item.sent_at is None:
                counts["skip:missing-date"] += 1
                log.warning("skipped %s: no valid Date or Received header", item.source_ref)
                continue
            prepared = self.prepare_item(item)
            if prepared is None:
                counts["skip:no-participants"] += 1
                log.warning("skipped %s: no sender and no recipient with an address", item.source_ref)
                continue
            row, sender, participants, (recipient_needed, sender_needed) = prepared
            entries.append((row, sender, participants))
            if id(recipient_needed) not in merged:
                merged[id(recipient_needed)] = recipient_needed
                _merge_wanted(wanted, recipient_needed)
            _merge_wanted(wanted, sender_needed)
        for skipped in batch.skipped:
            counts["skip:" + skipped.reason] += 1
        counts["read"] = len(batch.items) + len(batch.skipped)
        return PreparedBatch(
            batch.folder_key, batch.folder_role.value, batch.cursor, batch.complete, entries, counts, wanted
        )

    def prepare_item(self, item: MailItem) -> PreparedItem | None:
        """Build the message row of an item, or None when it names no address at all."""
        normalize = self.normalize
        sender_participant = item.sender
        sender = normalize(sender_participant)
        recipient_participants, recipient_needed, recipient_count, recipient_key = self._recipients(item)
        if sender is None and not recipient_count:
            return None

        participants: list[tuple[str, str]] = []
        needed: list[tuple[str, str | None, str | None]] = []
        author = normalize(item.author)
        if author is not None and author != sender:
            # A list rewrote From: the message is the author's, and the list address is
            # kept as a list, never as a person.
            if sender is not None:
                needed.append((sender, _list_name(sender_participant, item.list_id), "list"))
                participants.append((sender, "list"))
            sender, sender_participant = author, item.author
        if sender is not None:
            needed.append((sender, sender_participant.name if sender_participant else None, None))
            participants.append((sender, "from"))

        context = self.context
        parent = item.in_reply_to or (item.references[-1] if item.references else None)
        sent_at = item.sent_at
        minute = None
        sent_value: datetime | str = sent_at  # type: ignore[assignment]
        if context.sqlite_times:
            sent_value = sqlite_time(sent_at)  # type: ignore[arg-type]
            if sent_at.tzinfo is timezone.utc:  # type: ignore[union-attr]
                # The fingerprint's minute is the same UTC text, with a 'T'.
                minute = f"{sent_value[:10]}T{sent_value[11:16]}"
        row = (
            context.team_id,
            context.mailbox_id,
            _clean_id(item.message_id),
            _clean_id(parent),
            self._subject_key(item.subject),
            item.conversation_id,
            fingerprint(item, sender, recipient_key, minute),
            item.source_ref[:1000],
            item.folder_role.value,
            "other",
            sent_value,
            (item.date_defect or None) and item.date_defect[:500],
            "",
            (item.subject or None) if context.store_subjects else None,
            recipient_count,
            item.is_bulk or recipient_count > context.bulk_recipient_threshold,
            item.is_auto_reply,
            False,
            1,
        )
        return row, sender, (recipient_participants, tuple(participants)), (recipient_needed, tuple(needed))

    def _subject_key(self, subject: str | None) -> str | None:
        """Return subject_key(subject), cached because replies and copies repeat subjects."""
        keys = self._subject_keys
        try:
            return keys[subject]
        except KeyError:
            if len(keys) >= _SUBJECT_CACHE_LIMIT:
                keys.clear()
            key = keys[subject] = subject_key(subject)
            return key

    def _recipients(self, item: MailItem) -> _RecipientWork:
        """Return the recipient part of a message, reused for lists seen before."""
        to, cc, bcc = item.to, item.cc, item.bcc
        shared = type(to) is tuple and type(cc) is tuple and type(bcc) is tuple
        if shared:
            key = (id(to), id(cc), id(bcc))
            hit = self._recipient_cache.get(key)
            if hit is not None and hit[0] is to and hit[1] is cc and hit[2] is bcc:
                return hit[3]

        normalize = self.normalize
        normalized = self._normalized
        participants: list[tuple[str, str]] = []
        seen: set[str] = set()
        needed: list[tuple[str, str | None, str | None]] = []
        for role, people in (("to", to), ("cc", cc), ("bcc", bcc)):
            for participant in people:
                # The cache lookup is inlined: lists of thousands of recipients make this
                # the importer's most repeated line.
                raw = participant.address
                address = normalized.get(raw) if raw else None
                if address is None:
                    address = normalize(participant)
                    if address is None:
                        continue
                if address in seen:
                    # A recipient receives a message once, in its first role: exports such
                    # as Enron's repeat the whole Cc list as Bcc. A name it carries here
                    # still counts.
                    if participant.name:
                        needed.append((address, participant.name, None))
                    continue
                seen.add(address)
                participants.append((address, role))
                needed.append((address, participant.name, None))
        work = (tuple(participants), tuple(needed), len(seen), ",".join(sorted(seen)))
        if shared:
            if len(self._recipient_cache) >= _RECIPIENT_CACHE_LIMIT:
                self._recipient_cache.clear()
            self._recipient_cache[key] = (to, cc, bcc, work)
        return work


def _merge_wanted(wanted: Wanted, group: _Triples) -> None:
    """Add (address, display name, kind) triples to ``wanted``, where the first name and kind given win."""
    for address, name, kind in group:
        current = wanted.get(address)
        if current is None:
            wanted[address] = (name, kind)
        elif (name and not current[0]) or (kind and not current[1]):
            wanted[address] = (current[0] or name, current[1] or kind)


class Importer:
    """Batch writer for one mailbox, with the caches that make later batches cheap."""

    def __init__(
        self,
        engine: Engine,
        mailbox: Mailbox,
        settings: Settings,
        *,
        checkpoints: BackgroundCheckpoints | None = None,
        book: AddressBook | None = None,
    ):
        """``checkpoints`` is a running checkpoint thread that copies the SQLite log for
        the batches' commits. ``book`` is the address book of the mailbox's team, when
        another importer of this process loaded it already."""
        self.engine = engine
        self.mailbox = mailbox
        self.settings = settings
        self.checkpoints = checkpoints
        self.context = PrepareContext.of(engine, mailbox, settings)
        self.preparer = Preparer(self.context)
        with engine.connect() as connection:
            if book is None or book.team_id != mailbox.team_id:
                # New addresses need only their domain and whether it is free mail, which
                # do not depend on the owner, so the policy has no internal domains.
                book = AddressBook(connection, mailbox.team_id, DomainPolicy(freemail_extra=settings.extra_freemail()))
            self.book = book
            self.fingerprints: set[str] = {
                row[0]
                for row in _driver_rows(connection, "SELECT fingerprint FROM message WHERE mailbox_id = {}", (mailbox.id,))
            }
            self.message_ids: set[str] = {
                row[0]
                for row in _driver_rows(
                    connection,
                    "SELECT internet_message_id FROM message WHERE mailbox_id = {} AND internet_message_id IS NOT NULL",
                    (mailbox.id,),
                )
            }

    def store_batch(self, batch: Batch, summary: ImportSummary) -> None:
        """Store a batch and its folder cursor in one transaction."""
        self.store_prepared(self.preparer.prepare(batch), summary)

    def store_prepared(self, batch: PreparedBatch | list[PreparedBatch], summary: ImportSummary) -> None:
        """Store prepared rows and the folder cursors of one batch, or of consecutive
        batches, in one transaction."""
        retry_write(self._store_prepared, batch if isinstance(batch, list) else [batch], summary)
        _freeze_written()

    def _store_prepared(self, batches: list[PreparedBatch], summary: ImportSummary) -> None:
        added_fingerprints: set[str] = set()
        added_ids: set[str] = set()
        counts: Counter = Counter()
        prepared: list[Prepared] = []
        stored_per_batch: list[int] = []
        duplicate_fingerprints: list[str] = []
        known_fingerprints = self.fingerprints
        known_ids = self.message_ids
        for batch in batches:
            counts.update(batch.counts)
            before = len(prepared)
            self._new_entries(batch, prepared, duplicate_fingerprints, added_fingerprints, added_ids)
            stored_per_batch.append(len(prepared) - before)
        counts["stored"] = len(prepared)
        counts["duplicates"] = len(duplicate_fingerprints)

        checkpoints = self.checkpoints
        book = self.book
        book.discard()  # the pending ids of an earlier, rolled-back attempt
        with self.engine.begin() as connection:
            if checkpoints is not None:
                checkpoints.defer(connection)
            ids: dict[str, int] = {}
            # Batch by batch, as separate transactions would, so that new people are
            # created in the same order and with the same names.
            for batch in batches:
                if batch.wanted:
                    ids.update(book.resolve(connection, batch.wanted))
            if prepared:
                self._insert_messages(connection, prepared, ids)
            mailbox_id = self.mailbox.id
            copies = [
                (mailbox_id, fp) for fp in duplicate_fingerprints if fp in known_fingerprints or fp in added_fingerprints
            ]
            if copies:
                _driver_many(
                    connection, "UPDATE message SET copies = copies + 1 WHERE mailbox_id = {} AND fingerprint = {}", copies
                )
            for batch, stored in zip(batches, stored_per_batch):
                self._save_cursor(connection, batch, stored)
        if checkpoints is not None:
            checkpoints.notify()
        # Only after the commit do the caches and the summary learn about the batches, so
        # a retried transaction starts from the same state.
        book.commit()
        known_fingerprints |= added_fingerprints
        known_ids |= added_ids
        summary.read += counts["read"]
        summary.stored += counts["stored"]
        summary.duplicates += counts["duplicates"]
        for key, value in counts.items():
            if key.startswith("skip:"):
                summary.skipped[key[5:]] += value

    def _new_entries(
        self,
        batch: PreparedBatch,
        prepared: list[Prepared],
        duplicate_fingerprints: list[str],
        added_fingerprints: set[str],
        added_ids: set[str],
    ) -> None:
        """Append a batch's messages that are not stored yet to ``prepared``, and the
        fingerprints of the others to ``duplicate_fingerprints``."""
        known_fingerprints = self.fingerprints
        known_ids = self.message_ids
        for entry in batch.entries:
            row = entry[0]
            mid = row[_MID]
            fp = row[_FINGERPRINT]
            if fp in known_fingerprints or fp in added_fingerprints or (
                mid and (mid in known_ids or mid in added_ids)
            ):
                duplicate_fingerprints.append(fp)
                continue
            added_fingerprints.add(fp)
            if mid:
                added_ids.add(mid)
            prepared.append(entry)

    def _insert_messages(self, connection, prepared: list[Prepared], ids: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
        rows = [(*row, ids[sender] if sender else None) for row, sender, _ in prepared]
        message_ids = _insert_rows(connection, "message", (*MESSAGE_COLUMNS, "from_address_id"), rows)
        team_id = self.mailbox.team_id
        participant_rows = [
            (team_id, message_id, ids[address], role)
            for entry, message_id in zip(prepared, message_ids)
            for group in entry[2]
            for address, role in group
        ]
        if participant_rows:
            # The largest insert of a batch goes straight to the driver's executemany,
            # which skips SQLAlchemy's per-row parameter processing.
            _driver_many(
                connection,
                "INSERT INTO messageparticipant (team_id, message_id, address_id, role) VALUES ({}, {}, {}, {})",
                participant_rows,
            )

    def _save_cursor(self, connection, batch: PreparedBatch, stored: int) -> None:  # type: ignore[no-untyped-def]
        now = _driver_now(connection)
        mailbox = self.mailbox
        updated = _driver_execute(
            connection,
            "UPDATE folderstate SET cursor = {}, items_stored = items_stored + {}, updated_at = {} "
            "WHERE mailbox_id = {} AND folder_key = {}",
            (batch.cursor, stored, now, mailbox.id, batch.folder_key),
        ).rowcount
        if not updated:
            _driver_execute(
                connection,
                "INSERT INTO folderstate (team_id, mailbox_id, folder_key, folder_role, cursor, items_stored, updated_at) "
                "VALUES ({}, {}, {}, {}, {}, {}, {})",
                (mailbox.team_id, mailbox.id, batch.folder_key, batch.folder_role, batch.cursor, stored, now),
            )


def _driver_now(connection) -> datetime | str:  # type: ignore[no-untyped-def]
    """Return the current time in the driver's form: sqlite_time() text on SQLite."""
    now = utcnow()
    return sqlite_time(now) if connection.dialect.name == "sqlite" else now


def _marked(connection, sql: str) -> str:  # type: ignore[no-untyped-def]
    """Put the driver's parameter marker in each {} of a statement."""
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    return sql.format(*[marker] * sql.count("{}"))


def _driver_execute(connection, sql: str, params: tuple):  # type: ignore[no-untyped-def]
    """Run one statement on the driver, without SQLAlchemy's parameter processing."""
    return connection.exec_driver_sql(_marked(connection, sql), params)


def _driver_many(connection, sql: str, rows: list[tuple]) -> None:  # type: ignore[no-untyped-def]
    """Run one statement for each row through the driver's executemany."""
    connection.exec_driver_sql(_marked(connection, sql), rows)


def _driver_rows(connection, sql: str, params: tuple) -> list[tuple]:  # type: ignore[no-untyped-def]
    """Return all rows of a query run on the driver."""
    return _driver_execute(connection, sql, params).fetchall()


def _allocate_ids(connection, table: str, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Reserve ``count`` primary keys of a table inside the current write transaction.

    On SQLite every write transaction starts with BEGIN IMMEDIATE, so no other writer can
    insert between reading the maximum id and using the ids after it.
    """
    if connection.dialect.name == "sqlite":
        start = connection.exec_driver_sql(f"SELECT COALESCE(MAX(id), 0) FROM {table}").scalar() + 1
        return list(range(start, start + count))
    return list(
        connection.exec_driver_sql(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, {int(count)})"
        ).scalars()
    )


def _insert_rows(connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> list[int]:  # type: ignore[no-untyped-def]
    """Insert rows through the driver's executemany and return their new ids in order.

    This skips SQLAlchemy's per-row parameter processing, so values must already be in
    the driver's form: on SQLite, datetimes as sqlite_time() text.
    """
    ids = _allocate_ids(connection, table, len(rows))
    sql = f"INSERT INTO {table} (id, {', '.join(columns)}) VALUES ({', '.join(['{}'] * (len(columns) + 1))})"
    _driver_many(connection, sql, [(row_id, *row) for row_id, row in zip(ids, rows)])
    return ids


def _list_name(participant: Participant | None, list_id: str | None) -> str | None:
    """Name a list from a 'Name via List' display name, or from its List-Id phrase."""
    if participant is not None and participant.name:
        parts = split_via_name(participant.name)
        if parts:
            return parts[1]
    if list_id:
        phrase = list_id.split("<", 1)[0].strip().strip('"')
        if phrase:
            return phrase
    return participant.name if participant else None


def _clean_id(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().strip("<>").strip()
    return value[:500] or None


def load_cursors(engine: Engine, mailbox_id: int) -> dict[str, str]:
    """Return the stored cursors of a mailbox's folders by folder key."""
    with Session(engine) as session:
        rows = session.execute(
            select(FolderState.folder_key, FolderState.cursor).where(
                FolderState.mailbox_id == mailbox_id, FolderState.cursor.is_not(None)
            )
        ).all()
    return {key: cursor for key, cursor in rows}


def load_cursor(engine: Engine, mailbox_id: int, folder_key: str) -> str | None:
    with Session(engine) as session:
        return session.execute(
            select(FolderState.cursor).where(
                FolderState.mailbox_id == mailbox_id, FolderState.folder_key == folder_key
            )
        ).scalar_one_or_none()


def clear_cursor(engine: Engine, mailbox_id: int, folder_key: str) -> None:
    def _write() -> None:
        with Session(engine) as session:
            session.execute(
                update(FolderState)
                .where(FolderState.mailbox_id == mailbox_id, FolderState.folder_key == folder_key)
                .values(cursor=None, updated_at=utcnow())
            )
            session.commit()

    retry_write(_write)


@dataclass
class ImportJob:
    """One mailbox of an import and the source to read it from."""

    mailbox: Mailbox
    source: MailSource
    folders: list[FolderRef] | None = None  # None reads every folder of the source


def import_source(
    engine: Engine,
    mailbox: Mailbox,
    source: MailSource,
    *,
    settings: Settings,
    progress: ProgressCallback | None = None,
    kind: str = "import",
    folders: list[FolderRef] | None = None,
    readers: int | None = None,
) -> ImportSummary:
    """Read every folder of a source from its stored cursor and store what is new.

    A large file import reads and parses in ``readers`` forked processes while this one
    writes (bot.mail.readahead); None chooses by the size of the import and the machine,
    and 0 reads in this process.
    """
    job = ImportJob(mailbox, source, folders)
    return import_sources(engine, [job], settings=settings, progress=progress, kind=kind, readers=readers)[0]


def import_sources(
    engine: Engine,
    jobs: list[ImportJob],
    *,
    settings: Settings,
    progress: ProgressCallback | None = None,
    kind: str = "import",
    readers: int | None = None,
) -> list[ImportSummary]:
    """Import several mailboxes in one run, as import_source imports one.

    The reader processes take the file folders of all the mailboxes in turn, so they
    parse the next mailbox while this process writes the last batches of the one before.
    Each mailbox gets its own summary and sync run. When a mailbox's source is deferred,
    its summary records that and the other mailboxes go on. Any other error marks the
    mailboxes not yet finished as failed and is raised.
    """
    summaries = [ImportSummary() for _ in jobs]
    run_ids = _start_runs(engine, jobs, kind)
    finished: set[int] = set()
    unrecorded: list[tuple[Mailbox, int, ImportSummary]] = []  # finished runs not yet written
    reader = None
    try:
        with _fewer_collections():
            todo: list[list[FolderRef] | None] = [None] * len(jobs)
            if readers != 0:
                # Readers start before the importer loads its caches, so both happen at once.
                for index, job in enumerate(jobs):
                    if hasattr(job.source, "plan"):
                        todo[index] = _job_folders(job)
                reader = _start_readers(engine, settings, jobs, todo, readers)
            # The checkpoint thread starts after the readers are forked.
            with BackgroundCheckpoints(engine) as checkpoints:
                importers = _Importers(engine, settings, jobs, checkpoints)
                if reader is not None:
                    _store_read_ahead(reader, importers, todo, summaries, progress)
                for index, job in enumerate(jobs):
                    if todo[index] != []:
                        # This job is read here, which may take long, so the runs
                        # finished before it are recorded first.
                        _finish_runs(engine, unrecorded)
                        unrecorded = []
                    _import_job(importers, index, todo[index], summaries[index], progress)
                    unrecorded.append((job.mailbox, run_ids[index], summaries[index]))
                    finished.add(index)
                _finish_runs(engine, unrecorded)
                unrecorded = []
    except Exception as exc:
        for index, job in enumerate(jobs):
            if index not in finished:
                summaries[index].outcome = "failed"
                summaries[index].error = f"{type(exc).__name__}: {exc}"
                unrecorded.append((job.mailbox, run_ids[index], summaries[index]))
        _finish_runs(engine, unrecorded)
        raise
    finally:
        if reader is not None:
            reader.close()
    return summaries


def _job_folders(job: ImportJob) -> list[FolderRef]:
    return list(job.folders if job.folders is not None else job.source.folders())


class _Importers:
    """The importers of one run, made when a job's first batch arrives. The jobs of one
    team share one address book, so that it is loaded once."""

    def __init__(self, engine: Engine, settings: Settings, jobs: list[ImportJob], checkpoints: BackgroundCheckpoints):
        self.engine = engine
        self.settings = settings
        self.jobs = jobs
        self.checkpoints = checkpoints
        self._importers: dict[int, Importer] = {}
        self._books: dict[str, AddressBook] = {}

    def __getitem__(self, index: int) -> Importer:
        importer = self._importers.get(index)
        if importer is None:
            mailbox = self.jobs[index].mailbox
            importer = Importer(
                self.engine,
                mailbox,
                self.settings,
                checkpoints=self.checkpoints,
                book=self._books.get(mailbox.team_id),
            )
            self._importers[index] = importer
            self._books[mailbox.team_id] = importer.book
        return importer


def _import_job(
    importers: _Importers,
    index: int,
    folders: list[FolderRef] | None,
    summary: ImportSummary,
    progress: ProgressCallback | None,
) -> None:
    """Read in this process the folders of a job that the readers did not store.

    ``folders`` None reads all the job's folders.
    """
    job = importers.jobs[index]
    mailbox = job.mailbox
    try:
        for folder in _job_folders(job) if folders is None else folders:
            summary.folders += 1
            _import_folder(importers.engine, importers[index], mailbox, job.source, folder, summary, progress)
    except SourceDeferred as exc:
        summary.outcome = "deferred"
        summary.retry_after_seconds = exc.retry_after_seconds
        summary.error = str(exc)
        log.warning("import of mailbox %s deferred for %.0fs: %s", mailbox.id, exc.retry_after_seconds, exc)


def _start_readers(
    engine: Engine,
    settings: Settings,
    jobs: list[ImportJob],
    folders: list[list[FolderRef] | None],
    readers: int | None,
):  # type: ignore[no-untyped-def]
    """Fork reader processes for the file folders of the jobs, or return None.

    ``folders`` contains each job's folders, or None for a job whose source has no chunks.
    """
    from bot.mail.readahead import ReadAhead, ReadJob, auto_readers

    read_jobs: list[ReadJob] = []
    chunks = []
    for index, (job, job_folders) in enumerate(zip(jobs, folders)):
        read_jobs.append(ReadJob(job.source, PrepareContext.of(engine, job.mailbox, settings)))  # type: ignore[arg-type]
        if job_folders is None:
            continue
        cursors = load_cursors(engine, job.mailbox.id)
        for folder in job_folders:
            chunks.extend((index, chunk) for chunk in job.source.plan(folder, cursors.get(folder.key)))  # type: ignore[attr-defined]
    if readers is None:
        readers = auto_readers([chunk for _, chunk in chunks])
    if readers <= 0 or not chunks:
        return None
    return ReadAhead(read_jobs, chunks, readers)


def _store_read_ahead(
    reader,  # type: ignore[no-untyped-def]
    importers: _Importers,
    todo: list[list[FolderRef] | None],
    summaries: list[ImportSummary],
    progress: ProgressCallback | None,
) -> None:
    """Store what the reader processes send, and leave in ``todo`` what is still to read.

    Each job read ahead gets an empty list of folders left. When a reader fails, the
    folder it was reading and those after it stay in ``todo``, and the caller reads them
    from their stored cursors.
    """
    from bot.mail.readahead import ReadAheadFailed

    chunks = reader.chunks
    counted: set[tuple[int, str]] = set()
    # Batches received while the importer was busy, written together in one transaction
    # when the next batch is not ready yet, or when they reach GROUP_MESSAGES.
    group: list[PreparedBatch] = []
    group_job = -1

    def write_group() -> None:
        if group:
            importers[group_job].store_prepared(list(group), summaries[group_job])
            if progress is not None:
                for batch in group:
                    progress(batch.counts["read"])
            group.clear()

    try:
        for received in reader:
            if received is None:
                write_group()
                continue
            index, batch = received
            job_index, chunk = chunks[index]
            folder_key = chunk.folder.key
            if (job_index, folder_key) not in counted:
                counted.add((job_index, folder_key))
                summaries[job_index].folders += 1
            if batch.complete:
                # As in _import_folder: a file folder read to its end keeps no cursor.
                batch.cursor = None
            if job_index != group_job or sum(len(held.entries) for held in group) >= GROUP_MESSAGES:
                write_group()
                group_job = job_index
            group.append(batch)
        write_group()
    except ReadAheadFailed as exc:
        # The batches received before the failure belong to earlier chunks.
        write_group()
        failed_job, failed_chunk = chunks[exc.chunk_index]
        failed = failed_chunk.folder.key
        log.warning("%s; reading folder %s and the folders after it in this process", exc, failed)
        for job_index in range(failed_job):
            if todo[job_index] is not None:
                todo[job_index] = []
        job_folders = todo[failed_job] or []
        position = next(i for i, folder in enumerate(job_folders) if folder.key == failed)
        todo[failed_job] = job_folders[position:]
        if (failed_job, failed) in counted:
            summaries[failed_job].folders -= 1  # the caller counts this folder again
        return
    finally:
        reader.close()
    for job_index, job_folders in enumerate(todo):
        if job_folders is not None:
            todo[job_index] = []


# The maximum number of messages in one transaction of batches received from reader
# processes.
GROUP_MESSAGES = 2000

_collection_lock = threading.Lock()
_collection_depth = 0
_saved_thresholds = gc.get_threshold()


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while an import creates many objects.

    An import allocates millions of small objects that live until their batch is written,
    and the collector's default thresholds make it scan them again and again. Objects
    that exist before the import are frozen out of the scans, and so are those that exist
    after each write (``_freeze_written``). The young generation is collected every
    50,000 allocations instead of 700. Nested and concurrent imports share one setting,
    restored when the last ends.
    """
    global _collection_depth, _saved_thresholds
    with _collection_lock:
        if _collection_depth == 0:
            _saved_thresholds = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(50_000, *_saved_thresholds[1:])
        _collection_depth += 1
    try:
        yield
    finally:
        with _collection_lock:
            _collection_depth -= 1
            if _collection_depth == 0:
                gc.set_threshold(*_saved_thresholds)
                gc.unfreeze()


def _freeze_written() -> None:
    """Freeze the objects that exist after a write, inside an import only.

    What a written batch leaves alive (caches, the address book) is then not scanned by
    later collections. The import's end unfreezes everything, so reference cycles made
    during the import are collected after it (about 1,200 objects for the Enron corpus).
    """
    with _collection_lock:
        if _collection_depth:
            gc.freeze()


def _import_folder(
    engine: Engine,
    importer: Importer,
    mailbox: Mailbox,
    source: MailSource,
    folder: FolderRef,
    summary: ImportSummary,
    progress: ProgressCallback | None,
) -> None:
    cursor = load_cursor(engine, mailbox.id, folder.key)
    for attempt in (1, 2):
        try:
            for batch in source.read(folder, cursor):
                if batch.complete and source.kind == "files":
                    # A file folder read to its end keeps no cursor: the next import reads
                    # it again, so files added anywhere in it are found, and what is stored
                    # already counts as duplicates. Only an interrupted import resumes.
                    batch.cursor = None
                importer.store_batch(batch, summary)
                if progress is not None:
                    progress(len(batch.items) + len(batch.skipped))
            return
        except SyncStateExpired as exc:
            if attempt == 2 or cursor is None:
                raise
            log.warning(
                "sync state of folder %s in mailbox %s was rejected (%s); reading the folder again",
                folder.key,
                mailbox.id,
                exc,
            )
            clear_cursor(engine, mailbox.id, folder.key)
            summary.resynced_folders.append(folder.key)
            cursor = None


def _start_runs(engine: Engine, jobs: list[ImportJob], kind: str) -> list[int]:
    """Record a started sync run for each job's mailbox in one transaction, and return their ids."""

    def _write() -> list[int]:
        started = utcnow()
        with Session(engine) as session:
            runs = [
                SyncRun(team_id=job.mailbox.team_id, mailbox_id=job.mailbox.id, kind=kind, started_at=started)
                for job in jobs
            ]
            session.add_all(runs)
            session.commit()
            return [run.id for run in runs]

    return retry_write(_write)


def _finish_runs(engine: Engine, runs: list[tuple[Mailbox, int, ImportSummary]]) -> None:
    """Record the outcomes of sync runs in one transaction and add their counts to their mailboxes."""
    if not runs:
        return

    def _write() -> None:
        now = utcnow()
        with engine.begin() as connection:
            connection.execute(
                update(SyncRun)
                .where(SyncRun.id == bindparam("run_id"))
                .values(
                    finished_at=now,
                    outcome=bindparam("run_outcome"),
                    error=bindparam("run_error"),
                    counts=bindparam("run_counts"),
                ),
                [
                    {"run_id": run_id, "run_outcome": summary.outcome, "run_error": summary.error, "run_counts": summary.as_dict()}
                    for _, run_id, summary in runs
                ],
            )
            connection.execute(
                update(Mailbox)
                .where(Mailbox.id == bindparam("box_id"))
                .values(
                    messages_read=Mailbox.messages_read + bindparam("box_read"),
                    messages_skipped=Mailbox.messages_skipped + bindparam("box_skipped"),
                ),
                [
                    {"box_id": mailbox.id, "box_read": summary.read, "box_skipped": summary.skipped_total}
                    for mailbox, _, summary in runs
                ],
            )
            succeeded = [mailbox.id for mailbox, _, summary in runs if summary.outcome == "ok"]
            if succeeded:
                connection.execute(update(Mailbox).where(Mailbox.id.in_(succeeded)).values(last_import_at=now))

    retry_write(_write)


def newest_message_time(engine: Engine, mailbox_id: int) -> datetime | None:
    from sqlalchemy import func

    with Session(engine) as session:
        return session.execute(select(func.max(Message.sent_at)).where(Message.mailbox_id == mailbox_id)).scalar()
