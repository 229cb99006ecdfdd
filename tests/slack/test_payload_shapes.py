"""Every field Slack may send is tolerated, and the fake responds with Slack's shapes."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

from tests.conftest import shared_path
from tests.fakes.slack_api import FakeSlack, message_block_problems

SHAPES = ("data", "slack", "java-slack-sdk-shapes")
PAYLOADS = ("data", "slack", "bolt-python-payloads")


def shape(name: str) -> dict:
    return json.loads(shared_path(*SHAPES, name).read_text())


def filled(payload: dict, **values: object) -> dict:
    """Replace blanked ids of a recorded shape with usable ones."""
    text = json.dumps(payload)
    for blank, value in values.items():
        text = text.replace(f'"{blank}": ""', f'"{blank}": {json.dumps(value)}')
    return json.loads(text)


def test_slash_command_with_every_field(fake_slack, slack_settings, sqlite_engine, start_http):
    http = start_http(slack_settings, sqlite_engine)
    body = filled(
        shape("app-backend__slash-commands__SlashCommandPayload.json"),
        team_id="T0FAKE",
        user_id="U0ASKER",
        command="/crm",
        text="help",
        response_url=fake_slack.response_url("shape"),
    )
    form = urlencode({k: json.dumps(v) if isinstance(v, bool) else v for k, v in body.items()})
    assert http.post(form).status == 200
    assert "/crm contact" in fake_slack.wait_for("response_url")[0].params["text"] + json.dumps(
        fake_slack.calls_to("response_url")[0].params["blocks"]
    )


def test_recorded_slash_command_form_body(fake_slack, slack_settings, sqlite_engine, start_http):
    raw = shared_path(*PAYLOADS, "slash_command__test_slash_command__slash_command_body__L125.form.txt").read_text().strip()
    body = raw.replace("command=%2Fhello-world", "command=%2Fcrm").replace("text=Hi", "text=help").replace(
        "response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT111%2F111%2Fxxxxx",
        urlencode({"response_url": fake_slack.response_url("form")}),
    )
    http = start_http(slack_settings, sqlite_engine)
    assert http.post(body).status == 200
    reply = fake_slack.wait_for("response_url")[0]
    assert reply.params["response_type"] == "ephemeral"


def test_app_home_opened_with_every_field(fake_slack, slack_settings, sqlite_engine, start_http):
    fake_slack.add_user("U0HOME", None)
    envelope = filled(shape("events__AppHomeOpenedPayload.json"), team_id="T0FAKE", event_id="Ev0SHAPE", user="U0HOME", tab="home")
    envelope["type"] = "event_callback"
    envelope["event_time"] = int(time.time())
    http = start_http(slack_settings, sqlite_engine)
    assert http.event(envelope).status == 200
    published = fake_slack.wait_for("views.publish")[0]
    assert published.params["user_id"] == "U0HOME"
    assert published.answer["ok"] is True


def test_recorded_app_home_opened_messages_tab_ignored(fake_slack, slack_settings, sqlite_engine, start_http):
    envelope = json.loads(
        shared_path(*PAYLOADS, "event_callback-app_home_opened__test_events_org_apps__event_payload__L153.json").read_text()
    )
    http = start_http(slack_settings, sqlite_engine)
    assert http.event(envelope).status == 200
    time.sleep(0.3)
    assert fake_slack.calls_to("views.publish") == []


def test_block_actions_with_every_field(fake_slack, slack_settings, sqlite_engine, start_http):
    payload = filled(
        shape("app-backend__interactive-components__BlockActionPayload.json"),
        response_url=fake_slack.response_url("click"),
        trigger_id="1.2.3",
    )
    payload["type"] = "block_actions"
    payload["user"]["id"] = "U0ASKER"
    payload["team"]["id"] = "T0FAKE"
    payload["container"] = {"type": "message", "message_ts": "1.2", "channel_id": "C1", "is_ephemeral": True}
    payload["actions"] = [{**payload["actions"][0], "type": "button", "action_id": "run_command_help", "value": "help", "action_ts": "9.9"}]
    http = start_http(slack_settings, sqlite_engine)
    assert http.action(payload).status == 200
    assert "/crm contact" in json.dumps(fake_slack.wait_for("response_url")[0].params["blocks"])


@pytest.mark.parametrize("name", ["message__test_message_changed__event_payload__L68.json", "message__test_message_bot__bot_message_event_payload__L128.json"])
def test_message_edits_and_bot_posts_ignored(name, fake_slack, slack_settings, sqlite_engine, start_http):
    envelope = json.loads(shared_path(*PAYLOADS, "event_callback-" + name).read_text())
    envelope["event_time"] = int(time.time())
    http = start_http(slack_settings, sqlite_engine)
    assert http.event(envelope).status == 200
    time.sleep(0.3)
    assert fake_slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize(
    "method, shape_name",
    [
        ("auth.test", "api__auth.test.json"),
        ("users.info", "api__users.info.json"),
        ("users.lookupByEmail", "api__users.lookupByEmail.json"),
        ("views.publish", "api__views.publish.json"),
    ],
)
def test_fake_answers_use_slack_keys(method, shape_name):
    recorded = shape(shape_name)
    with FakeSlack() as fake:
        fake.add_user("U1", "a@example.org")
        params = {"user": "U1", "email": "a@example.org", "user_id": "U1", "view": {"type": "home", "blocks": [{"type": "divider"}]}}
        _reply, call = fake.handle(method, params, {"authorization": f"Bearer {fake.token}"})
    answer = call.answer
    assert answer["ok"] is True
    assert set(answer) - {"ok"} <= set(recorded)
    for nested in ("user", "view"):
        if isinstance(answer.get(nested), dict):
            assert set(answer[nested]) - {"blocks"} <= set(recorded[nested]) | {"blocks"}


def test_fake_rejects_blocks_over_limits():
    header = [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]
    assert message_block_problems(header)
    too_many = [{"type": "divider"}] * 51
    assert message_block_problems(too_many)
    assert message_block_problems([{"type": "divider"}]) == []


def test_fake_requires_bot_token():
    with FakeSlack() as fake:
        _reply, call = fake.handle("auth.test", {}, {"authorization": "Bearer xoxb-wrong"})
    assert call.answer == {"ok": False, "error": "invalid_auth"}
