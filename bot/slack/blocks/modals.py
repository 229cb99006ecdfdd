"""Modals that show a command's reply when a button on the Home tab is clicked."""

from __future__ import annotations

from bot.slack import ids
from bot.slack.blocks.elements import Message, modal, section
from bot.slack.blocks.limits import MAX_VIEW_BLOCKS


def build_loading_modal() -> dict:
    """Build the modal opened at once, while the reply is computed (a trigger_id expires in 3 s)."""
    return modal("CRM", [section(":hourglass: Working on it…")], callback_id=ids.RESULT_MODAL)


def build_result_modal(message: Message) -> dict:
    """Build a modal that shows the blocks of a message."""
    return modal("CRM", message.blocks[:MAX_VIEW_BLOCKS], callback_id=ids.RESULT_MODAL)
