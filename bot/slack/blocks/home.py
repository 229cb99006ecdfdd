"""The App Home tab: strongest relationships, who is going cold, mailbox health."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.relationships.views import ContactView, MailboxStatus
from bot.slack import ids
from bot.slack.blocks.elements import Block, actions, button, context, divider, header, section
from bot.slack.blocks.help import command_buttons
from bot.slack.blocks.lists import build_going_cold, build_top_contacts
from bot.slack.blocks.status import build_status_blocks

# Two lists of ten rows plus health and buttons stay near 40 of the 100 blocks a tab allows.
MAX_HOME_ROWS = 10


@dataclass
class HomeData:
    """Everything the Home tab of one user shows."""

    linked: bool
    top: list[ContactView] = field(default_factory=list)
    cold: list[ContactView] = field(default_factory=list)
    status: MailboxStatus | None = None
    link_hint: str | None = None


def build_home(data: HomeData, now: datetime) -> dict:
    """Build the Home tab view for ``views.publish``."""
    if not data.linked:
        return {"type": "home", "blocks": _unlinked_blocks(data)}

    blocks: list[Block] = [
        header("Your relationships"),
        command_buttons(ids.HOME_ACTIONS_BLOCK),
        context(f"Updated {now:%Y-%m-%d %H:%M} UTC · only you see this tab"),
    ]
    blocks += [divider(), *_without_header(build_top_contacts(data.top, max_rows=MAX_HOME_ROWS).blocks)]
    blocks += [divider(), *_without_header(build_going_cold(data.cold, max_rows=MAX_HOME_ROWS).blocks)]
    if data.status is not None:
        blocks += [divider(), header("Mailbox health"), *build_status_blocks(data.status, now)]
    blocks.append(actions([button("Refresh", ids.REFRESH_HOME, "refresh")]))
    return {"type": "home", "blocks": blocks}


def _without_header(blocks: list[Block]) -> list[Block]:
    """Turn a list message's header into a bold section, so the tab keeps one large title."""
    first, *rest = blocks
    title = first["text"]["text"] if first.get("type") == "header" else ""
    return [section(f"*{title}*"), *rest] if title else blocks


def _unlinked_blocks(data: HomeData) -> list[Block]:
    hint = data.link_hint or (
        "Your Slack account is not linked to a mailbox yet. The bot links you when the email "
        "of your Slack profile is an address of a connected mailbox; otherwise ask your "
        "administrator to run `crm-bot link YOUR_SLACK_ID you@example.com`."
    )
    return [header("Your relationships"), section(hint), command_buttons(ids.HOME_ACTIONS_BLOCK)]

