"""A threaded HTTP server that hands Slack's requests to the Bolt app.

Bolt's ``App.start()`` serves one request at a time and is meant for development.
This server runs each request on its own thread and reads the raw body, because
signatures are computed over the exact bytes. GET /healthz returns 200 for load
balancers.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from typing import TYPE_CHECKING, Callable

from slack_bolt import App
from slack_bolt.request import BoltRequest

from bot.errors import ConfigError

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
# Slack's payloads are far smaller, so a larger body is rejected before it is read.
MAX_BODY_BYTES = 1024 * 1024


class SlackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default listen backlog is 5; a burst of Slack requests (or a reverse
    # proxy opening connections at once) would otherwise see connection resets.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, path: str = EVENTS_PATH) -> None:
        super().__init__(address, SlackRequestHandler)
        self.app = app
        self.events_path = path


class SlackRequestHandler(BaseHTTPRequestHandler):
    server: SlackHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if urlsplit(self.path).path == HEALTH_PATH:
            self._send(200, b"ok", {"Content-Type": ["text/plain"]})
            return
        self._send(404, b"not found", {"Content-Type": ["text/plain"]})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != self.server.events_path:
            self._send(404, b"not found", {"Content-Type": ["text/plain"]})
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._send(411, b"Content-Length required", {"Content-Type": ["text/plain"]})
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self._send(413, b"request body too large", {"Content-Type": ["text/plain"]})
            self.close_connection = True
            return
        raw = self.rfile.read(length)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._send(400, b"request body is not UTF-8", {"Content-Type": ["text/plain"]})
            return

        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        request = BoltRequest(body=body, query=url.query, headers=headers)
        response = self.server.app.dispatch(request)
        self._send(response.status, response.body.encode("utf-8"), response.headers)

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, values in headers.items():
            if name.lower() in ("content-length", "connection"):
                continue
            for value in values if isinstance(values, (list, tuple)) else [values]:
                self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)


def make_server(app: App, host: str, port: int, path: str = EVENTS_PATH) -> SlackHTTPServer:
    """Bind the server; with port 0 the system picks a free port, found in ``server.server_address``."""
    return SlackHTTPServer((host, port), app, path)


def serve_http(app: App, host: str, port: int, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve Slack's requests on ``http://host:port/slack/events`` until interrupted.

    Args:
        announce: also receives the "listening" line, for a command line to print.
    """
    try:
        server = make_server(app, host, port)
    except OSError as exc:
        raise ConfigError(
            f"failed to listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another --port or --host, or stop the process that uses it"
        ) from None
    bound_host, bound_port = server.server_address[:2]
    ready = f"listening for Slack requests on http://{bound_host}:{bound_port}{EVENTS_PATH}"
    log.info("%s", ready)
    if announce is not None:
        announce(ready)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def connect_socket_mode(app: App, app_token: str) -> "SocketModeHandler":
    """Open the Socket Mode WebSocket (URL from apps.connections.open) and return its handler.

    Requests are served on the handler's threads until ``handler.close()``.
    """
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    log.info("connecting to Slack in Socket Mode")
    handler = SocketModeHandler(app, app_token)
    handler.connect()
    return handler


def serve_socket_mode(app: App, app_token: str, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve Slack's requests over Socket Mode until interrupted."""
    handler = connect_socket_mode(app, app_token)
    if announce is not None:
        announce("connected to Slack in Socket Mode")
    try:
        threading.Event().wait()
    finally:
        handler.close()
