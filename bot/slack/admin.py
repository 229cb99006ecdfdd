"""Administrator actions on Slack links: link a user to their mailbox, or unlink them."""

from __future__ import annotations

import logging
from datetime import datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.errors import ConfigError, NotFoundError
from bot.slack.delivery import fetch_profile_email
from bot.slack.linking import link_user
from bot.storage.db import retry_write
from bot.storage.models import SlackUser

log = logging.getLogger(__name__)


def workspace_team_id(client: WebClient) -> str:
    """Return the team id of the workspace the bot token belongs to (auth.test)."""
    try:
        return str(client.auth_test()["team_id"])
    except SlackApiError as exc:
        raise ConfigError(
            f"auth.test failed ({exc.response.get('error')}); check SLACK_BOT_TOKEN, or give --team"
        ) from exc


def link_by_admin(
    engine: Engine, client: WebClient, slack_user_id: str, address: str, *, team_id: str | None, now: datetime
) -> SlackUser:
    """Link a Slack user to the mailbox of ``address`` when their profile email is one of its addresses."""
    team = team_id or workspace_team_id(client)
    email = fetch_profile_email(client, slack_user_id)
    return link_user(
        engine,
        team_id=team,
        slack_user_id=slack_user_id,
        profile_email=email,
        now=now,
        mailbox_address=address,
        linked_by="admin",
    )


def unlink(engine: Engine, slack_user_id: str, *, team_id: str) -> None:
    """Detach a Slack user from their mailbox; their preferences stay."""

    def _write() -> None:
        with Session(engine) as session:
            user = session.execute(
                select(SlackUser).where(SlackUser.team_id == team_id, SlackUser.slack_user_id == slack_user_id)
            ).scalar_one_or_none()
            if user is None or user.mailbox_id is None:
                raise NotFoundError(
                    f"Slack user {slack_user_id} of team {team_id} is not linked to a mailbox; "
                    "check the user id and --team"
                )
            log.info("unlinked Slack user %s of team %s from mailbox %s", slack_user_id, team_id, user.mailbox_id)
            user.mailbox_id = None
            session.add(user)
            session.commit()

    retry_write(_write)
