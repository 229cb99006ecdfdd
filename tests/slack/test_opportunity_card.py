"""An opportunity card whose company name, draft and notes exceed Block Kit's limits."""

from __future__ import annotations

import json

import pytest

from bot.slack import ids
from bot.slack.blocks.limits import (
    ELLIPSIS,
    MAX_ACTION_ID,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_VALUE,
    MAX_HEADER_TEXT,
    MAX_MESSAGE_BLOCKS,
    MAX_SECTION_TEXT,
    MAX_VIEW_BLOCKS,
    find_limit_violations,
)
from bot.slack.blocks.opportunity import (
    OpportunityCard,
    build_draft_modal,
    build_opportunity_card,
    parse_opportunity_ref,
)
from tests.conftest import shared_path
from tests.fakes.slack_api import message_block_problems, view_problems


@pytest.fixture
def oversized_card() -> tuple[OpportunityCard, dict]:
    case = json.loads(shared_path("cases", "B24.json").read_text())
    expected = json.loads(shared_path("cases", "B24.expected.json").read_text())["expected"]
    opportunity = case["opportunity"]
    assert len(opportunity["company_name"]) == case["lengths"]["company_name"]
    card = OpportunityCard(
        id=opportunity["id"],
        kind=opportunity["kind"],
        contact_name=opportunity["contact_name"],
        company_name=opportunity["company_name"],
        headline=opportunity["headline"],
        draft_reply=opportunity["draft_reply"],
        notes=opportunity["notes"],
    )
    return card, expected


def elements_of(blocks: list[dict]) -> list[dict]:
    found = [b["accessory"] for b in blocks if "accessory" in b]
    found += [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    return found


def texts_of(blocks: list[dict]) -> list[str]:
    texts = [b["text"]["text"] for b in blocks if "text" in b]
    texts += [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]
    return texts


def test_oversized_card_keeps_every_limit(oversized_card):
    card, expected = oversized_card
    limits = expected["limits"]
    message = build_opportunity_card(card)

    assert len(message.blocks) <= limits["blocks_max"]
    for block in message.blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= limits["header_text_max"]
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= limits["section_text_max"]
    for element in elements_of(message.blocks):
        assert len(element["text"]["text"]) <= limits["button_text_max"]
        assert len(element["value"]) <= limits["button_value_max"]
        assert len(element["action_id"]) <= limits["action_id_max"]
    assert find_limit_violations(message.blocks, max_blocks=MAX_MESSAGE_BLOCKS) == []


def test_oversized_card_posts_without_invalid_blocks(oversized_card):
    card, _expected = oversized_card
    assert message_block_problems(build_opportunity_card(card).blocks) == []


def test_approve_value_is_a_short_reference(oversized_card):
    card, expected = oversized_card
    message = build_opportunity_card(card)
    approve = next(e for e in elements_of(message.blocks) if e["action_id"] == ids.APPROVE_DRAFT)
    assert expected["approve_value_is_reference"] is True
    assert approve["value"] == "opp:5012"
    assert parse_opportunity_ref(approve["value"]) == 5012
    assert card.draft_reply[:50] not in json.dumps([e["value"] for e in elements_of(message.blocks)])


def test_action_ids_unique_within_block(oversized_card):
    card, _expected = oversized_card
    for block in build_opportunity_card(card).blocks:
        if block["type"] == "actions":
            action_ids = [e["action_id"] for e in block["elements"]]
            assert len(action_ids) == len(set(action_ids))


def test_truncated_texts_end_with_ellipsis(oversized_card):
    card, _expected = oversized_card
    message = build_opportunity_card(card)
    header = message.blocks[0]["text"]["text"]
    assert header == f"{card.contact_name} · {card.company_name}"
    assert len(header) <= MAX_HEADER_TEXT
    draft = next(t for t in texts_of(message.blocks) if t.startswith("*Draft reply*"))
    assert draft.endswith(ELLIPSIS)
    notes = next(t for t in texts_of(message.blocks) if t.startswith("Notes:"))
    assert notes.endswith(ELLIPSIS)


def test_full_draft_reachable_in_modal(oversized_card):
    card, _expected = oversized_card
    message = build_opportunity_card(card)
    show = next(e for e in elements_of(message.blocks) if e["action_id"] == ids.SHOW_DRAFT)
    assert show["value"] == "opp:5012"

    view = build_draft_modal(card)
    joined = "".join(b["text"]["text"] for b in view["blocks"] if b["type"] == "section")
    assert card.draft_reply.replace(" ", "")[:2000] in joined.replace(" ", "").replace("\n", "")
    assert card.notes.replace(" ", "")[-200:] in joined.replace(" ", "").replace("\n", "")
    assert all(len(b["text"]["text"]) <= MAX_SECTION_TEXT for b in view["blocks"])
    assert find_limit_violations(view["blocks"], max_blocks=MAX_VIEW_BLOCKS) == []
    assert view_problems(view) == []


def test_button_texts_within_limit(oversized_card):
    card, _expected = oversized_card
    for element in elements_of(build_opportunity_card(card).blocks):
        assert len(element["text"]["text"]) <= MAX_BUTTON_TEXT
        assert len(element["value"]) <= MAX_BUTTON_VALUE
        assert len(element["action_id"]) <= MAX_ACTION_ID


def test_parse_reference_rejects_other_values():
    with pytest.raises(ValueError, match="opp:5012"):
        parse_opportunity_ref("contact dana")
