"""Scheduled sync of Exchange mailboxes: build the source, run the importer, record health."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.config import Settings
from bot.errors import BotError, ConfigError
from bot.mail.credentials import resolve as resolve_credentials

# The header rules of the file source, applied to server-read messages as well.
from bot.mail.headers import (
    DEFAULT_BULK_RECIPIENT_THRESHOLD,
    EARLIEST_PLAUSIBLE_DATE,
    FUTURE_TOLERANCE,
    bulk_reason,
    is_auto_reply,
    parse_list_id,
    recipient_count,
)
from bot.mail.ingest import Importer, import_source
from bot.mail.types import MailItem, Participant
from bot.relationships.compute import recompute
from bot.storage import lease
from bot.storage.db import retry_write
from bot.storage.models import Address, CalendarAttendee, CalendarEvent, ContactCard, Mailbox, SyncRun
from bot.timeutil import as_utc, isoformat_z, utcnow

log = logging.getLogger(__name__)


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
    mail.list_id = mail.list_id or parse_list_id((fields.get("list-id") or [None])[0])
    reason = bulk_reason(fields, mail.sender, recipient_count(mail.to, mail.cc, mail.bcc), recipient_threshold)
    if reason is not None:
        mail.is_bulk = True
        mail.bulk_reason = mail.bulk_reason or reason
    if is_auto_reply(fields, mail.subject, is_reply):
        mail.is_auto_reply = True


def plausible_time(value: datetime | None, now: datetime | None = None) -> datetime | None:
    """Return the value when it lies between 1980-01-02 and a day from now, else None."""
    if value is None:
        return None
    current = now or datetime.now(timezone.utc)
    if value < EARLIEST_PLAUSIBLE_DATE or value > current + FUTURE_TOLERANCE:
        return None
    return value


# --- Building sources -----------------------------------------------------------------------

SERVER_KINDS = ("ews", "graph")


def build_source(mailbox: Mailbox, settings: Settings, environ: Mapping[str, str] | None = None) -> Any:
    """Create the mail source a mailbox row describes; raise ConfigError when it cannot be built.

    Secrets are read from the credentials reference here, at run time, and live only in the
    source object.
    """
    config = dict(mailbox.source_config or {})
    kind = mailbox.source_kind
    if kind == "files":
        from bot.mail.files import FilesSource

        path = config.get("path")
        if not path:
            raise ConfigError(f"mailbox {mailbox.owner_address} has source files but no path in its settings")
        return FilesSource(Path(path), mailbox_tz=mailbox.timezone)
    if kind not in SERVER_KINDS:
        raise ConfigError(f"mailbox {mailbox.owner_address} has unknown source kind {kind!r}; use ews, graph or files")
    secrets = resolve_credentials(mailbox.credentials_ref, environ) if mailbox.credentials_ref else None
    config.setdefault("bulk_recipient_threshold", settings.bulk_recipient_threshold)
    if kind == "ews":
        from bot.mail.ews import EwsSettings, EwsSource

        return EwsSource(EwsSettings.from_config(mailbox.owner_address, config, mailbox.timezone), secrets)
    from bot.mail.graph import GraphSettings, GraphSource

    return GraphSource(GraphSettings.from_config(mailbox.owner_address, config, mailbox.timezone), secrets)


# --- One sync ------------------------------------------------------------------------------


@dataclass
class SyncOutcome:
    """Result of one sync of one mailbox: counts, outcome and the error in plain words."""

    mailbox_id: int
    owner: str
    outcome: str  # ok | deferred | failed | skipped
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
    meetings: int = 0
    contacts: int = 0
    error: str | None = None
    retry_after_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)


SourceFactory = Callable[[Mailbox, Settings], Any]


def sync_mailbox(
    engine: Engine,
    mailbox: Mailbox,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    source_factory: SourceFactory | None = None,
    read_calendar: bool = True,
    recompute_relationships: bool = True,
) -> SyncOutcome:
    """Read what is new in one mailbox, store it, and record the mailbox's health.

    A mailbox that is paused, or whose server requested a wait that has not passed, is skipped. The
    importer records the SyncRun of the mail; a failure before it starts (settings,
    credentials) is recorded here. Calendar and contacts failures are warnings: the mail
    sync still counts as done.
    """
    now = clock()
    outcome = SyncOutcome(mailbox_id=mailbox.id, owner=mailbox.owner_address, outcome="skipped")
    if mailbox.paused:
        outcome.error = "mailbox is paused"
        return outcome
    not_before = as_utc(mailbox.next_sync_not_before)
    if not_before is not None and not_before > now:
        outcome.error = f"the server requested a wait until {isoformat_z(not_before)}"
        return outcome
    factory = source_factory or (lambda box, cfg: build_source(box, cfg))
    try:
        source = factory(mailbox, settings)
    except BotError as exc:
        return _record_failure(engine, mailbox, outcome, str(exc), now)
    try:
        try:
            summary = import_source(engine, mailbox, source, settings=settings, kind="sync")
        except BotError as exc:
            return _record_failure(engine, mailbox, outcome, str(exc), now, run_recorded=True)
        except Exception as exc:  # an unexpected failure still leaves a health record
            log.exception("sync of mailbox %s failed unexpectedly", mailbox.id)
            message = f"unexpected {type(exc).__name__} while syncing; see the log for details"
            return _record_failure(engine, mailbox, outcome, message, now, run_recorded=True)
        outcome.read = summary.read
        outcome.stored = summary.stored
        outcome.duplicates = summary.duplicates
        outcome.skipped = summary.skipped_total
        if summary.outcome == "deferred":
            outcome.outcome = "deferred"
            outcome.error = summary.error
            outcome.retry_after_seconds = summary.retry_after_seconds or 60.0
            _record_health(
                engine,
                mailbox.id,
                error=summary.error,
                error_at=now,
                next_not_before=now + timedelta(seconds=outcome.retry_after_seconds),
            )
            return outcome
        if read_calendar:
            _sync_calendar_and_contacts(engine, mailbox, settings, source, outcome, now)
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()
    outcome.outcome = "ok"
    _record_health(engine, mailbox.id, ok_at=now, error=None, next_not_before=None)
    if recompute_relationships:
        recompute(engine, mailbox.id, settings=settings)
    log.info(
        "synced mailbox %s (%s): read %d, stored %d, duplicates %d, skipped %d",
        mailbox.id,
        mailbox.source_kind,
        outcome.read,
        outcome.stored,
        outcome.duplicates,
        outcome.skipped,
    )
    return outcome


def _sync_calendar_and_contacts(
    engine: Engine, mailbox: Mailbox, settings: Settings, source: Any, outcome: SyncOutcome, now: datetime
) -> None:
    if hasattr(source, "read_meetings"):
        try:
            meetings = source.read_meetings()
            outcome.meetings = store_meetings(engine, mailbox, settings, meetings)
        except BotError as exc:
            outcome.warnings.append(f"calendar not read: {exc}")
            log.warning("calendar of mailbox %s not read: %s", mailbox.id, exc)
    if hasattr(source, "read_contacts"):
        try:
            cards = source.read_contacts()
            outcome.contacts = store_contacts(engine, mailbox, settings, cards)
        except BotError as exc:
            outcome.warnings.append(f"contacts not read: {exc}")
            log.warning("contacts of mailbox %s not read: %s", mailbox.id, exc)


def _record_failure(
    engine: Engine,
    mailbox: Mailbox,
    outcome: SyncOutcome,
    message: str,
    now: datetime,
    run_recorded: bool = False,
) -> SyncOutcome:
    outcome.outcome = "failed"
    outcome.error = message
    log.error("sync of mailbox %s (%s) failed: %s", mailbox.id, mailbox.owner_address, message)
    if not run_recorded:

        def _write_run() -> None:
            with Session(engine) as session:
                session.add(
                    SyncRun(
                        team_id=mailbox.team_id,
                        mailbox_id=mailbox.id,
                        kind="sync",
                        started_at=now,
                        finished_at=now,
                        outcome="failed",
                        error=message[:2000],
                        counts={},
                    )
                )
                session.commit()

        retry_write(_write_run)
    _record_health(engine, mailbox.id, error=message, error_at=now, next_not_before=None)
    return outcome


_UNSET: Any = object()


def _record_health(
    engine: Engine,
    mailbox_id: int,
    *,
    ok_at: datetime | None = None,
    error: str | None | Any = _UNSET,
    error_at: datetime | None = None,
    next_not_before: datetime | None | Any = _UNSET,
) -> None:
    values: dict[str, Any] = {}
    if ok_at is not None:
        values["last_sync_ok_at"] = ok_at
    if error is not _UNSET:
        values["last_sync_error"] = error[:2000] if error else None
    if error_at is not None:
        values["last_sync_error_at"] = error_at
    if next_not_before is not _UNSET:
        values["next_sync_not_before"] = next_not_before

    def _write() -> None:
        with Session(engine) as session:
            session.execute(update(Mailbox).where(Mailbox.id == mailbox_id).values(**values))
            session.commit()

    retry_write(_write)


# --- Calendar and contacts storage ------------------------------------------------------------


def store_meetings(engine: Engine, mailbox: Mailbox, settings: Settings, meetings: list[Meeting]) -> int:
    """Insert or update the mailbox's calendar events and their attendees; return how many."""
    importer = Importer(engine, mailbox, settings)
    keep_subjects = settings.store_subjects or mailbox.store_subjects

    def _write() -> int:
        with Session(engine) as session:
            existing = {
                row.source_id: row
                for row in session.execute(
                    select(CalendarEvent).where(CalendarEvent.mailbox_id == mailbox.id)
                ).scalars()
            }
            for meeting in meetings:
                organizer_id = _address_id(session, importer, meeting.organizer)
                event = existing.get(meeting.source_id)
                if event is None:
                    event = CalendarEvent(team_id=mailbox.team_id, mailbox_id=mailbox.id, source_id=meeting.source_id,
                                          starts_at=meeting.starts_at)
                event.starts_at = meeting.starts_at
                event.ends_at = meeting.ends_at
                event.subject = meeting.subject if keep_subjects else None
                event.organizer_address_id = organizer_id
                event.is_cancelled = meeting.is_cancelled
                session.add(event)
                session.flush()
                session.execute(delete(CalendarAttendee).where(CalendarAttendee.event_id == event.id))
                seen: set[int] = set()
                for attendee in meeting.attendees:
                    address_id = _address_id(session, importer, attendee.participant)
                    if address_id is None or address_id in seen:
                        continue
                    seen.add(address_id)
                    session.add(
                        CalendarAttendee(
                            team_id=mailbox.team_id, event_id=event.id, address_id=address_id, response=attendee.response
                        )
                    )
            session.commit()
            return len(meetings)

    return retry_write(_write)


def store_contacts(engine: Engine, mailbox: Mailbox, settings: Settings, cards: list[AddressCard]) -> int:
    """Replace the mailbox's contact cards with the ones read now; return how many."""
    importer = Importer(engine, mailbox, settings)

    def _write() -> int:
        with Session(engine) as session:
            existing = {
                row.source_id: row
                for row in session.execute(select(ContactCard).where(ContactCard.mailbox_id == mailbox.id)).scalars()
            }
            seen: set[str] = set()
            for card in cards:
                seen.add(card.source_id)
                row = existing.get(card.source_id) or ContactCard(
                    team_id=mailbox.team_id, mailbox_id=mailbox.id, source_id=card.source_id
                )
                person_id = None
                for address in card.addresses:
                    address_id = _address_id(session, importer, Participant(address, card.display_name))
                    if address_id is not None and person_id is None:
                        person_id = session.execute(select(Address.person_id).where(Address.id == address_id)).scalar()
                row.display_name = card.display_name
                row.company_name = card.company_name
                row.job_title = card.job_title
                row.addresses = list(card.addresses)
                row.person_id = person_id
                session.add(row)
            for source_id, row in existing.items():
                if source_id not in seen:
                    session.delete(row)
            session.commit()
            return len(cards)

    return retry_write(_write)


def _address_id(session: Session, importer: Importer, participant: Participant | None) -> int | None:
    address = importer.preparer.normalize(participant)
    if address is None:
        return None
    return importer.book.ensure(session, address, participant.name if participant else None)


# --- All mailboxes and the scheduler ----------------------------------------------------------


def sync_all(
    engine: Engine,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    source_factory: SourceFactory | None = None,
    kinds: tuple[str, ...] = SERVER_KINDS,
) -> list[SyncOutcome]:
    """Sync every mailbox read from a server, one after another; one failure stops no other."""
    with Session(engine, expire_on_commit=False) as session:
        mailboxes = list(
            session.execute(
                select(Mailbox).where(Mailbox.source_kind.in_(kinds)).order_by(Mailbox.id)
            ).scalars()
        )
    outcomes = []
    for mailbox in mailboxes:
        outcomes.append(sync_mailbox(engine, mailbox, settings, clock=clock, source_factory=source_factory))
    return outcomes


SYNC_JOB_ID = "mail-sync"


SYNC_LEASE = "mail-sync"


def sync_all_if_lease_held(engine: Engine, settings: Settings, holder: str, ttl: timedelta) -> list | None:
    """Run ``sync_all`` when this process holds the sync lease; otherwise skip this run.

    Every ``crm-bot serve`` process schedules the sync, and the lease makes exactly one of
    them run it. Returns the outcomes, or None for a skipped run.
    """
    if not lease.acquire(engine, SYNC_LEASE, holder, ttl):
        log.info("mail sync skipped by %s: another process holds the sync lease", holder)
        return None
    return sync_all(engine, settings)


def schedule_syncs(scheduler: Any, engine: Engine, settings: Settings, interval_minutes: int) -> Any:
    """Add the periodic sync of every server mailbox to an APScheduler 3.x scheduler.

    One run at a time (``max_instances=1``); runs missed while the process was busy or down
    collapse into one (``coalesce``). Of several processes, only the holder of the sync
    lease runs each sync. The job takes the engine as an argument, so the
    scheduler must keep it in its default memory job store.
    """
    if interval_minutes < 1:
        raise ConfigError(f"sync interval {interval_minutes} is invalid; give 1 minute or more")
    # replace_existing applies only once a scheduler has started; remove a pending job too.
    if scheduler.get_job(SYNC_JOB_ID) is not None:
        scheduler.remove_job(SYNC_JOB_ID)
    log.info("scheduling the mail sync every %d minutes", interval_minutes)
    holder = lease.process_holder()
    ttl = timedelta(minutes=2 * interval_minutes)
    return scheduler.add_job(
        sync_all_if_lease_held,
        trigger="interval",
        minutes=interval_minutes,
        args=[engine, settings, holder, ttl],
        id=SYNC_JOB_ID,
        name="sync Exchange mailboxes",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=interval_minutes * 60,
    )
