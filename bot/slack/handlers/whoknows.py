"""`/whoknows COMPANY`: which colleagues know someone at an organisation."""

from __future__ import annotations

from slack_bolt import App, BoltContext, Respond
from slack_sdk import WebClient

from bot.slack import ids
from bot.slack.blocks.elements import Message
from bot.slack.handlers import SlackDeps, ack_now, reply_with, resolve_caller, team_of


def register(app: App, deps: SlackDeps) -> None:
    def run_whoknows(command: dict, respond: Respond, client: WebClient, context: BoltContext) -> None:
        team_id = team_of(context)
        user_id = command["user_id"]
        query = command.get("text", "")

        def work() -> Message:
            caller = resolve_caller(deps, client, team_id, user_id)
            return deps.commands.whoknows(caller, query)

        reply_with(
            lambda message: respond(text=message.text, blocks=message.blocks, response_type="ephemeral"),
            work,
            what="/whoknows",
            team_id=team_id,
            user_id=user_id,
        )

    app.command(ids.WHOKNOWS_COMMAND)(ack=ack_now, lazy=[run_whoknows])
