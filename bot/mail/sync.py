"""Scheduled sync of Exchange mailboxes: build the source, run the importer, record health."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

# The header rules of the file source, applied to server-read messages as well.
from bot.mail.headers import (
    DEFAULT_BULK_RECIPIENT_THRESHOLD,
    EARLIEST_PLAUSIBLE_DATE,
    FUTURE_TOLERANCE,
    _bulk_reason,
    _is_auto_reply,
    _list_id,
)
from bot.mail.types import MailItem, Participant


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


# --- Rules shared by the EWS and Graph sources -------------------------------------------


def classify(
    mail: MailItem,
    header_fields: dict[str, list[str]] | None = None,
    recipient_threshold: int = DEFAULT_BULK_RECIPIENT_THRESHOLD,
) -> None:
    """Set the bulk, list and auto-reply flags of a server-read message.

    The rules are the file source's (``bot.mail.headers``), so a message reads the same
    whichever source delivers it. A server source passes the Internet headers when it read
    them; without them only the sender, the recipient count and the subject decide.
    """
    fields = {name.lower(): values for name, values in (header_fields or {}).items()}
    is_reply = mail.in_reply_to is not None or bool(mail.references)
    mail.list_id = mail.list_id or _list_id((fields.get("list-id") or [None])[0])
    reason = _bulk_reason(fields, mail.sender, len(mail.recipients), recipient_threshold)
    if reason is not None:
        mail.is_bulk = True
        mail.bulk_reason = mail.bulk_reason or reason
    if _is_auto_reply(fields, mail.subject, is_reply):
        mail.is_auto_reply = True


def plausible_time(value: datetime | None, now: datetime | None = None) -> datetime | None:
    """Return the value when it lies between 1980-01-02 and a day from now, else None."""
    if value is None:
        return None
    current = now or datetime.now(timezone.utc)
    if value < EARLIEST_PLAUSIBLE_DATE or value > current + FUTURE_TOLERANCE:
        return None
    return value
