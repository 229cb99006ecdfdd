"""Small constructors for Block Kit blocks that cut text to Slack's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.slack.blocks.limits import (
    MAX_ACTION_ID,
    MAX_BLOCK_ID,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_VALUE,
    MAX_CONFIRM_TEXT,
    MAX_CONFIRM_TITLE,
    MAX_CONTEXT_ELEMENTS,
    MAX_FALLBACK_TEXT,
    MAX_FIELD_TEXT,
    MAX_HEADER_TEXT,
    MAX_SECTION_FIELDS,
    MAX_SECTION_TEXT,
    MAX_VIEW_TITLE,
    truncate,
)

Block = dict[str, Any]


@dataclass
class Message:
    """A message ready to send: notification text and its blocks."""

    text: str
    blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.text = truncate(self.text, MAX_FALLBACK_TEXT)


def plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text or " ", limit), "emoji": True}


def mrkdwn(text: str, limit: int = MAX_SECTION_TEXT) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text or " ", limit)}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text, MAX_HEADER_TEXT)}


def section(text: str, *, accessory: Block | None = None, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": mrkdwn(text)}
    if accessory is not None:
        block["accessory"] = accessory
    if block_id is not None:
        block["block_id"] = _checked_id(block_id, MAX_BLOCK_ID, "block_id")
    return block


def fields_section(fields: list[str]) -> Block:
    """Build a two-column section; at most ten fields are kept."""
    kept = [f for f in fields if f][:MAX_SECTION_FIELDS]
    return {"type": "section", "fields": [mrkdwn(f, MAX_FIELD_TEXT) for f in kept]}


def context(*texts: str) -> Block:
    kept = [t for t in texts if t][:MAX_CONTEXT_ELEMENTS]
    return {"type": "context", "elements": [mrkdwn(t) for t in kept]}


def divider() -> Block:
    return {"type": "divider"}


def button(
    text: str,
    action_id: str,
    value: str,
    *,
    style: str | None = None,
    confirm: tuple[str, str] | None = None,
) -> Block:
    """Build a button; ``value`` must be a short reference, so a long one is a programming error.

    Args:
        confirm: optional (title, text) of a confirmation dialog.
    """
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError(
            f"button value for {action_id!r} has {len(value)} characters, more than "
            f"{MAX_BUTTON_VALUE}; pass a reference such as 'opp:5012' instead of the text"
        )
    element: Block = {
        "type": "button",
        "text": plain(text, MAX_BUTTON_TEXT),
        "action_id": _checked_id(action_id, MAX_ACTION_ID, "action_id"),
        "value": value,
    }
    if style is not None:
        element["style"] = style
    if confirm is not None:
        title, body = confirm
        element["confirm"] = {
            "title": plain(title, MAX_CONFIRM_TITLE),
            "text": plain(body, MAX_CONFIRM_TEXT),
            "confirm": plain("Yes", MAX_BUTTON_TEXT),
            "deny": plain("Cancel", MAX_BUTTON_TEXT),
        }
    return element


def actions(elements: list[Block], *, block_id: str | None = None) -> Block:
    block: Block = {"type": "actions", "elements": elements}
    if block_id is not None:
        block["block_id"] = _checked_id(block_id, MAX_BLOCK_ID, "block_id")
    return block


def modal(title: str, blocks: list[Block], *, callback_id: str, close: str = "Close") -> Block:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain(title, MAX_VIEW_TITLE),
        "close": plain(close, MAX_VIEW_TITLE),
        "blocks": blocks,
    }


def _checked_id(value: str, limit: int, label: str) -> str:
    if not value or len(value) > limit:
        raise ValueError(f"{label} {value[:40]!r} must have 1 to {limit} characters, got {len(value)}")
    return value
