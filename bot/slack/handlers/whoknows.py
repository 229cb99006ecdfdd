"""`/whoknows COMPANY`: which colleagues know someone at an organisation."""

from __future__ import annotations

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.slack import ids
from bot.slack.blocks.elements import Message
from bot.slack.handlers import SlackDeps, reply_with, resolve_caller, team_of


def register(app: App, deps: SlackDeps) -> None:
    @app.command(ids.WHOKNOWS_COMMAND)
    def on_whoknows(ack: Ack, command: dict, respond: Respond, client: WebClient, context: BoltContext) -> None:
        ack()
        team_id = team_of(context)
        user_id = command["user_id"]
        query = command.get("text", "")

        def work() -> Message:
            caller = resolve_caller(deps, client, team_id, user_id)
            return deps.commands.whoknows(caller, query)

        deps.run_later(
            lambda: reply_with(
                lambda message: respond(text=message.text, blocks=message.blocks, response_type="ephemeral"),
                work,
                what="/whoknows",
                team_id=team_id,
                user_id=user_id,
            ),
            what="/whoknows",
        )
