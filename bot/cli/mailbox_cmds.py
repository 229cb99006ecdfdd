"""Sub-commands for mailboxes read from Exchange: mailbox add, mailbox list and sync."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.config import get_settings
from bot.errors import ConfigError, InputError, NotFoundError
from bot.mail.credentials import validate_reference
from bot.storage.db import make_engine
from bot.storage.models import Mailbox
from bot.storage.schema import create_schema
from bot.timeutil import isoformat_z


def open_engine(args: argparse.Namespace) -> Engine:
    url = getattr(args, "db", None) or get_settings().database_url
    engine = make_engine(url)
    create_schema(engine)
    return engine


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", help="database URL (default: DATABASE_URL or a SQLite file)")


def register(subparsers: argparse._SubParsersAction) -> None:
    mailbox = subparsers.add_parser("mailbox", help="add or list mailboxes read from Exchange or files")
    actions = mailbox.add_subparsers(dest="mailbox_command", metavar="ACTION", parser_class=type(mailbox))
    actions.required = True

    add = actions.add_parser("add", help="add a mailbox or change its settings")
    add.add_argument("--owner", required=True, help="the mailbox owner's primary e-mail address")
    add.add_argument("--source", required=True, choices=["ews", "graph", "files"], help="where the mail is read")
    add.add_argument("--name", help="the owner's full name")
    where = add.add_mutually_exclusive_group()
    where.add_argument("--ews-url", help="EWS endpoint, e.g. https://mail.example.com/EWS/Exchange.asmx")
    where.add_argument("--autodiscover", action="store_true", help="find the EWS endpoint by autodiscover")
    add.add_argument("--auth", choices=["ntlm", "basic", "oauth2"], help="EWS login method (default ntlm)")
    add.add_argument("--impersonation", action="store_true",
                     help="EWS: act as the owner through ApplicationImpersonation (the default)")
    add.add_argument("--delegate", action="store_true", help="EWS: open the owner's mailbox as a delegate")
    add.add_argument("--version", dest="ews_version", metavar="BUILD",
                     help="EWS server build such as 15.1.2507.6; skips the version probe")
    add.add_argument("--tenant-id", help="Entra tenant id (Graph, or EWS with --auth oauth2)")
    add.add_argument("--client-id", help="application (client) id of the app registration")
    add.add_argument("--user-id", help="Graph: the owner's object id or user principal name, if not the address")
    add.add_argument("--credentials", metavar="REF",
                     help="where the secrets are: env:NAME or file:/path/secret.json (never the secret itself)")
    add.add_argument("--timezone", help="IANA zone for times without an offset, e.g. Europe/Berlin (default UTC)")
    add.add_argument("--folders", help="comma-separated folders to read (default inbox,sentitems)")
    add.add_argument("--path", type=Path, help="files: a Maildir, an mbox file or a folder of messages")
    add.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                     help="another source setting, e.g. page_size=512 or ca_bundle=/etc/ssl/corp.pem (repeatable; "
                          "see docs/exchange.md)")
    _add_db(add)
    add.set_defaults(handler=cmd_mailbox_add)

    listing = actions.add_parser("list", help="list mailboxes with their sync health")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_db(listing)
    listing.set_defaults(handler=cmd_mailbox_list)

    sync = subparsers.add_parser("sync", help="read new mail of Exchange mailboxes now")
    sync.add_argument("--mailbox", metavar="ADDRESS", help="only this owner's mailbox (default: every ews and graph mailbox)")
    sync.add_argument("--no-calendar", action="store_true", help="skip the calendar and the contacts")
    _add_db(sync)
    sync.set_defaults(handler=cmd_sync)


def source_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Build and check a mailbox's source_config; raise InputError on a bad combination."""
    source = args.source
    config: dict[str, Any] = {}
    folders = [f.strip() for f in (args.folders or "").split(",") if f.strip()]
    if args.impersonation and args.delegate:
        raise InputError("give either --impersonation or --delegate, not both")
    if source == "files":
        if args.path is None:
            raise InputError("--source files needs --path (a Maildir, an mbox file or a folder of messages)")
        if not args.path.exists():
            raise InputError(f"--path {args.path} does not exist; give a Maildir, an mbox file or a folder")
        return {"path": str(args.path.resolve())}
    if args.path is not None:
        raise InputError(f"--path applies to --source files only, not {source}")
    if source == "ews":
        if not args.ews_url and not args.autodiscover:
            raise InputError("--source ews needs --ews-url https://mail.example.com/EWS/Exchange.asmx or --autodiscover")
        if args.ews_url:
            config["ews_url"] = args.ews_url
        else:
            config["autodiscover"] = True
        config["auth"] = args.auth or "ntlm"
        config["access"] = "delegate" if args.delegate else "impersonation"
        if args.ews_version:
            config["version"] = args.ews_version
        if config["auth"] == "oauth2":
            if not args.tenant_id or not args.client_id:
                raise InputError("--auth oauth2 needs --tenant-id and --client-id")
            config["tenant_id"] = args.tenant_id
            config["client_id"] = args.client_id
        if args.user_id:
            raise InputError("--user-id applies to --source graph only")
    else:  # graph
        for option, flag in (("ews_url", "--ews-url"), ("ews_version", "--version"), ("auth", "--auth")):
            if getattr(args, option):
                raise InputError(f"{flag} applies to --source ews only")
        if args.autodiscover or args.delegate or args.impersonation:
            raise InputError("--autodiscover, --delegate and --impersonation apply to --source ews only")
        if not args.tenant_id or not args.client_id:
            raise InputError("--source graph needs --tenant-id and --client-id of the app registration")
        config["tenant_id"] = args.tenant_id
        config["client_id"] = args.client_id
        if args.user_id:
            config["user_id"] = args.user_id
    if folders:
        config["folders"] = folders
    for item in args.setting:
        key, value = parse_setting(item)
        config[key] = value
    return config


def parse_setting(text: str) -> tuple[str, Any]:
    """Split KEY=VALUE; the value is read as JSON when it is valid JSON (512, true, ["inbox"])."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"invalid --setting {text!r}; write KEY=VALUE, e.g. page_size=512")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def cmd_mailbox_add(args: argparse.Namespace) -> int:
    from bot.mail.ingest import ensure_mailbox

    config = source_config_from_args(args)
    reference = None
    if args.credentials:
        reference = validate_reference(args.credentials)
    elif args.source != "files":
        raise InputError(f"--source {args.source} needs --credentials env:NAME or file:/path/secret.json")
    # Check the settings before storing them, without reading the secrets.
    try:
        _check_settings(args.source, args.owner.strip().lower(), config, args.timezone or "UTC")
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    engine = open_engine(args)
    mailbox = ensure_mailbox(
        engine,
        args.owner,
        source_kind=args.source,
        owner_name=args.name,
        timezone=args.timezone,
        source_config=config,
        credentials_ref=reference,
    )
    where = config.get("ews_url") or config.get("path") or ("autodiscover" if config.get("autodiscover") else "Microsoft Graph")
    print(f"mailbox {mailbox.id}: {mailbox.owner_address} reads {args.source} from {where}")
    if reference:
        print(f"  credentials are read from {reference} at each sync")
    return 0


def _check_settings(kind: str, owner: str, config: dict[str, Any], timezone_name: str) -> None:
    if kind == "ews":
        from bot.mail.ews import EwsSettings

        EwsSettings.from_config(owner, dict(config), timezone_name)
    elif kind == "graph":
        from bot.mail.graph import GraphSettings

        GraphSettings.from_config(owner, dict(config), timezone_name)


def cmd_mailbox_list(args: argparse.Namespace) -> int:
    from bot.cli.main import print_json

    engine = open_engine(args)
    with Session(engine) as session:
        mailboxes = list(session.execute(select(Mailbox).order_by(Mailbox.id)).scalars())
    rows = [
        {
            "id": m.id,
            "owner": m.owner_address,
            "source": m.source_kind,
            "where": (m.source_config or {}).get("ews_url")
            or (m.source_config or {}).get("path")
            or ("autodiscover" if (m.source_config or {}).get("autodiscover") else None)
            or ("graph" if m.source_kind == "graph" else None),
            "credentials": m.credentials_ref,
            "paused": m.paused,
            "last_sync_ok_at": isoformat_z(m.last_sync_ok_at),
            "last_sync_error": m.last_sync_error,
            "next_sync_not_before": isoformat_z(m.next_sync_not_before),
            "messages_read": m.messages_read,
            "messages_skipped": m.messages_skipped,
        }
        for m in mailboxes
    ]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no mailboxes; add one with `crm-bot mailbox add`")
        return 0
    for row in rows:
        health = f"last ok {row['last_sync_ok_at']}" if row["last_sync_ok_at"] else "never synced"
        if row["last_sync_error"]:
            health += f"; last error: {row['last_sync_error']}"
        if row["next_sync_not_before"]:
            health += f"; next sync not before {row['next_sync_not_before']}"
        print(f"{row['id']:>4}  {row['owner']:<32} {row['source']:<6} {row['where'] or '-'}")
        print(f"      read {row['messages_read']:,}, skipped {row['messages_skipped']:,}; {health}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from bot.mail.sync import SERVER_KINDS, sync_mailbox

    settings = get_settings()
    engine = open_engine(args)
    with Session(engine, expire_on_commit=False) as session:
        query = select(Mailbox).order_by(Mailbox.id)
        if args.mailbox:
            query = query.where(Mailbox.owner_address == args.mailbox.strip().lower())
        else:
            query = query.where(Mailbox.source_kind.in_(SERVER_KINDS))
        mailboxes = list(session.execute(query).scalars())
    if not mailboxes:
        if args.mailbox:
            raise NotFoundError(f"no mailbox for {args.mailbox}; add it with `crm-bot mailbox add`")
        print("no ews or graph mailboxes to sync; add one with `crm-bot mailbox add`")
        return 0
    failed = 0
    for mailbox in mailboxes:
        outcome = sync_mailbox(engine, mailbox, settings, read_calendar=not args.no_calendar)
        line = (
            f"{outcome.owner}: {outcome.outcome}; read {outcome.read:,}, stored {outcome.stored:,}, "
            f"duplicates {outcome.duplicates:,}, skipped {outcome.skipped:,}"
        )
        if outcome.meetings or outcome.contacts:
            line += f", meetings {outcome.meetings:,}, contacts {outcome.contacts:,}"
        print(line)
        if outcome.error:
            print(f"  {outcome.error}")
        for warning in outcome.warnings:
            print(f"  warning: {warning}")
        failed += outcome.outcome == "failed"
    return 1 if failed else 0
