"""The App Home tab: published when a user opens it and when they click Refresh."""

from __future__ import annotations

import logging

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot.slack import ids
from bot.slack.handlers import SlackDeps, ack_now, resolve_caller, team_of
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

    def on_home_opened(body: dict, event: dict, client: WebClient, context: BoltContext) -> None:
        if event.get("tab") != "home":
            return
        team_id = team_of(context)
        if not claim(deps.engine, team_id, EVENT_PREFIX + body.get("event_id", ""), deps.clock()):
            log.info("skipped a repeated delivery of event %s", body.get("event_id"))
            return
        publish_home(client, team_id, event["user"])

    def on_refresh(body: dict, client: WebClient, context: BoltContext) -> None:
        publish_home(client, team_of(context), body["user"]["id"])

    app.event("app_home_opened")(on_home_opened)
    app.action(ids.REFRESH_HOME)(ack=ack_now, lazy=[on_refresh])
