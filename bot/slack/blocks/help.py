"""The `/crm help` message and the errors shown to a user."""

from __future__ import annotations

from bot.slack import ids
from bot.slack.blocks.elements import Message, actions, button, context, header, section

HELP_TEXT = (
    "*Your relationships, from your own mail*\n"
    "`/crm contact NAME` — a card: strength and why, last mail each way, usual rhythm, organisation\n"
    "`/crm top` — your strongest relationships\n"
    "`/crm cold` — strong relationships that have gone quiet\n"
    "`/crm org NAME` — the people you know at an organisation\n"
    "`/crm status` — mailbox health: what was read and when\n"
    "`/whoknows COMPANY` — which colleagues know someone there; you see their strength band, never their contacts' names"
)


def build_help() -> Message:
    """Build the help message with buttons that run the commands without arguments."""
    blocks = [
        header("CRM commands"),
        section(HELP_TEXT),
        command_buttons(),
        context("Results are shown only to you. Names of a colleague's contacts are never shown."),
    ]
    return Message(text="CRM commands: /crm contact, top, cold, org, status and /whoknows", blocks=blocks)


def command_buttons(block_id: str = ids.HELP_ACTIONS_BLOCK) -> dict:
    """Build the row of buttons that run `/crm top`, `cold` and `status`."""
    return actions(
        [
            button("Strongest", f"{ids.RUN_COMMAND}_top", "top"),
            button("Going cold", f"{ids.RUN_COMMAND}_cold", "cold"),
            button("Mailbox health", f"{ids.RUN_COMMAND}_status", "status"),
            button("Help", f"{ids.RUN_COMMAND}_help", "help"),
        ],
        block_id=block_id,
    )


def build_error(text: str) -> Message:
    """Build a short message that states what failed and what to do."""
    return Message(text=text, blocks=[section(f":warning: {text}")])

