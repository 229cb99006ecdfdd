"""Read an Exchange Server mailbox over Exchange Web Services with exchangelib 5.6.

This is the only module that imports exchangelib. The source reads each folder with
SyncFolderItems, one page at a time. Every page becomes a batch whose cursor is the sync
state after that page, so an interrupted run resumes after the last stored page.
SyncFolderItems, like FindItem, cannot return recipient collections, so each page also costs
one GetItem request per ``fetch_chunk`` items for the metadata fields. Message bodies are
never requested.

exchangelib runs with its FailFast retry policy, so every ErrorServerBusy reaches this
module with the server's back-off hint: the source waits when the hint fits within
``max_wait_seconds`` and raises ``SourceDeferred`` when it does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Credentials,
    EWSTimeZone,
    FailFast,
    Identity,
    OAuth2Credentials,
    Version,
)
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorFolderNotFound,
    ErrorImpersonateUserDenied,
    ErrorInternalServerError,
    ErrorInternalServerTransientError,
    ErrorInvalidSyncStateData,
    ErrorItemNotFound,
    ErrorMailboxStoreUnavailable,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    MalformedResponseError,
    RateLimitError,
    ResponseMessageError,
    SOAPError,
    TransportError,
    UnauthorizedError,
)
from exchangelib.folders import Calendar, Contacts, Folder
from exchangelib.protocol import BaseProtocol
from exchangelib.services import SyncFolderItems
from exchangelib.items import ID_ONLY

from bot.errors import ConfigError, SourceDeferred, SourceError, SyncStateExpired
from bot.mail.credentials import AppTokenProvider, Secrets
from bot.mail.source import FolderRef, settings_from_config
from bot.mail.sync import DEFAULT_BULK_RECIPIENT_THRESHOLD, AddressCard, Meeting, MeetingAttendee, classify, plausible_time
from bot.mail.types import Batch, FolderRole, MailItem, Participant, SkippedItem

log = logging.getLogger(__name__)

T = TypeVar("T")

# Distinguished folder ids (EWS DistinguishedFolderIdNameType) that may be read as mail.
MAIL_FOLDERS = {
    "inbox": FolderRole.INBOX,
    "sentitems": FolderRole.SENT,
    "deleteditems": FolderRole.OTHER,
    "junkemail": FolderRole.OTHER,
    "archiveinbox": FolderRole.INBOX,
}
DEFAULT_FOLDERS = ["inbox", "sentitems"]

MESSAGE_FIELDS = [
    "item_class",
    "subject",
    "datetime_sent",
    "datetime_received",
    "message_id",
    "in_reply_to",
    "references",
    "conversation_id",
    "author",  # the From header
    "sender",  # the Sender header; Exchange sets it to From when absent
    "to_recipients",
    "cc_recipients",
    "bcc_recipients",
    "reply_to",
]
MEETING_FIELDS = ["subject", "start", "end", "organizer", "required_attendees", "optional_attendees", "is_cancelled"]
CONTACT_FIELDS = ["display_name", "company_name", "job_title", "email_addresses"]

# Item classes of messages a server or a rule wrote, not a person (MS-OXOCFG, MS-OXOMSG).
AUTO_REPLY_CLASS_PREFIXES = (
    "ipm.note.rules.ooftemplate.",
    "ipm.note.rules.replytemplate.",
    "ipm.report.",
    "report.",
    "ipm.outlook.recall",
    "ipm.recall.report.",
)

# DN -> SMTP results shared by every source of this process; bounded so a long-running
# server does not grow without limit.
_DN_CACHE: OrderedDict[tuple[str, str], str | None] = OrderedDict()
_DN_CACHE_MAX = 50_000
_DN_CACHE_LOCK = threading.Lock()


@dataclass
class EwsSettings:
    """How to reach one mailbox over EWS; built from ``Mailbox.source_config``."""

    owner: str
    ews_url: str | None = None
    autodiscover: bool = False
    auth: str = "ntlm"  # basic | ntlm | oauth2
    access: str = "impersonation"  # impersonation | delegate
    version: str | None = None  # server build such as "15.1.2507.6"; None probes the server
    folders: list[str] = field(default_factory=lambda: list(DEFAULT_FOLDERS))
    timezone: str = "UTC"
    page_size: int = 256
    fetch_chunk: int = 100
    max_wait_seconds: float = 600.0
    timeout_seconds: float = 120.0
    transient_retries: int = 3
    read_headers: bool = False
    bulk_recipient_threshold: int = DEFAULT_BULK_RECIPIENT_THRESHOLD
    tenant_id: str | None = None
    client_id: str | None = None
    authority_host: str | None = None
    oauth_scope: str = "https://outlook.office365.com/.default"
    ca_bundle: str | None = None
    calendar_past_days: int = 365
    calendar_future_days: int = 60

    @classmethod
    def from_config(cls, owner: str, config: dict[str, Any], timezone_name: str = "UTC") -> "EwsSettings":
        """Validate a mailbox's source_config; raise ConfigError naming the invalid key."""
        return settings_from_config(cls, "EWS", owner, config, timezone_name)

    def check(self) -> None:
        where = f"EWS settings of {self.owner}"
        if not self.ews_url and not self.autodiscover:
            raise ConfigError(f"{where}: give ews_url (https://mail.example.com/EWS/Exchange.asmx) or autodiscover")
        if self.ews_url and not self.ews_url.startswith(("https://", "http://")):
            raise ConfigError(f"{where}: ews_url {self.ews_url!r} is not an https:// URL (http:// only for tests)")
        if self.auth not in ("basic", "ntlm", "oauth2"):
            raise ConfigError(f"{where}: auth {self.auth!r} is invalid; use basic, ntlm or oauth2")
        if self.access not in ("impersonation", "delegate"):
            raise ConfigError(f"{where}: access {self.access!r} is invalid; use impersonation or delegate")
        if self.auth == "oauth2" and not (self.tenant_id and self.client_id):
            raise ConfigError(f"{where}: auth oauth2 needs tenant_id and client_id")
        if not 1 <= self.page_size <= 512:
            raise ConfigError(f"{where}: page_size {self.page_size} must be between 1 and 512 (the EWS limit)")
        if not 1 <= self.fetch_chunk <= 1000:
            raise ConfigError(f"{where}: fetch_chunk {self.fetch_chunk} must be between 1 and 1000")
        if self.max_wait_seconds < 0 or self.timeout_seconds <= 0:
            raise ConfigError(f"{where}: max_wait_seconds and timeout_seconds must be positive")
        if self.version is not None:
            parse_build(self.version, where)
        for name in self.folders:
            folder_role(name, where)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where}: unknown time zone {self.timezone!r}; use an IANA name such as Europe/Berlin")


def parse_build(text: str, where: str = "EWS settings") -> Build:
    try:
        parts = [int(p) for p in text.split(".")]
    except ValueError:
        parts = []
    if not 2 <= len(parts) <= 4:
        raise ConfigError(f"{where}: version {text!r} is invalid; give the server build, e.g. 15.1.2507.6")
    return Build(*parts)


def folder_role(name: str, where: str = "EWS settings") -> FolderRole:
    """Return the role of a configured folder: a distinguished id or a path under one."""
    top = name.split("/", 1)[0].strip().lower()
    if top in MAIL_FOLDERS:
        return MAIL_FOLDERS[top]
    raise ConfigError(
        f"{where}: folder {name!r} is invalid; start it with one of {', '.join(sorted(MAIL_FOLDERS))}, "
        "e.g. inbox/Projects"
    )


class MsalOAuth2Credentials(OAuth2Credentials):
    """exchangelib OAuth 2.0 credentials whose tokens come from MSAL.

    exchangelib's own client-credentials flow always requests tokens from
    login.microsoftonline.com, while MSAL takes a configurable authority and CA bundle.
    exchangelib calls ``refresh`` when a token has expired.
    """

    def __init__(self, provider: AppTokenProvider, identity: Identity):
        super().__init__(client_id=provider.client_id, client_secret=None, tenant_id=provider.tenant_id, identity=identity)
        self._provider = provider
        self.access_token = self._new_token()

    def _new_token(self) -> dict:
        from oauthlib.oauth2 import OAuth2Token

        # NOTE: the lifetime is not read from the token; MSAL returns a cached token until
        # shortly before it expires, and a 401 makes exchangelib call refresh().
        return OAuth2Token({"access_token": self._provider.token(), "token_type": "Bearer", "expires_in": 3000})

    def refresh(self, session: Any) -> None:
        self.access_token = self._new_token()

    @property
    def token_url(self) -> str:
        # exchangelib fetches a token itself only when a session has none; this keeps that
        # request on the configured identity provider instead of login.microsoftonline.com.
        return f"{self._provider.authority}/oauth2/v2.0/token"

    @property
    def scope(self) -> list[str]:
        return list(self._provider.scopes)

    def session_params(self) -> dict:
        return {"token": self.access_token}

    def __repr__(self) -> str:
        return f"MsalOAuth2Credentials({self.client_id!r}, '********')"


class BundleAdapter(requests.adapters.HTTPAdapter):
    """An HTTP adapter that verifies chosen EWS servers against their own CA bundle.

    exchangelib builds every session's adapter from ``BaseProtocol.HTTP_ADAPTER_CLS``. The
    bundle is passed with each request because requests would otherwise replace a session's
    setting with REQUESTS_CA_BUNDLE.
    """

    bundles: dict[str, str] = {}  # "https://host:port/" -> CA bundle path

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        for prefix, bundle in self.bundles.items():
            if request.url and request.url.startswith(prefix) and kwargs.get("verify") is not False:
                kwargs["verify"] = bundle
                break
        return super().send(request, **kwargs)


def trust_bundle(url: str, bundle: str) -> None:
    """Verify the server at ``url`` against ``bundle`` in every exchangelib session of this process."""
    parts = urlsplit(url)
    BundleAdapter.bundles[f"{parts.scheme}://{parts.netloc}/"] = bundle
    current = BaseProtocol.HTTP_ADAPTER_CLS
    if current is requests.adapters.HTTPAdapter:
        BaseProtocol.HTTP_ADAPTER_CLS = BundleAdapter
    elif not issubclass(current, BundleAdapter):
        log.warning(
            "exchangelib uses the HTTP adapter %s; the CA bundle for %s is not applied", current.__name__, parts.netloc
        )


class EwsSource:
    """A MailSource over EWS; also reads the calendar and the Contacts folder."""

    kind = "ews"

    def __init__(
        self,
        settings: EwsSettings,
        secrets: Secrets | None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        account_factory: Callable[[], Account] | None = None,
    ):
        self.settings = settings
        self._secrets = secrets
        self._sleep = sleep
        self._account_factory = account_factory or self._make_account
        self._account: Account | None = None
        self._folders: dict[str, Any] = {}
        self._dn_cache: dict[str, str | None] = {}
        self.waited_seconds = 0.0

    def __repr__(self) -> str:
        return f"EwsSource({self.settings.owner}, {self.settings.ews_url or 'autodiscover'})"

    # --- connection --------------------------------------------------------------------

    def _credentials(self) -> Any:
        settings, secrets = self.settings, self._secrets
        if secrets is None:
            raise ConfigError(f"EWS mailbox {settings.owner} has no credentials; add --credentials env:NAME or file:PATH")
        if settings.auth == "oauth2":
            provider = AppTokenProvider(
                tenant_id=settings.tenant_id or "",
                client_id=settings.client_id or "",
                client_secret=secrets.client_secret or secrets.require("client_secret", "OAuth2 for EWS"),
                scopes=[settings.oauth_scope],
                verify=settings.ca_bundle or True,
                timeout=settings.timeout_seconds,
                **({"authority_host": settings.authority_host} if settings.authority_host else {}),
            )
            return MsalOAuth2Credentials(provider, Identity(primary_smtp_address=settings.owner))
        username = secrets.require("username", f"{settings.auth} login to EWS")
        password = secrets.password
        if password is None:
            secrets.require("password", f"{settings.auth} login to EWS")
        return Credentials(username=username, password=password)

    def _make_account(self) -> Account:
        settings = self.settings
        if settings.ca_bundle and settings.ews_url:
            trust_bundle(settings.ews_url, settings.ca_bundle)
            if settings.authority_host:
                trust_bundle(settings.authority_host, settings.ca_bundle)
        credentials = self._credentials()
        auth_type = {"basic": BASIC, "ntlm": NTLM, "oauth2": OAUTH2}[settings.auth]
        version = Version(build=parse_build(settings.version)) if settings.version else None
        access_type = IMPERSONATION if settings.access == "impersonation" else DELEGATE
        tz = EWSTimeZone(settings.timezone)
        if settings.autodiscover and not settings.ews_url:
            # NOTE: autodiscover queries DNS and the mail domain's web servers. The test suite
            # cannot reach those, so only the fixed-URL path is tested.
            config = Configuration(
                credentials=credentials, auth_type=auth_type, version=version, retry_policy=FailFast()
            )
            account = Account(
                primary_smtp_address=settings.owner,
                credentials=credentials,
                config=config,
                autodiscover=True,
                access_type=access_type,
                default_timezone=tz,
            )
        else:
            config = Configuration(
                service_endpoint=settings.ews_url,
                credentials=credentials,
                auth_type=auth_type,
                version=version,
                retry_policy=FailFast(),
            )
            account = Account(
                primary_smtp_address=settings.owner,
                config=config,
                autodiscover=False,
                access_type=access_type,
                default_timezone=tz,
            )
        # exchangelib reads the HTTP timeout from the protocol object on every request.
        account.protocol.TIMEOUT = settings.timeout_seconds
        return account

    @property
    def account(self) -> Account:
        if self._account is None:
            self._account = self._call(self._account_factory, "connecting")
        return self._account

    def close(self) -> None:
        """Close the HTTP sessions of this source's protocol."""
        if self._account is not None:
            try:
                self._account.protocol.close()
            except Exception as exc:  # closing must never hide the run's result
                log.debug("closing EWS sessions of %s failed: %s", self.settings.owner, exc)
            self._account = None
            self._folders.clear()

    # --- MailSource ----------------------------------------------------------------------

    def folders(self) -> list[FolderRef]:
        refs = []
        for name in self.settings.folders:
            key = name.strip().lower() if "/" not in name else "path:" + name.strip()
            refs.append(FolderRef(key=key, name=name.strip(), role=folder_role(name)))
        return refs

    def read(self, folder: FolderRef, cursor: str | None) -> Iterator[Batch]:
        """Yield one batch per SyncFolderItems page, each with the sync state after it."""
        ews_folder = self._folder(folder)
        additional = {f for f in ews_folder.normalize_fields(fields=["item_class"]) if not f.field.is_attribute}
        state = cursor
        page_number = 0
        while True:
            page_number += 1
            changes, new_state, last = self._call(
                lambda: self._sync_page(ews_folder, additional, state), f"reading {folder.name}"
            )
            ids = []
            for change_type, item in changes:
                if change_type in (SyncFolderItems.CREATE, SyncFolderItems.UPDATE):
                    ids.append((item.id, item.changekey))
            items, skipped = self._fetch_messages(ews_folder, folder, ids)
            log.info(
                "EWS %s %s page %d: %d changes, %d items, %d skipped",
                self.settings.owner,
                folder.key,
                page_number,
                len(changes),
                len(items),
                len(skipped),
            )
            done = bool(last) or new_state == state
            yield Batch(
                folder_key=folder.key,
                folder_role=folder.role,
                items=items,
                skipped=skipped,
                cursor=new_state,
                complete=done,
            )
            if done:
                return
            state = new_state

    # --- folder access -------------------------------------------------------------------

    def _folder(self, folder: FolderRef) -> Any:
        cached = self._folders.get(folder.key)
        if cached is not None:
            return cached
        account = self.account
        if folder.key.startswith("path:"):
            top, *names = [part.strip() for part in folder.name.split("/")]
            target = self._distinguished(top.lower())
            for name in names:
                parent = target
                target = self._call(lambda: parent // name, f"opening folder {folder.name}")
        else:
            target = self._distinguished(folder.key)
        self._folders[folder.key] = target
        log.debug("EWS %s: folder %s opened for %s", self.settings.owner, folder.name, account.primary_smtp_address)
        return target

    def _distinguished(self, name: str) -> Any:
        account = self.account
        attribute = {
            "inbox": "inbox",
            "sentitems": "sent",
            "deleteditems": "trash",
            "junkemail": "junk",
            "archiveinbox": "archive_inbox",
            "calendar": "calendar",
            "contacts": "contacts",
        }[name]
        return self._call(lambda: getattr(account, attribute), f"opening folder {name}")

    def _sync_page(self, ews_folder: Any, additional: set, state: str | None) -> tuple[list, str, bool]:
        service = SyncFolderItems(account=self.account)
        changes = []
        for element in service.call(
            folder=ews_folder,
            shape=ID_ONLY,
            additional_fields=additional,
            sync_state=state,
            ignore=None,
            max_changes_returned=self.settings.page_size,
            sync_scope=None,
        ):
            if isinstance(element, Exception):
                raise element
            changes.append(element)
        return changes, service.sync_state, bool(service.includes_last_item_in_range)

    def _fetch_messages(
        self, ews_folder: Any, folder: FolderRef, ids: list[tuple[str, str]]
    ) -> tuple[list[MailItem], list[SkippedItem]]:
        fields = list(MESSAGE_FIELDS) + (["headers"] if self.settings.read_headers else [])
        fetched: list[Any] = []
        chunk = self.settings.fetch_chunk
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            fetched.extend(
                self._call(
                    lambda: list(self.account.fetch(ids=part, folder=ews_folder, only_fields=fields, chunk_size=chunk)),
                    f"fetching items of {folder.name}",
                )
            )
        skipped: list[SkippedItem] = []
        good = []
        for (item_id, _), item in zip(ids, fetched):
            if isinstance(item, ErrorItemNotFound):
                skipped.append(SkippedItem(item_id, "deleted-before-fetch", "the item was removed before it was read"))
            elif isinstance(item, Exception):
                skipped.append(SkippedItem(item_id, "fetch-error", f"{type(item).__name__}"))
            else:
                good.append(item)
        self._resolve_legacy_dns(good)
        items = []
        for item in good:
            try:
                items.append(self.to_mail_item(item, folder))
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("skipped EWS item %s of %s: %s", item.id, self.settings.owner, exc)
                skipped.append(SkippedItem(str(item.id), "unreadable-item", type(exc).__name__))
        return items, skipped

    # --- conversion ----------------------------------------------------------------------

    def to_mail_item(self, item: Any, folder: FolderRef) -> MailItem:
        """Convert an exchangelib message to the source-independent MailItem."""
        item_class = getattr(item, "item_class", None) or ""
        sent_at, date_defect = self.message_time(item)
        author = self.participant(getattr(item, "author", None)) or self.participant(getattr(item, "sender", None))
        references = getattr(item, "references", None) or ""
        conversation = getattr(item, "conversation_id", None)
        mail = MailItem(
            source_ref=f"ews:{item.id}",
            folder=folder.name,
            folder_role=folder.role,
            sent_at=sent_at,
            sender=author,
            to=self.participants(getattr(item, "to_recipients", None)),
            cc=self.participants(getattr(item, "cc_recipients", None)),
            bcc=self.participants(getattr(item, "bcc_recipients", None)),
            reply_to=self.participants(getattr(item, "reply_to", None)),
            message_id=(getattr(item, "message_id", None) or None),
            in_reply_to=(getattr(item, "in_reply_to", None) or None),
            references=references.split(),
            conversation_id=getattr(conversation, "id", None),
            subject=getattr(item, "subject", None),
            is_auto_reply=is_auto_reply_class(item_class),
            date_defect=date_defect,
        )
        header_fields: dict[str, list[str]] = {}
        for header in getattr(item, "headers", None) or []:
            if header.name:
                header_fields.setdefault(header.name.lower(), []).append(header.value or "")
        classify(mail, header_fields, self.settings.bulk_recipient_threshold)
        return mail

    def message_time(self, item: Any) -> tuple[datetime | None, str | None]:
        """Return the sent time in UTC and a defect note when the received time had to stand in.

        A sent time outside 1980-01-02 .. now + 1 day comes from a wrong client clock; the
        server's received time replaces it when that one is plausible.
        """
        sent = plausible_time(self.to_utc(getattr(item, "datetime_sent", None)))
        if sent is not None:
            return sent, None
        received = plausible_time(self.to_utc(getattr(item, "datetime_received", None)))
        if received is not None:
            return received, "sent time missing or implausible; used the received time"
        return None, "no plausible sent or received time"

    def to_utc(self, value: datetime | None) -> datetime | None:
        """Return an aware UTC datetime; a value without an offset is read in the mailbox's zone."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=ZoneInfo(self.settings.timezone))
        return datetime.fromtimestamp(value.timestamp(), tz=timezone.utc)

    def participants(self, mailboxes: Any) -> list[Participant]:
        result = []
        for mailbox in mailboxes or []:
            participant = self.participant(mailbox)
            if participant is not None:
                result.append(participant)
        return result

    def participant(self, mailbox: Any) -> Participant | None:
        """Convert an exchangelib Mailbox; a legacy DN becomes its SMTP address or a bare name."""
        if mailbox is None:
            return None
        name = (getattr(mailbox, "name", None) or "").strip() or None
        address = (getattr(mailbox, "email_address", None) or "").strip()
        if is_legacy_dn(address, getattr(mailbox, "routing_type", None)):
            resolved = self._dn_cache.get(address.lower())
            return Participant(address=resolved, name=name) if resolved or name else None
        if "@" in address:
            return Participant(address=address.lower(), name=name)
        if name or address:
            return Participant(address=None, name=name or address)
        return None

    def _resolve_legacy_dns(self, items: list[Any]) -> None:
        """Resolve every legacy DN of these items to SMTP with ResolveNames, once per run."""
        pending: dict[str, str] = {}
        for item in items:
            for mailbox in _all_mailboxes(item):
                address = (getattr(mailbox, "email_address", None) or "").strip()
                if not is_legacy_dn(address, getattr(mailbox, "routing_type", None)):
                    continue
                key = address.lower()
                if key in self._dn_cache or key in pending:
                    continue
                with _DN_CACHE_LOCK:
                    shared = _DN_CACHE.get((self._endpoint_key(), key), _MISSING)
                if shared is not _MISSING:
                    self._dn_cache[key] = shared  # type: ignore[assignment]
                    continue
                pending[key] = address
        if not pending:
            return
        for key, address in pending.items():
            smtp = self._call(lambda: self._resolve_one(address), "resolving a legacy Exchange address")
            self._dn_cache[key] = smtp
            _remember_dn(self._endpoint_key(), key, smtp)
            if smtp is None:
                log.info("legacy Exchange address in mailbox %s did not resolve; kept as a name only", self.settings.owner)

    def _resolve_one(self, address: str) -> str | None:
        # One entry per request, because a request with several entries returns a variable
        # number of mailboxes when an entry is ambiguous, and the results no longer line up.
        try:
            results = self.account.protocol.resolve_names([address], return_full_contact_data=False)
        except ResponseMessageError as exc:
            log.debug("ResolveNames failed for a legacy address: %s", type(exc).__name__)
            return None
        for result in results:
            if isinstance(result, Exception) or result is None:
                continue
            smtp = (getattr(result, "email_address", None) or "").strip()
            if "@" in smtp and not smtp.lower().startswith("/o="):
                return smtp.lower()
        return None

    def _endpoint_key(self) -> str:
        return self.settings.ews_url or f"autodiscover:{self.settings.owner.rsplit('@', 1)[-1]}"

    # --- calendar and contacts -------------------------------------------------------------

    def read_meetings(self, start: datetime | None = None, end: datetime | None = None) -> list[Meeting]:
        """Return the meetings of the calendar view between ``start`` and ``end`` (UTC)."""
        now = datetime.now(timezone.utc)
        start = start or now - timedelta(days=self.settings.calendar_past_days)
        end = end or now + timedelta(days=self.settings.calendar_future_days)
        calendar = self._call(lambda: self.account.calendar, "opening the calendar")
        if not isinstance(calendar, Calendar):
            raise SourceError(f"the calendar of {self.settings.owner} is not a calendar folder")
        items = self._call(
            lambda: list(calendar.view(start=start, end=end).only(*MEETING_FIELDS)), "reading the calendar"
        )
        self._resolve_legacy_dns(items)
        meetings = []
        for item in items:
            if isinstance(item, Exception):
                log.warning("skipped a calendar item of %s: %s", self.settings.owner, type(item).__name__)
                continue
            attendees = []
            for attendee in list(item.required_attendees or []) + list(item.optional_attendees or []):
                participant = self.participant(attendee.mailbox)
                if participant is not None:
                    attendees.append(MeetingAttendee(participant, attendee.response_type))
            starts_at = self.to_utc(item.start) if isinstance(item.start, datetime) else None
            if starts_at is None:
                # An all-day item has a date; it starts at midnight in the mailbox's zone.
                starts_at = self.to_utc(datetime(item.start.year, item.start.month, item.start.day))
            ends_at = self.to_utc(item.end) if isinstance(item.end, datetime) else None
            meetings.append(
                Meeting(
                    source_id=f"ews:{item.id}",
                    starts_at=starts_at,
                    ends_at=ends_at,
                    subject=item.subject,
                    organizer=self.participant(item.organizer),
                    attendees=attendees,
                    is_cancelled=bool(item.is_cancelled),
                )
            )
        return meetings

    def read_contacts(self) -> list[AddressCard]:
        """Return every entry of the Contacts folder with its company name and job title."""
        contacts = self._call(lambda: self.account.contacts, "opening the Contacts folder")
        if not isinstance(contacts, (Contacts, Folder)):
            raise SourceError(f"the Contacts folder of {self.settings.owner} could not be opened")
        items = self._call(lambda: list(contacts.all().only(*CONTACT_FIELDS)), "reading the Contacts folder")
        cards = []
        for item in items:
            if isinstance(item, Exception) or not hasattr(item, "email_addresses"):
                continue  # distribution lists share the folder and have no company
            addresses = sorted(
                {
                    (entry.email or "").strip().lower()
                    for entry in item.email_addresses or []
                    if "@" in (entry.email or "") and not (entry.email or "").lower().startswith("/o=")
                }
            )
            cards.append(
                AddressCard(
                    source_id=f"ews:{item.id}",
                    display_name=item.display_name,
                    company_name=item.company_name,
                    job_title=item.job_title,
                    addresses=addresses,
                )
            )
        return cards

    # --- error handling -------------------------------------------------------------------

    def _call(self, function: Callable[[], T], action: str) -> T:
        """Run one EWS request, waiting on ErrorServerBusy and retrying transient failures.

        A back-off hint that does not fit in what is left of ``max_wait_seconds`` for this
        request raises SourceDeferred. Transient failures are retried ``transient_retries``
        times with exponential delays and then raised as SourceError.
        """
        settings = self.settings
        waited = 0.0
        transient = 0
        while True:
            try:
                return function()
            except ErrorServerBusy as exc:
                hint = float(exc.back_off) if exc.back_off else 60.0
                if waited + hint > settings.max_wait_seconds:
                    raise SourceDeferred(
                        f"Exchange at {self._endpoint_key()} is busy and requested a wait of {hint:.0f}s while "
                        f"{action} for {settings.owner}, which would exceed the allowed "
                        f"{settings.max_wait_seconds:.0f}s per request; the sync is rescheduled",
                        retry_after_seconds=hint,
                    ) from None
                log.warning(
                    "Exchange busy while %s for %s; waiting %.0fs as the server requested", action, settings.owner, hint
                )
                self._sleep(hint)
                waited += hint
                self.waited_seconds += hint
            except RateLimitError as exc:
                raise SourceDeferred(
                    f"Exchange at {self._endpoint_key()} kept throttling while {action}: {exc}",
                    retry_after_seconds=settings.max_wait_seconds or 60.0,
                ) from None
            except ErrorInvalidSyncStateData:
                raise SyncStateExpired(
                    f"Exchange rejected the stored sync state while {action} for {settings.owner}; "
                    "the folder is read again from the start"
                ) from None
            except UnauthorizedError:
                raise SourceError(
                    f"Exchange at {self._endpoint_key()} rejected the login while {action} for {settings.owner}; "
                    "check the user name and password behind the credentials reference"
                ) from None
            except ErrorImpersonateUserDenied:
                raise SourceError(
                    f"the service account may not impersonate {settings.owner}; assign it the "
                    "ApplicationImpersonation role with a management scope that contains this mailbox"
                ) from None
            except (ErrorAccessDenied, ErrorNonExistentMailbox, ErrorFolderNotFound) as exc:
                raise SourceError(
                    f"Exchange denied access while {action} for {settings.owner} ({type(exc).__name__}); "
                    "check the mailbox address, the folder names and the account's permissions"
                ) from None
            except (
                ErrorTimeoutExpired,
                ErrorInternalServerTransientError,
                ErrorInternalServerError,
                ErrorMailboxStoreUnavailable,
                MalformedResponseError,
                SOAPError,
                TransportError,
            ) as exc:
                transient += 1
                if transient > settings.transient_retries:
                    raise SourceError(
                        f"Exchange at {self._endpoint_key()} failed on {transient} attempts while {action} for "
                        f"{settings.owner}: {type(exc).__name__}; the next sync tries again"
                    ) from None
                delay = min(2.0**transient, 30.0)
                log.warning(
                    "EWS request failed while %s for %s (%s); retry %d of %d in %.0fs",
                    action,
                    settings.owner,
                    type(exc).__name__,
                    transient,
                    settings.transient_retries,
                    delay,
                )
                self._sleep(delay)


_MISSING = object()


def _remember_dn(endpoint: str, dn: str, smtp: str | None) -> None:
    with _DN_CACHE_LOCK:
        _DN_CACHE[(endpoint, dn)] = smtp
        _DN_CACHE.move_to_end((endpoint, dn))
        while len(_DN_CACHE) > _DN_CACHE_MAX:
            _DN_CACHE.popitem(last=False)


def clear_dn_cache() -> None:
    with _DN_CACHE_LOCK:
        _DN_CACHE.clear()


def _all_mailboxes(item: Any) -> Iterator[Any]:
    for name in ("author", "sender", "organizer"):
        value = getattr(item, name, None)
        if value is not None:
            yield value
    for name in ("to_recipients", "cc_recipients", "bcc_recipients", "reply_to"):
        yield from getattr(item, name, None) or []
    for name in ("required_attendees", "optional_attendees"):
        for attendee in getattr(item, name, None) or []:
            if attendee.mailbox is not None:
                yield attendee.mailbox


def is_legacy_dn(address: str | None, routing_type: str | None = None) -> bool:
    """True for an X.500 legacy Exchange DN such as /o=Org/ou=.../cn=Recipients/cn=user."""
    if not address:
        return False
    return (routing_type or "").upper() == "EX" or address.lower().startswith("/o=")


def is_auto_reply_class(item_class: str | None) -> bool:
    value = (item_class or "").lower()
    return any(value.startswith(prefix) for prefix in AUTO_REPLY_CLASS_PREFIXES)
