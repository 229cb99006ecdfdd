"""An opportunity card with a drafted reply, and the modal that shows the whole draft.

The card carries only a preview of long texts. Its buttons carry a reference
such as ``opp:5012``, so the full draft is looked up again when a button is
clicked instead of travelling in the 2,000-character button value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.slack import ids
from bot.slack.blocks.elements import Block, Message, actions, button, context, header, modal, section
from bot.slack.blocks.formatting import format_age
from bot.slack.blocks.limits import MAX_SECTION_TEXT, MAX_VIEW_BLOCKS, chunk_text, escape_mrkdwn, truncate

DRAFT_PREVIEW = 600
NOTES_PREVIEW = 400


@dataclass
class OpportunityCard:
    """The content of one opportunity card."""

    id: int
    kind: str
    contact_name: str
    company_name: str
    headline: str
    draft_reply: str
    notes: str = ""


def opportunity_ref(opportunity_id: int) -> str:
    """Return the button value that names an opportunity."""
    return f"opp:{opportunity_id}"


def parse_opportunity_ref(value: str) -> int:
    """Return the opportunity id in a button value such as ``opp:5012``."""
    prefix, _, number = value.partition(":")
    if prefix != "opp" or not number.isdigit():
        raise ValueError(f"button value {value[:40]!r} is not an opportunity reference such as 'opp:5012'")
    return int(number)


def build_opportunity_card(card: OpportunityCard) -> Message:
    """Build the card with Approve, Edit, Show full draft and Dismiss buttons."""
    ref = opportunity_ref(card.id)
    blocks: list[Block] = [
        header(f"{card.contact_name} · {card.company_name}"),
        section(f"*{escape_mrkdwn(card.headline)}*"),
        section(f"*Draft reply*\n>{escape_mrkdwn(truncate(card.draft_reply, DRAFT_PREVIEW))}"),
    ]
    if card.notes:
        blocks.append(context(f"Notes: {escape_mrkdwn(truncate(card.notes, NOTES_PREVIEW))}"))
    blocks.append(
        actions(
            [
                button("Approve and send", ids.APPROVE_DRAFT, ref, style="primary"),
                button("Edit", ids.EDIT_DRAFT, ref),
                button("Show full draft", ids.SHOW_DRAFT, ref),
                button("Dismiss", ids.DISMISS_DRAFT, ref),
            ],
            block_id=f"opp_{card.id}",
        )
    )
    text = truncate(card.headline, 300)
    return Message(text=text, blocks=blocks)


def build_draft_modal(card: OpportunityCard) -> dict:
    """Build a modal that shows the whole draft and notes, split into sections."""
    blocks: list[Block] = [section(f"*{escape_mrkdwn(card.headline)}*")]
    for piece in chunk_text(escape_mrkdwn(card.draft_reply), MAX_SECTION_TEXT):
        blocks.append(section(piece))
    if card.notes:
        blocks.append(section("*Notes*"))
        for piece in chunk_text(escape_mrkdwn(card.notes), MAX_SECTION_TEXT):
            blocks.append(section(piece))
    return modal("Full draft", blocks[:MAX_VIEW_BLOCKS], callback_id=ids.DRAFT_MODAL)


def build_decision_done(reference: str, outcome: str, actor: str) -> Message:
    """Build the replacement of a card once someone decided on it."""
    text = f"{outcome} by <@{actor}> ({reference})."
    return Message(text=text, blocks=[section(text)])


def build_already_decided(reference: str, decided_at: datetime, now: datetime) -> Message:
    """Build the notice shown when a second click arrives after a decision."""
    text = (
        f"Already handled: {reference} was decided {format_age(decided_at, now)}. "
        "Nothing was sent again."
    )
    return Message(text=text, blocks=[section(text)])
