"""Block Kit builders: content a user reads, ids, and Slack's size limits."""

from __future__ import annotations

import json

import pytest

from bot.slack import ids
from bot.slack.blocks.contact import build_contact_card
from bot.slack.blocks.elements import Message, button
from bot.slack.blocks.help import build_error, build_help
from bot.slack.blocks.home import HomeData, build_home
from bot.slack.blocks.limits import (
    ELLIPSIS,
    MAX_MESSAGE_BLOCKS,
    MAX_VIEW_BLOCKS,
    chunk_text,
    escape_mrkdwn,
    find_limit_violations,
    truncate,
)
from bot.slack.blocks.lists import build_going_cold, build_org_people, build_organisations, build_top_contacts
from bot.slack.blocks.modals import build_result_modal
from bot.slack.blocks.status import build_status
from bot.slack.blocks.whoknows import build_whoknows
from tests.fakes.slack_api import message_block_problems, view_problems
from tests.slack.factories import NOW, contact, org, owner_hit, status, whoknows_result

LONG_NAME = "Consolidated Northern Harbor Freight, Logistics & Warehousing <Services> Group " * 3


def assert_message_fits(message: Message) -> None:
    assert find_limit_violations(message.blocks, max_blocks=MAX_MESSAGE_BLOCKS) == []
    assert message_block_problems(message.blocks) == []
    assert message.text


def assert_view_fits(view: dict) -> None:
    assert find_limit_violations(view["blocks"], max_blocks=MAX_VIEW_BLOCKS) == []
    assert view_problems(view) == []


def all_text(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def huge_contact(person_id: int) -> object:
    return contact(
        person_id,
        name=LONG_NAME,
        addresses=[f"a{i}.{'x' * 60}@{'sub.' * 10}example.com" for i in range(40)],
        organisation=LONG_NAME,
        reason="reason " * 800,
    )


def test_truncate_ends_with_ellipsis():
    cut = truncate("word " * 100, 50)
    assert len(cut) <= 50
    assert cut.endswith(ELLIPSIS)


def test_truncate_keeps_short_text():
    assert truncate("short", 50) == "short"


def test_truncate_never_splits_an_entity():
    text = escape_mrkdwn("a" * 45 + "<b>")
    cut = truncate(text, 49)
    assert cut.endswith(ELLIPSIS)
    assert "&l" not in cut.replace("&lt;", "")


def test_chunk_text_respects_size():
    pieces = chunk_text("word " * 2000, 3000)
    assert all(len(p) <= 3000 for p in pieces)
    assert "".join(pieces).replace(" ", "") == ("word" * 2000)


def test_button_rejects_long_value():
    with pytest.raises(ValueError, match="reference"):
        button("Approve", "approve", "x" * 2001)


def test_button_cuts_long_text():
    element = button("Approve " * 20, "approve", "opp:1")
    assert len(element["text"]["text"]) <= 75
    assert element["text"]["text"].endswith(ELLIPSIS)


def test_contact_card_shows_reason_and_dates():
    card = build_contact_card(contact(), NOW)
    text = all_text(card.blocks)
    assert card.blocks[0]["text"]["text"] == "Dana Whitfield"
    assert "strong (72/100)" in text
    assert "12 two-way threads" in text
    assert "Orion Freight" in text
    assert "about every 3 weeks" in text
    assert "9 days ago" in text
    assert "person1@orion.example" in text
    assert_message_fits(card)


def test_contact_card_lists_other_matches_as_buttons():
    others = [contact(i, name=f"Dana {i}") for i in range(2, 9)]
    card = build_contact_card(contact(), NOW, other_matches=others)
    buttons = [e for b in card.blocks if b["type"] == "actions" for e in b["elements"]]
    assert len(buttons) == 4
    assert buttons[0]["value"] == "contact person2@orion.example"
    assert all(b["action_id"].startswith(ids.OPEN_CONTACT) for b in buttons)
    assert "and 3 more" in all_text(card.blocks)
    assert_message_fits(card)


def test_contact_card_with_huge_fields_fits():
    card = build_contact_card(huge_contact(1), NOW, other_matches=[huge_contact(i) for i in range(2, 30)])
    assert_message_fits(card)
    assert "and 35 more" in all_text(card.blocks)


def test_contact_card_escapes_markup():
    card = build_contact_card(contact(name="A <b> & C", organisation="<!channel>"), NOW)
    text = all_text(card.blocks)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text


def test_top_list_cuts_with_more_line():
    contacts = [contact(i, name=f"Person {i}") for i in range(60)]
    message = build_top_contacts(contacts, max_rows=60)
    assert_message_fits(message)
    assert "and 15 more" in all_text(message.blocks)
    cards = [b["accessory"] for b in message.blocks if "accessory" in b]
    assert cards[0]["action_id"] == ids.OPEN_CONTACT
    assert cards[0]["value"] == "contact person0@orion.example"


def test_top_list_of_huge_contacts_fits():
    assert_message_fits(build_top_contacts([huge_contact(i) for i in range(45)], max_rows=45))


def test_empty_lists_say_what_to_do():
    assert "crm-bot import" in all_text(build_top_contacts([]).blocks)
    assert "Nobody is going cold" in all_text(build_going_cold([]).blocks)


def test_org_people_not_found_suggests_domain():
    message = build_org_people("Nowhere", None, [], NOW)
    assert "/crm org example.com" in all_text(message.blocks)
    assert_message_fits(message)


def test_org_people_lists_people():
    message = build_org_people("orion", org(), [contact(1), contact(2, name="Lee Park")], NOW)
    text = all_text(message.blocks)
    assert "Your people at Orion Freight" in text
    assert "Lee Park" in text
    assert_message_fits(message)


def test_organisations_list_fits():
    message = build_organisations([org(LONG_NAME, domains=[f"d{i}.example" for i in range(30)]) for _ in range(80)], NOW)
    assert_message_fits(message)


def test_status_reports_failed_sync_with_advice():
    report = build_status(
        status(last_sync_ok_at=NOW, last_sync_error="mailbox not found", last_sync_error_at=NOW.replace(hour=13)),
        NOW,
    )
    text = all_text(report.blocks)
    assert "The last sync failed" in text
    assert "administrator" in text
    assert_message_fits(report)


def test_status_reports_import_time():
    text = all_text(build_status(status(), NOW).blocks)
    assert "877" in text
    assert "Imported" in text


def test_whoknows_hides_other_owners_contacts():
    mine = owner_hit(1, "robin.hale@example.org", [contact(1, name="Dana Whitfield")])
    theirs = owner_hit(2, "sam.lee@example.org", [contact(2, name="Secret Person", addresses=["secret@orion.example"])])
    message = build_whoknows("orion", [whoknows_result([mine, theirs])], NOW, viewer_mailbox_id=1, owner_labels={2: "<@U2>"})
    text = all_text(message.blocks) + message.text
    assert "Dana Whitfield" in text
    assert "Secret Person" not in text
    assert "secret@orion.example" not in text
    assert "<@U2>" in text
    assert "knows 1 person there" in text
    assert "strong" in text
    assert "in the last month" in text
    assert_message_fits(message)


def test_whoknows_without_viewer_mailbox_shows_no_names():
    hit = owner_hit(1, "robin.hale@example.org", [contact(1, name="Dana Whitfield")])
    message = build_whoknows("orion", [whoknows_result([hit])], NOW, viewer_mailbox_id=None)
    text = all_text(message.blocks)
    assert "Dana Whitfield" not in text
    assert "robin.hale@example.org" in text


def test_whoknows_with_many_results_fits():
    results = [
        whoknows_result([owner_hit(i, f"owner{i}@example.org", [huge_contact(j) for j in range(5)]) for i in range(30)], LONG_NAME)
        for _ in range(12)
    ]
    message = build_whoknows(LONG_NAME, results, NOW, viewer_mailbox_id=3)
    assert_message_fits(message)
    text = all_text(message.blocks)
    assert "and 7 more organisations" in text
    assert "and 22 more owners" in text


def test_whoknows_no_result_suggests_domain():
    message = build_whoknows("zzz", [], NOW, viewer_mailbox_id=None)
    assert "/whoknows example.com" in all_text(message.blocks)


def test_help_lists_every_command():
    message = build_help()
    text = all_text(message.blocks)
    for command in ("/crm contact", "/crm top", "/crm cold", "/crm org", "/crm status", "/whoknows"):
        assert command in text
    assert_message_fits(message)


def test_error_message_is_one_section():
    message = build_error("x" * 5000)
    assert len(message.blocks) == 1
    assert_message_fits(message)


def test_home_tab_sections_and_buttons():
    data = HomeData(linked=True, top=[contact(1)], cold=[contact(2, name="Quiet Quinn")], status=status())
    view = build_home(data, NOW)
    text = all_text(view["blocks"])
    assert view["type"] == "home"
    assert "Your strongest relationships" in text
    assert "Going cold" in text
    assert "Quiet Quinn" in text
    assert "Mailbox health" in text
    action_ids = {e["action_id"] for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert {f"{ids.RUN_COMMAND}_top", f"{ids.RUN_COMMAND}_cold", f"{ids.RUN_COMMAND}_status", ids.REFRESH_HOME} <= action_ids
    assert_view_fits(view)


def test_home_tab_with_huge_lists_fits():
    data = HomeData(
        linked=True,
        top=[huge_contact(i) for i in range(40)],
        cold=[huge_contact(i) for i in range(40)],
        status=status(folders=[{"folder": LONG_NAME, "items_stored": 1}] * 50, last_sync_error="e" * 5000, last_sync_error_at=NOW),
    )
    assert_view_fits(build_home(data, NOW))


def test_home_tab_unlinked_explains_linking():
    view = build_home(HomeData(linked=False), NOW)
    assert "crm-bot link" in all_text(view["blocks"])
    assert_view_fits(view)


def test_result_modal_fits():
    message = build_top_contacts([huge_contact(i) for i in range(45)], max_rows=45)
    assert_view_fits(build_result_modal(message))



def test_cadence_words():
    from bot.slack.blocks.formatting import format_cadence

    assert format_cadence(None) == "no regular rhythm yet"
    assert format_cadence(1.0) == "almost daily"
    assert format_cadence(4.0) == "about every 4 days"
    assert format_cadence(11.0) == "about every 2 weeks"
    assert format_cadence(8.0) == "about every 8 days"
    assert format_cadence(10.0) == "about every week"
    assert format_cadence(7.5 * 1.3) == "about every 10 days"
    assert format_cadence(30.0) == "about every 4 weeks"
    assert format_cadence(13.0) == "about every 2 weeks"
    assert format_cadence(61.0) == "about every 2 months"
