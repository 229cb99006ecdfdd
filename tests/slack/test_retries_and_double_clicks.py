"""Slack's event retries and double clicks never repeat an effect, and acks stay fast."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from bot.slack.commands import Commands
from bot.slack.handlers import SlackDeps
from bot.slack.handlers.decisions import DecisionRequest, register_decision
from bot.slack.idempotency import claim, claimed_at, prune_keys, release
from bot.timeutil import utcnow
from tests.conftest import shared_path
from tests.slack.conftest import SlackHTTP, block_actions_payload, event_envelope


def load_case() -> tuple[dict, dict]:
    case = json.loads(shared_path("cases", "B23.json").read_text())
    expected = json.loads(shared_path("cases", "B23.expected.json").read_text())["expected"]
    return case, expected


def with_slack_fields(click: dict, response_url: str) -> dict:
    """Add what Slack sends with every click and the case leaves out: the team and response_url."""
    return {**click, "team": {"id": "T0B23TEAM"}, "trigger_id": "1.2.3", "response_url": response_url}


def test_retried_event_and_double_click_run_once(fake_slack, slack_settings, sqlite_engine, start_http):
    case, expected = load_case()
    slow = case["slow_dependency_seconds"]
    fake_slack.add_user("U0B23OWNR", "robin.hale@example.org")
    fake_slack.delays["users.info"] = slow
    fake_slack.delays["chat.postMessage"] = slow

    executed: list[DecisionRequest] = []
    executed_lock = threading.Lock()

    def approve(request: DecisionRequest) -> str:
        time.sleep(slow)  # the mail and database work behind an approval
        with executed_lock:
            executed.append(request)
        return "Approved and sent"

    http: SlackHTTP = start_http(slack_settings, sqlite_engine)
    app = http.server.app
    register_decision(app, deps_for(sqlite_engine), "approve_draft", approve)

    acks = []
    first_sent = int(time.time())
    for index, delivery in enumerate(case["event_deliveries"]):
        body = {**delivery["body"], "api_app_id": "A0CRM", "token": "verification-token"}
        # Slack signs each delivery anew; its first retry comes about 3 seconds later.
        answer = http.post(
            json.dumps(body), content_type="application/json", timestamp=first_sent + 3 * index, headers=delivery["headers"]
        )
        assert answer.status == 200
        acks.append(answer.seconds)
    for index, click in enumerate(case["button_clicks"]):
        answer = http.action(with_slack_fields(click, fake_slack.response_url(f"click{index}")))
        assert answer.status == 200
        acks.append(answer.seconds)

    assert max(acks) < expected["ack_latency_max_s"]

    # The DM question is answered once, after the slow users.info and chat.postMessage.
    replies = fake_slack.wait_for("chat.postMessage", 1, timeout=4 * slow)
    # The approval runs once; the card is updated once it is done.
    updates = fake_slack.wait_for("chat.update", 1, timeout=4 * slow)
    time.sleep(1.0)
    assert len(fake_slack.calls_to("chat.postMessage")) == expected["event_replies"]
    assert replies[0].params["channel"] == "D0B23DM"
    assert "Bluepeak" in replies[0].params["text"]
    assert len(executed) == expected["approvals_executed"]
    assert executed[0].reference == "opp:2417"
    assert len(fake_slack.calls_to("chat.update")) == 1
    assert updates[0].params["ts"] == "1717405250.000200"
    assert "Approved and sent" in updates[0].params["text"]

    # The second click got a notice, and nothing was sent twice.
    assert expected["second_click"] == "already_handled_notice"
    notices = [c for c in fake_slack.calls_to("response_url") if "Already handled" in c.params.get("text", "")]
    assert len(notices) == 1
    assert notices[0].params["response_type"] == "ephemeral"


def test_failed_decision_can_be_clicked_again(fake_slack, slack_settings, sqlite_engine, start_http):
    attempts: list[str] = []

    def flaky(request: DecisionRequest) -> str:
        attempts.append(request.reference)
        if len(attempts) == 1:
            raise RuntimeError("mail server down")
        return "Approved"

    http = start_http(slack_settings, sqlite_engine)
    register_decision(http.server.app, deps_for(sqlite_engine), "approve_draft", flaky)
    first = block_actions_payload("approve_draft", "opp:9", user_id="U1", response_url=fake_slack.response_url("a"), action_ts="1.1")
    http.action(first)
    error = fake_slack.wait_for("response_url", 1)[0]
    assert "nothing was sent" in error.params["text"]
    assert "mail server down" not in error.params["text"]

    second = block_actions_payload("approve_draft", "opp:9", user_id="U1", response_url=fake_slack.response_url("b"), action_ts="2.2")
    http.action(second)
    fake_slack.wait_for("chat.update", 1)
    assert attempts == ["opp:9", "opp:9"]


def test_claim_has_one_winner_across_threads(engine):
    now = _utcnow()
    results: list[bool] = []
    lock = threading.Lock()

    def contend() -> None:
        won = claim(engine, "T1", "decision:opp:1", now)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=contend) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert results.count(False) == 11


def test_claim_is_per_team(engine):
    now = _utcnow()
    assert claim(engine, "T1", "event:Ev1", now) is True
    assert claim(engine, "T2", "event:Ev1", now) is True
    assert claim(engine, "T1", "event:Ev1", now) is False


def test_release_allows_new_claim(engine):
    now = _utcnow()
    claim(engine, "T1", "decision:opp:2", now)
    release(engine, "T1", "decision:opp:2")
    assert claimed_at(engine, "T1", "decision:opp:2") is None
    assert claim(engine, "T1", "decision:opp:2", now) is True


def test_prune_keeps_decisions(engine):
    from datetime import timedelta

    now = _utcnow()
    old = now - timedelta(days=2)
    claim(engine, "T1", "request:v0=abc", old)
    claim(engine, "T1", "event:Ev9", old)
    claim(engine, "T1", "decision:opp:3", old)
    claim(engine, "T1", "request:v0=new", now)
    assert prune_keys(engine, now) == 2
    assert claimed_at(engine, "T1", "decision:opp:3") is not None
    assert claimed_at(engine, "T1", "request:v0=new") is not None
    assert claimed_at(engine, "T1", "event:Ev9") is None


def test_app_home_retry_publishes_once(fake_slack, slack_settings, sqlite_engine, start_http):
    fake_slack.add_user("U0HOME", None)
    http = start_http(slack_settings, sqlite_engine)
    envelope = event_envelope({"type": "app_home_opened", "user": "U0HOME", "channel": "D0HOME", "tab": "home", "event_ts": "1.2"}, "Ev0HOME1")
    assert http.event(envelope).status == 200
    assert http.event(envelope, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}).status == 200
    fake_slack.wait_for("views.publish", 1)
    time.sleep(0.5)
    assert len(fake_slack.calls_to("views.publish")) == 1


def _utcnow() -> datetime:
    return utcnow()


def deps_for(engine) -> SlackDeps:  # type: ignore[no-untyped-def]
    return SlackDeps(engine, Commands(engine), _utcnow, ThreadPoolExecutor(max_workers=4))
