"""A fake Slack Web API on loopback that records every call.

The real slack_sdk WebClient reaches it through ``base_url``, and Bolt's ``respond``
through response URLs under ``/response/``. The Socket Mode client connects to the
WebSocket URL that ``apps.connections.open`` returns. Answers have the shapes
of Slack's own (the keys of the Java SDK's recorded samples), message and view
blocks are checked with slack_sdk's Block Kit models as Slack would reject them
(``invalid_blocks``), and a test can script errors, HTTP 429 answers with or
without ``Retry-After``, and slow answers per method.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

VALID_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SOCKET_PATH = "/socket-mode"
# RFC 6455 section 1.3: the server proves it read the handshake with this GUID.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEAM_ID = "T0FAKE"
BOT_USER_ID = "U0BOT"
MAX_MESSAGE_BLOCKS = 50


@dataclass
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    started: float
    path: str = ""
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """A scripted response: HTTP status, JSON body, headers and a delay in seconds."""

    status: int = 200
    body: dict[str, Any] = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class FakeUser:
    id: str
    email: str | None
    team_id: str = TEAM_ID
    tz: str = "Europe/Berlin"
    tz_offset: int = 3600
    real_name: str = ""


class FakeSlack:
    """The fake server; use as a context manager or call ``start()`` and ``stop()``."""

    def __init__(
        self, token: str = VALID_TOKEN, team_id: str = TEAM_ID, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Args:
        clock: stamps each call's ``started``; tests that fake sleeping pass their own clock.
        """
        self.token = token
        self.clock = clock
        self.team_id = team_id
        self.calls: list[Call] = []
        self.users: dict[str, FakeUser] = {}
        self.delays: dict[str, float] = {}
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.socket_received: list[dict[str, Any]] = []
        self._socket: Any = None
        self._socket_ready = threading.Event()
        self._lock = threading.Lock()
        self._ts = 1717405000
        self._views = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-slack", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> "FakeSlack":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeSlack":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def response_url(self, name: str = "1") -> str:
        return f"{self.url}/response/{name}"

    # -- set-up ------------------------------------------------------------------

    def add_user(self, user_id: str, email: str | None, **fields: Any) -> FakeUser:
        user = FakeUser(id=user_id, email=email, team_id=self.team_id, **fields)
        self.users[user_id] = user
        return user

    def script(self, method: str, *replies: Reply) -> None:
        """Return ``replies`` to the next calls of ``method``, in order, then the usual responses again."""
        with self._lock:
            self._scripts[method].extend(replies)

    # -- inspection --------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0, *, path: str | None = None) -> list[Call]:
        """Wait until ``count`` calls of ``method`` (at ``path``, when given) got a response, and return them."""
        deadline = time.monotonic() + timeout
        while True:
            done = [c for c in self.calls_to(method) if c.answer and (path is None or c.path == path)]
            if len(done) >= count:
                return done
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{method} was answered {len(done)} times within {timeout}s, expected {count}; "
                    f"calls so far: {[c.method for c in self.calls]}"
                )
            time.sleep(0.02)

    # -- answering ---------------------------------------------------------------

    def handle(
        self, method: str, params: dict[str, Any], headers: dict[str, str], path: str = ""
    ) -> tuple[Reply, Call]:
        call = Call(method=method, params=params, headers=headers, started=self.clock(), path=path)
        with self._lock:
            self.calls.append(call)
            scripted = self._scripts[method].popleft() if self._scripts[method] else None
        delay = scripted.delay if scripted else self.delays.get(method, 0.0)
        if delay:
            time.sleep(delay)
        if scripted is not None:
            reply = scripted
        elif method == "response_url":
            reply = self._response_url(params)
        elif method == "apps.connections.open":
            if headers.get("authorization") != f"Bearer {APP_TOKEN}":
                reply = Reply(body={"ok": False, "error": "invalid_auth"})
            else:
                reply = Reply(body={"ok": True, "url": self.url.replace("http://", "ws://") + SOCKET_PATH})
        elif not self._authorized(headers, params):
            reply = Reply(body={"ok": False, "error": "invalid_auth"})
        else:
            reply = Reply(body=self._answer(method, params))
        call.status = reply.status
        call.answer = reply.body
        return reply, call

    def _authorized(self, headers: dict[str, str], params: dict[str, Any]) -> bool:
        bearer = headers.get("authorization", "")
        return bearer == f"Bearer {self.token}" or params.get("token") == self.token

    # -- Socket Mode -------------------------------------------------------------

    def wait_for_socket(self, timeout: float = 10.0) -> None:
        if not self._socket_ready.wait(timeout):
            raise AssertionError(f"no Socket Mode client connected within {timeout}s")

    def socket_send(self, envelope: dict[str, Any]) -> None:
        """Send one Socket Mode envelope (hello, slash_commands, events_api, interactive)."""
        self.wait_for_socket()
        _send_frame(self._socket, 0x1, json.dumps(envelope).encode())

    def socket_acks(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the client's acknowledgement of an envelope and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for message in self.socket_received:
                    if message.get("envelope_id") == envelope_id:
                        return message
            time.sleep(0.01)
        raise AssertionError(f"envelope {envelope_id} was not acknowledged within {timeout}s")

    def serve_socket(self, connection: Any) -> None:
        """Run one WebSocket session on the handler's connection until the client closes it."""
        self._socket = connection
        self._socket_ready.set()
        _send_frame(connection, 0x1, json.dumps({"type": "hello", "num_connections": 1}).encode())
        while True:
            frame = _read_frame(connection)
            if frame is None:
                return
            opcode, payload = frame
            if opcode == 0x8:
                _send_frame(connection, 0x8, payload[:2])
                return
            if opcode == 0x9:
                _send_frame(connection, 0xA, payload)
            elif opcode == 0x1:
                with self._lock:
                    self.socket_received.append(json.loads(payload))

    def _next_ts(self) -> str:
        with self._lock:
            self._ts += 1
            return f"{self._ts}.000100"

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://fake.example.com/",
                "team": "Fake Team",
                "user": "crm-bot",
                "team_id": self.team_id,
                "user_id": BOT_USER_ID,
                "bot_id": "B0BOT",
                "is_enterprise_install": False,
            }
        if method == "users.info":
            user = self.users.get(str(params.get("user")))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": _user_json(user)}
        if method == "users.lookupByEmail":
            for user in self.users.values():
                if user.email and user.email.lower() == str(params.get("email", "")).lower():
                    return {"ok": True, "user": _user_json(user)}
            return {"ok": False, "error": "users_not_found"}
        if method == "conversations.open":
            users = str(params.get("users", ""))
            return {"ok": True, "channel": {"id": "D" + users.split(",")[0].lstrip("UW")}}
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            problems = message_block_problems(params.get("blocks"))
            if problems:
                return {"ok": False, "error": "invalid_blocks", "errors": problems}
            if method == "chat.postEphemeral":
                return {"ok": True, "message_ts": self._next_ts()}
            ts = params.get("ts") if method == "chat.update" else self._next_ts()
            return {
                "ok": True,
                "channel": params.get("channel"),
                "ts": ts,
                "message": {"type": "message", "text": params.get("text", ""), "ts": ts},
            }
        if method in ("views.publish", "views.open", "views.update", "views.push"):
            view = _as_json(params.get("view"))
            problems = view_problems(view)
            if problems:
                return {"ok": False, "error": "invalid_blocks", "errors": problems}
            with self._lock:
                self._views += 1
                view_id = params.get("view_id") or f"V{self._views:07d}"
            return {"ok": True, "view": {**view, "id": view_id, "team_id": self.team_id, "hash": f"h{self._views}"}}
        return {"ok": True}

    def _response_url(self, params: dict[str, Any]) -> Reply:
        problems = message_block_problems(params.get("blocks"))
        if problems:
            return Reply(status=400, body={"ok": False, "error": "invalid_blocks", "errors": problems})
        return Reply(body={"ok": True})


def message_block_problems(blocks: Any) -> list[str]:
    """Return why Slack would reject a message's blocks, checked with slack_sdk's models."""
    blocks = _as_json(blocks)
    if blocks is None:
        return []
    if len(blocks) > MAX_MESSAGE_BLOCKS:
        return [f"{len(blocks)} blocks, more than {MAX_MESSAGE_BLOCKS}"]
    return _block_problems(blocks)


def view_problems(view: Any) -> list[str]:
    """Return why Slack would reject a view (at most 100 blocks), checked with slack_sdk's View model."""
    if not isinstance(view, dict):
        return ["view is not an object"]
    try:
        View(**view).validate_json()
    except (SlackObjectFormationError, TypeError) as exc:
        return [str(exc)]
    return _block_problems(view.get("blocks", []))


def _block_problems(blocks: list[dict[str, Any]]) -> list[str]:
    problems = []
    for index, block in enumerate(blocks):
        try:
            parsed = Block.parse(block)
            if parsed is None:
                problems.append(f"block {index}: unknown type {block.get('type')!r}")
                continue
            parsed.validate_json()
        except SlackObjectFormationError as exc:
            problems.append(f"block {index}: {exc}")
    return problems


def _send_frame(connection: Any, opcode: int, payload: bytes) -> None:
    """Send one unmasked, final WebSocket frame (servers never mask, RFC 6455 section 5.1)."""
    header = bytes([0x80 | opcode])
    if len(payload) < 126:
        header += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        header += bytes([126]) + len(payload).to_bytes(2, "big")
    else:
        header += bytes([127]) + len(payload).to_bytes(8, "big")
    connection.sendall(header + payload)


def _read_frame(connection: Any) -> tuple[int, bytes] | None:
    """Read one masked client frame; None when the connection closed."""
    head = _read_exactly(connection, 2)
    if head is None:
        return None
    opcode = head[0] & 0x0F
    length = head[1] & 0x7F
    if length == 126:
        extended = _read_exactly(connection, 2)
        length = int.from_bytes(extended or b"", "big")
    elif length == 127:
        extended = _read_exactly(connection, 8)
        length = int.from_bytes(extended or b"", "big")
    mask = _read_exactly(connection, 4) if head[1] & 0x80 else b"\0\0\0\0"
    payload = _read_exactly(connection, length) if length else b""
    if mask is None or payload is None:
        return None
    return opcode, bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def _read_exactly(connection: Any, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = connection.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _as_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _user_json(user: FakeUser) -> dict[str, Any]:
    profile: dict[str, Any] = {"real_name": user.real_name, "display_name": user.real_name, "team": user.team_id}
    if user.email:
        profile["email"] = user.email
    return {
        "id": user.id,
        "team_id": user.team_id,
        "name": user.id.lower(),
        "deleted": False,
        "real_name": user.real_name,
        "tz": user.tz,
        "tz_label": user.tz,
        "tz_offset": user.tz_offset,
        "is_bot": False,
        "profile": profile,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        if self.path.startswith(SOCKET_PATH) and self.headers.get("Upgrade", "").lower() == "websocket":
            self._upgrade()
            return
        self._serve()

    def _upgrade(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.server.fake.serve_socket(self.connection)  # type: ignore[attr-defined]
        self.close_connection = True

    def _serve(self) -> None:
        fake: FakeSlack = self.server.fake  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        params: dict[str, Any] = {k: v[0] for k, v in parse_qs(url.query).items()}
        content_type = self.headers.get("Content-Type", "")
        if raw and "json" in content_type:
            params.update(json.loads(raw))
        elif raw:
            params.update({k: v[0] for k, v in parse_qs(raw).items()})
        headers = {k.lower(): v for k, v in self.headers.items()}

        if url.path.startswith("/response/"):
            method = "response_url"
        elif url.path.startswith("/api/"):
            method = url.path[len("/api/") :]
        else:
            method = url.path.strip("/")
        reply, _call = fake.handle(method, params, headers, url.path)

        if method == "response_url" and reply.status == 200:
            payload = b"ok"
            content = "text/plain"
        else:
            payload = json.dumps(reply.body).encode("utf-8")
            content = "application/json; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", content)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
