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
    @app.event("message")
    def on_message(body: dict, event: dict, client: WebClient, context: BoltContext) -> None:
        # Bolt acknowledges events before it calls this listener. Edits, deletions, joins
        # and bot posts arrive as message events with a subtype or a bot_id. Only a
        # person's new message in the DM is a question.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        team_id = team_of(context)
        user_id = event.get("user", "")
        channel_id = event["channel"]
        text = event.get("text", "")
        event_id = body.get("event_id", "")

        def work() -> Message:
            caller = resolve_caller(deps, client, team_id, user_id)
            return deps.commands.direct_message(caller, text)

        def run() -> None:
            if not claim(deps.engine, team_id, EVENT_PREFIX + event_id, deps.clock()):
                log.info("skipped a repeated delivery of event %s", event_id)
                return
            reply_with(
                lambda message: client.chat_postMessage(channel=channel_id, text=message.text, blocks=message.blocks),
                work,
                what="a direct message",
                team_id=team_id,
                user_id=user_id,
            )

        deps.run_later(run, what="a direct message")
