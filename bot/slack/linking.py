"""Links between Slack users and mailboxes, through the email of the Slack profile.

A Slack user owns a mailbox when the email of their Slack profile is one of the
mailbox's owner addresses. Nothing else links a user: neither a user's own claim
nor an administrator's command can attach a mailbox whose addresses do not
include the profile email.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.errors import NotFoundError, PermissionDenied
from bot.storage.db import retry_write
from bot.storage.models import LOCAL_TEAM, Mailbox, OwnerAddress, SlackUser, Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """The user who runs a command, and the stored data it reads.

    ``team_id`` is the Slack workspace, or ``local`` in the console. ``data_team_id``
    is the team whose mailboxes who-knows searches. It is ``local`` for mail imported
    before the workspace was linked.
    """

    team_id: str
    actor: str
    mailbox_id: int | None
    data_team_id: str



def normalize_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.strip().lower()


def mailboxes_with_address(session: Session, address: str, team_id: str) -> list[Mailbox]:
    """Return the mailboxes of ``team_id`` or of the local team that have ``address`` as an owner address."""
    return list(
        session.execute(
            select(Mailbox)
            .join(OwnerAddress, OwnerAddress.mailbox_id == Mailbox.id)
            .where(OwnerAddress.address == address, Mailbox.team_id.in_([team_id, LOCAL_TEAM]))
            .order_by((Mailbox.team_id == team_id).desc(), Mailbox.id)
        )
        .scalars()
        .unique()
    )


def owner_addresses(session: Session, mailbox_id: int) -> set[str]:
    return set(session.execute(select(OwnerAddress.address).where(OwnerAddress.mailbox_id == mailbox_id)).scalars())


def link_user(
    engine: Engine,
    *,
    team_id: str,
    slack_user_id: str,
    profile_email: str | None,
    now: datetime,
    mailbox_address: str | None = None,
    linked_by: str = "profile",
) -> SlackUser:
    """Link a Slack user to the mailbox whose owner addresses include their profile email.

    Args:
        mailbox_address: an address of the mailbox an administrator means; the profile
            email must still be one of that mailbox's addresses.

    Raises:
        NotFoundError: no mailbox has the address.
        PermissionDenied: the profile email is not an address of the mailbox, or the
            mailbox is already linked to another Slack user of the workspace.
    """
    email = normalize_email(profile_email)
    if email is None:
        raise PermissionDenied(
            f"Slack user {slack_user_id} has no email in their Slack profile, so no mailbox can be linked; "
            "the app needs the users:read.email scope, and the profile needs an email address"
        )

    def _write() -> SlackUser:
        with Session(engine, expire_on_commit=False) as session:
            mailbox = _mailbox_to_link(session, team_id, slack_user_id, email, mailbox_address)
            other = session.execute(
                select(SlackUser).where(
                    SlackUser.team_id == team_id,
                    SlackUser.mailbox_id == mailbox.id,
                    SlackUser.slack_user_id != slack_user_id,
                )
            ).scalar_one_or_none()
            if other is not None:
                raise PermissionDenied(
                    f"the mailbox of {mailbox.owner_address} is already linked to Slack user "
                    f"{other.slack_user_id} in team {team_id}; unlink that user first"
                )
            ensure_workspace(session, team_id, now)
            user = _find_user(session, team_id, slack_user_id) or SlackUser(
                team_id=team_id, slack_user_id=slack_user_id
            )
            user.email = email
            user.mailbox_id = mailbox.id
            user.linked_by = linked_by
            session.add(user)
            session.commit()
            log.info(
                "linked Slack user %s of team %s to mailbox %s (%s)", slack_user_id, team_id, mailbox.id, linked_by
            )
            return user

    return retry_write(_write)


def _mailbox_to_link(
    session: Session, team_id: str, slack_user_id: str, email: str, mailbox_address: str | None
) -> Mailbox:
    if mailbox_address is None:
        found = mailboxes_with_address(session, email, team_id)
        if not found:
            raise NotFoundError(
                f"no mailbox has the address {email} of Slack user {slack_user_id}; import that "
                f"mailbox with `crm-bot import PATH --owner {email}` first"
            )
        return found[0]

    target = normalize_email(mailbox_address)
    found = mailboxes_with_address(session, target or "", team_id)
    if not found:
        raise NotFoundError(
            f"no mailbox has the address {mailbox_address}; import it with "
            f"`crm-bot import PATH --owner {mailbox_address}` first"
        )
    mailbox = found[0]
    if email not in owner_addresses(session, mailbox.id):
        raise PermissionDenied(
            f"the Slack profile email of {slack_user_id} is {email}, which is not an address of the "
            f"mailbox of {mailbox.owner_address}; a user can only be linked to their own mailbox, so "
            "fix the Slack profile email or link the mailbox's real owner"
        )
    return mailbox


def ensure_workspace(session: Session, team_id: str, now: datetime) -> None:
    """Create the Workspace row of a team if it is missing."""
    values = {"team_id": team_id, "created_at": now}
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        statement = postgresql_insert(Workspace).values(**values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(Workspace).values(**values).on_conflict_do_nothing()
    session.execute(statement)


def _find_user(session: Session, team_id: str, slack_user_id: str) -> SlackUser | None:
    return session.execute(
        select(SlackUser).where(SlackUser.team_id == team_id, SlackUser.slack_user_id == slack_user_id)
    ).scalar_one_or_none()


def linked_caller(engine: Engine, team_id: str, slack_user_id: str) -> Caller | None:
    """Return the caller of a linked Slack user, or None when the user has no mailbox yet."""
    with Session(engine) as session:
        row = session.execute(
            select(SlackUser.mailbox_id, Mailbox.team_id)
            .join(Mailbox, Mailbox.id == SlackUser.mailbox_id)
            .where(SlackUser.team_id == team_id, SlackUser.slack_user_id == slack_user_id)
        ).first()
    if row is None:
        return None
    mailbox_id, data_team_id = row
    return Caller(team_id=team_id, actor=slack_user_id, mailbox_id=mailbox_id, data_team_id=data_team_id)


def unlinked_caller(engine: Engine, team_id: str, slack_user_id: str) -> Caller:
    """Return the caller of a colleague without a mailbox; who-knows searches the workspace's mail."""
    with Session(engine) as session:
        has_team_mail = session.execute(select(Mailbox.id).where(Mailbox.team_id == team_id).limit(1)).first()
    data_team_id = team_id if has_team_mail else LOCAL_TEAM
    return Caller(team_id=team_id, actor=slack_user_id, mailbox_id=None, data_team_id=data_team_id)


def owner_mentions(session: Session, team_id: str, mailbox_ids: list[int]) -> dict[int, str]:
    """Return a Slack mention for each mailbox linked to a user of ``team_id``."""
    if not mailbox_ids:
        return {}
    rows = session.execute(
        select(SlackUser.mailbox_id, SlackUser.slack_user_id).where(
            SlackUser.team_id == team_id, SlackUser.mailbox_id.in_(mailbox_ids)
        )
    ).all()
    return {mailbox_id: f"<@{user_id}>" for mailbox_id, user_id in rows}


def sharing_levels(session: Session, mailbox_ids: list[int]) -> dict[int, str]:
    """Return the sharing level each linked mailbox's owner chose."""
    if not mailbox_ids:
        return {}
    rows = session.execute(
        select(SlackUser.mailbox_id, SlackUser.sharing_level).where(SlackUser.mailbox_id.in_(mailbox_ids))
    ).all()
    return {mailbox_id: level for mailbox_id, level in rows}
