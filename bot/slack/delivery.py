"""Web API calls the bot makes outside a request: profiles, time zones and direct messages."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.errors import BotError
from bot.slack.blocks.elements import Message

log = logging.getLogger(__name__)


class SlackDeliveryError(BotError):
    """A Slack Web API call failed after its retries."""


def fetch_profile_email(client: WebClient, user_id: str) -> str | None:
    """Return the email of a user's Slack profile, or None when Slack does not show it.

    ``profile.email`` is present only with the users:read.email scope, and bots and
    some guests have none.
    """
    try:
        response = client.users_info(user=user_id)
    except SlackApiError as exc:
        log.warning("users.info failed for %s: %s", user_id, exc.response.get("error"))
        return None
    profile = (response.get("user") or {}).get("profile") or {}
    email = profile.get("email")
    return email or None


def fetch_user_timezone(client: WebClient, user_id: str) -> str | None:
    """Return the IANA time zone of a Slack user (``user.tz``), or None."""
    try:
        response = client.users_info(user=user_id)
    except SlackApiError as exc:
        raise SlackDeliveryError(
            f"users.info failed for Slack user {user_id}: {exc.response.get('error')}; "
            "check that the app has the users:read scope"
        ) from exc
    return (response.get("user") or {}).get("tz") or None


def open_direct_channel(client: WebClient, user_id: str) -> str:
    """Return the id of the bot's DM channel with a user (conversations.open, scope im:write)."""
    try:
        response = client.conversations_open(users=user_id)
    except SlackApiError as exc:
        raise SlackDeliveryError(
            f"conversations.open with Slack user {user_id} failed: {exc.response.get('error')}; "
            "check that the app has the im:write scope"
        ) from exc
    return str((response.get("channel") or {}).get("id"))


def send_direct_message(client: WebClient, user_id: str, message: Message, *, channel_id: str | None = None) -> str:
    """Post a message to a user's DM with the bot and return its ``ts``.

    Args:
        channel_id: the DM channel when it is already known (SlackUser.dm_channel_id);
            otherwise it is opened first.
    """
    channel = channel_id or open_direct_channel(client, user_id)
    try:
        response = client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
    except SlackApiError as exc:
        raise SlackDeliveryError(
            f"chat.postMessage to Slack user {user_id} in {channel} failed: {exc.response.get('error')}; "
            "the message was not delivered and can be sent again"
        ) from exc
    ts = response.get("ts")
    log.info("sent a direct message to %s in %s (ts %s)", user_id, channel, ts)
    return str(ts)
