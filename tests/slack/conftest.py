"""Fixtures for Slack tests: the fake Web API, the real Bolt app behind the real HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlencode

import pytest

from bot.config import Settings
from bot.slack.app import build_app, make_web_client
from bot.slack.server import EVENTS_PATH, SlackHTTPServer, make_server
from tests.fakes.slack_api import TEAM_ID, VALID_TOKEN, FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def sign(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Compute Slack's request signature: v0= and HMAC-SHA256 of v0:timestamp:body."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Answer:
    status: int
    body: str
    seconds: float

    def json(self) -> dict:
        return json.loads(self.body) if self.body else {}


class SlackHTTP:
    """The bot's HTTP server on loopback, and a client that signs what it posts."""

    def __init__(self, server: SlackHTTPServer) -> None:
        self.server = server
        self.host, self.port = server.server_address[:2]

    def post(
        self,
        body: str,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        timestamp: int | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
        path: str = EVENTS_PATH,
    ) -> Answer:
        timestamp = int(time.time()) if timestamp is None else timestamp
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": signature if signature is not None else sign(body, timestamp),
        }
        sent.update(headers or {})
        return self.raw_post(body, sent, path=path)

    def raw_post(self, body: str, headers: dict[str, str], *, path: str = EVENTS_PATH) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        started = time.perf_counter()
        connection.request("POST", path, body=body.encode(), headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        elapsed = time.perf_counter() - started
        connection.close()
        return Answer(response.status, text, elapsed)

    def command(self, command: str, text: str, *, user_id: str, response_url: str, team_id: str = TEAM_ID) -> Answer:
        return self.post(slash_command_body(command, text, user_id=user_id, response_url=response_url, team_id=team_id))

    def event(self, envelope: dict, headers: dict[str, str] | None = None) -> Answer:
        return self.post(json.dumps(envelope), content_type="application/json", headers=headers)

    def action(self, payload: dict) -> Answer:
        return self.post(urlencode({"payload": json.dumps(payload)}))


def slash_command_body(command: str, text: str, *, user_id: str, response_url: str, team_id: str = TEAM_ID) -> str:
    """Build the form body Slack posts for a slash command (fields as Slack sends them)."""
    return urlencode(
        {
            "token": "verification-token",
            "team_id": team_id,
            "team_domain": "fake",
            "channel_id": "C0GENERAL",
            "channel_name": "general",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0CRM",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": "1111.2222.abcd",
        }
    )


def event_envelope(event: dict, event_id: str, team_id: str = TEAM_ID) -> dict:
    return {
        "token": "verification-token",
        "team_id": team_id,
        "api_app_id": "A0CRM",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": team_id, "user_id": "U0BOT", "is_bot": True, "is_enterprise_install": False}],
    }


def block_actions_payload(
    action_id: str,
    value: str,
    *,
    user_id: str,
    response_url: str,
    container: dict | None = None,
    action_ts: str = "1717405300.100000",
    block_id: str = "b1",
    team_id: str = TEAM_ID,
) -> dict:
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": team_id},
        "api_app_id": "A0CRM",
        "token": "verification-token",
        "container": container or {"type": "message", "message_ts": "1717405250.000200", "channel_id": "D0DM", "is_ephemeral": False},
        "trigger_id": "1111.2222.abcd",
        "team": {"id": team_id, "domain": "fake"},
        "channel": {"id": "D0DM", "name": "directmessage"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": "Button", "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": action_ts,
            }
        ],
    }


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def slack_settings(fake_slack: FakeSlack, tmp_path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'slack.db'}",
        slack_bot_token=VALID_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake_slack.api_url,
    )


def no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
def start_http() -> Iterator[Callable[..., SlackHTTP]]:
    """Start the real Bolt app behind the real HTTP server; stopped after the test."""
    servers: list[SlackHTTPServer] = []

    def start(settings: Settings, engine, **app_options) -> SlackHTTP:  # type: ignore[no-untyped-def]
        client = make_web_client(settings, sleep=no_sleep)
        app = build_app(settings, engine, client=client, **app_options)
        server = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, args=(0.05,), name="slack-http", daemon=True).start()
        servers.append(server)
        return SlackHTTP(server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


ENRON_TARBALL = ("data", "mail", "enron-maildir-9-mailboxes.tar.xz")
ENRON_OWNERS = {"badeer-r": "robert.badeer@enron.com", "cuilla-m": "martin.cuilla@enron.com"}
# The two mailboxes end in March 2002; commands run as of this time.
ENRON_NOW = datetime(2002, 6, 1, tzinfo=timezone.utc)


@dataclass
class EnronData:
    database_url: str
    mailbox_ids: dict[str, int]


@pytest.fixture(scope="session")
def enron_data(tmp_path_factory) -> EnronData:
    """Two small Enron mailboxes, unpacked from the corpus tarball and imported once per session."""
    from bot.config import get_settings
    from bot.mail.files import FilesSource
    from bot.mail.ingest import ensure_mailbox, import_source
    from bot.relationships.compute import recompute
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema
    from tests.conftest import shared_path

    tarball = shared_path(*ENRON_TARBALL)
    root = tmp_path_factory.mktemp("enron")
    prefixes = tuple(f"maildir/{name}/" for name in ENRON_OWNERS)
    with tarfile.open(tarball) as archive:
        members = [m for m in archive if m.name.startswith(prefixes)]
        archive.extractall(root, members=members, filter="data")

    url = f"sqlite:///{root / 'enron.db'}"
    engine = make_engine(url)
    create_schema(engine)
    mailbox_ids = {}
    for name, owner in ENRON_OWNERS.items():
        mailbox = ensure_mailbox(engine, owner)
        import_source(engine, mailbox, FilesSource(root / "maildir" / name), settings=get_settings())
        recompute(engine, mailbox.id, ENRON_NOW)
        mailbox_ids[owner] = mailbox.id
    engine.dispose()
    return EnronData(database_url=url, mailbox_ids=mailbox_ids)


@pytest.fixture
def enron_engine(enron_data: EnronData, tmp_path):
    """A private copy of the imported Enron database, so tests can write to it."""
    from bot.storage.db import make_engine

    source = Path(enron_data.database_url.split("///", 1)[1])
    copy = tmp_path / "enron.db"
    shutil.copyfile(source, copy)
    engine = make_engine(f"sqlite:///{copy}")
    yield engine
    engine.dispose()
