"""Requests into the real Bolt app over HTTP: signatures, acks and replies through response_url."""

from __future__ import annotations

import json
import socket
import time

import pytest

from sqlmodel import Session, select

from bot.storage.models import AuditEvent, ProcessedEvent
from tests.slack.conftest import SIGNING_SECRET, sign, slash_command_body


def test_signed_command_is_acked_and_answered(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    answer = http.command("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url("help"))
    assert answer.status == 200
    reply = fake_slack.wait_for("response_url")[0]
    assert reply.params["response_type"] == "ephemeral"
    assert "/crm contact" in json.dumps(reply.params["blocks"])


def test_forged_signature_rejected(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = slash_command_body("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    now = int(time.time())
    answer = http.post(body, timestamp=now, signature=sign(body, now, secret="not-the-secret"))
    assert answer.status == 401
    time.sleep(0.2)
    assert fake_slack.calls_to("response_url") == []


def test_tampered_body_rejected(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = slash_command_body("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    now = int(time.time())
    answer = http.post(body.replace("help", "top"), timestamp=now, signature=sign(body, now))
    assert answer.status == 401


def test_expired_timestamp_rejected(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = slash_command_body("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    old = int(time.time()) - 5 * 60 - 5
    answer = http.post(body, timestamp=old, signature=sign(body, old))
    assert answer.status == 401


def test_timestamp_inside_window_accepted(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = slash_command_body("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    recent = int(time.time()) - 5 * 60 + 20
    assert http.post(body, timestamp=recent).status == 200


@pytest.mark.parametrize("replay_store", ["memory", "database"])
def test_replayed_request_rejected(replay_store, fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine, replay_store=replay_store)
    body = slash_command_body("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    now = int(time.time())
    first = http.post(body, timestamp=now)
    second = http.post(body, timestamp=now)
    assert first.status == 200
    assert second.status == 401
    fake_slack.wait_for("response_url")
    time.sleep(0.3)
    assert len(fake_slack.calls_to("response_url")) == 1


def test_missing_signature_headers_rejected(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = slash_command_body("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    answer = http.raw_post(body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 401


def test_non_numeric_timestamp_rejected(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = "token=x&command=%2Fcrm"
    answer = http.raw_post(
        body,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": "yesterday",
            "X-Slack-Signature": "v0=00",
        },
    )
    assert answer.status == 401


def test_url_verification_challenge_answered(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = json.dumps({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"})
    answer = http.post(body, content_type="application/json")
    assert answer.status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in answer.body


def test_unknown_path_is_not_found(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    answer = http.post("x=1", path="/other")
    assert answer.status == 404


def test_oversized_body_rejected(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    with socket.create_connection((http.host, http.port), timeout=10) as connection:
        connection.sendall(
            b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 1000
        )
        status_line = connection.recv(200).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413 ")


def test_unlinked_user_told_how_to_link(fake_slack, slack_settings, sqlite_engine, start_http):
    fake_slack.add_user("U0STRANGER", "nobody@example.org")
    http = start_http(slack_settings, sqlite_engine)
    http.command("/crm", "top", user_id="U0STRANGER", response_url=fake_slack.response_url())
    reply = fake_slack.wait_for("response_url")[0]
    text = json.dumps(reply.params["blocks"])
    assert "not linked" in text
    assert "crm-bot link U0STRANGER" in text
    assert reply.params["response_type"] == "ephemeral"


def test_unknown_subcommand_suggests_help(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    http.command("/crm", "frobnicate", user_id="U0ASKER", response_url=fake_slack.response_url())
    reply = fake_slack.wait_for("response_url")[0]
    assert "/crm help" in reply.params["text"]


def test_whoknows_writes_audit_event(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    http.command("/whoknows", "orion", user_id="U0ASKER", response_url=fake_slack.response_url())
    reply = fake_slack.wait_for("response_url")[0]
    assert "Nobody who shares" in reply.params["text"]
    with Session(sqlite_engine) as session:
        events = session.exec(select(AuditEvent)).all()
    assert len(events) == 1
    assert events[0].actor == "U0ASKER"
    assert events[0].action == "whoknows"
    assert events[0].target == "orion"
    assert events[0].team_id == "T0FAKE"


def test_whoknows_short_query_rejected_and_audited(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    http.command("/whoknows", "o", user_id="U0ASKER", response_url=fake_slack.response_url())
    reply = fake_slack.wait_for("response_url")[0]
    assert "at least 2 characters" in reply.params["text"]
    with Session(sqlite_engine) as session:
        event = session.exec(select(AuditEvent)).one()
    assert event.detail["outcome"] == "rejected"


def test_request_keys_carry_team_id(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine, replay_store="database")
    http.command("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    fake_slack.wait_for("response_url")
    with Session(sqlite_engine) as session:
        keys = session.exec(select(ProcessedEvent)).all()
    assert [k.team_id for k in keys] == ["T0FAKE"]
    assert keys[0].key.startswith("request:v0=")


def test_failing_command_gets_short_error(fake_slack, slack_settings, sqlite_engine, start_http, caplog, monkeypatch):
    from bot.slack import commands

    def broken(self, caller, text):  # type: ignore[no-untyped-def]
        raise RuntimeError("database exploded")

    monkeypatch.setattr(commands.Commands, "crm", broken)
    http = start_http(slack_settings, sqlite_engine)
    http.command("/crm", "top", user_id="U0ASKER", response_url=fake_slack.response_url())
    reply = fake_slack.wait_for("response_url")[0]
    assert "Something went wrong while running /crm" in reply.params["text"]
    assert "reference" in reply.params["text"]
    assert "database exploded" not in reply.params["text"]
    assert any("U0ASKER" in r.getMessage() and r.exc_info for r in caplog.records)
    assert SIGNING_SECRET not in caplog.text
    assert "xoxb-" not in caplog.text


def test_command_acked_before_slow_work(fake_slack, slack_settings, sqlite_engine, start_http):
    fake_slack.add_user("U0SLOW", "slow@example.org")
    fake_slack.delays["users.info"] = 2.0
    http = start_http(slack_settings, sqlite_engine)
    answers = [
        http.command("/crm", "top", user_id="U0SLOW", response_url=fake_slack.response_url(f"slow{i}")) for i in range(3)
    ]
    assert all(a.status == 200 for a in answers)
    assert max(a.seconds for a in answers) < 1.0
    replies = fake_slack.wait_for("response_url", 3, timeout=20)
    assert all("not linked" in r.params["text"] for r in replies)


def test_repeated_delivery_with_retry_header_not_rerun(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = slash_command_body("/crm", "help", user_id="U0ASKER", response_url=fake_slack.response_url())
    now = int(time.time())
    assert http.post(body, timestamp=now).status == 200
    again = http.post(body, timestamp=now, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert again.status == 200
    fake_slack.wait_for("response_url")
    time.sleep(0.3)
    assert len(fake_slack.calls_to("response_url")) == 1


def test_seen_signatures_expire_with_window():
    from bot.slack.signature import SeenSignatures

    seen = SeenSignatures()
    assert seen.add("v0=abc", 1000, now=1000.0) is True
    assert seen.add("v0=abc", 1000, now=1200.0) is False
    assert seen.add("v0=abc", 1000, now=1301.0) is True
