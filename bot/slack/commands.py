"""The `/crm` and `/whoknows` commands and the Home tab, independent of Slack's transport.

Slack handlers and the terminal console both call these methods and render the
returned blocks, so a command behaves the same in both places. Nothing here
imports slack_bolt or slack_sdk.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.errors import BotError, InputError
from bot.relationships import queries
from bot.relationships.views import ContactView, WhoKnowsResult
from bot.slack import linking
from bot.slack.blocks.contact import build_contact_card
from bot.slack.blocks.elements import Message
from bot.slack.blocks.help import build_error, build_help
from bot.slack.blocks.home import HomeData, build_home
from bot.slack.blocks.lists import build_going_cold, build_org_people, build_organisations, build_top_contacts
from bot.slack.blocks.status import build_status
from bot.slack.blocks.whoknows import build_whoknows
from bot.slack.linking import Caller
from bot.storage.db import retry_write
from bot.storage.models import AuditEvent, Mailbox, Relationship
from bot.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

DEFAULT_LIST_SIZE = 10
MAX_LIST_SIZE = 40
# Who-knows results reveal which colleagues know a company, so an asker gets a
# limited number of searches per hour and must type at least two characters:
# searching letter by letter would otherwise list a colleague's network.
WHOKNOWS_MIN_QUERY = 2
WHOKNOWS_MAX_PER_HOUR = 30
WHOKNOWS_RESULTS = 10

NOT_LINKED = (
    "Your Slack account is not linked to a mailbox, so there is nothing of yours to show. "
    "The bot links you when the email of your Slack profile is an address of a connected "
    "mailbox; otherwise ask your administrator to run `crm-bot link {user} you@example.com`. "
    "`/whoknows COMPANY` works without a mailbox."
)


class Commands:
    """Runs commands for one caller against the database.

    Args:
        clock: returns the time commands run at. Without it, a mailbox read from
            files is shown as of its newest message (as the relationship engine
            scores it) and everything else as of now.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock

    def crm(self, caller: Caller, text: str) -> Message:
        """Run a `/crm` command line such as "contact dana" and return the reply."""
        words = text.strip().split(maxsplit=1)
        name = words[0].lower() if words else "help"
        argument = words[1].strip() if len(words) > 1 else ""
        shown_name = name if name in SUBCOMMANDS or name in ("help", "whoknows") else "(unknown)"
        log.info("running /crm %s for %s in team %s", shown_name, caller.actor, caller.team_id)

        if name in ("help", "?"):
            return build_help()
        if name in ("whoknows", "who"):
            return self.whoknows(caller, argument)
        if name not in SUBCOMMANDS:
            return build_error(f"Unknown command “{words[0][:40]}”. Try `/crm help` for the list of commands.")
        if caller.mailbox_id is None:
            return build_error(NOT_LINKED.format(user=caller.actor))
        try:
            return SUBCOMMANDS[name](self, caller.mailbox_id, argument)
        except BotError as exc:
            log.info("/crm %s for %s failed: %s", name, caller.actor, type(exc).__name__)
            return build_error(str(exc))

    def contact(self, mailbox_id: int, query: str) -> Message:
        if not query:
            raise InputError("Give a name or an address, for example `/crm contact dana`.")
        with Session(self.engine) as session:
            now = self._query_now()
            matches = queries.find_contacts(session, mailbox_id, query, limit=5, now=now)
            shown_now = self._shown_now(session, mailbox_id)
        if not matches:
            return build_error(
                f"No contact in your mail matches “{query[:80]}”. Try part of the name or an address, "
                "for example `/crm contact dana@example.com`."
            )
        best, others = _best_match(matches, query)
        return build_contact_card(best, shown_now, other_matches=others)

    def top(self, mailbox_id: int, argument: str) -> Message:
        size = _list_size(argument)
        with Session(self.engine) as session:
            contacts = queries.top_contacts(session, mailbox_id, limit=size, now=self._query_now())
        return build_top_contacts(contacts, max_rows=size)

    def cold(self, mailbox_id: int, argument: str) -> Message:
        size = _list_size(argument)
        with Session(self.engine) as session:
            contacts = queries.going_cold(session, mailbox_id, limit=size, now=self._query_now())
        return build_going_cold(contacts, max_rows=size)

    def org(self, mailbox_id: int, query: str) -> Message:
        with Session(self.engine) as session:
            shown_now = self._shown_now(session, mailbox_id)
            if not query:
                orgs = queries.organisations(session, mailbox_id, limit=MAX_LIST_SIZE)
                return build_organisations(orgs, shown_now)
            org, people = queries.org_people(session, mailbox_id, query, now=self._query_now())
        return build_org_people(query, org, people, shown_now)

    def status(self, mailbox_id: int, _argument: str) -> Message:
        with Session(self.engine) as session:
            status = queries.mailbox_status(session, mailbox_id)
        return build_status(status, self.clock() if self.clock else utcnow())

    def whoknows(self, caller: Caller, query: str) -> Message:
        """Search every sharing owner's mail for people at an organisation; write an audit event."""
        query = " ".join(query.split())
        now = self.clock() if self.clock else utcnow()
        if len(query) < WHOKNOWS_MIN_QUERY:
            self._audit(caller, query, now, {"outcome": "rejected", "reason": "query too short"})
            return build_error(
                f"Type at least {WHOKNOWS_MIN_QUERY} characters of the company name or its mail domain, "
                "for example `/whoknows orion` or `/whoknows orion.example`."
            )
        recent = self._recent_searches(caller, now)
        if recent >= WHOKNOWS_MAX_PER_HOUR:
            self._audit(caller, query, now, {"outcome": "rejected", "reason": "rate limited"})
            return build_error(
                f"You have run {recent} who-knows searches in the last hour, the maximum is "
                f"{WHOKNOWS_MAX_PER_HOUR}. Try again in an hour."
            )

        with Session(self.engine) as session:
            results = queries.who_knows(
                session, query, team_id=caller.data_team_id, now=self.clock() if self.clock else None,
                limit=WHOKNOWS_RESULTS,
            )
            results = _visible_results(session, results, caller)
            mailbox_ids = sorted({hit.mailbox_id for r in results for hit in r.owners})
            labels = linking.owner_mentions(session, caller.team_id, mailbox_ids)

        self._audit(
            caller,
            query,
            now,
            {
                "outcome": "answered",
                "organisations": [r.organisation_id for r in results],
                "owners": mailbox_ids,
            },
        )
        return build_whoknows(query, results, now, viewer_mailbox_id=caller.mailbox_id, owner_labels=labels)

    def direct_message(self, caller: Caller, text: str) -> Message:
        """Reply to a direct message to the bot: a who-knows question or a `/crm` command line."""
        kind, argument = parse_direct_message(text)
        if kind == "whoknows":
            return self.whoknows(caller, argument)
        if kind == "crm":
            return self.crm(caller, argument)
        return build_help()

    def home(self, caller: Caller) -> dict:
        """Build the Home tab of one caller."""
        now = self.clock() if self.clock else utcnow()
        if caller.mailbox_id is None:
            return build_home(HomeData(linked=False, link_hint=NOT_LINKED.format(user=caller.actor)), now)
        with Session(self.engine) as session:
            query_now = self._query_now()
            data = HomeData(
                linked=True,
                top=queries.top_contacts(session, caller.mailbox_id, limit=10, now=query_now),
                cold=queries.going_cold(session, caller.mailbox_id, limit=10, now=query_now),
                status=queries.mailbox_status(session, caller.mailbox_id),
            )
        return build_home(data, now)

    def _query_now(self) -> datetime | None:
        return self.clock() if self.clock else None

    def _shown_now(self, session: Session, mailbox_id: int) -> datetime:
        """Return the time dates are shown relative to: the clock, or the mailbox's scoring time."""
        if self.clock:
            return self.clock()
        mailbox = session.get(Mailbox, mailbox_id)
        if mailbox is not None and mailbox.source_kind == "files":
            scored_at = session.execute(
                select(func.max(Relationship.reference_time)).where(Relationship.mailbox_id == mailbox_id)
            ).scalar()
            if scored_at is not None:
                return as_utc(scored_at)
        return utcnow()

    def _recent_searches(self, caller: Caller, now: datetime) -> int:
        with Session(self.engine) as session:
            return session.execute(
                select(func.count(AuditEvent.id)).where(
                    AuditEvent.team_id == caller.team_id,
                    AuditEvent.actor == caller.actor,
                    AuditEvent.action == "whoknows",
                    AuditEvent.created_at > now - timedelta(hours=1),
                )
            ).scalar_one()

    def _audit(self, caller: Caller, query: str, now: datetime, detail: dict) -> None:
        def _write() -> None:
            with Session(self.engine) as session:
                session.add(
                    AuditEvent(
                        team_id=caller.team_id,
                        actor=caller.actor,
                        action="whoknows",
                        target=query[:200],
                        detail=detail,
                        created_at=now,
                    )
                )
                session.commit()

        retry_write(_write)


SUBCOMMANDS: dict[str, Callable[[Commands, int, str], Message]] = {
    "contact": Commands.contact,
    "top": Commands.top,
    "cold": Commands.cold,
    "org": Commands.org,
    "status": Commands.status,
}


def _list_size(argument: str) -> int:
    if not argument:
        return DEFAULT_LIST_SIZE
    if not argument.isdigit() or not 1 <= int(argument) <= MAX_LIST_SIZE:
        raise InputError(f"“{argument[:20]}” is not a list size; give a number from 1 to {MAX_LIST_SIZE}, e.g. `/crm top 20`.")
    return int(argument)


def _best_match(matches: list[ContactView], query: str) -> tuple[ContactView, list[ContactView]]:
    """Put a contact whose address or name equals the query first."""
    wanted = query.strip().lower()
    for index, contact in enumerate(matches):
        names = {a.lower() for a in contact.addresses} | {(contact.name or "").lower()}
        if wanted in names:
            return contact, matches[:index] + matches[index + 1 :]
    return matches[0], matches[1:]


def _visible_results(session: Session, results: list[WhoKnowsResult], caller: Caller) -> list[WhoKnowsResult]:
    """Keep the caller's own hits; of other owners keep only linked ones who share, without people.

    An owner whose mailbox is not linked to a Slack user of the workspace never agreed to
    anything, so their mailbox is not shown to colleagues.
    """
    mailbox_ids = [hit.mailbox_id for r in results for hit in r.owners]
    levels = linking.sharing_levels(session, mailbox_ids)
    visible = []
    for result in results:
        owners = []
        for hit in result.owners:
            if hit.mailbox_id == caller.mailbox_id:
                owners.append(hit)
            elif levels.get(hit.mailbox_id) not in (None, "nobody"):
                owners.append(dataclasses.replace(hit, people=[]))
        if owners:
            visible.append(dataclasses.replace(result, owners=owners))
    return visible


def link_from_profile(engine: Engine, team_id: str, slack_user_id: str, profile_email: str | None, now: datetime) -> Caller:
    """Link a user through their profile email when possible, and return their caller either way."""
    try:
        linking.link_user(engine, team_id=team_id, slack_user_id=slack_user_id, profile_email=profile_email, now=now)
    except BotError as exc:
        log.info("Slack user %s of team %s stays unlinked: %s", slack_user_id, team_id, type(exc).__name__)
        return linking.unlinked_caller(engine, team_id, slack_user_id)
    caller = linking.linked_caller(engine, team_id, slack_user_id)
    return caller or linking.unlinked_caller(engine, team_id, slack_user_id)


WHO_KNOWS_PATTERN = re.compile(
    r"^\s*who\s*knows\s+(?:(?:someone|anyone|somebody|people)\s+)?(?:(?:at|from|in)\s+)?(?P<query>.+?)\s*\??\s*$",
    re.IGNORECASE,
)


def parse_direct_message(text: str) -> tuple[str, str]:
    """Read a direct message as a command: ("whoknows", company), ("crm", command line) or ("help", "")."""
    cleaned = text.strip().lstrip("/")
    match = WHO_KNOWS_PATTERN.match(cleaned)
    if match:
        return "whoknows", match.group("query")
    first = cleaned.split(maxsplit=1)[0].lower() if cleaned else ""
    if first == "crm":
        return "crm", cleaned[3:].strip()
    if first in SUBCOMMANDS or first == "help":
        return "crm", cleaned
    return "help", ""
