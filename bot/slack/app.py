"""Build the Bolt app: the Web API client, request verification and every listener."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Callable, Literal

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from sqlalchemy.engine import Engine

from bot.config import Settings
from bot.errors import ConfigError
from bot.slack.commands import Commands
from bot.slack.handlers import SlackDeps, crm, home, messages, whoknows
from bot.slack.retry import Sleep, retry_handlers
from bot.slack.signature import SignedRequestGuard
from bot.timeutil import utcnow

log = logging.getLogger(__name__)

Mode = Literal["http", "socket"]

SLACK_API_URL = "https://slack.com/api/"
WEB_API_TIMEOUT_SECONDS = 15
# Bolt runs listener functions on its own pool (5 threads by default). Ours only ack and
# hand over, so a small pool handles a burst. The work pool runs queries and Web API
# calls; they hold the GIL much of the time, so more threads would not run faster.
LISTENER_THREADS = 8
WORK_THREADS = 2


def make_web_client(settings: Settings, *, sleep: Sleep = time.sleep) -> WebClient:
    """Create the bot's Web API client, with retries on HTTP 429 and dropped connections."""
    if not settings.slack_bot_token:
        raise ConfigError(
            "SLACK_BOT_TOKEN is not set; copy the Bot User OAuth Token (xoxb-...) from the "
            "app's OAuth & Permissions page after installing it to the workspace"
        )
    base_url = settings.slack_api_url or SLACK_API_URL
    if not base_url.endswith("/"):
        base_url += "/"
    return WebClient(
        token=settings.slack_bot_token,
        base_url=base_url,
        timeout=WEB_API_TIMEOUT_SECONDS,
        retry_handlers=retry_handlers(sleep),
        logger=logging.getLogger("slack_sdk.web"),
    )


def choose_mode(settings: Settings) -> Mode:
    """Use Socket Mode when an app-level token is set, HTTP otherwise."""
    return "socket" if settings.slack_app_token else "http"


def build_app(
    settings: Settings,
    engine: Engine,
    *,
    mode: Mode = "http",
    client: WebClient | None = None,
    clock: Callable[[], datetime] | None = None,
    unix_time: Callable[[], float] = time.time,
    replay_store: Literal["database", "memory"] | None = None,
) -> App:
    """Build the Bolt app with every listener registered.

    Args:
        clock: fixes the time commands run at (tests, demos on old mail); keys and stamps
            use it too. Without it, commands use the mailbox's scoring time or now.
        unix_time: the clock that request timestamps are checked against.
        replay_store: where accepted request signatures are kept; see SignedRequestGuard.
    """
    client = client or make_web_client(settings)
    signing_secret = settings.slack_signing_secret or ""
    guard = None
    if mode == "http":
        if not signing_secret:
            raise ConfigError(
                "SLACK_SIGNING_SECRET is not set; HTTP mode needs it to verify that requests come "
                "from Slack (Basic Information > App Credentials), or set SLACK_APP_TOKEN to use Socket Mode"
            )
        guard = SignedRequestGuard(signing_secret, engine, now=unix_time, replay_store=replay_store)

    try:
        app = App(
            name="crm-bot",
            client=client,
            signing_secret=signing_secret,
            # Our guard replaces Bolt's verification and runs before authorization.
            request_verification_enabled=False,
            before_authorize=guard,
            process_before_response=False,
            listener_executor=ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="slack-listener"),
            logger=logging.getLogger("slack_bolt"),
        )
    except BoltError as exc:
        raise ConfigError(
            f"Slack rejected the bot token at start ({exc}); check SLACK_BOT_TOKEN and that the app "
            "is installed to the workspace"
        ) from exc

    deps = SlackDeps(
        engine=engine,
        commands=Commands(engine, clock=clock),
        clock=clock or utcnow,
        workers=ThreadPoolExecutor(max_workers=WORK_THREADS, thread_name_prefix="slack-work"),
    )
    for concept in (crm, whoknows, home, messages):
        concept.register(app, deps)
    log.info("built the Slack app in %s mode", mode)
    return app
