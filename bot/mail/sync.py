"""Scheduled sync of Exchange mailboxes: build the source, run the importer, record health."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.mail.types import Participant


@dataclass
class MeetingAttendee:
    """One attendee of a meeting and the response the server recorded, if any."""

    participant: Participant
    response: str | None = None


@dataclass
class Meeting:
    """A calendar item of the owner as read from EWS or Graph; times are aware UTC."""

    source_id: str
    starts_at: datetime
    ends_at: datetime | None
    subject: str | None
    organizer: Participant | None
    attendees: list[MeetingAttendee] = field(default_factory=list)
    is_cancelled: bool = False


@dataclass
class AddressCard:
    """An entry of the owner's Contacts folder."""

    source_id: str
    display_name: str | None
    company_name: str | None
    job_title: str | None
    addresses: list[str] = field(default_factory=list)
