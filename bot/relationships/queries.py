"""Read-only queries over relationships, shared by the CLI, Slack and the console."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime

from rapidfuzz import fuzz, process
from sqlalchemy import func, or_, select
from sqlmodel import Session

from bot.errors import NotFoundError
from bot.relationships.matching import CompanyIndex
from bot.relationships.views import ContactView, MailboxStatus, OrgView, OwnerHit, WhoKnowsResult
from bot.storage.models import (
    LOCAL_TEAM,
    Address,
    FolderState,
    Mailbox,
    Message,
    Organisation,
    OrganisationAlias,
    OrganisationDomain,
    OwnerAddress,
    Person,
    Relationship,
)
from bot.timeutil import as_utc

# A relationship is "going cold" when it was at least this strong and has been silent for
# twice its usual cadence, and never less than the minimum silence below.
COLD_MIN_STRENGTH = 30.0
COLD_MIN_SILENCE_DAYS = 30.0
COLD_DEFAULT_SILENCE_DAYS = 60.0
CONTACT_FUZZY_CUTOFF = 80.0


def get_mailbox(session: Session, owner_address: str, team_id: str = LOCAL_TEAM) -> Mailbox:
    """Find a mailbox by any of its owner's addresses."""
    address = owner_address.strip().lower()
    mailbox = session.execute(
        select(Mailbox)
        .join(OwnerAddress, OwnerAddress.mailbox_id == Mailbox.id)
        .where(Mailbox.team_id == team_id, OwnerAddress.address == address)
    ).scalars().first()
    if mailbox is None:
        raise NotFoundError(
            f"no mailbox for {owner_address!r}; import one with `crm-bot import PATH --owner {owner_address}`"
        )
    return mailbox


_NAME_SUFFIXES = {"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "phd", "ph.d.", "md", "esq", "esq."}


def display_name(name: str | None) -> str | None:
    """Show 'Surname, Given' as 'Given Surname'; keep 'Name, Jr' and other names as they are."""
    if not name or name.count(",") != 1:
        return name
    surname, given = (part.strip() for part in name.split(","))
    if not surname or not given or given.lower() in _NAME_SUFFIXES or "@" in name:
        return name
    return f"{given} {surname}"


def _name_from_address(address: str) -> str:
    local = address.split("@", 1)[0]
    parts = [p for p in re.split(r"[._\-]+", local) if p and not p.isdigit()]
    return " ".join(p.capitalize() for p in parts) or address


def _reference(relationship: Relationship, now: datetime | None) -> datetime | None:
    return as_utc(now) if now is not None else as_utc(relationship.reference_time)


def _days_between(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (as_utc(later) - as_utc(earlier)).total_seconds() / 86400.0)


def _last_contact(relationship: Relationship) -> datetime | None:
    times = [t for t in (relationship.last_inbound, relationship.last_outbound) if t is not None]
    return as_utc(max(times)) if times else None


def describe_gap(days: float | None) -> str:
    if days is None:
        return "never"
    if days < 1:
        return "today"
    if days < 1.5:
        return "1 day ago"
    if days < 14:
        return f"{days:.0f} days ago"
    if days < 60:
        return f"{days / 7:.0f} weeks ago"
    if days < 730:
        return f"{days / 30.4:.0f} months ago"
    return f"{days / 365:.1f} years ago"


def describe_cadence(days: float | None) -> str | None:
    if days is None:
        return None
    if days <= 1.5:
        return "almost daily"
    if days < 10:
        return f"every {days:.0f} days"
    if days < 60:
        weeks = round(days / 7)
        return "every week" if weeks == 1 else f"every {weeks} weeks"
    months = round(days / 30.4)
    return "every month" if months == 1 else f"every {months} months"


def strength_reason(relationship: Relationship, now: datetime | None) -> str:
    """Explain a relationship's strength in one line."""
    ref = _reference(relationship, now)
    parts = []
    if relationship.two_way_threads:
        threads = "thread" if relationship.two_way_threads == 1 else "threads"
        parts.append(f"{relationship.two_way_threads} two-way {threads}")
    elif relationship.inbound_count and not relationship.outbound_count:
        parts.append("they write, you never answered")
    elif relationship.outbound_count and not relationship.inbound_count:
        parts.append("you write, they never answered")
    parts.append(f"{relationship.outbound_count} sent, {relationship.inbound_count} received")
    text = ", ".join(parts)
    last = _last_contact(relationship)
    text += f", last {describe_gap(_days_between(ref, last))}"
    cadence = describe_cadence(relationship.cadence_days)
    if cadence:
        text += f"; you usually write {cadence}"
    return text


def _contact_views(
    session: Session, relationships: list[Relationship], now: datetime | None
) -> list[ContactView]:
    if not relationships:
        return []
    person_ids = [r.person_id for r in relationships]
    people = {p.id: p for p in session.execute(select(Person).where(Person.id.in_(person_ids))).scalars()}
    addresses: dict[int, list[str]] = defaultdict(list)
    for person_id, address in session.execute(
        select(Address.person_id, Address.address)
        .where(Address.person_id.in_(person_ids))
        .order_by(Address.last_seen.desc().nulls_last(), Address.id)
    ):
        addresses[person_id].append(address)
    org_ids = {r.organisation_id for r in relationships if r.organisation_id is not None}
    orgs = {}
    if org_ids:
        orgs = {o.id: o.name for o in session.execute(select(Organisation).where(Organisation.id.in_(org_ids))).scalars()}
    views = []
    for r in relationships:
        person = people.get(r.person_id)
        own_addresses = addresses.get(r.person_id, [])
        name = display_name(person.display_name) if person and person.display_name else None
        if not name and own_addresses:
            name = _name_from_address(own_addresses[0])
        ref = _reference(r, now)
        views.append(
            ContactView(
                person_id=r.person_id,
                name=name,
                addresses=own_addresses,
                organisation=orgs.get(r.organisation_id),
                organisation_id=r.organisation_id,
                is_internal=r.is_internal,
                strength=round(r.strength, 1),
                inbound=r.inbound_count,
                outbound=r.outbound_count,
                two_way_threads=r.two_way_threads,
                first_contact=as_utc(r.first_contact),
                last_inbound=as_utc(r.last_inbound),
                last_outbound=as_utc(r.last_outbound),
                last_two_way=as_utc(r.last_two_way),
                cadence_days=r.cadence_days,
                days_since_two_way=_days_between(ref, r.last_two_way),
                reason=strength_reason(r, now),
            )
        )
    return views


def contact_views(session: Session, relationships: list[Relationship], now: datetime | None) -> list[ContactView]:
    """Turn relationship rows, stored or transient, into views in the order given."""
    return _contact_views(session, relationships, now)


def top_contacts(
    session: Session,
    mailbox_id: int,
    *,
    limit: int | None = 10,
    now: datetime | None = None,
    include_internal: bool = True,
) -> list[ContactView]:
    """Relationships of a mailbox, strongest first."""
    query = select(Relationship).where(Relationship.mailbox_id == mailbox_id)
    if not include_internal:
        query = query.where(Relationship.is_internal.is_(False))
    query = query.order_by(
        Relationship.strength.desc(),
        (Relationship.inbound_count + Relationship.outbound_count).desc(),
        Relationship.person_id,
    )
    if limit is not None:
        query = query.limit(limit)
    return _contact_views(session, list(session.execute(query).scalars()), now)


def find_contacts(
    session: Session, mailbox_id: int, query: str, *, limit: int = 5, now: datetime | None = None
) -> list[ContactView]:
    """Relationships whose name or address matches ``query``; exact text first, then fuzzy names."""
    text = query.strip().lower()
    if not text:
        return []
    rows = session.execute(
        select(Relationship, Person.display_name, Address.address)
        .join(Person, Person.id == Relationship.person_id)
        .join(Address, Address.person_id == Person.id)
        .where(Relationship.mailbox_id == mailbox_id)
    ).all()
    best: dict[int, tuple[float, Relationship]] = {}
    choices: dict[int, str] = {}
    for relationship, name, address in rows:
        label = (name or _name_from_address(address)).lower()
        choices[relationship.person_id] = label
        if text in address or text in label:
            score = 100.0 if text in (address, label) else 90.0
            current = best.get(relationship.person_id)
            if current is None or current[0] < score:
                best[relationship.person_id] = (score, relationship)
    if not best and choices:
        by_person = {r.person_id: r for r, _, _ in rows}
        for label, score, person_id in process.extract(
            text, choices, scorer=fuzz.WRatio, limit=limit, score_cutoff=CONTACT_FUZZY_CUTOFF
        ):
            best[person_id] = (score, by_person[person_id])
    ranked = sorted(best.values(), key=lambda pair: (-pair[0], -pair[1].strength))
    return _contact_views(session, [r for _, r in ranked[:limit]], now)


def going_cold(
    session: Session,
    mailbox_id: int,
    *,
    now: datetime | None = None,
    limit: int = 10,
    include_internal: bool = False,
) -> list[ContactView]:
    """Strong two-way relationships silent well beyond their usual cadence.

    Colleagues of the owner's own organisation are left out unless ``include_internal``.
    """
    query = select(Relationship).where(
        Relationship.mailbox_id == mailbox_id,
        Relationship.two_way_threads > 0,
    )
    if not include_internal:
        query = query.where(Relationship.is_internal.is_(False))
    cold: list[tuple[float, Relationship]] = []
    for relationship in session.execute(query).scalars():
        ref = _reference(relationship, now)
        silence = _days_between(ref, _last_contact(relationship))
        if silence is None:
            continue
        if relationship.cadence_days:
            threshold = max(COLD_MIN_SILENCE_DAYS, 2 * relationship.cadence_days)
        else:
            threshold = COLD_DEFAULT_SILENCE_DAYS
        # Strength decays with silence, so judge it as it stood at the last contact.
        peak = _strength_at_last_contact(relationship, silence)
        if silence > threshold and peak >= COLD_MIN_STRENGTH:
            cold.append((peak, relationship))
    cold.sort(key=lambda pair: -pair[0])
    return _contact_views(session, [r for _, r in cold[:limit]], now)


def _strength_at_last_contact(relationship: Relationship, silence_days: float) -> float:
    from bot.config import get_settings

    half_life = get_settings().strength_half_life_days
    # strength = 100 * (1 - exp(-raw)), and raw halves every half-life of silence.
    import math

    remaining = max(1e-9, 1.0 - relationship.strength / 100.0)
    raw_now = -math.log(remaining)
    raw_then = raw_now * (2.0 ** (silence_days / half_life))
    return 100.0 * (1.0 - math.exp(-raw_then))


def _org_views(session: Session, mailbox_id: int, org_ids: list[int] | None = None) -> list[OrgView]:
    query = (
        select(
            Organisation.id,
            Organisation.name,
            Organisation.is_internal,
            func.count(Relationship.id),
            func.max(Relationship.strength),
            func.max(Relationship.last_inbound),
            func.max(Relationship.last_outbound),
        )
        .join(Relationship, Relationship.organisation_id == Organisation.id)
        .where(
            Relationship.mailbox_id == mailbox_id,
            or_(Relationship.inbound_count > 0, Relationship.outbound_count > 0),
        )
        .group_by(Organisation.id, Organisation.name, Organisation.is_internal)
    )
    if org_ids is not None:
        query = query.where(Organisation.id.in_(org_ids))
    rows = session.execute(query).all()
    domains = _domains(session, [row[0] for row in rows])
    views = []
    for org_id, name, internal, people, best, last_in, last_out in rows:
        last = max([as_utc(t) for t in (last_in, last_out) if t is not None], default=None)
        views.append(OrgView(org_id, name, domains.get(org_id, []), internal, people, round(best or 0.0, 1), last))
    views.sort(key=lambda v: (-v.best_strength, -v.people, v.name))
    return views


def _domains(session: Session, org_ids: list[int]) -> dict[int, list[str]]:
    result: dict[int, list[str]] = defaultdict(list)
    if not org_ids:
        return result
    for org_id, domain in session.execute(
        select(OrganisationDomain.organisation_id, OrganisationDomain.domain)
        .where(OrganisationDomain.organisation_id.in_(org_ids))
        .order_by(OrganisationDomain.id)
    ):
        result[org_id].append(domain)
    return result


def organisations(session: Session, mailbox_id: int, *, limit: int | None = None) -> list[OrgView]:
    """Organisations where the owner knows people, strongest first."""
    views = _org_views(session, mailbox_id)
    return views[:limit] if limit is not None else views


def _company_index(session: Session, team_id: str, org_ids: set[int] | None = None) -> CompanyIndex:
    names: dict[int, list[str]] = defaultdict(list)
    query = select(Organisation.id, Organisation.name).where(Organisation.team_id == team_id)
    for org_id, name in session.execute(query):
        if org_ids is None or org_id in org_ids:
            names[org_id].append(name)
    for org_id, alias in session.execute(
        select(OrganisationAlias.organisation_id, OrganisationAlias.alias).where(OrganisationAlias.team_id == team_id)
    ):
        if org_id in names:
            names[org_id].append(alias)
    domains = _domains(session, list(names))
    return CompanyIndex([(org_id, org_names, domains.get(org_id, [])) for org_id, org_names in names.items()])


def org_people(
    session: Session, mailbox_id: int, query: str, *, now: datetime | None = None
) -> tuple[OrgView | None, list[ContactView]]:
    """Find the best-matching organisation among the owner's, and return it with the owner's people there."""
    mailbox = session.get(Mailbox, mailbox_id)
    known = set(
        session.execute(
            select(Relationship.organisation_id)
            .where(Relationship.mailbox_id == mailbox_id, Relationship.organisation_id.is_not(None))
            .distinct()
        ).scalars()
    )
    if not known:
        return None, []
    matches = _company_index(session, mailbox.team_id, known).search(query, limit=1)
    if not matches:
        return None, []
    org_id = matches[0].org_id
    views = _org_views(session, mailbox_id, [org_id])
    people = session.execute(
        select(Relationship)
        .where(Relationship.mailbox_id == mailbox_id, Relationship.organisation_id == org_id)
        .order_by(Relationship.strength.desc())
    ).scalars()
    return (views[0] if views else None), _contact_views(session, list(people), now)


def who_knows(
    session: Session,
    query: str,
    *,
    team_id: str = LOCAL_TEAM,
    now: datetime | None = None,
    limit: int = 10,
    mailbox_ids: set[int] | None = None,
) -> list[WhoKnowsResult]:
    """Organisations matching ``query`` and, for each, every owner who knows people there.

    Only external organisations are searched: the owners' own organisation is internal.
    ``mailbox_ids`` limits the owners searched (for example to those who opted in).
    """
    rel_query = select(Relationship.organisation_id).where(
        Relationship.team_id == team_id,
        Relationship.is_internal.is_(False),
        Relationship.organisation_id.is_not(None),
    )
    if mailbox_ids is not None:
        rel_query = rel_query.where(Relationship.mailbox_id.in_(mailbox_ids))
    known = set(session.execute(rel_query.distinct()).scalars())
    if not known:
        return []
    matches = _company_index(session, team_id, known).search(query, limit=limit)
    if not matches:
        return []
    org_ids = [m.org_id for m in matches]
    orgs = {o.id: o for o in session.execute(select(Organisation).where(Organisation.id.in_(org_ids))).scalars()}
    domains = _domains(session, org_ids)
    owners = {
        m.id: m.owner_address
        for m in session.execute(select(Mailbox).where(Mailbox.team_id == team_id)).scalars()
    }
    results = []
    for match in matches:
        rel_rows = session.execute(
            select(Relationship)
            .where(
                Relationship.organisation_id == match.org_id,
                Relationship.is_internal.is_(False),
                or_(Relationship.inbound_count > 0, Relationship.outbound_count > 0),
            )
            .order_by(Relationship.strength.desc())
        ).scalars().all()
        by_owner: dict[int, list[Relationship]] = defaultdict(list)
        for r in rel_rows:
            if mailbox_ids is None or r.mailbox_id in mailbox_ids:
                by_owner[r.mailbox_id].append(r)
        hits = []
        for mailbox_id, rels in by_owner.items():
            last = max((t for t in (_last_contact(r) for r in rels) if t is not None), default=None)
            hits.append(
                OwnerHit(
                    mailbox_id=mailbox_id,
                    owner=owners.get(mailbox_id, str(mailbox_id)),
                    strength=round(max(r.strength for r in rels), 1),
                    last_contact=last,
                    contacts=len(rels),
                    people=_contact_views(session, rels, now),
                )
            )
        if not hits:
            continue
        hits.sort(key=lambda h: (-h.strength, h.owner))
        org = orgs[match.org_id]
        results.append(
            WhoKnowsResult(
                organisation_id=org.id,
                organisation=org.name,
                domains=domains.get(org.id, []),
                score=round(match.score, 1),
                owners=hits,
            )
        )
    return results


def mailbox_status(session: Session, mailbox_id: int) -> MailboxStatus:
    """Counts and sync health of a mailbox."""
    mailbox = session.get(Mailbox, mailbox_id)
    if mailbox is None:
        raise NotFoundError(f"no mailbox with id {mailbox_id}")
    messages, first, last = session.execute(
        select(func.count(Message.id), func.min(Message.sent_at), func.max(Message.sent_at)).where(
            Message.mailbox_id == mailbox_id
        )
    ).one()
    people, two_way, orgs = session.execute(
        select(
            func.count(Relationship.id),
            func.count(Relationship.id).filter(Relationship.two_way_threads > 0),
            func.count(func.distinct(Relationship.organisation_id)),
        ).where(Relationship.mailbox_id == mailbox_id)
    ).one()
    folders = [
        {
            "folder": state.folder_key,
            "role": state.folder_role,
            "items_stored": state.items_stored,
            "updated_at": as_utc(state.updated_at),
        }
        for state in session.execute(
            select(FolderState).where(FolderState.mailbox_id == mailbox_id).order_by(FolderState.folder_key)
        ).scalars()
    ]
    return MailboxStatus(
        mailbox_id=mailbox.id,
        owner=mailbox.owner_address,
        source_kind=mailbox.source_kind,
        messages=messages,
        people=people,
        organisations=orgs,
        two_way_relationships=two_way,
        first_message=as_utc(first),
        last_message=as_utc(last),
        last_import_at=as_utc(mailbox.last_import_at),
        last_sync_ok_at=as_utc(mailbox.last_sync_ok_at),
        last_sync_error=mailbox.last_sync_error,
        last_sync_error_at=as_utc(mailbox.last_sync_error_at),
        folders=folders,
    )


def awaiting_replies(
    session: Session, mailbox_id: int, *, now: datetime, threshold_days: float = 3.0
) -> list[tuple[ContactView, str | None, datetime]]:
    """List threads where the owner wrote last and a recipient has not replied for ``threshold_days``.

    Returns (the person, the Message-ID of the thread's first message, when the owner wrote),
    oldest first. Bulk mail, auto-replies and the owner's own colleagues are left out.
    """
    from bot.storage.models import MessageParticipant

    now = as_utc(now)
    rows = session.execute(
        select(Message.id, Message.thread_key, Message.direction, Message.sent_at, Message.from_address_id, Message.internet_message_id)
        .where(
            Message.mailbox_id == mailbox_id,
            Message.is_bulk.is_(False),
            Message.is_auto_reply.is_(False),
            Message.sent_at <= now,
        )
        .order_by(Message.sent_at, Message.id)
    ).all()
    person_of = dict(
        session.execute(
            select(Address.id, Address.person_id).join(Message, Message.from_address_id == Address.id).where(
                Message.mailbox_id == mailbox_id
            )
        ).all()
    )
    first_id = {}
    by_thread: dict[str, list] = defaultdict(list)
    for row in rows:
        first_id.setdefault(row.thread_key, row.internet_message_id)
        by_thread[row.thread_key].append(row)
    waiting: dict[tuple[str, int], datetime] = {}
    out_ids = [row.id for row in rows if row.direction == "out"]
    recipients: dict[int, list[int]] = defaultdict(list)
    if out_ids:
        for message_id, person_id in session.execute(
            select(MessageParticipant.message_id, Address.person_id)
            .join(Address, Address.id == MessageParticipant.address_id)
            .where(MessageParticipant.message_id.in_(out_ids), MessageParticipant.role == "to")
        ):
            recipients[message_id].append(person_id)
    for thread, messages in by_thread.items():
        for row in messages:
            if row.direction == "out":
                for person_id in recipients.get(row.id, []):
                    waiting[(thread, person_id)] = row.sent_at
            elif row.direction == "in" and row.from_address_id is not None:
                waiting.pop((thread, person_of.get(row.from_address_id)), None)
    relationships = {
        r.person_id: r
        for r in session.execute(
            select(Relationship).where(Relationship.mailbox_id == mailbox_id, Relationship.is_internal.is_(False))
        ).scalars()
    }
    found = []
    for (thread, person_id), sent_at in waiting.items():
        if person_id in relationships and (now - as_utc(sent_at)).total_seconds() >= threshold_days * 86400:
            found.append((person_id, first_id.get(thread), as_utc(sent_at)))
    found.sort(key=lambda item: item[2])
    views = {v.person_id: v for v in _contact_views(session, [relationships[p] for p, _, _ in found], now)}
    return [(views[p], message_id, sent_at) for p, message_id, sent_at in found]
