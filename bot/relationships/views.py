"""Plain data returned by relationship queries to every surface (CLI, Slack, console)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class ContactView:
    """One relationship of one owner, ready to show."""

    person_id: int
    name: str | None
    addresses: list[str]
    organisation: str | None
    organisation_id: int | None
    is_internal: bool
    strength: float
    inbound: int
    outbound: int
    two_way_threads: int
    first_contact: datetime | None
    last_inbound: datetime | None
    last_outbound: datetime | None
    last_two_way: datetime | None
    cadence_days: float | None
    days_since_two_way: float | None
    reason: str  # one line: why the strength is what it is


@dataclass
class OrgView:
    """An organisation as seen from one owner's mailbox."""

    organisation_id: int
    name: str
    domains: list[str]
    is_internal: bool
    people: int
    best_strength: float
    last_contact: datetime | None


@dataclass
class OwnerHit:
    """One owner who knows people at an organisation."""

    mailbox_id: int
    owner: str
    strength: float
    last_contact: datetime | None
    contacts: int
    people: list[ContactView] = field(default_factory=list)


@dataclass
class WhoKnowsResult:
    """An organisation matching a who-knows query, with each owner who knows people there."""

    organisation_id: int
    organisation: str
    domains: list[str]
    score: float
    owners: list[OwnerHit]


@dataclass
class MailboxStatus:
    """Counts and sync health of one mailbox."""

    mailbox_id: int
    owner: str
    source_kind: str
    messages: int
    people: int
    organisations: int
    two_way_relationships: int
    first_message: datetime | None
    last_message: datetime | None
    last_import_at: datetime | None
    last_sync_ok_at: datetime | None
    last_sync_error: str | None
    last_sync_error_at: datetime | None
    folders: list[dict] = field(default_factory=list)
