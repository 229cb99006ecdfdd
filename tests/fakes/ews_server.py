"""A fake Exchange Web Services endpoint on 127.0.0.1 that real exchangelib talks to over HTTP.

It speaks SOAP 1.1 with the message and type namespaces of the EWS schema (Exchange 2013 SP1
and later) and implements the operations the bot's EWS source sends:

* ConvertId, only as the version probe exchangelib sends when no version is configured:
  the response is an error message, but its ServerVersionInfo header gives the build;
* GetFolder for distinguished folders (root, msgfolderroot, inbox, sentitems, calendar,
  contacts, deleteditems) and FindFolder for the direct children of a folder;
* SyncFolderItems with SyncState paging (MaxChangesReturned, IncludesLastItemInRange);
* GetItem for messages, calendar items and contacts, returning only the requested fields;
* FindItem with a CalendarView or an IndexedPageItemView;
* ResolveNames for legacy Exchange DNs.

Requests are authenticated with HTTP basic auth or a bearer token. A caller acts on its own
mailbox, on another one through the ExchangeImpersonation header (when ``impersonation``
allows it) or as a delegate (when ``delegates`` allows it).

Faults are injected per operation with ``inject``: ErrorServerBusy with a back-off hint,
an HTTP status, a response delayed past the client timeout, malformed XML, a rejected sync
state, or a dropped connection. Every request is recorded in ``requests``.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable
from xml.sax.saxutils import escape

from pathlib import Path

from lxml import etree

from tests.fakes.mailstore import (
    CALENDAR,
    CONTACTS,
    INBOX,
    SENT,
    FakeAddress,
    FakeContact,
    FakeEvent,
    FakeMailbox,
    FakeMessage,
)
from tests.fakes.tls import server_context

log = logging.getLogger(__name__)

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
NS = {"s": SOAP, "m": M, "t": T}

# Exchange Server 2016 CU23 reports this build; Version is what such servers send.
SERVER_BUILD = (15, 1, 2507, 6)
SERVER_VERSION_NAME = "V2017_07_11"

DISTINGUISHED = {
    "root": ("Root", "Folder", None, "IPF"),
    "msgfolderroot": ("Top of Information Store", "Folder", "root", "IPF"),
    INBOX: ("Inbox", "Folder", "msgfolderroot", "IPF.Note"),
    SENT: ("Sent Items", "Folder", "msgfolderroot", "IPF.Note"),
    "deleteditems": ("Deleted Items", "Folder", "msgfolderroot", "IPF.Note"),
    CALENDAR: ("Calendar", "CalendarFolder", "msgfolderroot", "IPF.Appointment"),
    CONTACTS: ("Contacts", "ContactsFolder", "msgfolderroot", "IPF.Contact"),
}


@dataclass
class Fault:
    """One injected failure; ``kind`` is busy, http, slow, malformed, expired or drop."""

    kind: str
    back_off_ms: int | None = None
    status: int = 500
    delay: float = 0.0

    @staticmethod
    def busy(back_off_ms: int | None) -> "Fault":
        return Fault("busy", back_off_ms=back_off_ms)

    @staticmethod
    def http(status: int) -> "Fault":
        return Fault("http", status=status)

    @staticmethod
    def slow(delay: float) -> "Fault":
        return Fault("slow", delay=delay)


@dataclass
class RequestRecord:
    operation: str
    mailbox: str | None
    status: int
    at: float
    detail: str = ""


@dataclass
class _Target:
    mailbox: FakeMailbox | None  # None for operations on the server, not on a mailbox
    login: str


# Operations that address the server's directory or version, not a mailbox.
SERVER_OPERATIONS = {"ConvertId", "ResolveNames"}

# Errors EWS reports in an error response message; the others come as SOAP faults.
RESPONSE_MESSAGE_ERRORS = {
    "ErrorInvalidSyncStateData",
    "ErrorAccessDenied",
    "ErrorNonExistentMailbox",
    "ErrorInvalidRequest",
    "ErrorItemNotFound",
}


class EwsFault(Exception):
    """A failure returned as a SOAP fault or an error response message."""

    def __init__(self, code: str, text: str, http_status: int = 500):
        super().__init__(text)
        self.code = code
        self.text = text
        self.http_status = http_status


class FakeEwsServer:
    """The fake server; use as a context manager or call ``start`` and ``stop``."""

    def __init__(
        self,
        mailboxes: Iterable[FakeMailbox] = (),
        users: dict[str, str] | None = None,
        bearer: Callable[[str], str | None] | None = None,
        impersonation: dict[str, set[str]] | None = None,
        delegates: dict[str, set[str]] | None = None,
        directory: dict[str, FakeAddress] | None = None,
        tls: tuple[Path, Path] | None = None,
    ):
        self.mailboxes: dict[str, FakeMailbox] = {m.owner: m for m in mailboxes}
        self.users = users or {}
        self.bearer = bearer  # returns the login a bearer token belongs to, or None
        self.impersonation = impersonation or {}
        self.delegates = delegates or {}
        self.directory = {k.lower(): v for k, v in (directory or {}).items()}
        self.tls = tls  # (certificate, key) to serve HTTPS instead of HTTP
        self.requests: list[RequestRecord] = []
        self.requested_fields: list[tuple[str, frozenset[str]]] = []  # (operation, FieldURIs)
        self.faults: list[tuple[str, Fault]] = []
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> "FakeEwsServer":
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = server_context(*self.tls).wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-ews", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeEwsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{port}/EWS/Exchange.asmx"

    # --- test helpers ----------------------------------------------------------------

    def inject(self, operation: str, fault: Fault, times: int = 1) -> None:
        """Fail the next ``times`` requests of ``operation`` ("*" for any) with ``fault``."""
        with self.lock:
            self.faults.extend([(operation, fault)] * times)

    def count(self, operation: str | None = None) -> int:
        with self.lock:
            if operation is None:
                return len(self.requests)
            return sum(1 for r in self.requests if r.operation == operation)

    def counts(self) -> Counter:
        with self.lock:
            return Counter(r.operation for r in self.requests)

    def _take_fault(self, operation: str) -> Fault | None:
        with self.lock:
            for index, (name, fault) in enumerate(self.faults):
                if name in (operation, "*"):
                    del self.faults[index]
                    return fault
        return None

    def _record(self, operation: str, mailbox: str | None, status: int, detail: str = "") -> None:
        with self.lock:
            self.requests.append(RequestRecord(operation, mailbox, status, time.monotonic(), detail))

    # --- authentication and mailbox selection -----------------------------------------

    def authenticate(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user.lower() if self.users.get(user.lower()) == password else None
        if scheme.lower() == "bearer" and self.bearer is not None:
            return self.bearer(value.strip())
        return None

    def select_mailbox(self, login: str, envelope: etree._Element, body_op: etree._Element) -> _Target:
        impersonated = envelope.findtext(".//t:ExchangeImpersonation//t:PrimarySmtpAddress", namespaces=NS)
        if impersonated:
            address = impersonated.strip().lower()
            if address != login and address not in self.impersonation.get(login, set()):
                raise EwsFault(
                    "ErrorImpersonateUserDenied",
                    "The account does not have permission to impersonate the requested user.",
                )
            return _Target(self._mailbox(address), login)
        mailbox_address = body_op.findtext(".//t:DistinguishedFolderId/t:Mailbox/t:EmailAddress", namespaces=NS)
        if mailbox_address is None:
            folder_id = body_op.find(".//t:FolderId", namespaces=NS)
            if folder_id is not None:
                mailbox_address = _folder_owner(folder_id.get("Id", ""))
        if mailbox_address is None:
            item_id = body_op.find(".//t:ItemId", namespaces=NS)
            if item_id is not None:
                mailbox_address = self._item_owner(item_id.get("Id", ""))
        address = (mailbox_address or login).strip().lower()
        if address != login and address not in self.delegates.get(login, set()):
            raise EwsFault("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return _Target(self._mailbox(address), login)

    def _mailbox(self, address: str) -> FakeMailbox:
        mailbox = self.mailboxes.get(address)
        if mailbox is None:
            raise EwsFault("ErrorNonExistentMailbox", f"No mailbox with such guid or SMTP address: {address}")
        return mailbox

    def _item_owner(self, item_id: str) -> str | None:
        for owner, box in self.mailboxes.items():
            if item_id in box.messages or item_id in box.events or item_id in box.contacts:
                return owner
        return None


# --- HTTP handling ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    fake: FakeEwsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base class name
        log.debug("fake EWS: " + format, *args)

    def do_GET(self) -> None:
        self._send(405, b"", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        login = self.fake.authenticate(self.headers.get("Authorization"))
        if login is None:
            self.fake._record("unauthorized", None, 401)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="fake-ews"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        try:
            envelope = etree.fromstring(data)
        except etree.XMLSyntaxError:
            self.fake._record("invalid-request", None, 400)
            self._send(400, b"request is not XML", "text/plain")
            return
        body = envelope.find("s:Body", NS)
        operation_elem = body[0] if body is not None and len(body) else None
        if operation_elem is None:
            self._send(400, b"empty SOAP body", "text/plain")
            return
        operation = etree.QName(operation_elem).localname

        fault = self.fake._take_fault(operation)
        if fault is not None and self._apply_fault(operation, fault):
            return

        mailbox_address = None
        try:
            if operation in SERVER_OPERATIONS:
                target = _Target(None, login)
            else:
                target = self.fake.select_mailbox(login, envelope, operation_elem)
                mailbox_address = target.mailbox.owner
            if fault is not None and fault.kind == "expired":
                raise EwsFault("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
            handler = OPERATIONS.get(operation)
            if handler is None:
                raise EwsFault("ErrorInvalidRequest", f"The fake server does not implement {operation}.")
            if target.mailbox is None:
                inner = handler(self.fake, target, operation_elem)
            else:
                with target.mailbox.lock:
                    inner = handler(self.fake, target, operation_elem)
            payload = _envelope(inner)
            status = 200
        except EwsFault as exc:
            if operation == "ConvertId" or exc.code in RESPONSE_MESSAGE_ERRORS:
                payload = _envelope(_error_response(operation, exc))
                status = 200
            else:
                payload = _soap_fault(exc.code, exc.text)
                status = exc.http_status

        self.fake._record(operation, mailbox_address, status)
        self._send(status, payload.encode("utf-8"), "text/xml; charset=utf-8")

    def _apply_fault(self, operation: str, fault: Fault) -> bool:
        """Send the fault's response; return False when the request goes on (delay or expired state)."""
        if fault.kind == "busy":
            self.fake._record(operation, None, 500, "ErrorServerBusy")
            detail = ""
            if fault.back_off_ms is not None:
                detail = (
                    f'<t:MessageXml xmlns:t="{T}"><t:Value Name="BackOffMilliseconds">'
                    f"{fault.back_off_ms}</t:Value></t:MessageXml>"
                )
            payload = _soap_fault(
                "ErrorServerBusy", "The server cannot service this request right now. Try again later.", detail
            )
            self._send(500, payload.encode(), "text/xml; charset=utf-8")
            return True
        if fault.kind == "http":
            self.fake._record(operation, None, fault.status, "http")
            self._send(fault.status, b"Service Unavailable", "text/html")
            return True
        if fault.kind == "malformed":
            self.fake._record(operation, None, 200, "malformed")
            self._send(200, b'<?xml version="1.0"?><s:Envelope xmlns:s="' + SOAP.encode() + b'"><s:Body><m:Sy',
                       "text/xml; charset=utf-8")
            return True
        if fault.kind == "drop":
            self.fake._record(operation, None, 0, "drop")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if fault.kind == "slow":
            self.fake._record(operation, None, 0, "slow")
            time.sleep(fault.delay)
            return False
        return False

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("fake EWS: client closed the connection")


# --- SOAP building blocks --------------------------------------------------------------


def _envelope(inner: str) -> str:
    major, minor, build, revision = SERVER_BUILD
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}"><s:Header>'
        f'<h:ServerVersionInfo MajorVersion="{major}" MinorVersion="{minor}" MajorBuildNumber="{build}" '
        f'MinorBuildNumber="{revision}" Version="{SERVER_VERSION_NAME}" xmlns:h="{T}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
        f"</s:Header><s:Body>{inner}</s:Body></s:Envelope>"
    )


def _soap_fault(code: str, text: str, detail_xml: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{T}">a:{code}</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(text)}</faultstring>'
        f'<detail><e:ResponseCode xmlns:e="{E}">{code}</e:ResponseCode>'
        f'<e:Message xmlns:e="{E}">{escape(text)}</e:Message>{detail_xml}</detail>'
        "</s:Fault></s:Body></s:Envelope>"
    )


def _response(operation: str, messages: list[str]) -> str:
    return (
        f'<m:{operation}Response xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
        + "".join(messages)
        + f"</m:ResponseMessages></m:{operation}Response>"
    )


def _ok(operation: str, content: str) -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        f"{content}</m:{operation}ResponseMessage>"
    )


def _error_message(operation: str, code: str, text: str) -> str:
    # A SyncFolderItems error carries an empty SyncState, as in Microsoft's documented sample.
    extra = "<m:SyncState /><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>" if operation == "SyncFolderItems" else ""
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>{escape(text)}</m:MessageText>'
        f"<m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{extra}"
        f"</m:{operation}ResponseMessage>"
    )


def _error_response(operation: str, exc: EwsFault) -> str:
    return _response(operation, [_error_message(operation, exc.code, exc.text)])


def _text(tag: str, value: object) -> str:
    if value is None:
        return ""
    return f"<t:{tag}>{escape(str(value))}</t:{tag}>"


def _datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.strftime("%Y-%m-%dT%H:%M:%S")  # served without an offset, as some servers do
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mailbox_xml(who: FakeAddress) -> str:
    parts = [_text("Name", who.name)]
    if who.address:
        parts.append(_text("EmailAddress", who.address))
        parts.append(_text("RoutingType", who.routing_type))
    parts.append(_text("MailboxType", who.mailbox_type))
    return "<t:Mailbox>" + "".join(parts) + "</t:Mailbox>"


def _mailboxes(tag: str, people: list[FakeAddress]) -> str:
    if not people:
        return ""
    return f"<t:{tag}>" + "".join(_mailbox_xml(p) for p in people) + f"</t:{tag}>"


def _folder_id(owner: str, key: str) -> str:
    return base64.b64encode(f"folder|{owner}|{key}".encode()).decode()


def _folder_owner(folder_id: str) -> str | None:
    try:
        kind, owner, _ = base64.b64decode(folder_id).decode().split("|", 2)
    except (ValueError, UnicodeDecodeError):
        return None
    return owner if kind == "folder" else None


def _folder_key(folder_id: str) -> str | None:
    try:
        kind, _, key = base64.b64decode(folder_id).decode().split("|", 2)
    except (ValueError, UnicodeDecodeError):
        return None
    return key if kind == "folder" else None


def _requested_fields(shape: etree._Element | None) -> set[str]:
    """Return the FieldURI values of an item or folder shape, or {"*"} for AllProperties."""
    if shape is None:
        return set()
    fields = {el.get("FieldURI") for el in shape.iterfind(".//t:FieldURI", NS)}
    fields |= {f"{el.get('FieldURI')}:{el.get('FieldIndex')}" for el in shape.iterfind(".//t:IndexedFieldURI", NS)}
    if shape.findtext("t:BaseShape", namespaces=NS) in ("AllProperties", "Default"):
        fields.add("*")
    return {f for f in fields if f}


# --- item serialization ------------------------------------------------------------------


def _message_xml(message: FakeMessage, fields: set[str], tag: str = "Message") -> str:
    every = "*" in fields

    def want(uri: str) -> bool:
        return every or uri in fields

    parts = [f'<t:ItemId Id="{message.item_id}" ChangeKey="CQAAABYAAAA"/>']
    if want("item:ItemClass"):
        parts.append(_text("ItemClass", message.item_class))
    if want("item:Subject"):
        parts.append(_text("Subject", message.subject))
    if want("item:DateTimeReceived"):
        parts.append(_text("DateTimeReceived", _datetime(message.received)))
    if want("item:InReplyTo"):
        parts.append(_text("InReplyTo", message.in_reply_to))
    if want("item:InternetMessageHeaders") and message.headers:
        parts.append(
            "<t:InternetMessageHeaders>"
            + "".join(
                f'<t:InternetMessageHeader HeaderName="{escape(name, {chr(34): "&quot;"})}">{escape(value)}'
                "</t:InternetMessageHeader>"
                for name, value in message.headers
            )
            + "</t:InternetMessageHeaders>"
        )
    if want("item:DateTimeSent"):
        parts.append(_text("DateTimeSent", _datetime(message.sent)))
    if want("item:ConversationId") and message.conversation_id:
        parts.append(f'<t:ConversationId Id="{message.conversation_id}"/>')
    if want("message:Sender") and message.sender is not None:
        parts.append("<t:Sender>" + _mailbox_xml(message.sender) + "</t:Sender>")
    if want("message:ToRecipients"):
        parts.append(_mailboxes("ToRecipients", message.to))
    if want("message:CcRecipients"):
        parts.append(_mailboxes("CcRecipients", message.cc))
    if want("message:BccRecipients"):
        parts.append(_mailboxes("BccRecipients", message.bcc))
    if want("message:From") and message.sender is not None:
        parts.append("<t:From>" + _mailbox_xml(message.sender) + "</t:From>")
    if want("message:InternetMessageId"):
        parts.append(_text("InternetMessageId", message.message_id))
    if want("message:References"):
        parts.append(_text("References", message.references))
    if want("message:ReplyTo"):
        parts.append(_mailboxes("ReplyTo", message.reply_to))
    return f"<t:{tag}>" + "".join(parts) + f"</t:{tag}>"


def _event_xml(event: FakeEvent, fields: set[str]) -> str:
    every = "*" in fields

    def want(uri: str) -> bool:
        return every or uri in fields

    parts = [f'<t:ItemId Id="{event.item_id}" ChangeKey="DwAAABYAAAA"/>']
    if want("item:ItemClass"):
        parts.append(_text("ItemClass", "IPM.Appointment"))
    if want("item:Subject"):
        parts.append(_text("Subject", event.subject))
    if want("calendar:Start"):
        parts.append(_text("Start", _datetime(event.start)))
    if want("calendar:End"):
        parts.append(_text("End", _datetime(event.end)))
    if want("calendar:IsCancelled"):
        parts.append(_text("IsCancelled", "true" if event.is_cancelled else "false"))
    if want("calendar:IsMeeting"):
        parts.append(_text("IsMeeting", "true" if event.attendees else "false"))
    if want("calendar:Organizer"):
        parts.append("<t:Organizer>" + _mailbox_xml(event.organizer) + "</t:Organizer>")
    for tag, optional in (("RequiredAttendees", False), ("OptionalAttendees", True)):
        if not want(f"calendar:{tag}"):
            continue
        chosen = [a for a in event.attendees if a.optional == optional]
        if chosen:
            parts.append(
                f"<t:{tag}>"
                + "".join(
                    "<t:Attendee>" + _mailbox_xml(a.person) + _text("ResponseType", a.response) + "</t:Attendee>"
                    for a in chosen
                )
                + f"</t:{tag}>"
            )
    return "<t:CalendarItem>" + "".join(parts) + "</t:CalendarItem>"


def _contact_xml(contact: FakeContact, fields: set[str]) -> str:
    every = "*" in fields

    def want(uri: str) -> bool:
        return every or uri in fields or any(f.startswith(uri + ":") for f in fields)

    parts = [f'<t:ItemId Id="{contact.item_id}" ChangeKey="EQAAABYAAAA"/>']
    if want("item:ItemClass"):
        parts.append(_text("ItemClass", "IPM.Contact"))
    if want("contacts:DisplayName"):
        parts.append(_text("DisplayName", contact.display_name))
    if want("contacts:CompanyName"):
        parts.append(_text("CompanyName", contact.company_name))
    if want("contacts:EmailAddress") and contact.emails:
        entries = "".join(
            f'<t:Entry Key="EmailAddress{index}">{escape(address)}</t:Entry>'
            for index, address in enumerate(contact.emails[:3], start=1)
        )
        parts.append(f"<t:EmailAddresses>{entries}</t:EmailAddresses>")
    if want("contacts:JobTitle"):
        parts.append(_text("JobTitle", contact.job_title))
    return "<t:Contact>" + "".join(parts) + "</t:Contact>"


def _item_xml(box: FakeMailbox, item_id: str, fields: set[str]) -> str | None:
    if item_id in box.messages:
        message = box.messages[item_id]
        tag = "MeetingRequest" if message.item_class.startswith("IPM.Schedule.Meeting.Request") else "Message"
        return _message_xml(message, fields, tag)
    if item_id in box.events:
        return _event_xml(box.events[item_id], fields)
    if item_id in box.contacts:
        return _contact_xml(box.contacts[item_id], fields)
    return None


# --- operations ------------------------------------------------------------------------


def _folder_spec(key: str) -> tuple[str, str, str | None, str]:
    """Return (display name, element, parent key, folder class) of a folder key.

    A key that is not distinguished is a path such as ``inbox/Projects``: the last segment is
    the name and the rest the parent.
    """
    if key in DISTINGUISHED:
        return DISTINGUISHED[key]
    parent, _, name = key.rpartition("/")
    return name, "Folder", parent or "msgfolderroot", "IPF.Note"


def _folder_xml(owner: str, key: str, box: FakeMailbox) -> str:
    name, tag, parent, folder_class = _folder_spec(key)
    if key in (CALENDAR,):
        count = len(box.events)
    elif key in (CONTACTS,):
        count = len(box.contacts)
    else:
        count = len(box.folder_messages(key))
    parent_xml = f'<t:ParentFolderId Id="{_folder_id(owner, parent)}" ChangeKey="AQAAAA=="/>' if parent else ""
    return (
        f'<t:{tag}><t:FolderId Id="{_folder_id(owner, key)}" ChangeKey="AQAAABYAAAA"/>{parent_xml}'
        f"{_text('FolderClass', folder_class)}{_text('DisplayName', name)}"
        f"<t:TotalCount>{count}</t:TotalCount><t:ChildFolderCount>0</t:ChildFolderCount>"
        f"<t:UnreadCount>0</t:UnreadCount></t:{tag}>"
    )


def _resolve_folder(target: _Target, elem: etree._Element) -> str:
    """Return the folder key named by a DistinguishedFolderId or FolderId element."""
    if etree.QName(elem).localname == "DistinguishedFolderId":
        key = elem.get("Id", "")
    else:
        key = _folder_key(elem.get("Id", "")) or ""
    known = set(DISTINGUISHED) | {m.folder for m in target.mailbox.messages.values()}
    if key not in known:
        raise EwsFault("ErrorFolderNotFound", f"The specified folder could not be found in the store: {key}")
    return key


def op_convert_id(fake: FakeEwsServer, target: _Target, op: etree._Element) -> str:
    raise EwsFault("ErrorInvalidIdMalformed", "Id is malformed.")


def op_get_folder(fake: FakeEwsServer, target: _Target, op: etree._Element) -> str:
    messages = []
    ids = op.find("m:FolderIds", NS)
    for elem in ids if ids is not None else []:
        try:
            key = _resolve_folder(target, elem)
        except EwsFault as exc:
            messages.append(_error_message("GetFolder", exc.code, exc.text))
            continue
        messages.append(_ok("GetFolder", "<m:Folders>" + _folder_xml(target.mailbox.owner, key, target.mailbox) + "</m:Folders>"))
    return _response("GetFolder", messages)


def op_find_folder(fake: FakeEwsServer, target: _Target, op: etree._Element) -> str:
    """List the direct children of each parent; an IsEqualTo on folder:DisplayName filters them."""
    messages = []
    ids = op.find("m:ParentFolderIds", NS)
    owner = target.mailbox.owner
    name_filter = None
    restriction = op.find("m:Restriction/t:IsEqualTo", NS)
    if restriction is not None:
        field = restriction.find("t:FieldURI", NS)
        constant = restriction.find("t:FieldURIOrConstant/t:Constant", NS)
        if field is None or field.get("FieldURI") != "folder:DisplayName" or constant is None:
            raise EwsFault("ErrorInvalidRequest", "The fake server filters folders by folder:DisplayName only.")
        name_filter = (constant.get("Value") or "").lower()
    custom = {m.folder for m in target.mailbox.messages.values()} - set(DISTINGUISHED)
    for elem in ids if ids is not None else []:
        parent = _resolve_folder(target, elem)
        children = [key for key in [*DISTINGUISHED, *sorted(custom)] if _folder_spec(key)[2] == parent]
        if name_filter is not None:
            children = [key for key in children if _folder_spec(key)[0].lower() == name_filter]
        body = "".join(_folder_xml(owner, key, target.mailbox) for key in children)
        messages.append(
            _ok(
                "FindFolder",
                f'<m:RootFolder IndexedPagingOffset="{len(children)}" TotalItemsInView="{len(children)}" '
                f'IncludesLastItemInRange="true"><t:Folders>{body}</t:Folders></m:RootFolder>',
            )
        )
    return _response("FindFolder", messages)


def op_sync_folder_items(fake: FakeEwsServer, target: _Target, op: etree._Element) -> str:
    box = target.mailbox
    folder_elem = op.find("m:SyncFolderId", NS)[0]
    key = _resolve_folder(target, folder_elem)
    fields = _requested_fields(op.find("m:ItemShape", NS))
    fake.requested_fields.append(("SyncFolderItems", frozenset(fields)))
    state_text = op.findtext("m:SyncState", namespaces=NS)
    seq = 0
    if state_text:
        parsed = box.parse_cursor(key, state_text.strip())
        if parsed is None:
            raise EwsFault("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
        seq = parsed
    limit = int(op.findtext("m:MaxChangesReturned", default="100", namespaces=NS))
    if not 1 <= limit <= 512:
        raise EwsFault("ErrorInvalidRequest", "MaxChangesReturned must be between 1 and 512.")

    changes, last = box.changes_after(key, seq, limit)
    parts = []
    for change in changes:
        if change.kind == "delete":
            parts.append(f'<t:Delete><t:ItemId Id="{change.item_id}" ChangeKey="CQAAABYAAAA"/></t:Delete>')
            continue
        item = _item_xml(box, change.item_id, fields)
        if item is None:
            continue
        tag = "Create" if change.kind == "create" else "Update"
        parts.append(f"<t:{tag}>{item}</t:{tag}>")

    new_seq = changes[-1].seq if changes else seq
    content = (
        f"<m:SyncState>{box.cursor(key, new_seq)}</m:SyncState>"
        f"<m:IncludesLastItemInRange>{'true' if last else 'false'}</m:IncludesLastItemInRange>"
        f"<m:Changes>{''.join(parts)}</m:Changes>"
    )
    return _response("SyncFolderItems", [_ok("SyncFolderItems", content)])


def op_get_item(fake: FakeEwsServer, target: _Target, op: etree._Element) -> str:
    box = target.mailbox
    fields = _requested_fields(op.find("m:ItemShape", NS))
    fake.requested_fields.append(("GetItem", frozenset(fields)))
    messages = []
    for elem in op.find("m:ItemIds", NS):
        item = _item_xml(box, elem.get("Id", ""), fields)
        if item is None:
            messages.append(
                _error_message("GetItem", "ErrorItemNotFound", "The specified object was not found in the store.")
            )
        else:
            messages.append(_ok("GetItem", f"<m:Items>{item}</m:Items>"))
    return _response("GetItem", messages)


def op_find_item(fake: FakeEwsServer, target: _Target, op: etree._Element) -> str:
    box = target.mailbox
    fields = _requested_fields(op.find("m:ItemShape", NS))
    parents = op.find("m:ParentFolderIds", NS)
    key = _resolve_folder(target, parents[0])
    view = op.find("m:CalendarView", NS)
    paged = op.find("m:IndexedPageItemView", NS)
    if key == CALENDAR:
        events = sorted(box.events.values(), key=lambda e: e.start)
        if view is not None:
            start = _parse_time(view.get("StartDate"))
            end = _parse_time(view.get("EndDate"))
            events = [e for e in events if e.end > start and e.start < end]
        items = [_event_xml(e, fields) for e in events]
    elif key == CONTACTS:
        items = [_contact_xml(c, fields) for c in box.contacts.values()]
    else:
        items = [_message_xml(m, fields) for m in box.folder_messages(key)]

    total = len(items)
    offset = 0
    if paged is not None:
        offset = int(paged.get("Offset", "0"))
        size = int(paged.get("MaxEntriesReturned", "100"))
        items = items[offset : offset + size]
    last = offset + len(items) >= total
    next_offset = "" if last else f' IndexedPagingOffset="{offset + len(items)}"'
    content = (
        f'<m:RootFolder TotalItemsInView="{total}" IncludesLastItemInRange="{"true" if last else "false"}"'
        f"{next_offset}><t:Items>{''.join(items)}</t:Items></m:RootFolder>"
    )
    return _response("FindItem", [_ok("FindItem", content)])


def op_resolve_names(fake: FakeEwsServer, target: _Target, op: etree._Element) -> str:
    messages = []
    for entry in op.iterfind("m:UnresolvedEntry", NS):
        text = (entry.text or "").strip()
        found = fake.directory.get(text.lower())
        if found is None:
            messages.append(
                _error_message(
                    "ResolveNames", "ErrorNameResolutionNoResults", "No results were found."
                )
            )
            continue
        content = (
            '<m:ResolutionSet TotalItemsInView="1" IncludesLastItemInRange="true"><t:Resolution>'
            + _mailbox_xml(found)
            + "</t:Resolution></m:ResolutionSet>"
        )
        messages.append(_ok("ResolveNames", content))
    return _response("ResolveNames", messages)


def _parse_time(text: str | None) -> datetime:
    if not text:
        raise EwsFault("ErrorInvalidRequest", "CalendarView needs StartDate and EndDate.")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


OPERATIONS: dict[str, Callable[[FakeEwsServer, _Target, etree._Element], str]] = {
    "ConvertId": op_convert_id,
    "GetFolder": op_get_folder,
    "FindFolder": op_find_folder,
    "SyncFolderItems": op_sync_folder_items,
    "GetItem": op_get_item,
    "FindItem": op_find_item,
    "ResolveNames": op_resolve_names,
}

