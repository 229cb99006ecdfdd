"""Turn the stored message metadata of one mailbox into relationships.

A recompute runs these steps, each idempotent:

1. learn the owner's other addresses from the sent folders;
2. attach organisations to the team's addresses and merge identities (``identity``);
3. rebuild threads: In-Reply-To first, then the normalised subject among overlapping
   participants within a time window;
4. count, per person, inbound and outbound mail, two-way threads, first and last contact,
   cadence and strength as of a reference time.

Bulk and automated mail, auto-replies, lists and no-reply senders never create a
relationship. Mail dated after the reference time is left out, so a run with ``now`` in
2001 shows the mailbox as it was then.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.config import Settings, get_settings
from bot.relationships import identity
from bot.relationships.strength import StrengthParams, combine, decay, message_weight
from bot.storage.db import retry_write
from bot.storage.models import (
    Address,
    Mailbox,
    Message,
    MessageParticipant,
    OwnerAddress,
    Person,
    Relationship,
)
from bot.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

# An address sending at least this share of a mailbox's sent-folder mail, under the owner's
# name, is one of the owner's addresses.
ALIAS_MIN_SHARE = 0.05
ALIAS_MIN_MESSAGES = 3
CONTACT_KINDS = {"person", "role"}
NEWEST_IGNORED_SHARE = 0.005
CLOCK_GAP = timedelta(days=180)
CLOCK_OUTLIER_SHARE = 0.05


@dataclass
class MessageRow:
    id: int
    sent_at: datetime
    folder_role: str
    from_id: int | None
    internet_message_id: str | None
    in_reply_to: str | None
    subject_key: str | None
    conversation_hint: str | None
    is_bulk: bool
    is_auto_reply: bool
    recipient_count: int
    to: list[int] = field(default_factory=list)
    cc: list[int] = field(default_factory=list)
    bcc: list[int] = field(default_factory=list)
    author: int | None = None
    list_address: int | None = None


@dataclass
class PersonStats:
    inbound: int = 0
    outbound: int = 0
    decayed_in: float = 0.0
    decayed_out: float = 0.0
    first: datetime | None = None
    last_in: datetime | None = None
    last_out: datetime | None = None
    last_two_way: datetime | None = None
    two_way_threads: int = 0
    days: set = field(default_factory=set)

    def touch(self, when: datetime, counted: bool = True) -> None:
        """Record contact at ``when``; only counted mail sets the cadence."""
        if self.first is None or when < self.first:
            self.first = when
        if counted:
            self.days.add(when.date())


def reference_time(engine: Engine, mailbox: Mailbox, now: datetime | None) -> datetime:
    """Return the time strength is computed at.

    An explicit ``now`` wins. A mailbox read from files is scored as of the end of its mail
    (see ``archive_end``), so an archive is shown as it was on its last day. A synced
    mailbox is scored as of today.
    """
    if now is not None:
        return as_utc(now)
    if mailbox.source_kind == "files":
        with Session(engine) as session:
            times = session.execute(
                select(Message.sent_at)
                .where(Message.mailbox_id == mailbox.id, Message.sent_at <= utcnow())
                .order_by(Message.sent_at)
            ).scalars().all()
        if times:
            return as_utc(archive_end(times))
    return utcnow()


def archive_end(times: list[datetime]) -> datetime:
    """Return the time an archive's mail ends, given its sorted message times.

    Archives carry messages from broken clocks dated months or years after the rest (the
    Enron corpus has some from 2004, two years after its last real mail). A group of
    messages that follows a silence of more than ``CLOCK_GAP`` and makes up less than
    ``CLOCK_OUTLIER_SHARE`` of the mailbox is left out, as is the newest 0.5%.
    """
    end = len(times)
    for index in range(len(times) - 1, 0, -1):
        if len(times) - index > CLOCK_OUTLIER_SHARE * len(times):
            break
        if times[index] - times[index - 1] > CLOCK_GAP:
            end = index
    end -= int(NEWEST_IGNORED_SHARE * end)
    return times[max(0, end - 1)]


def recompute(
    engine: Engine, mailbox_id: int, now: datetime | None = None, *, settings: Settings | None = None
) -> int:
    """Rebuild the relationships of one mailbox; return how many there are."""
    settings = settings or get_settings()
    with Session(engine, expire_on_commit=False) as session:
        mailbox = session.get(Mailbox, mailbox_id)
    if mailbox is None:
        raise ValueError(f"mailbox {mailbox_id} does not exist")
    at = reference_time(engine, mailbox, now)
    retry_write(learn_owner_aliases, engine, mailbox, settings)
    retry_write(identity.resolve_team, engine, mailbox.team_id, settings)
    return len(retry_write(_compute, engine, mailbox, at, settings))


def relationships_as_of(
    engine: Engine, mailbox_id: int, now: datetime, *, settings: Settings | None = None
) -> list[Relationship]:
    """Compute a mailbox's relationships as of ``now`` without storing anything.

    The stored relationships stay as the last recompute left them, so asking about another
    date never changes what other commands and users see. The returned rows are transient.
    """
    settings = settings or get_settings()
    with Session(engine, expire_on_commit=False) as session:
        mailbox = session.get(Mailbox, mailbox_id)
    if mailbox is None:
        raise ValueError(f"mailbox {mailbox_id} does not exist")
    rows = _compute(engine, mailbox, as_utc(now), settings, store=False)
    return [Relationship(**row) for row in rows]


def learn_owner_aliases(engine: Engine, mailbox: Mailbox, settings: Settings | None = None) -> list[str]:
    """Add the owner's other addresses, learned on strong evidence.

    An address belongs to the owner in two cases. It carries the owner's name, or the
    owner's surname in its local part, and sent a large share of the sent folders or
    received a large share of the inbox. Or it carries the owner's full name exactly and is
    in the owner's own domain or at a free-mail provider.
    """
    settings = settings or get_settings()
    with Session(engine) as session:
        owner = set(
            session.execute(select(OwnerAddress.address).where(OwnerAddress.mailbox_id == mailbox.id)).scalars()
        )
        senders = session.execute(
            select(Address.address, Address.display_name, func.count(Message.id))
            .join(Message, Message.from_address_id == Address.id)
            .where(Message.mailbox_id == mailbox.id, Message.folder_role == "sent")
            .group_by(Address.address, Address.display_name)
        ).all()
        receivers = session.execute(
            select(Address.address, Address.display_name, func.count(func.distinct(Message.id)))
            .join(MessageParticipant, MessageParticipant.address_id == Address.id)
            .join(Message, Message.id == MessageParticipant.message_id)
            .where(
                Message.mailbox_id == mailbox.id,
                Message.folder_role == "inbox",
                MessageParticipant.role.in_(("to", "cc", "bcc")),
            )
            .group_by(Address.address, Address.display_name)
        ).all()
        names = {address: name for address, name, _ in [*receivers, *senders] if name}
        owner_keys = {identity.name_key(names.get(a)) for a in owner}
        if mailbox.owner_name:
            owner_keys.add(identity.name_key(mailbox.owner_name))
        owner_keys.discard(None)
        surnames = {key.split()[-1] for key in owner_keys}
        for address in owner:
            local = address.split("@", 1)[0]
            tokens = [t for t in local.replace("_", ".").replace("-", ".").split(".") if len(t) >= 3]
            if tokens:
                surnames.add(tokens[-1].lower())

        def name_fits(address: str, name: str | None) -> bool:
            key = identity.name_key(name)
            if key is not None and owner_keys:
                # A known full name must be the owner's: a colleague with the same surname
                # sending from the owner's sent folder is someone else.
                return key in owner_keys
            local = address.split("@", 1)[0].lower()
            return any(s in local for s in surnames) and (key is None or key.split()[-1] in surnames)

        evidence: dict[str, str] = {}
        for rows, label in ((senders, "sent"), (receivers, "received")):
            total = session.execute(
                select(func.count(Message.id)).where(
                    Message.mailbox_id == mailbox.id, Message.folder_role == ("sent" if label == "sent" else "inbox")
                )
            ).scalar_one()
            for address, name, count in rows:
                if address in owner or address in evidence:
                    continue
                if count >= max(ALIAS_MIN_MESSAGES, ALIAS_MIN_SHARE * total) and name_fits(address, name):
                    folder = "sent-folder" if label == "sent" else "inbox"
                    evidence[address] = f"{label} {count} of {total} {folder} messages as {name or address}"

        if owner_keys:
            policy = identity.team_policy(session, mailbox.team_id, settings)
            for address, name in session.execute(
                select(Address.address, Address.display_name).where(
                    Address.team_id == mailbox.team_id, Address.display_name.is_not(None)
                )
            ):
                if address in owner or address in evidence:
                    continue
                if identity.name_key(name) in owner_keys:
                    info = policy.classify(address)
                    if info.is_internal or info.is_freemail:
                        evidence[address] = f"carries the owner's full name {name!r}"

        for address, text in evidence.items():
            session.add(
                OwnerAddress(
                    team_id=mailbox.team_id, mailbox_id=mailbox.id, address=address, origin="learned", evidence=text
                )
            )
            log.info("mailbox %s: learned owner address %s (%s)", mailbox.id, address, text)
        session.commit()
        return list(evidence)


def _load_messages(session: Session, mailbox_id: int, at: datetime) -> list[MessageRow]:
    messages: dict[int, MessageRow] = {}
    for row in session.execute(
        select(
            Message.id,
            Message.sent_at,
            Message.folder_role,
            Message.from_address_id,
            Message.internet_message_id,
            Message.in_reply_to,
            Message.subject_key,
            Message.conversation_hint,
            Message.is_bulk,
            Message.is_auto_reply,
            Message.recipient_count,
        ).where(Message.mailbox_id == mailbox_id, Message.sent_at <= at)
    ):
        messages[row[0]] = MessageRow(row[0], as_utc(row[1]), *row[2:])
    for message_id, address_id, role in session.execute(
        select(MessageParticipant.message_id, MessageParticipant.address_id, MessageParticipant.role)
        .join(Message, Message.id == MessageParticipant.message_id)
        .where(Message.mailbox_id == mailbox_id, Message.sent_at <= at)
    ):
        message = messages.get(message_id)
        if message is None:
            continue
        if role == "to":
            message.to.append(address_id)
        elif role == "cc":
            message.cc.append(address_id)
        elif role == "bcc":
            message.bcc.append(address_id)
        elif role == "author":
            message.author = address_id
        elif role == "list":
            message.list_address = address_id
    return sorted(messages.values(), key=lambda m: (m.sent_at, m.id))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent.setdefault(x, x)
        if parent != x:
            parent = self.parent[x] = self.find(parent)
        return parent

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The older message (lower position) stays the root.
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


def build_threads(
    messages: list[MessageRow], person_of: dict[int, int], window: timedelta, ignore_people: set[int]
) -> dict[int, int]:
    """Return a thread root message id for every message id.

    A message joins the parent named by its In-Reply-To or References when that parent is
    stored. Other messages join the latest thread with the same normalised subject when its
    last message is within ``window`` and it shares a participant other than the owner.
    """
    position = {m.id: i for i, m in enumerate(messages)}
    by_message_id = {m.internet_message_id: m for m in messages if m.internet_message_id}
    uf = _UnionFind()
    for m in messages:
        uf.find(position[m.id])
        parent = by_message_id.get(m.in_reply_to) if m.in_reply_to else None
        if parent is not None:
            uf.union(position[parent.id], position[m.id])
    by_conversation: dict[str, int] = {}
    for m in messages:
        if m.conversation_hint:
            first = by_conversation.setdefault(m.conversation_hint, position[m.id])
            uf.union(first, position[m.id])

    open_threads: dict[str, tuple[int, datetime, set[int]]] = {}
    for m in messages:
        if m.subject_key is None:
            continue
        people = _people_of(m, person_of) - ignore_people
        root = uf.find(position[m.id])
        current = open_threads.get(m.subject_key)
        if current is not None and m.sent_at - current[1] <= window and people & current[2]:
            uf.union(current[0], root)
            root = uf.find(root)
            people = people | current[2]
        open_threads[m.subject_key] = (root, m.sent_at, people)
    return {m.id: messages[uf.find(position[m.id])].id for m in messages}


def _people_of(m: MessageRow, person_of: dict[int, int]) -> set[int]:
    ids = [m.from_id, m.author, *m.to, *m.cc, *m.bcc]
    return {person_of[a] for a in ids if a is not None and a in person_of}


def _compute(engine: Engine, mailbox: Mailbox, at: datetime, settings: Settings, store: bool = True) -> list[dict]:
    params = StrengthParams.from_settings(settings)
    window = timedelta(days=settings.thread_window_days)
    with Session(engine) as session:
        owner_addresses = set(
            session.execute(select(OwnerAddress.address).where(OwnerAddress.mailbox_id == mailbox.id)).scalars()
        )
        address_rows = session.execute(
            select(Address.id, Address.address, Address.person_id, Address.kind, Address.organisation_id).where(
                Address.team_id == mailbox.team_id
            )
        ).all()
        person_of = {row[0]: row[2] for row in address_rows}
        owner_address_ids = {row[0] for row in address_rows if row[1] in owner_addresses}
        owner_people = {person_of[a] for a in owner_address_ids}
        contact_address = {row[0] for row in address_rows if row[3] in CONTACT_KINDS and row[0] not in owner_address_ids}
        person_rows = session.execute(
            select(Person.id, Person.kind, Person.organisation_id).where(Person.team_id == mailbox.team_id)
        ).all()
        contact_people = {pid for pid, kind, _ in person_rows if kind in CONTACT_KINDS} - owner_people
        person_org = {pid: org for pid, _, org in person_rows}
        internal_orgs = identity.internal_organisation_ids(session, mailbox.team_id)

        messages = _load_messages(session, mailbox.id, at)
        thread_of = build_threads(messages, person_of, window, owner_people)

        stats: dict[int, PersonStats] = defaultdict(PersonStats)
        message_updates: list[dict] = []
        first_of_thread: dict[int, MessageRow] = {}
        # Per thread and person: (owner wrote to them, they wrote to the owner, a reply seen, last time)
        thread_pairs: dict[tuple[int, int], list] = {}

        for m in messages:
            thread = thread_of[m.id]
            first = first_of_thread.setdefault(thread, m)
            direction = _direction(m, owner_address_ids)
            sender_id = m.author if m.author is not None else m.from_id
            counted = not m.is_bulk and not m.is_auto_reply
            is_reply = False
            if first is not m and sender_id is not None:
                first_recipients = {person_of.get(a) for a in [*first.to, *first.cc, *first.bcc]}
                is_reply = person_of.get(sender_id) in first_recipients
            message_updates.append(
                {"b_id": m.id, "b_direction": direction, "b_thread": str(thread), "b_reply": is_reply}
            )
            if not counted:
                # The author of a list post becomes known to the owner, without a count.
                if m.list_address is not None and sender_id in contact_address:
                    pid = person_of[sender_id]
                    if pid in contact_people:
                        stats[pid].touch(m.sent_at, counted=False)
                continue
            recipients = max(1, len(m.to) + len(m.cc) + len(m.bcc))
            if direction == "out":
                for role_ids, is_cc in ((m.to, False), (m.cc, True), (m.bcc, False)):
                    for address_id in role_ids:
                        if address_id not in contact_address:
                            continue
                        pid = person_of[address_id]
                        if pid not in contact_people:
                            continue
                        s = stats[pid]
                        s.outbound += 1
                        s.decayed_out += message_weight("out", is_cc, recipients, params) * decay(
                            m.sent_at, at, params.half_life_days
                        )
                        s.last_out = m.sent_at if s.last_out is None or m.sent_at > s.last_out else s.last_out
                        s.touch(m.sent_at)
                        pair = thread_pairs.setdefault((thread, pid), [False, False, False, m.sent_at])
                        pair[0] = True
                        pair[2] = pair[2] or is_reply
                        pair[3] = m.sent_at
            elif direction == "in" and sender_id is not None and sender_id in contact_address:
                pid = person_of[sender_id]
                if pid not in contact_people:
                    continue
                # People copied alongside the owner are known to the owner, without a count.
                for address_id in (*m.to, *m.cc):
                    other = person_of.get(address_id)
                    if address_id in contact_address and other in contact_people and other != pid:
                        stats[other].touch(m.sent_at, counted=False)
                owner_in_to = any(a in owner_address_ids for a in m.to)
                s = stats[pid]
                s.inbound += 1
                s.decayed_in += message_weight("in", not owner_in_to and bool(m.cc), recipients, params) * decay(
                    m.sent_at, at, params.half_life_days
                )
                s.last_in = m.sent_at if s.last_in is None or m.sent_at > s.last_in else s.last_in
                s.touch(m.sent_at)
                pair = thread_pairs.setdefault((thread, pid), [False, False, False, m.sent_at])
                pair[1] = True
                pair[2] = pair[2] or is_reply
                pair[3] = m.sent_at

        for (thread, pid), (wrote, received, replied, last_at) in thread_pairs.items():
            if wrote and received and replied:
                s = stats[pid]
                s.two_way_threads += 1
                if s.last_two_way is None or last_at > s.last_two_way:
                    s.last_two_way = last_at

        now = utcnow()
        rows = []
        for pid, s in stats.items():
            org_id = person_org.get(pid)
            rows.append(
                {
                    "team_id": mailbox.team_id,
                    "mailbox_id": mailbox.id,
                    "person_id": pid,
                    "organisation_id": org_id,
                    "is_internal": org_id in internal_orgs,
                    "first_contact": s.first,
                    "last_inbound": s.last_in,
                    "last_outbound": s.last_out,
                    "last_two_way": s.last_two_way,
                    "inbound_count": s.inbound,
                    "outbound_count": s.outbound,
                    "two_way_threads": s.two_way_threads,
                    "meetings_count": 0,
                    "strength": round(combine(s.decayed_out, s.decayed_in, params), 4),
                    "cadence_days": cadence_days(s.days),
                    "computed_at": now,
                    "reference_time": at,
                }
            )
        if not store:
            return rows
        session.execute(delete(Relationship).where(Relationship.mailbox_id == mailbox.id))
        if rows:
            session.execute(insert(Relationship), rows)
        if message_updates:
            from sqlalchemy import bindparam

            table = Message.__table__
            session.connection().execute(
                table.update()
                .where(table.c.id == bindparam("b_id"))
                .values(
                    direction=bindparam("b_direction"),
                    thread_key=bindparam("b_thread"),
                    is_reply=bindparam("b_reply"),
                ),
                message_updates,
            )
        session.commit()
    log.info("mailbox %s: %d relationships as of %s", mailbox.id, len(rows), at.isoformat())
    return rows


def _direction(m: MessageRow, owner_address_ids: set[int]) -> str:
    """Mail from the owner is outbound; mail anyone else sent that reached the mailbox is inbound.

    Mail that reached the owner without naming them (Bcc, a list) is inbound too, and counts
    with the Cc weight. Mail from someone else kept in a sent folder is neither.
    """
    if m.from_id is not None and m.from_id in owner_address_ids:
        return "out"
    if any(a in owner_address_ids for a in (*m.to, *m.cc, *m.bcc)) or m.folder_role != "sent":
        return "in"
    return "other"


def cadence_days(days: set) -> float | None:
    """Return the median gap in days between distinct days of contact, given three or more."""
    if len(days) < 3:
        return None
    ordered = sorted(days)
    gaps = [(b - a).days for a, b in zip(ordered, ordered[1:])]
    return float(statistics.median(gaps))


def count_summary(engine: Engine, mailbox_id: int) -> Counter:
    with Session(engine) as session:
        counts = Counter()
        counts["relationships"] = session.execute(
            select(func.count()).select_from(Relationship).where(Relationship.mailbox_id == mailbox_id)
        ).scalar_one()
        counts["two_way"] = session.execute(
            select(func.count())
            .select_from(Relationship)
            .where(Relationship.mailbox_id == mailbox_id, Relationship.two_way_threads > 0)
        ).scalar_one()
        counts["organisations"] = session.execute(
            select(func.count(func.distinct(Relationship.organisation_id))).where(
                Relationship.mailbox_id == mailbox_id, Relationship.organisation_id.is_not(None)
            )
        ).scalar_one()
        return counts
