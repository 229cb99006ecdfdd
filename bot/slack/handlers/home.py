"""The App Home tab: published when a user opens it and when they click Refresh."""

from __future__ import annotations

import logging

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient

from bot.slack import ids
from bot.slack.handlers import SlackDeps, resolve_caller, team_of
from bot.slack.idempotency import EVENT_PREFIX, claim

log = logging.getLogger(__name__)


def register(app: App, deps: SlackDeps) -> None:
    def publish_home(client: WebClient, team_id: str, user_id: str) -> None:
        try:
            caller = resolve_caller(deps, client, team_id, user_id)
            view = deps.commands.home(caller)
            client.views_publish(user_id=user_id, view=view)
        except Exception:
            log.exception("could not publish the Home tab of user %s in team %s", user_id, team_id)
            return
        log.info("published the Home tab of user %s in team %s", user_id, team_id)

    @app.event("app_home_opened")
    def on_home_opened(body: dict, event: dict, client: WebClient, context: BoltContext) -> None:
        # Bolt acknowledges events before it calls this listener.
        if event.get("tab") != "home":
            return
        team_id = team_of(context)
        user_id = event["user"]
        event_id = body.get("event_id", "")

        def run() -> None:
            if not claim(deps.engine, team_id, EVENT_PREFIX + event_id, deps.clock()):
                log.info("skipped a repeated delivery of event %s", event_id)
                return
            publish_home(client, team_id, user_id)

        deps.run_later(run, what="app_home_opened")

    @app.action(ids.REFRESH_HOME)
    def on_refresh(ack: Ack, body: dict, client: WebClient, context: BoltContext) -> None:
        ack()
        team_id = team_of(context)
        user_id = body["user"]["id"]
        deps.run_later(lambda: publish_home(client, team_id, user_id), what="Home tab refresh")
