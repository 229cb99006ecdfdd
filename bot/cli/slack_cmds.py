"""Sub-commands of the Slack surface: serve, link, unlink and console."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from datetime import timezone
from typing import Any

from sqlalchemy.engine import Engine

from bot.cli.main import add_db_option, iso_datetime, positive_int
from bot.config import Settings, get_settings
from bot.storage.db import make_engine
from bot.storage.models import LOCAL_TEAM
from bot.storage.schema import create_schema
from bot.timeutil import utcnow

log = logging.getLogger(__name__)

DEFAULT_PORT = 3000
DEFAULT_SYNC_MINUTES = 15


def port_number(text: str) -> int:
    """argparse type for --port: a TCP port from 0 to 65535, where 0 lets the system choose."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}; give a number such as 3000") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}; give a number from 0 to 65535")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the Slack app: Socket Mode when SLACK_APP_TOKEN is set, HTTP on --port otherwise"
    )
    p.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"HTTP port in HTTP mode (default {DEFAULT_PORT})"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on in HTTP mode (default 127.0.0.1)")
    p.add_argument(
        "--no-scheduler",
        action="store_true",
        help="do not run scheduled jobs in this process (run exactly one process with the scheduler)",
    )
    p.add_argument(
        "--sync-minutes",
        type=positive_int,
        default=DEFAULT_SYNC_MINUTES,
        help=f"minutes between mailbox syncs (default {DEFAULT_SYNC_MINUTES})",
    )
    p.add_argument("--now", type=iso_datetime, help="answer as of this time (demos on old mail), default: now")
    add_db_option(p)
    p.set_defaults(handler=cmd_serve)

    p = subparsers.add_parser("link", help="link a Slack user to their mailbox (the profile email must match)")
    p.add_argument("slack_user", metavar="SLACK_USER", help="Slack user id, e.g. U012AB3CD")
    p.add_argument("address", metavar="ADDRESS", help="an address of the mailbox")
    p.add_argument("--team", help="Slack team id (default: the bot token's workspace)")
    add_db_option(p)
    p.set_defaults(handler=cmd_link)

    p = subparsers.add_parser("unlink", help="detach a Slack user from their mailbox")
    p.add_argument("slack_user", metavar="SLACK_USER", help="Slack user id, e.g. U012AB3CD")
    p.add_argument("--team", required=True, help="Slack team id")
    add_db_option(p)
    p.set_defaults(handler=cmd_unlink)

    p = subparsers.add_parser("console", help="try the Slack commands in a terminal, on an imported mailbox")
    p.add_argument("--owner", required=True, help="the mailbox owner's e-mail address")
    p.add_argument("--team", default=LOCAL_TEAM, help=f"team id of the mailbox (default {LOCAL_TEAM})")
    p.add_argument("--now", type=iso_datetime, help="answer as of this time, e.g. 2001-12-31 (default: now)")
    p.add_argument("--command", help='run one command and exit, e.g. --command "/crm top"')
    add_db_option(p)
    p.set_defaults(handler=cmd_console)


def open_engine(args: argparse.Namespace) -> Engine:
    engine = make_engine(getattr(args, "db", None) or get_settings().database_url)
    create_schema(engine)
    return engine


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.slack.app import build_app, choose_mode, make_web_client
    from bot.slack.server import serve_http, serve_socket_mode

    settings = get_settings()
    engine = open_engine(args)
    mode = choose_mode(settings)
    clock = (lambda: args.now) if args.now else None
    app = build_app(settings, engine, mode=mode, client=make_web_client(settings), clock=clock)

    scheduler = None
    if not args.no_scheduler:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone=timezone.utc)
        on_start(scheduler, engine, settings, sync_minutes=args.sync_minutes)
        scheduler.start()
        log.info("scheduler started with %d jobs", len(scheduler.get_jobs()))
    try:
        if mode == "socket":
            serve_socket_mode(app, settings.slack_app_token or "", announce=_announce)
        else:
            serve_http(app, args.host, args.port, announce=_announce)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
    return 0


def _announce(line: str) -> None:
    print(f"crm-bot: {line}; press Ctrl-C to stop", flush=True)


def on_start(scheduler: Any, engine: Engine, settings: Settings, *, sync_minutes: int = DEFAULT_SYNC_MINUTES) -> None:
    """Add the scheduled jobs of every module that has them, before the scheduler starts.

    Mailbox syncs come from ``bot.mail.sync.schedule_syncs`` when that module is installed.
    """
    try:
        sync = importlib.import_module("bot.mail.sync")
    except ModuleNotFoundError as exc:
        if exc.name != "bot.mail.sync":
            raise
        log.info("bot.mail.sync is absent; mailbox syncs are not scheduled")
        return
    schedule_syncs = getattr(sync, "schedule_syncs", None)
    if schedule_syncs is None:
        log.info("bot.mail.sync has no schedule_syncs; mailbox syncs are not scheduled")
        return
    schedule_syncs(scheduler, engine, settings, sync_minutes)
    log.info("scheduled mailbox syncs every %d minutes", sync_minutes)


def cmd_link(args: argparse.Namespace) -> int:
    from bot.slack.admin import link_by_admin
    from bot.slack.app import make_web_client

    settings = get_settings()
    engine = open_engine(args)
    user = link_by_admin(
        engine, make_web_client(settings), args.slack_user, args.address, team_id=args.team, now=utcnow()
    )
    print(f"linked Slack user {user.slack_user_id} of team {user.team_id} to mailbox {user.mailbox_id} ({user.email})")
    return 0


def cmd_unlink(args: argparse.Namespace) -> int:
    from bot.slack.admin import unlink

    unlink(open_engine(args), args.slack_user, team_id=args.team)
    print(f"unlinked Slack user {args.slack_user} of team {args.team}")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from bot.console import open_console, repl

    if args.log_level is None:
        # Log lines would interleave with the replies in the terminal, so only warnings are
        # shown unless --log-level asks for more.
        logging.getLogger().setLevel(logging.WARNING)
    console = open_console(open_engine(args), args.owner, team_id=args.team, now=args.now)
    if args.command:
        print(console.run(args.command).text)
        return 0
    return repl(console, sys.stdin, sys.stdout)
