"""Buttons that decide on an item once: approve, decline, dismiss.

A decision claims the key ``decision:<reference>`` before it runs. A second click,
a click on another decision button of the same item, or a click handled by a second
process finds the claim, so it gets an "already handled" notice instead of running
the effect again. A failed decision releases its claim so that the user
can click again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Callable

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.errors import BotError
from bot.slack.blocks.help import build_error
from bot.slack.blocks.opportunity import build_already_decided, build_decision_done
from bot.slack.handlers import SlackDeps, team_of
from bot.slack.idempotency import DECISION_PREFIX, claim, claimed_at, release

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionRequest:
    """One click on a decision button."""

    team_id: str
    user_id: str
    action_id: str
    reference: str
    channel_id: str | None
    message_ts: str | None


# Runs the effect and returns the outcome shown in place of the card, e.g. "Approved and sent".
Decide = Callable[[DecisionRequest], str]


def register_decision(app: App, deps: SlackDeps, action_id: str, decide: Decide) -> None:
    """Handle clicks on ``action_id`` buttons by running ``decide`` once per item, unless a run fails."""

    def on_decision(
        ack: Ack, body: dict, action: dict, respond: Respond, client: WebClient, context: BoltContext
    ) -> None:
        ack()
        container = body.get("container") or {}
        request = DecisionRequest(
            team_id=team_of(context),
            user_id=body["user"]["id"],
            action_id=action["action_id"],
            reference=action.get("value", ""),
            channel_id=container.get("channel_id"),
            message_ts=container.get("message_ts"),
        )
        deps.run_later(lambda: decide_once(request, respond, client), what=f"decision {action_id}")

    def decide_once(request: DecisionRequest, respond: Respond, client: WebClient) -> None:
        key = DECISION_PREFIX + request.reference
        if not claim(deps.engine, request.team_id, key, deps.clock()):
            decided = claimed_at(deps.engine, request.team_id, key) or deps.clock()
            log.info("%s on %s by %s: already decided", request.action_id, request.reference, request.user_id)
            notice = build_already_decided(request.reference, decided, deps.clock())
            respond(text=notice.text, blocks=notice.blocks, response_type="ephemeral", replace_original=False)
            return

        try:
            outcome = decide(request)
        except BotError as exc:
            release(deps.engine, request.team_id, key)
            log.info("%s on %s by %s failed: %s", request.action_id, request.reference, request.user_id, type(exc).__name__)
            error = build_error(str(exc))
            respond(text=error.text, blocks=error.blocks, response_type="ephemeral", replace_original=False)
            return
        except Exception:
            release(deps.engine, request.team_id, key)
            reference = uuid.uuid4().hex[:8]
            log.exception(
                "%s on %s by %s failed (reference %s)", request.action_id, request.reference, request.user_id, reference
            )
            error = build_error(
                f"That did not work, and nothing was sent. Click again in a minute; if it keeps failing, "
                f"give your administrator the reference {reference}."
            )
            respond(text=error.text, blocks=error.blocks, response_type="ephemeral", replace_original=False)
            return

        log.info("%s on %s by %s: %s", request.action_id, request.reference, request.user_id, outcome)
        done = build_decision_done(request.reference, outcome, request.user_id)
        if request.channel_id and request.message_ts:
            client.chat_update(channel=request.channel_id, ts=request.message_ts, text=done.text, blocks=done.blocks)
        else:
            respond(text=done.text, blocks=done.blocks, replace_original=True)

    app.action(action_id)(on_decision)
