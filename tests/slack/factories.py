"""Hand-made view dataclasses for builder tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bot.relationships.views import ContactView, MailboxStatus, OrgView, OwnerHit, WhoKnowsResult

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def contact(
    person_id: int = 1,
    name: str | None = "Dana Whitfield",
    *,
    addresses: list[str] | None = None,
    organisation: str | None = "Orion Freight",
    strength: float = 72.0,
    reason: str = "12 two-way threads, 20 sent, 18 received, last 9 days ago; you usually write every 3 weeks",
    days_ago: int = 9,
) -> ContactView:
    last = NOW - timedelta(days=days_ago)
    return ContactView(
        person_id=person_id,
        name=name,
        addresses=addresses if addresses is not None else [f"person{person_id}@orion.example"],
        organisation=organisation,
        organisation_id=10 if organisation else None,
        is_internal=False,
        strength=strength,
        inbound=18,
        outbound=20,
        two_way_threads=12,
        first_contact=NOW - timedelta(days=400),
        last_inbound=last,
        last_outbound=last - timedelta(days=1),
        last_two_way=last,
        cadence_days=21.0,
        days_since_two_way=float(days_ago),
        reason=reason,
    )


def org(name: str = "Orion Freight", *, domains: list[str] | None = None, people: int = 3) -> OrgView:
    return OrgView(
        organisation_id=10,
        name=name,
        domains=domains if domains is not None else ["orion.example"],
        is_internal=False,
        people=people,
        best_strength=72.0,
        last_contact=NOW - timedelta(days=9),
    )


def status(**overrides: object) -> MailboxStatus:
    values: dict = dict(
        mailbox_id=1,
        owner="robin.hale@example.org",
        source_kind="files",
        messages=877,
        people=120,
        organisations=40,
        two_way_relationships=35,
        first_message=NOW - timedelta(days=700),
        last_message=NOW - timedelta(days=2),
        last_import_at=NOW - timedelta(hours=3),
        last_sync_ok_at=None,
        last_sync_error=None,
        last_sync_error_at=None,
        folders=[{"folder": "inbox", "role": "inbox", "items_stored": 500}],
    )
    values.update(overrides)
    return MailboxStatus(**values)


def owner_hit(mailbox_id: int, owner: str, people: list[ContactView], strength: float = 65.0) -> OwnerHit:
    return OwnerHit(
        mailbox_id=mailbox_id,
        owner=owner,
        strength=strength,
        last_contact=NOW - timedelta(days=20),
        contacts=len(people),
        people=people,
    )


def whoknows_result(owners: list[OwnerHit], name: str = "Orion Freight") -> WhoKnowsResult:
    return WhoKnowsResult(organisation_id=10, organisation=name, domains=["orion.example"], score=95.0, owners=owners)
