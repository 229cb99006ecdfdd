"""Organisations from domains, and people merged from addresses on strong evidence.

Two addresses become one person only when:

* they carry the same normalised full name (two or more name words) and sit in the same
  organisation (reason ``same-name-same-org``);
* a name seen at one company appears, later and for the first time, at another company,
  and exactly one person of the team carries that name: the person moved, and a role
  change is recorded (reason ``moved``);
* a free-mail address carries the full name of exactly one person of the team
  (reason ``personal-address``);
* a user merges them (reason ``explicit``).

Every merge is stored in ``PersonMerge`` with the addresses it moved, so ``unmerge``
restores the previous people, and an undone merge is never made again automatically.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.config import Settings
from bot.errors import InputError, NotFoundError
from bot.relationships.addresses import normalize_person_name
from bot.relationships.domains import DomainPolicy, organisation_name_from_domain
from bot.relationships.matching import normalize_company
from bot.storage.models import (
    Address,
    Employment,
    Mailbox,
    Message,
    MessageParticipant,
    Organisation,
    OrganisationDomain,
    OwnerAddress,
    Person,
    PersonMerge,
    RoleChange,
)
from bot.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

_LATEST = datetime.max.replace(tzinfo=timezone.utc)

# Names repeat across addresses and runs, so their keys are cached.
name_key = lru_cache(maxsize=200_000)(normalize_person_name)


@dataclass
class _Addr:
    id: int
    address: str
    domain: str
    name: str | None
    person_id: int
    kind: str
    is_freemail: bool
    organisation_id: int | None
    stored_last_seen: datetime | None
    first_seen: datetime | None = None
    last_seen: datetime | None = None


def owner_domain_policy(settings: Settings, owner_addresses) -> DomainPolicy:  # type: ignore[no-untyped-def]
    """Build a domain policy whose internal domains are the owners' own, free-mail excluded.

    An owner's personal address at a free-mail provider makes that provider neither
    internal nor a company.
    """
    freemail = settings.extra_freemail()
    plain = DomainPolicy(freemail_extra=freemail, internal=())
    internal = set(settings.extra_internal())
    for address in owner_addresses:
        domain = address.rsplit("@", 1)[1]
        if not plain.is_freemail(domain):
            internal.add(domain)
    return DomainPolicy(freemail_extra=freemail, internal=internal)


def team_policy(session: Session, team_id: str, settings: Settings) -> DomainPolicy:
    """Build the domain policy of a team: free-mail extras and the owners' own domains."""
    owners = session.execute(select(OwnerAddress.address).where(OwnerAddress.team_id == team_id)).scalars().all()
    return owner_domain_policy(settings, owners)


def internal_organisation_ids(session: Session, team_id: str) -> set[int]:
    return set(
        session.execute(
            select(Organisation.id).where(Organisation.team_id == team_id, Organisation.is_internal.is_(True))
        ).scalars()
    )


def resolve_team(engine: Engine, team_id: str, settings: Settings) -> None:
    """Attach organisations to addresses and people, then apply the automatic merges."""
    with Session(engine) as session:
        policy = team_policy(session, team_id, settings)
        addresses = _load_addresses(session, team_id)
        _assign_organisations(session, team_id, policy, addresses)
        _merge_people(session, team_id, addresses)
        _update_people(session, team_id, addresses)
        session.commit()


def _load_addresses(session: Session, team_id: str) -> dict[int, _Addr]:
    addresses = {
        row[0]: _Addr(*row)
        for row in session.execute(
            select(
                Address.id,
                Address.address,
                Address.domain,
                Address.display_name,
                Address.person_id,
                Address.kind,
                Address.is_freemail,
                Address.organisation_id,
                Address.last_seen,
            ).where(Address.team_id == team_id)
        )
    }
    # When each address was first and last seen in mail other than automatic replies.
    for address_id, first, last in session.execute(
        select(MessageParticipant.address_id, func.min(Message.sent_at), func.max(Message.sent_at))
        .join(Message, Message.id == MessageParticipant.message_id)
        .where(Message.team_id == team_id, Message.is_auto_reply.is_(False))
        .group_by(MessageParticipant.address_id)
    ):
        entry = addresses.get(address_id)
        if entry is not None:
            entry.first_seen = as_utc(first)
            entry.last_seen = as_utc(last)
    return addresses


def _assign_organisations(
    session: Session, team_id: str, policy: DomainPolicy, addresses: dict[int, _Addr]
) -> None:
    orgs_by_domain = {
        domain: org_id
        for domain, org_id in session.execute(
            select(OrganisationDomain.domain, OrganisationDomain.organisation_id).where(
                OrganisationDomain.team_id == team_id
            )
        )
    }
    internal_ids = internal_organisation_ids(session, team_id)
    changes: list[tuple[int, int | None]] = []
    for entry in addresses.values():
        wanted: int | None = None
        if entry.kind in ("person", "role") and not entry.is_freemail and entry.last_seen is not None:
            info = policy.classify(entry.address)
            if info.is_freemail:
                entry.is_freemail = True
            elif info.registrable:
                # Each registrable domain is one organisation; the owners' own domains are
                # flagged internal, including a domain first seen as a company.
                wanted = orgs_by_domain.get(info.registrable)
                if wanted is None:
                    wanted = _create_org(session, team_id, info.registrable, info.is_internal)
                    orgs_by_domain[info.registrable] = wanted
                    if info.is_internal:
                        internal_ids.add(wanted)
                elif info.is_internal and wanted not in internal_ids:
                    session.execute(update(Organisation).where(Organisation.id == wanted).values(is_internal=True))
                    internal_ids.add(wanted)
        if wanted != entry.organisation_id:
            entry.organisation_id = wanted
            changes.append((entry.id, wanted))
    if changes:
        table = Address.__table__
        session.connection().execute(
            table.update().where(table.c.id == bindparam("b_id")).values(organisation_id=bindparam("b_org")),
            [{"b_id": address_id, "b_org": org_id} for address_id, org_id in changes],
        )
    seen = [
        {"b_id": entry.id, "b_seen": entry.last_seen}
        for entry in addresses.values()
        if entry.last_seen is not None and entry.last_seen != entry.stored_last_seen
    ]
    if seen:
        table = Address.__table__
        session.connection().execute(
            table.update().where(table.c.id == bindparam("b_id")).values(last_seen=bindparam("b_seen")), seen
        )


def _create_org(session: Session, team_id: str, domain: str, internal: bool) -> int:
    name = organisation_name_from_domain(domain)
    org = Organisation(
        team_id=team_id, name=name, normalized_name=normalize_company(name) or name.lower(), is_internal=internal
    )
    session.add(org)
    session.flush()
    session.add(OrganisationDomain(team_id=team_id, organisation_id=org.id, domain=domain))
    session.flush()
    return org.id


@dataclass
class _PersonView:
    id: int
    name_key: str | None
    addresses: list[_Addr]

    @property
    def org_id(self) -> int | None:
        """The organisation of the address seen most recently."""
        with_org = [a for a in self.addresses if a.organisation_id is not None and a.last_seen is not None]
        if not with_org:
            return None
        return max(with_org, key=lambda a: a.last_seen).organisation_id

    @property
    def first_seen(self) -> datetime | None:
        seen = [a.first_seen for a in self.addresses if a.first_seen]
        return min(seen) if seen else None

    @property
    def last_seen(self) -> datetime | None:
        seen = [a.last_seen for a in self.addresses if a.last_seen]
        return max(seen) if seen else None

    @property
    def only_freemail(self) -> bool:
        return bool(self.addresses) and all(a.is_freemail for a in self.addresses)


def _people(addresses: dict[int, _Addr], exclude: set[int]) -> dict[int, _PersonView]:
    people: dict[int, _PersonView] = {}
    for entry in addresses.values():
        if entry.kind not in ("person", "role") or entry.person_id in exclude:
            continue
        view = people.setdefault(entry.person_id, _PersonView(entry.person_id, None, []))
        view.addresses.append(entry)
    for view in people.values():
        keys = [name_key(a.name) for a in view.addresses]
        keys = [k for k in keys if k]
        view.name_key = max(set(keys), key=keys.count) if keys else None
    return people


def _merge_people(session: Session, team_id: str, addresses: dict[int, _Addr]) -> None:
    owner_addresses = set(
        session.execute(select(OwnerAddress.address).where(OwnerAddress.team_id == team_id)).scalars()
    )
    owner_people = {a.person_id for a in addresses.values() if a.address in owner_addresses}
    blocked = {
        frozenset((kept, merged))
        for kept, merged in session.execute(
            select(PersonMerge.kept_person_id, PersonMerge.merged_person_id).where(
                PersonMerge.team_id == team_id, PersonMerge.undone_at.is_not(None)
            )
        )
    }
    internal = internal_organisation_ids(session, team_id)

    def allowed(a: int, b: int) -> bool:
        return frozenset((a, b)) not in blocked

    # Same name in the same organisation.
    people = _people(addresses, owner_people)
    groups: dict[tuple[str, int], list[_PersonView]] = defaultdict(list)
    for view in people.values():
        if view.name_key and view.org_id is not None:
            groups[(view.name_key, view.org_id)].append(view)
    for group in groups.values():
        group.sort(key=lambda v: v.id)
        kept = group[0]
        for other in group[1:]:
            if allowed(kept.id, other.id):
                _merge(session, team_id, kept.id, other.id, addresses, "same-name-same-org", None)

    # A name that appears at a new company: the person moved.
    people = _people(addresses, owner_people)
    by_name: dict[str, list[_PersonView]] = defaultdict(list)
    for view in people.values():
        if view.name_key and not view.only_freemail:
            by_name[view.name_key].append(view)
    for views in by_name.values():
        if len(views) != 2:
            continue
        old, new = sorted(views, key=lambda v: v.first_seen or _LATEST)
        if (
            old.org_id is None
            or new.org_id is None
            or old.org_id == new.org_id
            or old.org_id in internal
            or new.org_id in internal
            or not old.last_seen
            or not new.first_seen
            or new.first_seen < old.last_seen
            or not allowed(old.id, new.id)
        ):
            continue
        from_org = old.org_id
        merge_id = _merge(session, team_id, old.id, new.id, addresses, "moved", None)
        if merge_id is not None:
            _record_role_change(session, team_id, old.id, from_org, new.org_id, new.first_seen)

    # A free-mail address under the full name of exactly one known person.
    people = _people(addresses, owner_people)
    by_name = defaultdict(list)
    for view in people.values():
        if view.name_key:
            by_name[view.name_key].append(view)
    for views in by_name.values():
        personal = [v for v in views if v.only_freemail]
        work = [v for v in views if not v.only_freemail]
        if len(work) == 1 and personal:
            for view in personal:
                if allowed(work[0].id, view.id):
                    _merge(session, team_id, work[0].id, view.id, addresses, "personal-address", None)


def _merge(
    session: Session,
    team_id: str,
    kept_id: int,
    merged_id: int,
    addresses: dict[int, _Addr],
    reason: str,
    actor: str | None,
) -> int | None:
    if kept_id == merged_id:
        return None
    moved = [a for a in addresses.values() if a.person_id == merged_id]
    if not moved:
        return None
    for entry in moved:
        entry.person_id = kept_id
    session.execute(update(Address).where(Address.person_id == merged_id).values(person_id=kept_id))
    merged = session.get(Person, merged_id)
    kept = session.get(Person, kept_id)
    merged.merged_into_id = kept_id
    if kept.display_name is None and merged.display_name:
        kept.display_name = merged.display_name
    session.add_all([merged, kept])
    record = PersonMerge(
        team_id=team_id,
        kept_person_id=kept_id,
        merged_person_id=merged_id,
        merged_name=merged.display_name,
        moved_addresses=[a.address for a in moved],
        reason=reason,
        created_at=utcnow(),
        created_by=actor,
    )
    session.add(record)
    session.flush()
    log.info("merged person %s into %s (%s): %s", merged_id, kept_id, reason, ", ".join(a.address for a in moved))
    return record.id


def _record_role_change(
    session: Session, team_id: str, person_id: int, from_org: int, to_org: int, seen_at: datetime | None
) -> None:
    exists = session.execute(
        select(RoleChange.id).where(
            RoleChange.person_id == person_id,
            RoleChange.from_organisation_id == from_org,
            RoleChange.to_organisation_id == to_org,
        )
    ).first()
    if exists:
        return
    session.add(
        RoleChange(
            team_id=team_id,
            person_id=person_id,
            from_organisation_id=from_org,
            to_organisation_id=to_org,
            seen_at=seen_at or utcnow(),
        )
    )
    log.info("person %s moved from organisation %s to %s", person_id, from_org, to_org)


def _best_name(view: _PersonView, current: str | None) -> str | None:
    """Pick the name most of a person's addresses carry; on a tie keep the current one."""
    counts: dict[str, int] = defaultdict(int)
    for entry in view.addresses:
        if entry.name:
            counts[entry.name] += 1
    if not counts:
        return current
    top = max(counts.values())
    tied = sorted(name for name, count in counts.items() if count == top)
    return current if current in tied else tied[0]


def _update_people(session: Session, team_id: str, addresses: dict[int, _Addr]) -> None:
    """Store each person's current organisation, best name and employment history.

    Only rows whose values change are written, in one statement per kind of change.
    """
    people = _people(addresses, set())
    current = {
        row[0]: row[1:]
        for row in session.execute(
            select(Person.id, Person.organisation_id, Person.normalized_name, Person.display_name).where(
                Person.team_id == team_id
            )
        )
    }
    employments = {
        (person_id, org_id): (row_id, as_utc(first), as_utc(last))
        for row_id, person_id, org_id, first, last in session.execute(
            select(
                Employment.id, Employment.person_id, Employment.organisation_id, Employment.first_seen, Employment.last_seen
            ).where(Employment.team_id == team_id)
        )
    }
    person_updates: list[dict] = []
    employment_updates: list[dict] = []
    employment_inserts: list[dict] = []
    for view in people.values():
        best_name = _best_name(view, current.get(view.id, (None, None, None))[2])
        wanted = (view.org_id, view.name_key, best_name)
        if current.get(view.id) != wanted:
            person_updates.append({"b_id": view.id, "b_org": wanted[0], "b_key": wanted[1], "b_name": wanted[2]})
        spans: dict[int, list[datetime]] = defaultdict(list)
        for entry in view.addresses:
            if entry.organisation_id is not None and entry.first_seen and entry.last_seen:
                spans[entry.organisation_id] += [entry.first_seen, entry.last_seen]
        for org_id, times in spans.items():
            first, last = min(times), max(times)
            existing = employments.get((view.id, org_id))
            if existing is None:
                employment_inserts.append(
                    {
                        "team_id": team_id,
                        "person_id": view.id,
                        "organisation_id": org_id,
                        "first_seen": first,
                        "last_seen": last,
                        "source": "mail",
                    }
                )
            elif (existing[1], existing[2]) != (first, last):
                employment_updates.append({"b_id": existing[0], "b_first": first, "b_last": last})
    person_table = Person.__table__
    employment_table = Employment.__table__
    connection = session.connection()
    if person_updates:
        connection.execute(
            person_table.update()
            .where(person_table.c.id == bindparam("b_id"))
            .values(
                organisation_id=bindparam("b_org"),
                normalized_name=bindparam("b_key"),
                display_name=bindparam("b_name"),
            ),
            person_updates,
        )
    if employment_updates:
        connection.execute(
            employment_table.update()
            .where(employment_table.c.id == bindparam("b_id"))
            .values(first_seen=bindparam("b_first"), last_seen=bindparam("b_last")),
            employment_updates,
        )
    if employment_inserts:
        connection.execute(employment_table.insert(), employment_inserts)


def find_person(session: Session, team_id: str, address: str) -> Person:
    row = session.execute(
        select(Person).join(Address, Address.person_id == Person.id).where(
            Address.team_id == team_id, Address.address == address.strip().lower()
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no person with the address {address!r}; check the spelling or import the mail first")
    return row


def merge_addresses(engine: Engine, team_id: str, keep: str, other: str, actor: str | None = None) -> int:
    """Merge the person of ``other`` into the person of ``keep``; return the merge id."""
    with Session(engine) as session:
        owners = dict(
            session.execute(
                select(OwnerAddress.address, Mailbox.owner_address)
                .join(Mailbox, Mailbox.id == OwnerAddress.mailbox_id)
                .where(OwnerAddress.team_id == team_id)
            ).all()
        )
        for address in (keep, other):
            owner = owners.get(address.strip().lower())
            if owner is not None:
                raise InputError(
                    f"{address} is an address of the mailbox owner {owner}, and owners are never contacts; "
                    "merge two contacts' addresses instead"
                )
        kept = find_person(session, team_id, keep)
        merged = find_person(session, team_id, other)
        if kept.id == merged.id:
            raise InputError(f"{keep} and {other} already belong to the same person (id {kept.id})")
        addresses = _load_addresses(session, team_id)
        merge_id = _merge(session, team_id, kept.id, merged.id, addresses, "explicit", actor)
        session.commit()
        return merge_id


def unmerge(engine: Engine, team_id: str, merge_id: int) -> PersonMerge:
    """Undo a merge: move its addresses back to the person they came from."""
    with Session(engine, expire_on_commit=False) as session:
        record = session.get(PersonMerge, merge_id)
        if record is None or record.team_id != team_id:
            raise NotFoundError(f"no merge with id {merge_id}; list merges with `crm-bot merges`")
        if record.undone_at is not None:
            raise InputError(f"merge {merge_id} was already undone at {record.undone_at.isoformat()}")
        session.execute(
            update(Address)
            .where(Address.team_id == team_id, Address.address.in_(record.moved_addresses))
            .values(person_id=record.merged_person_id)
        )
        merged = session.get(Person, record.merged_person_id)
        merged.merged_into_id = None
        record.undone_at = utcnow()
        session.add_all([merged, record])
        session.commit()
        return record


def list_merges(engine: Engine, team_id: str) -> list[PersonMerge]:
    with Session(engine, expire_on_commit=False) as session:
        return list(
            session.execute(
                select(PersonMerge).where(PersonMerge.team_id == team_id).order_by(PersonMerge.id)
            ).scalars()
        )
