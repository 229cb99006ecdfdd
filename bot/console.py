"""A terminal console that runs the Slack commands and prints their blocks as text.

It calls the same ``Commands`` as the Slack listeners and renders the same Block
Kit blocks, so anyone can try the product on their own mail export without a
Slack workspace. Buttons are numbered; typing a number clicks one.
"""

from __future__ import annotations

import getpass
import logging
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, TextIO

from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.relationships import queries
from bot.slack import ids
from bot.slack.blocks.elements import Message
from bot.slack.blocks.help import build_error
from bot.slack.commands import Commands
from bot.slack.linking import Caller
from bot.storage.models import LOCAL_TEAM

log = logging.getLogger(__name__)

PROMPT = "crm> "
WIDTH = 88
# Emoji codes the builders use, shown as plain marks in a terminal.
EMOJI = {":warning:": "!", ":white_check_mark:": "ok:", ":hourglass:": "..."}
CONSOLE_HELP = (
    "Type a command as in Slack (/crm top, /crm contact dana, /whoknows orion),\n"
    "`home` for the Home tab, a button's number to click it, or `quit`."
)


@dataclass
class Rendered:
    """A message or view as text, and the buttons it offers in the order they are numbered."""

    text: str
    buttons: list[dict] = field(default_factory=list)


def render_blocks(blocks: list[dict]) -> Rendered:
    """Render Block Kit blocks as plain text; buttons get numbers from 1."""
    lines: list[str] = []
    buttons: list[dict] = []

    def label(element: dict) -> str:
        buttons.append(element)
        return f"[{len(buttons)}] {element['text']['text']}"

    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            title = block["text"]["text"]
            lines += ["", title, "=" * min(len(title), WIDTH)]
        elif kind == "section":
            if "text" in block:
                lines.append(to_plain(block["text"]["text"]))
            for item in block.get("fields", []):
                lines.append("  " + to_plain(item["text"]).replace("\n", ": ", 1))
            if "accessory" in block and block["accessory"].get("type") == "button":
                lines[-1] += f"  {label(block['accessory'])}"
        elif kind == "context":
            lines += ["  " + to_plain(e.get("text", "")) for e in block.get("elements", [])]
        elif kind == "divider":
            lines.append("-" * 40)
        elif kind == "actions":
            lines.append("  ".join(label(e) for e in block.get("elements", []) if e.get("type") == "button"))
    return Rendered(text="\n".join(lines).strip("\n"), buttons=buttons)


def to_plain(text: str) -> str:
    """Turn mrkdwn into terminal text: drop bold and italic marks, show mentions and emoji plainly."""
    for code, mark in EMOJI.items():
        text = text.replace(code, mark)
    text = re.sub(r"<@(\w+)>", r"@\1", text)
    text = re.sub(r"(?<!\w)[*_](\S(?:.*?\S)?)[*_](?!\w)", r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class Console:
    """Runs command lines for one mailbox owner and keeps the buttons of the last reply."""

    def __init__(self, commands: Commands, caller: Caller) -> None:
        self.commands = commands
        self.caller = caller
        self.buttons: list[dict] = []

    def run(self, line: str) -> Rendered:
        """Run one line: a slash command, `home`, `help` or a button number."""
        line = line.strip()
        if line.isdigit():
            return self.click(int(line))
        if line in ("home", "/home"):
            return self._show_view(self.commands.home(self.caller))
        if line.startswith("/whoknows"):
            return self._show(self.commands.whoknows(self.caller, line[len("/whoknows") :]))
        if line.startswith("/crm"):
            return self._show(self.commands.crm(self.caller, line[len("/crm") :]))
        return self._show(self.commands.direct_message(self.caller, line))

    def click(self, number: int) -> Rendered:
        if not 1 <= number <= len(self.buttons):
            # The error is rendered without _show, so the last reply's buttons stay clickable.
            if self.buttons:
                hint = f"choose one of 1 to {len(self.buttons)}"
            else:
                hint = "the last reply has none, so run a command such as `/crm top` first"
            return render_blocks(build_error(f"There is no button {number}; {hint}.").blocks)
        button = self.buttons[number - 1]
        action_id = button["action_id"]
        if action_id == ids.REFRESH_HOME:
            return self._show_view(self.commands.home(self.caller))
        if action_id.startswith((ids.RUN_COMMAND, ids.OPEN_CONTACT)):
            return self._show(self.commands.crm(self.caller, button["value"]))
        return self._show(build_error(f"The button “{button['text']['text']}” works only in Slack."))

    def _show(self, message: Message) -> Rendered:
        rendered = render_blocks(message.blocks)
        self.buttons = rendered.buttons
        return rendered

    def _show_view(self, view: dict) -> Rendered:
        return self._show(Message(text="Home", blocks=view["blocks"]))


def open_console(
    engine: Engine, owner: str, *, team_id: str = LOCAL_TEAM, now: datetime | None = None
) -> Console:
    """Find the owner's mailbox and return a console that acts as that owner."""
    with Session(engine) as session:
        mailbox = queries.get_mailbox(session, owner, team_id)
    caller = Caller(team_id=mailbox.team_id, actor=f"cli:{_login()}", mailbox_id=mailbox.id, data_team_id=mailbox.team_id)
    if now is None and mailbox.source_kind == "files":
        # A mail export is shown as of the end of its mail, as its relationships were scored.
        from bot.relationships.compute import reference_time

        now = reference_time(engine, mailbox, None)
    clock: Callable[[], datetime] | None = (lambda: now) if now is not None else None
    log.info("console for mailbox %s started by %s", mailbox.id, caller.actor)
    return Console(Commands(engine, clock=clock), caller)


def repl(console: Console, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """Read lines until `quit` or end of input, and print the reply to each."""
    print(CONSOLE_HELP, file=stdout)
    while True:
        stdout.write(PROMPT)
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() in ("quit", "exit", "q"):
            stdout.write("\n")
            return 0
        if not line.strip():
            continue
        print(console.run(line).text, file=stdout)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
