"""Direct messages to the bot: a who-knows question or a `/crm` command line in plain text."""

from __future__ import annotations

import logging

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot.slack.blocks.elements import Message
from bot.slack.handlers import SlackDeps, reply_with, resolve_caller, team_of
from bot.slack.idempotency import EVENT_PREFIX, claim

log = logging.getLogger(__name__)


def register(app: App, deps: SlackDeps) -> None:
    def on_message(body: dict, event: dict, client: WebClient, context: BoltContext) -> None:
        # Edits, deletions, joins and bot posts arrive as message events with a subtype
        # or a bot_id; only a person's new message in the DM is a question.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        team_id = team_of(context)
        user_id = event.get("user", "")
        event_id = body.get("event_id", "")
        if not claim(deps.engine, team_id, EVENT_PREFIX + event_id, deps.clock()):
            log.info("skipped a repeated delivery of event %s", event_id)
            return

        def work() -> Message:
            caller = resolve_caller(deps, client, team_id, user_id)
            return deps.commands.direct_message(caller, event.get("text", ""))

        reply_with(
            lambda message: client.chat_postMessage(channel=event["channel"], text=message.text, blocks=message.blocks),
            work,
            what="a direct message",
            team_id=team_id,
            user_id=user_id,
        )

    app.event("message")(on_message)
