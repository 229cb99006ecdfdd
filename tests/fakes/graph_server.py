"""A fake Microsoft Graph v1.0 endpoint and identity provider over HTTPS on 127.0.0.1.

It serves what the bot's Graph source and MSAL request:

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
  ``POST /{tenant}/oauth2/v2.0/token`` (client-credentials grant), so real MSAL acquires
  its tokens here;
* ``GET /v1.0/users/{id}/mailFolders/{inbox|sentitems}/messages/delta`` with ``$select``,
  ``Prefer: odata.maxpagesize`` paging by ``@odata.nextLink`` and a final
  ``@odata.deltaLink``, ``@removed`` entries for deleted messages;
* ``GET /v1.0/users/{id}/calendar/calendarView`` and ``GET /v1.0/users/{id}/contacts``.

Response bodies follow the shapes of the Graph v1.0 reference (message delta rounds,
message, event, contact). Each app may read only the mailboxes its access policy lists,
as an Exchange Online application access policy allows.

Faults are injected per route (token, delta, calendarView, contacts or "*"): a status with
or without Retry-After, a slow response, malformed JSON, an expired delta token (410 with
code syncStateNotFound) or a dropped connection.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.fakes.mailstore import INBOX, SENT, FakeAddress, FakeMailbox, FakeMessage
from tests.fakes.tls import make_certificate, server_context

log = logging.getLogger(__name__)

FOLDER_NAMES = {"inbox": INBOX, "sentitems": SENT}
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 10  # Graph's default page size for message delta, as reported


@dataclass
class GraphFault:
    """One injected failure; ``kind`` is status, slow, malformed, gone or drop."""

    kind: str
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    code: str | None = None  # the error code of a status response

    @staticmethod
    def throttled(retry_after: int | None = None, status: int = 429) -> "GraphFault":
        return GraphFault("status", status=status, retry_after=None if retry_after is None else str(retry_after))


@dataclass
class GraphRequest:
    route: str
    path: str
    status: int
    at: float
    query: str = ""
    prefer: str = ""


@dataclass
class App:
    client_id: str
    secret: str
    mailboxes: set[str]  # the application access policy: mailboxes the app may read


class FakeGraphServer:
    """The fake server; use as a context manager or call ``start`` and ``stop``."""

    def __init__(self, mailboxes: list[FakeMailbox], cert_dir: Path, tenant_id: str = "contoso-tenant"):
        self.mailboxes = {m.owner: m for m in mailboxes}
        self.tenant_id = tenant_id
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, str] = {}  # access token -> client id
        self.token_scopes: dict[str, str] = {}
        self.requests: list[GraphRequest] = []
        self.faults: list[tuple[str, GraphFault]] = []
        self.lock = threading.Lock()
        self.cert_path, self.key_path = make_certificate(cert_dir)
        self._httpd: ThreadingHTTPServer | None = None

    def add_app(self, client_id: str, secret: str, mailboxes: set[str]) -> None:
        self.apps[client_id] = App(client_id, secret, {m.lower() for m in mailboxes})

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> "FakeGraphServer":
        server = self

        class Handler(_Handler):
            fake = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.socket = server_context(self.cert_path, self.key_path).wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="fake-graph", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeGraphServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"https://{host}:{port}"

    @property
    def graph_url(self) -> str:
        return self.base + "/v1.0"

    # --- test helpers ----------------------------------------------------------------

    def inject(self, route: str, fault: GraphFault, times: int = 1) -> None:
        with self.lock:
            self.faults.extend([(route, fault)] * times)

    def count(self, route: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if route is None or r.route == route)

    def counts(self) -> Counter:
        with self.lock:
            return Counter(r.route for r in self.requests)

    def _take_fault(self, route: str) -> GraphFault | None:
        with self.lock:
            for index, (name, fault) in enumerate(self.faults):
                if name in (route, "*"):
                    del self.faults[index]
                    return fault
        return None

    def _record(self, route: str, path: str, status: int, query: str = "", prefer: str = "") -> None:
        with self.lock:
            self.requests.append(GraphRequest(route, path, status, time.monotonic(), query, prefer))

    def app_of_token(self, header: str | None) -> App | None:
        if not header or not header.lower().startswith("bearer "):
            return None
        client_id = self.tokens.get(header[7:].strip())
        return self.apps.get(client_id) if client_id else None

    def token_is_valid(self, token: str) -> bool:
        """Return True for a token this identity provider issued; the fake EWS server calls this."""
        return token in self.tokens


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGraphServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base class name
        log.debug("fake Graph: " + format, *args)

    # --- routing ---------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        segments = [s for s in path.split("/") if s]
        if len(segments) >= 4 and segments[1:4] == ["v2.0", ".well-known", "openid-configuration"]:
            self._openid(segments[0])
            return
        if segments[:1] != ["v1.0"] or len(segments) < 3 or segments[1] != "users":
            self._error(404, "ResourceNotFound", f"Resource not found for the segment '{path}'.", "other", path)
            return
        user = segments[2].lower()
        rest = segments[3:]
        if len(rest) == 4 and rest[0].lower() == "mailfolders" and rest[2:] == ["messages", "delta"]:
            route = "delta"
        elif rest == ["calendar", "calendarView"]:
            route = "calendarView"
        elif rest == ["contacts"]:
            route = "contacts"
        else:
            self._error(400, "BadRequest", f"Unsupported segment in '{path}'.", "other", path)
            return
        if self._fault(route, path):
            return
        app = self.fake.app_of_token(self.headers.get("Authorization"))
        if app is None:
            self._error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.", route, path)
            return
        mailbox = self.fake.mailboxes.get(user)
        if mailbox is None:
            self._error(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.", route, path)
            return
        if user not in app.mailboxes:
            self._error(
                403,
                "ErrorAccessDenied",
                "Access to OData is disabled: the application access policy does not include this mailbox.",
                route,
                path,
            )
            return
        with mailbox.lock:
            if route == "delta":
                self._delta(mailbox, rest[1].lower(), query, path)
            elif route == "calendarView":
                self._calendar_view(mailbox, query, path)
            else:
                self._contacts(mailbox, query, path)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        segments = [s for s in unquote(parts.path).split("/") if s]
        if len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "token"]:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self._fault("token", parts.path):
                return
            self._token(segments[0], form, parts.path)
            return
        self._error(404, "ResourceNotFound", "Unknown endpoint.", "other", parts.path)

    # --- identity provider -------------------------------------------------------------

    def _openid(self, tenant: str) -> None:
        base = f"{self.fake.base}/{tenant}"
        body = {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }
        self._json(200, body, "openid", self.path)

    def _token(self, tenant: str, form: dict[str, str], path: str) -> None:
        if tenant != self.fake.tenant_id:
            self._json(400, {"error": "invalid_request", "error_description": f"AADSTS90002: Tenant '{tenant}' not found."}, "token", path)
            return
        if form.get("grant_type") != "client_credentials":
            self._json(400, {"error": "unsupported_grant_type", "error_description": "AADSTS70003: grant type not supported"}, "token", path)
            return
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if secret is None and auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, secret = decoded.partition(":")
        app = self.fake.apps.get(client_id)
        if app is None or app.secret != secret:
            self._json(
                401,
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."},
                "token",
                path,
            )
            return
        token = secrets.token_urlsafe(24)
        with self.fake.lock:
            self.fake.tokens[token] = client_id
            self.fake.token_scopes[token] = form.get("scope", "")
        self._json(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}, "token", path)

    # --- Graph resources -----------------------------------------------------------------

    def _delta(self, box: FakeMailbox, folder_name: str, query: dict[str, str], path: str) -> None:
        folder = FOLDER_NAMES.get(folder_name)
        if folder is None:
            self._error(404, "ErrorInvalidIdMalformed", f"Id is malformed: {folder_name}", "delta", path)
            return
        token_text = query.get("$skiptoken") or query.get("$deltatoken")
        if token_text:
            state = _decode_token(token_text)
            if state is None or state.get("f") != folder or state.get("g") != box.generation:
                self._error(410, "syncStateNotFound", "The sync state is no longer valid; restart the sync.", "delta", path)
                return
            seq, select = int(state["s"]), state.get("sel") or []
        else:
            seq = 0
            select = [f for f in query.get("$select", "").split(",") if f]
        page_size = _page_size(self.headers.get("Prefer", ""))
        immutable = 'idtype="immutableid"' in self.headers.get("Prefer", "").lower()

        changes, last = box.changes_after(folder, seq, page_size)
        values = []
        for change in changes:
            if change.kind == "delete":
                values.append({"@odata.type": "#microsoft.graph.message", "id": _graph_id(change.item_id, immutable), "@removed": {"reason": "deleted"}})
                continue
            message = box.messages.get(change.item_id)
            if message is not None:
                values.append(_message_json(message, select, immutable))

        new_seq = changes[-1].seq if changes else seq
        token = _encode_token({"f": folder, "g": box.generation, "s": new_seq, "sel": select})
        link = f"{self.fake.graph_url}/users/{quote(box.owner)}/mailFolders/{folder_name}/messages/delta"
        body: dict[str, Any] = {"@odata.context": f"{self.fake.graph_url}/$metadata#Collection(message)", "value": values}
        if last:
            body["@odata.deltaLink"] = f"{link}?$deltatoken={token}"
        else:
            body["@odata.nextLink"] = f"{link}?$skiptoken={token}"
        self._json(200, body, "delta", path)

    def _calendar_view(self, box: FakeMailbox, query: dict[str, str], path: str) -> None:
        try:
            start = _parse_time(query["startDateTime"])
            end = _parse_time(query["endDateTime"])
        except (KeyError, ValueError):
            self._error(400, "ErrorInvalidParameter", "startDateTime and endDateTime are required ISO 8601 times.", "calendarView", path)
            return
        events = sorted((e for e in box.events.values() if e.end > start and e.start < end), key=lambda e: e.start)
        skip = int(query.get("$skip", "0"))
        size = _page_size(self.headers.get("Prefer", ""))
        page = events[skip : skip + size]
        values = []
        for event in page:
            values.append(
                {
                    "id": event.item_id,
                    "subject": event.subject,
                    "isCancelled": event.is_cancelled,
                    "start": {"dateTime": event.start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
                    "end": {"dateTime": event.end.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
                    "organizer": {"emailAddress": _email(event.organizer)},
                    "attendees": [
                        {
                            "type": "optional" if a.optional else "required",
                            "status": {"response": _graph_response(a.response), "time": "0001-01-01T00:00:00Z"},
                            "emailAddress": _email(a.person),
                        }
                        for a in event.attendees
                    ],
                }
            )
        body: dict[str, Any] = {"value": values}
        if skip + size < len(events):
            body["@odata.nextLink"] = (
                f"{self.fake.graph_url}/users/{quote(box.owner)}/calendar/calendarView?"
                f"startDateTime={quote(query['startDateTime'])}&endDateTime={quote(query['endDateTime'])}&$skip={skip + size}"
            )
        self._json(200, body, "calendarView", path)

    def _contacts(self, box: FakeMailbox, query: dict[str, str], path: str) -> None:
        contacts = list(box.contacts.values())
        skip = int(query.get("$skip", "0"))
        size = _page_size(self.headers.get("Prefer", ""))
        values = [
            {
                "id": c.item_id,
                "displayName": c.display_name,
                "companyName": c.company_name,
                "jobTitle": c.job_title,
                "emailAddresses": [{"name": c.display_name, "address": e} for e in c.emails],
            }
            for c in contacts[skip : skip + size]
        ]
        body: dict[str, Any] = {"value": values}
        if skip + size < len(contacts):
            body["@odata.nextLink"] = f"{self.fake.graph_url}/users/{quote(box.owner)}/contacts?$skip={skip + size}"
        self._json(200, body, "contacts", path)

    # --- responses ---------------------------------------------------------------------

    def _fault(self, route: str, path: str) -> bool:
        fault = self.fake._take_fault(route)
        if fault is None:
            return False
        if fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            code = fault.code or {429: "TooManyRequests", 503: "ServiceNotAvailable", 500: "InternalServerError"}.get(
                fault.status, "Error"
            )
            self._json(fault.status, {"error": {"code": code, "message": "Injected failure."}}, route, path, headers)
            return True
        if fault.kind == "gone":
            self._error(410, "syncStateNotFound", "The sync state is no longer valid; restart the sync.", route, path)
            return True
        if fault.kind == "malformed":
            self._raw(200, b'{"value": [{"id": "AAMk', route, path)
            return True
        if fault.kind == "drop":
            self.fake._record(route, path, 0)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return False
        return False

    def _error(self, status: int, code: str, message: str, route: str, path: str) -> None:
        body = {"error": {"code": code, "message": message, "innerError": {"date": "2026-12-04T00:00:00", "request-id": "fake"}}}
        self._json(status, body, route, path)

    def _json(self, status: int, body: Any, route: str, path: str, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(body).encode(), route, path, headers)

    def _raw(self, status: int, payload: bytes, route: str, path: str, headers: dict[str, str] | None = None) -> None:
        self.fake._record(route, path, status, urlsplit(self.path).query, self.headers.get("Prefer", ""))
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; odata.metadata=minimal")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("fake Graph: client closed the connection")


def _page_size(prefer: str) -> int:
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize":
            try:
                return max(1, min(MAX_PAGE_SIZE, int(value.strip().strip('"'))))
            except ValueError:
                return DEFAULT_PAGE_SIZE
    return DEFAULT_PAGE_SIZE


def _encode_token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


def _decode_token(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _graph_id(item_id: str, immutable: bool) -> str:
    return item_id if immutable else item_id + "-moveable"


def _email(who: FakeAddress) -> dict[str, Any]:
    return {"name": who.name or who.address or "", "address": who.address or ""}


def _recipient(who: FakeAddress) -> dict[str, Any]:
    return {"emailAddress": _email(who)}


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message_json(message: FakeMessage, select: list[str], immutable: bool) -> dict[str, Any]:
    full: dict[str, Any] = {
        "subject": message.subject,
        "sentDateTime": _time(message.sent),
        "receivedDateTime": _time(message.received),
        "internetMessageId": message.message_id,
        "conversationId": message.conversation_id,
        "isDraft": message.is_draft,
        "from": _recipient(message.sender) if message.sender else None,
        "sender": _recipient(message.sender) if message.sender else None,
        "toRecipients": [_recipient(p) for p in message.to],
        "ccRecipients": [_recipient(p) for p in message.cc],
        "bccRecipients": [_recipient(p) for p in message.bcc],
        "replyTo": [_recipient(p) for p in message.reply_to],
        "body": {"contentType": "text", "content": "(body)"},
    }
    chosen = {k: v for k, v in full.items() if not select or k in select}
    chosen["@odata.type"] = "#microsoft.graph.message"
    chosen["@odata.etag"] = 'W/"CQAAABYAAAA"'
    chosen["id"] = _graph_id(message.item_id, immutable)
    return chosen


def _graph_response(ews_response: str) -> str:
    return {
        "Accept": "accepted",
        "Decline": "declined",
        "Tentative": "tentativelyAccepted",
        "Organizer": "organizer",
        "NoResponseReceived": "notResponded",
    }.get(ews_response, "none")


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

