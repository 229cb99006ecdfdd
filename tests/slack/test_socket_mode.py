"""Socket Mode: the real Socket Mode client against the fake's WebSocket, no signatures needed."""

from __future__ import annotations

import json

import pytest

from bot.config import Settings
from bot.slack.app import build_app, choose_mode, make_web_client
from bot.slack.server import connect_socket_mode
from tests.fakes.slack_api import APP_TOKEN, VALID_TOKEN
from tests.slack.conftest import event_envelope, no_sleep


@pytest.fixture
def socket_app(fake_slack, sqlite_engine):
    settings = Settings(slack_bot_token=VALID_TOKEN, slack_app_token=APP_TOKEN, slack_api_url=fake_slack.api_url)
    assert choose_mode(settings) == "socket"
    app = build_app(settings, sqlite_engine, mode="socket", client=make_web_client(settings, sleep=no_sleep))
    handler = connect_socket_mode(app, APP_TOKEN)
    fake_slack.wait_for_socket()
    yield handler
    handler.close()


def test_slash_command_over_socket_mode(fake_slack, socket_app):
    fake_slack.socket_send(
        {
            "envelope_id": "env-1",
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": {
                "team_id": "T0FAKE",
                "user_id": "U0ASKER",
                "command": "/crm",
                "text": "help",
                "response_url": fake_slack.response_url("socket"),
                "trigger_id": "1.2.3",
                "channel_id": "C1",
            },
        }
    )
    ack = fake_slack.socket_acks("env-1")
    assert ack["envelope_id"] == "env-1"
    reply = fake_slack.wait_for("response_url", 1)[0]
    assert "/crm contact" in json.dumps(reply.params["blocks"])
    connections = fake_slack.calls_to("apps.connections.open")
    assert connections[0].headers["authorization"] == f"Bearer {APP_TOKEN}"


def test_app_home_event_over_socket_mode(fake_slack, socket_app):
    fake_slack.add_user("U0HOME", None)
    envelope = event_envelope({"type": "app_home_opened", "user": "U0HOME", "channel": "D1", "tab": "home", "event_ts": "1.1"}, "Ev0SOCKET")
    fake_slack.socket_send({"envelope_id": "env-2", "type": "events_api", "payload": envelope, "retry_attempt": 0})
    fake_slack.socket_acks("env-2")
    published = fake_slack.wait_for("views.publish", 1)[0]
    assert published.params["user_id"] == "U0HOME"


def test_socket_mode_needs_no_signing_secret(fake_slack, sqlite_engine):
    settings = Settings(slack_bot_token=VALID_TOKEN, slack_app_token=APP_TOKEN, slack_api_url=fake_slack.api_url)
    assert settings.slack_signing_secret is None
    assert build_app(settings, sqlite_engine, mode="socket", client=make_web_client(settings)) is not None
