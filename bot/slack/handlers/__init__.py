"""Bolt listeners, one module per concept; each registers itself through ``register(app, deps)``."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from slack_bolt import BoltContext
from slack_sdk import WebClient
from sqlalchemy.engine import Engine

from bot.errors import BotError
from bot.slack import linking
from bot.slack.blocks.elements import Message
from bot.slack.blocks.help import build_error
from bot.slack.commands import Commands, link_from_profile
from bot.slack.delivery import fetch_profile_email
from bot.slack.linking import Caller
from bot.storage.models import LOCAL_TEAM

log = logging.getLogger(__name__)


@dataclass
class SlackDeps:
    """Dependencies of every listener: the database, the commands, the clock and the work pool.

    Listeners acknowledge on Bolt's executor and hand the slow part to ``workers``. Bolt
    runs ack functions and lazy listeners on one pool, so under a burst of commands the
    acks would otherwise wait behind database work and miss Slack's 3 seconds.
    """

    engine: Engine
    commands: Commands
    clock: Callable[[], datetime]
    workers: Executor

    def run_later(self, work: Callable[[], None], *, what: str) -> None:
        """Run ``work`` on the work pool; an exception is logged, never lost."""

        def guarded() -> None:
            try:
                work()
            except Exception:
                log.exception("%s failed after its ack", what)

        self.workers.submit(guarded)


def team_of(context: BoltContext) -> str:
    """Return the team id of a request; org-wide installs without a team use the enterprise id."""
    return context.team_id or context.enterprise_id or LOCAL_TEAM


def resolve_caller(deps: SlackDeps, client: WebClient, team_id: str, user_id: str) -> Caller:
    """Return the caller of a Slack user, linking them through their profile email on first use."""
    caller = linking.linked_caller(deps.engine, team_id, user_id)
    if caller is not None:
        return caller
    email = fetch_profile_email(client, user_id)
    return link_from_profile(deps.engine, team_id, user_id, email, deps.clock())


def reply_with(
    deliver: Callable[[Message], object],
    work: Callable[[], Message],
    *,
    what: str,
    team_id: str,
    user_id: str,
) -> None:
    """Run ``work`` and deliver its message; turn failures into a short message for the user.

    Project errors already state what to do and are shown as they are. Anything else is
    logged with the ids and a reference that the user can quote.
    """
    try:
        message = work()
    except BotError as exc:
        log.info("%s for user %s in team %s failed: %s", what, user_id, team_id, type(exc).__name__)
        message = build_error(str(exc))
    except Exception:
        reference = uuid.uuid4().hex[:8]
        log.exception("%s failed for user %s in team %s (reference %s)", what, user_id, team_id, reference)
        message = build_error(
            f"Something went wrong while running {what}. Try again in a minute; if it keeps "
            f"failing, give your administrator the reference {reference}."
        )
    try:
        deliver(message)
    except Exception:
        log.exception("failed to send the reply to %s for user %s in team %s", what, user_id, team_id)
