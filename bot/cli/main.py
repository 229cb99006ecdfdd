"""The ``crm-bot`` command line: exit status 0 on success, 2 on a usage or input error."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from typing import Callable, Sequence

from sqlalchemy.exc import OperationalError

from bot.config import get_settings
from bot.errors import BotError, ConfigError, InputError, NotFoundError
from bot.timeutil import parse_iso

log = logging.getLogger("bot")

# Modules that add their own sub-commands through ``register(subparsers)``.
COMMAND_MODULES = ("bot.cli.engine_cmds", "bot.cli.mailbox_cmds", "bot.cli.slack_cmds")


class UsageError(InputError):
    """A command line that argparse rejected."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def iso_datetime(text: str):  # type: ignore[no-untyped-def]
    """argparse type for --now: an ISO 8601 date or datetime, UTC when no offset is given."""
    try:
        return parse_iso(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}; use ISO 8601, e.g. 2001-06-30 or 2001-06-30T12:00:00Z"
        ) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}; give a whole number such as 10") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}; give 1 or more")
    return value


def reader_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid reader count {text!r}; give 0 (read in one process) or more") from None
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"invalid reader count {text!r}; give a number from 0 to 64")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crm-bot", description="Relationship CRM built from a mailbox.")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: LOG_LEVEL or WARNING)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", help="database URL (default: DATABASE_URL or a SQLite file)")


def print_json(value: object) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        settings = get_settings()
        level = (args.log_level or settings.log_level).upper()
        if level not in logging.getLevelNamesMapping():
            raise InputError(f"invalid --log-level {args.log_level!r}; use DEBUG, INFO, WARNING or ERROR")
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        handler: Callable[[argparse.Namespace], int | None] = args.handler
        status = handler(args) or 0
        # Flush here, so that a reader that closed the pipe is caught below and not at exit.
        sys.stdout.flush()
        return status
    except (InputError, NotFoundError, ConfigError) as exc:
        print(f"crm-bot: error: {exc}", file=sys.stderr)
        return 2
    except BotError as exc:
        print(f"crm-bot: error: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        # A server that is down or rejects the login. The driver's text names the host but not the password.
        log.debug("database operation failed", exc_info=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        print(
            f"crm-bot: error: database failed: {reason}; check --db or DATABASE_URL and that the server is running",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("crm-bot: interrupted; an import or sync resumes where it stopped when run again", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout closed it early, as `crm-bot orgs ... | head` does. Point stdout at
        # /dev/null so that the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
