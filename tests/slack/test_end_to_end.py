"""The Slack app against the fake Slack on two imported Enron mailboxes, end to end over HTTP."""

from __future__ import annotations

import json
import time

import pytest
from sqlmodel import Session, select

from bot.relationships import queries
from bot.slack import ids
from bot.slack.blocks.contact import contact_title
from bot.storage.models import AuditEvent, SlackUser
from tests.slack.conftest import ENRON_NOW, block_actions_payload, event_envelope

BADEER = "U0BADEER"
CUILLA = "U0CUILLA"
COLLEAGUE = "U0COLLEAGUE"


@pytest.fixture
def enron_http(fake_slack, slack_settings, enron_engine, start_http):
    fake_slack.add_user(BADEER, "Robert.Badeer@enron.com", real_name="Robert Badeer")
    fake_slack.add_user(CUILLA, "martin.cuilla@enron.com", real_name="Martin Cuilla")
    fake_slack.add_user(COLLEAGUE, "someone.else@enron.com")
    return start_http(slack_settings, enron_engine, clock=lambda: ENRON_NOW)


def blocks_text(call) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(call.params.get("blocks") or call.params.get("view"), ensure_ascii=False) + call.params.get("text", "")


def test_contact_card_from_real_mail(fake_slack, enron_http, enron_engine, enron_data):
    reply = ask(fake_slack, enron_http, "/crm", "contact grigsby", BADEER)
    text = blocks_text(reply)
    assert reply.params["response_type"] == "ephemeral"
    assert "Mike Grigsby" in text
    assert "mike.grigsby@enron.com" in text
    assert "Last from them" in text
    assert "Last from you" in text
    assert "two-way thread" in text


def test_going_cold_matches_query(fake_slack, enron_http, enron_engine, enron_data):
    mailbox_id = enron_data.mailbox_ids["robert.badeer@enron.com"]
    with Session(enron_engine) as session:
        expected = queries.going_cold(session, mailbox_id, now=ENRON_NOW)
    assert expected, "the fixture mailbox should have a relationship going cold by June 2002"
    reply = ask(fake_slack, enron_http, "/crm", "cold", BADEER)
    text = blocks_text(reply)
    assert "Going cold" in text
    for contact in expected:
        assert contact_title(contact) in text


def test_whoknows_hides_colleagues_contacts(fake_slack, enron_http, enron_engine, enron_data):
    ask(fake_slack, enron_http, "/crm", "status", CUILLA)  # links Martin Cuilla through his profile
    reply = ask(fake_slack, enron_http, "/whoknows", "apbenergy", BADEER)
    text = blocks_text(reply)
    cuilla_id = enron_data.mailbox_ids["martin.cuilla@enron.com"]
    with Session(enron_engine) as session:
        results = queries.who_knows(session, "apbenergy", now=ENRON_NOW)
    cuilla_people = [p for r in results for h in r.owners if h.mailbox_id == cuilla_id for p in h.people]
    assert cuilla_people
    assert "Apbenergy" in text
    assert f"<@{CUILLA}>" in text
    assert "knows 1 person there" in text
    assert "You" in text
    for person in cuilla_people:
        assert contact_title(person) not in text
        for address in person.addresses:
            assert address not in text

    with Session(enron_engine) as session:
        audit = session.exec(select(AuditEvent).where(AuditEvent.actor == BADEER)).all()
    assert [(a.action, a.target, a.team_id) for a in audit] == [("whoknows", "apbenergy", "T0FAKE")]
    assert audit[0].detail["owners"]


def test_whoknows_leaves_out_unlinked_owners(fake_slack, enron_http, enron_engine, enron_data):
    # Martin Cuilla's mailbox is imported, but he never used the app, so he agreed to nothing.
    reply = ask(fake_slack, enron_http, "/whoknows", "apbenergy", BADEER)
    text = blocks_text(reply)
    assert "You" in text
    assert f"<@{CUILLA}>" not in text
    assert "martin.cuilla" not in text
    assert "knows 1 person there" not in text


def test_home_tab_published_on_open(fake_slack, enron_http, enron_engine, enron_data):
    mailbox_id = enron_data.mailbox_ids["robert.badeer@enron.com"]
    with Session(enron_engine) as session:
        strongest = queries.top_contacts(session, mailbox_id, limit=1, now=ENRON_NOW)[0]
    envelope = event_envelope(
        {"type": "app_home_opened", "user": BADEER, "channel": "D0BADEER", "tab": "home", "event_ts": "1.1"}, "Ev0E2EHOME"
    )
    assert enron_http.event(envelope).status == 200
    published = fake_slack.wait_for("views.publish", 1, timeout=15)[0]
    assert published.answer["ok"] is True
    assert published.params["user_id"] == BADEER
    view = published.params["view"]
    assert view["type"] == "home"
    text = json.dumps(view, ensure_ascii=False)
    assert "Your strongest relationships" in text
    assert contact_title(strongest) in text
    assert "Mailbox health" in text


def test_home_button_answers_in_modal(fake_slack, enron_http):
    payload = block_actions_payload(
        f"{ids.RUN_COMMAND}_top",
        "top",
        user_id=BADEER,
        response_url="",
        container={"type": "view", "view_id": "V0HOME"},
    )
    assert enron_http.action(payload).status == 200
    fake_slack.wait_for("views.open", 1)
    updated = fake_slack.wait_for("views.update", 1)[0]
    assert updated.answer["ok"] is True
    assert "Your strongest relationships" in json.dumps(updated.params["view"])


def test_direct_message_question_answered(fake_slack, enron_http):
    envelope = event_envelope(
        {
            "type": "message",
            "channel_type": "im",
            "channel": "D0BADEER",
            "user": BADEER,
            "text": "who knows someone at apbenergy?",
            "ts": "1717405200.000100",
        },
        "Ev0E2EDM",
    )
    assert enron_http.event(envelope).status == 200
    posted = fake_slack.wait_for("chat.postMessage", 1, timeout=15)[0]
    assert posted.params["channel"] == "D0BADEER"
    assert "Apbenergy" in blocks_text(posted)


def test_user_linked_through_profile_email(fake_slack, enron_http, enron_engine, enron_data):
    ask(fake_slack, enron_http, "/crm", "top", BADEER)
    with Session(enron_engine) as session:
        user = session.exec(select(SlackUser).where(SlackUser.slack_user_id == BADEER)).one()
    assert user.team_id == "T0FAKE"
    assert user.email == "robert.badeer@enron.com"
    assert user.mailbox_id == enron_data.mailbox_ids["robert.badeer@enron.com"]
    assert user.linked_by == "profile"


def test_user_without_mailbox_is_not_linked(fake_slack, enron_http, enron_engine):
    reply = ask(fake_slack, enron_http, "/crm", "top", COLLEAGUE)
    assert "not linked" in reply.params["text"]
    with Session(enron_engine) as session:
        assert session.exec(select(SlackUser).where(SlackUser.slack_user_id == COLLEAGUE)).first() is None


def ask(fake, http, command: str, text: str, user: str):  # type: ignore[no-untyped-def]
    """Send a slash command and return the reply posted to its own response_url."""
    name = f"{user}-{command.strip('/')}-{text}".replace(" ", "_")
    assert http.command(command, text, user_id=user, response_url=fake.response_url(name)).status == 200
    return fake.wait_for("response_url", 1, timeout=15, path=f"/response/{name}")[0]
