"""Read an Exchange Online mailbox through Microsoft Graph v1.0 with app-only access.

Messages come from the per-folder delta query
``/users/{id}/mailFolders/{inbox|sentitems}/messages/delta`` with ``$select`` of metadata
fields only, so the app needs no more than Mail.ReadBasic.All. Every page is a batch whose
cursor is the page's ``@odata.nextLink``, and the last page's cursor is the
``@odata.deltaLink`` the next sync starts from.

Not available this way: Internet headers (List-Id, In-Reply-To, References, Auto-Submitted)
are not returned by delta and are excluded from Mail.ReadBasic, so threads rely on
``conversationId`` and bulk mail is recognised only by sender, recipient count and subject.

Tokens come from MSAL's client-credentials flow (``AppTokenProvider``); a caller may pass
another token provider instead.
"""

from __future__ import annotations

import email.utils
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from bot.errors import ConfigError, SourceDeferred, SourceError, SyncStateExpired
from bot.mail.credentials import DEFAULT_AUTHORITY_HOST, AppTokenProvider, Secrets
from bot.mail.source import FolderRef, settings_from_config
from bot.mail.sync import (
    DEFAULT_BULK_RECIPIENT_THRESHOLD,
    AddressCard,
    Meeting,
    MeetingAttendee,
    classify,
    plausible_time,
)
from bot.mail.types import Batch, FolderRole, MailItem, Participant, SkippedItem

log = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
GRAPH_SCOPE_SUFFIX = "/.default"

# Well-known mail folder names of Graph and the role of each.
MAIL_FOLDERS = {"inbox": FolderRole.INBOX, "sentitems": FolderRole.SENT, "deleteditems": FolderRole.OTHER,
                "archive": FolderRole.OTHER, "junkemail": FolderRole.OTHER}
DEFAULT_FOLDERS = ["inbox", "sentitems"]

MESSAGE_SELECT = [
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "sentDateTime",
    "receivedDateTime",
    "internetMessageId",
    "conversationId",
    "subject",
    "isDraft",
]
EVENT_SELECT = ["subject", "start", "end", "organizer", "attendees", "isCancelled"]
CONTACT_SELECT = ["displayName", "companyName", "jobTitle", "emailAddresses"]

# Error codes Graph returns when a delta token can no longer be used.
EXPIRED_STATE_CODES = {"syncstatenotfound", "resyncrequired", "syncstateinvalid", "invaliddeltatoken"}
TRANSIENT_STATUSES = {500, 502, 504}
THROTTLE_STATUSES = {429, 503}


@dataclass
class GraphSettings:
    """How to reach one mailbox through Graph; built from ``Mailbox.source_config``."""

    owner: str
    tenant_id: str | None = None
    client_id: str | None = None
    user_id: str | None = None  # object id or user principal name; the owner address by default
    graph_url: str = DEFAULT_GRAPH_URL
    authority_host: str = DEFAULT_AUTHORITY_HOST
    ca_bundle: str | None = None
    folders: list[str] = field(default_factory=lambda: list(DEFAULT_FOLDERS))
    timezone: str = "UTC"
    page_size: int = 200
    max_wait_seconds: float = 600.0
    timeout_seconds: float = 60.0
    transient_retries: int = 3
    bulk_recipient_threshold: int = DEFAULT_BULK_RECIPIENT_THRESHOLD
    calendar_past_days: int = 365
    calendar_future_days: int = 60

    @classmethod
    def from_config(cls, owner: str, config: dict[str, Any], timezone_name: str = "UTC") -> "GraphSettings":
        """Validate a mailbox's source_config; raise ConfigError naming the invalid key."""
        return settings_from_config(cls, "Graph", owner, config, timezone_name)

    def check(self) -> None:
        where = f"Graph settings of {self.owner}"
        if not self.tenant_id or not self.client_id:
            raise ConfigError(f"{where}: tenant_id and client_id are required (from the app registration)")
        for name, url in (("graph_url", self.graph_url), ("authority_host", self.authority_host)):
            if not url.startswith("https://"):
                raise ConfigError(f"{where}: {name} {url!r} must start with https://")
        if not 1 <= self.page_size <= 1000:
            raise ConfigError(f"{where}: page_size {self.page_size} must be between 1 and 1000")
        if self.max_wait_seconds < 0 or self.timeout_seconds <= 0:
            raise ConfigError(f"{where}: max_wait_seconds and timeout_seconds must be positive")
        for name in self.folders:
            if name.lower() not in MAIL_FOLDERS:
                raise ConfigError(
                    f"{where}: folder {name!r} is invalid; use well-known names: {', '.join(sorted(MAIL_FOLDERS))}"
                )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where}: unknown time zone {self.timezone!r}; use an IANA name such as Europe/Berlin")

    @property
    def scope(self) -> str:
        origin = self.graph_url.split("/v1.0", 1)[0].rstrip("/")
        return origin + GRAPH_SCOPE_SUFFIX


class GraphSource:
    """A MailSource over Microsoft Graph; also reads the calendar view and the contacts."""

    kind = "graph"

    def __init__(
        self,
        settings: GraphSettings,
        secrets: Secrets | None,
        *,
        token_provider: Callable[[], str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ):
        self.settings = settings
        self._sleep = sleep
        if token_provider is None:
            if secrets is None:
                raise ConfigError(
                    f"Graph mailbox {settings.owner} has no credentials; add --credentials env:NAME or file:PATH "
                    "holding the app's client secret"
                )
            provider = AppTokenProvider(
                tenant_id=settings.tenant_id or "",
                client_id=settings.client_id or "",
                client_secret=secrets.client_secret or secrets.require("client_secret", "Graph app-only access"),
                scopes=[settings.scope],
                authority_host=settings.authority_host,
                verify=settings.ca_bundle or True,
                timeout=settings.timeout_seconds,
            )
            token_provider = provider.token
        self._token = token_provider
        verify: ssl.SSLContext | bool = True
        if settings.ca_bundle:
            verify = ssl.create_default_context(cafile=settings.ca_bundle)
        self._client = client or httpx.Client(timeout=settings.timeout_seconds, verify=verify)
        self.waited_seconds = 0.0
        self.requests = 0

    def __repr__(self) -> str:
        return f"GraphSource({self.settings.owner}, {self.settings.graph_url})"

    def close(self) -> None:
        self._client.close()

    @property
    def user_path(self) -> str:
        user = self.settings.user_id or self.settings.owner
        return f"{self.settings.graph_url.rstrip('/')}/users/{quote(user, safe='@')}"

    # --- MailSource ----------------------------------------------------------------------

    def folders(self) -> list[FolderRef]:
        return [FolderRef(key=name.lower(), name=name.lower(), role=MAIL_FOLDERS[name.lower()]) for name in self.settings.folders]

    def read(self, folder: FolderRef, cursor: str | None) -> Iterator[Batch]:
        """Yield one batch per delta page; the cursor is the next page or the delta link."""
        if cursor and not cursor.startswith(self.settings.graph_url.rstrip("/") + "/"):
            # A cursor is a URL the bearer token is sent to; one that points elsewhere
            # (the Graph URL setting changed) is dropped, not followed.
            raise SyncStateExpired(
                f"stored delta link of {folder.name} does not start with {self.settings.graph_url}; reading again"
            )
        url = cursor or (
            f"{self.user_path}/mailFolders/{folder.key}/messages/delta?"
            + urlencode({"$select": ",".join(MESSAGE_SELECT)}, safe=",$")
        )
        page_number = 0
        while True:
            page_number += 1
            body = self._get_json(url, f"reading {folder.name}", max_page_size=True)
            items, skipped = self._convert_page(body.get("value"), folder)
            next_link = body.get("@odata.nextLink")
            delta_link = body.get("@odata.deltaLink")
            log.info(
                "Graph %s %s page %d: %d items, %d skipped",
                self.settings.owner,
                folder.key,
                page_number,
                len(items),
                len(skipped),
            )
            if next_link:
                yield Batch(folder.key, folder.role, items, skipped, cursor=next_link, complete=False)
                url = next_link
                continue
            if delta_link:
                yield Batch(folder.key, folder.role, items, skipped, cursor=delta_link, complete=True)
                return
            raise SourceError(
                f"Graph returned a page of {folder.name} for {self.settings.owner} with neither "
                "@odata.nextLink nor @odata.deltaLink; the next sync reads from the last stored page"
            )

    def _convert_page(self, values: Any, folder: FolderRef) -> tuple[list[MailItem], list[SkippedItem]]:
        if not isinstance(values, list):
            raise SourceError(f"Graph page of {folder.name} for {self.settings.owner} has no 'value' list")
        items: list[MailItem] = []
        skipped: list[SkippedItem] = []
        seen: set[str] = set()
        for entry in values:
            if not isinstance(entry, dict):
                skipped.append(SkippedItem("graph:?", "unreadable-item", "entry is not an object"))
                continue
            item_id = str(entry.get("id") or "")
            if "@removed" in entry:
                continue  # deleted or moved out: history already counted stays
            if item_id in seen:
                continue  # Graph may list one message twice in a round
            seen.add(item_id)
            if entry.get("isDraft"):
                skipped.append(SkippedItem(f"graph:{item_id}", "draft", "drafts were never sent"))
                continue
            try:
                items.append(self.to_mail_item(entry, folder))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("skipped Graph message %s of %s: %s", item_id, self.settings.owner, type(exc).__name__)
                skipped.append(SkippedItem(f"graph:{item_id}", "unreadable-item", type(exc).__name__))
        return items, skipped

    # --- conversion ----------------------------------------------------------------------

    def to_mail_item(self, entry: dict[str, Any], folder: FolderRef) -> MailItem:
        sent = plausible_time(self.parse_time(entry.get("sentDateTime")))
        date_defect = None
        if sent is None:
            sent = plausible_time(self.parse_time(entry.get("receivedDateTime")))
            date_defect = (
                "sent time missing or implausible; used the received time" if sent else "no plausible sent or received time"
            )
        mail = MailItem(
            source_ref=f"graph:{entry.get('id')}",
            folder=folder.name,
            folder_role=folder.role,
            sent_at=sent,
            sender=self.recipient(entry.get("from")) or self.recipient(entry.get("sender")),
            to=self.recipients(entry.get("toRecipients")),
            cc=self.recipients(entry.get("ccRecipients")),
            bcc=self.recipients(entry.get("bccRecipients")),
            reply_to=self.recipients(entry.get("replyTo")),
            message_id=entry.get("internetMessageId") or None,
            conversation_id=entry.get("conversationId") or None,
            subject=entry.get("subject"),
            date_defect=date_defect,
        )
        classify(mail, None, self.settings.bulk_recipient_threshold)
        return mail

    def parse_time(self, value: Any) -> datetime | None:
        """Parse an ISO 8601 time; a value without an offset is read in the mailbox's zone."""
        if not value or not isinstance(value, str):
            return None
        return as_utc_in(parse_iso(value), self.settings.timezone)

    def recipients(self, values: Any) -> list[Participant]:
        result = []
        for value in values or []:
            participant = self.recipient(value)
            if participant is not None:
                result.append(participant)
        return result

    @staticmethod
    def recipient(value: Any) -> Participant | None:
        """Convert ``{"emailAddress": {"name", "address"}}``; a legacy DN keeps only the name."""
        if not isinstance(value, dict):
            return None
        address_obj = value.get("emailAddress") or {}
        name = (address_obj.get("name") or "").strip() or None
        address = (address_obj.get("address") or "").strip()
        if address and "@" in address and not address.lower().startswith("/o="):
            if name and name.lower() == address.lower():
                name = None  # Graph repeats the address as the name when there is none
            return Participant(address=address.lower(), name=name)
        if name and name.lower().startswith("/o="):
            name = None
        if name or address and not address.lower().startswith("/o="):
            return Participant(address=None, name=name or address)
        return None

    # --- calendar and contacts -------------------------------------------------------------

    def read_meetings(self, start: datetime | None = None, end: datetime | None = None) -> list[Meeting]:
        now = datetime.now(timezone.utc)
        start = start or now - timedelta(days=self.settings.calendar_past_days)
        end = end or now + timedelta(days=self.settings.calendar_future_days)
        query = urlencode(
            {
                "startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "endDateTime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "$select": ",".join(EVENT_SELECT),
            },
            safe=",$:",
        )
        meetings = []
        for entry in self._pages(f"{self.user_path}/calendar/calendarView?{query}", "reading the calendar"):
            try:
                starts_at = self._event_time(entry.get("start"))
            except ValueError:
                starts_at = None
            if starts_at is None:
                log.warning("skipped calendar item %s of %s: no start time", entry.get("id"), self.settings.owner)
                continue
            attendees = []
            for attendee in entry.get("attendees") or []:
                participant = self.recipient(attendee)
                if participant is not None:
                    response = (attendee.get("status") or {}).get("response")
                    attendees.append(MeetingAttendee(participant, response))
            meetings.append(
                Meeting(
                    source_id=f"graph:{entry.get('id')}",
                    starts_at=starts_at,
                    ends_at=self._event_time(entry.get("end")),
                    subject=entry.get("subject"),
                    organizer=self.recipient(entry.get("organizer")),
                    attendees=attendees,
                    is_cancelled=bool(entry.get("isCancelled")),
                )
            )
        return meetings

    def _event_time(self, value: Any) -> datetime | None:
        """Read a dateTimeTimeZone value; the zone is UTC because every request prefers it."""
        if not isinstance(value, dict) or not value.get("dateTime"):
            return None
        zone = value.get("timeZone") or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("calendar time zone %r of %s is unknown; read as UTC", zone, self.settings.owner)
            zone = "UTC"
        return as_utc_in(parse_iso(value["dateTime"]), zone)

    def read_contacts(self) -> list[AddressCard]:
        query = urlencode({"$select": ",".join(CONTACT_SELECT)}, safe=",$")
        cards = []
        for entry in self._pages(f"{self.user_path}/contacts?{query}", "reading the contacts"):
            addresses = sorted(
                {
                    (item.get("address") or "").strip().lower()
                    for item in entry.get("emailAddresses") or []
                    if isinstance(item, dict) and "@" in (item.get("address") or "")
                }
            )
            cards.append(
                AddressCard(
                    source_id=f"graph:{entry.get('id')}",
                    display_name=entry.get("displayName"),
                    company_name=entry.get("companyName"),
                    job_title=entry.get("jobTitle"),
                    addresses=addresses,
                )
            )
        return cards

    def _pages(self, url: str, action: str) -> Iterator[dict[str, Any]]:
        next_url: str | None = url
        while next_url:
            body = self._get_json(next_url, action, max_page_size=True)
            values = body.get("value")
            if not isinstance(values, list):
                raise SourceError(f"Graph response while {action} for {self.settings.owner} has no 'value' list")
            for entry in values:
                if isinstance(entry, dict):
                    yield entry
            next_url = body.get("@odata.nextLink")

    # --- HTTP ------------------------------------------------------------------------------

    def _headers(self, max_page_size: bool) -> dict[str, str]:
        prefer = ['IdType="ImmutableId"', 'outlook.timezone="UTC"']
        if max_page_size:
            prefer.append(f"odata.maxpagesize={self.settings.page_size}")
        return {
            "Authorization": f"Bearer {self._token()}",
            "Prefer": ", ".join(prefer),
            "Accept": "application/json",
        }

    def _get_json(self, url: str, action: str, max_page_size: bool = False) -> dict[str, Any]:
        """GET one Graph URL, honouring Retry-After and retrying transient failures.

        Waits on 429 and 503 for as long as Retry-After requests while the total stays within
        ``max_wait_seconds`` for this request, then raises SourceDeferred. Raises
        SyncStateExpired for 410 Gone or an expired-token error code.
        """
        settings = self.settings
        waited = 0.0
        transient = 0
        throttled = 0
        while True:
            try:
                self.requests += 1
                response = self._client.get(url, headers=self._headers(max_page_size))
            except httpx.TimeoutException:
                failure = "timed out"
            except httpx.TransportError as exc:
                failure = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        body = response.json()
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        failure = "returned malformed JSON"
                    else:
                        if isinstance(body, dict):
                            return body
                        failure = "returned JSON that is not an object"
                elif status in THROTTLE_STATUSES:
                    throttled += 1
                    hint = retry_after_seconds(response.headers.get("Retry-After"))
                    if hint is None:
                        hint = min(2.0 ** throttled, 60.0)  # no hint: exponential back-off
                    if waited + hint > settings.max_wait_seconds:
                        raise SourceDeferred(
                            f"Graph returned {status} while {action} for {settings.owner} and requested a wait of "
                            f"{hint:.0f}s, which would exceed the allowed {settings.max_wait_seconds:.0f}s per request; "
                            "the sync is rescheduled",
                            retry_after_seconds=hint,
                        )
                    log.warning("Graph returned %d while %s for %s; waiting %.0fs", status, action, settings.owner, hint)
                    self._sleep(hint)
                    waited += hint
                    self.waited_seconds += hint
                    continue
                else:
                    code, message = _error_of(response)
                    if status == 410 or code.lower() in EXPIRED_STATE_CODES:
                        raise SyncStateExpired(
                            f"Graph rejected the stored delta link while {action} for {settings.owner} ({status} {code}); "
                            "the folder is read again from the start"
                        )
                    if status in TRANSIENT_STATUSES:
                        failure = f"returned {status} {code}"
                    else:
                        raise SourceError(_plain_error(status, code, message, action, settings))
            transient += 1
            if transient > settings.transient_retries:
                raise SourceError(
                    f"Graph {failure} {transient} times while {action} for {settings.owner}; the next sync tries again"
                )
            delay = min(2.0**transient, 30.0)
            log.warning(
                "Graph %s while %s for %s; retry %d of %d in %.0fs",
                failure,
                action,
                settings.owner,
                transient,
                settings.transient_retries,
                delay,
            )
            self._sleep(delay)


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 time as Graph writes it, with up to seven fractional digits."""
    text = text.strip().replace("Z", "+00:00")
    if "." in text:
        # fromisoformat in Python 3.11 takes at most six fractional digits.
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    return datetime.fromisoformat(text)


def as_utc_in(value: datetime, zone: str) -> datetime:
    """Return an aware UTC time; a naive value is read in the named IANA zone."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc if zone.upper() == "UTC" else ZoneInfo(zone))
    return value.astimezone(timezone.utc)


def retry_after_seconds(value: str | None) -> float | None:
    """Read a Retry-After header: delta seconds or an HTTP date (RFC 9110, section 10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "", ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or "")
    return "", ""


def _plain_error(status: int, code: str, message: str, action: str, settings: GraphSettings) -> str:
    where = f"Graph returned {status} {code} while {action} for {settings.owner}"
    if status == 401:
        return f"{where}: the access token was rejected; check the tenant id, the client id and the secret"
    if status == 403:
        return (
            f"{where}: access denied; grant the application permissions Mail.ReadBasic.All, "
            "Calendars.ReadBasic.All and Contacts.Read with admin consent, and include the mailbox "
            "in the app's application access policy or RBAC scope"
        )
    if status == 404:
        return f"{where}: the mailbox or folder was not found; check the owner address or user_id"
    return f"{where}: {message[:200]}"
