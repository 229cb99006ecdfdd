"""Block Kit size limits, and helpers that keep text and lists inside them.

Sources: Slack's Block Kit reference ("up to 50 blocks in each message, and 100
blocks in modals or Home tabs") and the validators in slack_sdk.models.blocks
(section text 3,000, button text 75, button value 2,000, action_id and block_id
255, header text 150). Slack rejects a payload over any of them with
``invalid_blocks``, so builders cut text and lists here instead.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_SECTION_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTION_ID = 255
MAX_BLOCK_ID = 255
MAX_HEADER_TEXT = 150
MAX_VIEW_TITLE = 24
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
# Slack cuts a message's top-level ``text`` at 40,000 characters. Here it is only the
# notification fallback, so it is kept as short as a section.
MAX_FALLBACK_TEXT = 3000

ELLIPSIS = "…"

T = TypeVar("T")


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack treats as markup in mrkdwn text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """Return ``text`` cut to at most ``limit`` characters, ending with an ellipsis when cut.

    A cut never splits an HTML entity made by ``escape_mrkdwn``.
    """
    if limit < 1:
        raise ValueError(f"truncate limit must be at least 1, got {limit}")
    if len(text) <= limit:
        return text

    head = text[: limit - len(ELLIPSIS)]
    ampersand = head.rfind("&", max(0, len(head) - 5))
    if ampersand != -1 and ";" not in head[ampersand:]:
        head = head[:ampersand]
    return head.rstrip() + ELLIPSIS


def cut_list(items: Sequence[T], limit: int) -> tuple[list[T], int]:
    """Return the first ``limit`` items and how many were left out."""
    shown = list(items[: max(0, limit)])
    return shown, len(items) - len(shown)


def more_text(hidden: int, noun: str = "more") -> str:
    """Return the line shown under a cut list, for example "and 12 more"."""
    return f"and {hidden} {noun}"


def chunk_text(text: str, size: int) -> list[str]:
    """Split text into pieces of at most ``size`` characters, preferring line breaks."""
    pieces: list[str] = []
    rest = text
    while len(rest) > size:
        cut = rest.rfind("\n", 0, size)
        if cut < size // 2:
            cut = rest.rfind(" ", 0, size)
        if cut < size // 2:
            cut = size
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def find_limit_violations(blocks: Sequence[dict[str, Any]], *, max_blocks: int) -> list[str]:
    """List every Block Kit limit that ``blocks`` break, one readable line each.

    Args:
        blocks: the ``blocks`` array of a message or a view.
        max_blocks: 50 for a message, 100 for a Home tab or a modal.
    """
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"{len(blocks)} blocks, more than the maximum of {max_blocks}")

    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"block {index} ({block.get('type')})"
        block_id = block.get("block_id")
        if block_id is not None:
            if len(block_id) > MAX_BLOCK_ID:
                problems.append(f"{where}: block_id longer than {MAX_BLOCK_ID}")
            if block_id in block_ids:
                problems.append(f"{where}: block_id {block_id!r} repeated")
            block_ids.add(block_id)
        problems.extend(f"{where}: {p}" for p in _block_violations(block))
    return problems


def _block_violations(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    problems: list[str] = []
    if kind == "header":
        problems += _text_violations(block.get("text"), MAX_HEADER_TEXT, "header text")
    elif kind == "section":
        if "text" in block:
            problems += _text_violations(block["text"], MAX_SECTION_TEXT, "section text")
        fields = block.get("fields", [])
        if len(fields) > MAX_SECTION_FIELDS:
            problems.append(f"{len(fields)} fields, more than {MAX_SECTION_FIELDS}")
        for field in fields:
            problems += _text_violations(field, MAX_FIELD_TEXT, "field text")
        if "text" not in block and not fields:
            problems.append("section without text or fields")
        if "accessory" in block:
            problems += _element_violations([block["accessory"]])
    elif kind == "context":
        elements = block.get("elements", [])
        if not elements or len(elements) > MAX_CONTEXT_ELEMENTS:
            problems.append(f"context with {len(elements)} elements, allowed 1 to {MAX_CONTEXT_ELEMENTS}")
        for element in elements:
            problems += _text_violations(element, MAX_SECTION_TEXT, "context text")
    elif kind == "actions":
        elements = block.get("elements", [])
        if not elements or len(elements) > MAX_ACTIONS_ELEMENTS:
            problems.append(f"actions with {len(elements)} elements, allowed 1 to {MAX_ACTIONS_ELEMENTS}")
        problems += _element_violations(elements)
    return problems


def _element_violations(elements: Sequence[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    action_ids: set[str] = set()
    for element in elements:
        action_id = element.get("action_id", "")
        if len(action_id) > MAX_ACTION_ID:
            problems.append(f"action_id longer than {MAX_ACTION_ID}")
        if action_id in action_ids:
            problems.append(f"action_id {action_id!r} repeated within one block")
        action_ids.add(action_id)
        if element.get("type") == "button":
            problems += _text_violations(element.get("text"), MAX_BUTTON_TEXT, "button text")
            if len(element.get("value", "")) > MAX_BUTTON_VALUE:
                problems.append(f"button value longer than {MAX_BUTTON_VALUE}")
            confirm = element.get("confirm")
            if confirm:
                problems += _text_violations(confirm.get("title"), MAX_CONFIRM_TITLE, "confirm title")
                problems += _text_violations(confirm.get("text"), MAX_CONFIRM_TEXT, "confirm text")
    return problems


def _text_violations(text_object: Any, limit: int, label: str) -> list[str]:
    if not isinstance(text_object, dict) or not isinstance(text_object.get("text"), str):
        return [f"{label} is not a text object"]
    text = text_object["text"]
    if not text:
        return [f"{label} is empty"]
    if len(text) > limit:
        return [f"{label} has {len(text)} characters, more than {limit}"]
    return []
