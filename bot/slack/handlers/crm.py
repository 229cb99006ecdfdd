"""`/crm` and the buttons that run a `/crm` subcommand from a message or the Home tab."""

from __future__ import annotations

import logging
import re

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.slack import ids
from bot.slack.blocks.elements import Message
from bot.slack.blocks.modals import build_loading_modal, build_result_modal
from bot.slack.handlers import SlackDeps, reply_with, resolve_caller, team_of
from bot.slack.idempotency import claim

log = logging.getLogger(__name__)

COMMAND_BUTTONS = re.compile(rf"^({ids.RUN_COMMAND}|{ids.OPEN_CONTACT})(_\w+)?$")


def register(app: App, deps: SlackDeps) -> None:
    @app.command(ids.CRM_COMMAND)
    def on_crm(ack: Ack, command: dict, respond: Respond, client: WebClient, context: BoltContext) -> None:
        ack()
        team_id = team_of(context)
        user_id = command["user_id"]
        text = command.get("text", "")

        def work() -> Message:
            caller = resolve_caller(deps, client, team_id, user_id)
            return deps.commands.crm(caller, text)

        deps.run_later(
            lambda: reply_with(
                lambda message: respond(text=message.text, blocks=message.blocks, response_type="ephemeral"),
                work,
                what="/crm",
                team_id=team_id,
                user_id=user_id,
            ),
            what="/crm",
        )

    @app.action(COMMAND_BUTTONS)
    def on_button(
        ack: Ack, body: dict, action: dict, respond: Respond, client: WebClient, context: BoltContext
    ) -> None:
        ack()
        team_id = team_of(context)
        user_id = body["user"]["id"]
        text = action.get("value", "")
        container = body.get("container") or {}
        trigger_id = body.get("trigger_id", "")
        click_key = f"action:{action['action_id']}:{action.get('action_ts')}"

        def work() -> Message:
            caller = resolve_caller(deps, client, team_id, user_id)
            return deps.commands.crm(caller, text)

        def answer_in_modal() -> None:
            # Buttons on the Home tab have no response_url: the reply opens in a modal.
            # views.open must use the trigger_id within 3 seconds, so an empty modal opens
            # first and views.update fills it.
            opened = client.views_open(trigger_id=trigger_id, view=build_loading_modal())
            view_id = opened["view"]["id"]
            reply_with(
                lambda message: client.views_update(view_id=view_id, view=build_result_modal(message)),
                work,
                what="a Home tab button",
                team_id=team_id,
                user_id=user_id,
            )

        def answer_in_channel() -> None:
            reply_with(
                lambda message: respond(
                    text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False
                ),
                work,
                what="a button",
                team_id=team_id,
                user_id=user_id,
            )

        def run() -> None:
            if not claim(deps.engine, team_id, click_key, deps.clock()):
                log.info("skipped a repeated click on %s by %s", action["action_id"], user_id)
                return
            if container.get("type") == "view":
                answer_in_modal()
            else:
                answer_in_channel()

        deps.run_later(run, what=f"button {action['action_id']}")
