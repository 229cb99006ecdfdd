"""Lists of contacts and organisations: `/crm top`, `/crm cold` and `/crm org`."""

from __future__ import annotations

from datetime import datetime

from bot.relationships.views import ContactView, OrgView
from bot.slack import ids
from bot.slack.blocks.contact import contact_command, contact_title
from bot.slack.blocks.elements import Block, Message, button, context, header, section
from bot.slack.blocks.formatting import format_age, format_strength, plural, strength_band
from bot.slack.blocks.limits import MAX_MESSAGE_BLOCKS, cut_list, escape_mrkdwn, more_text

# A header, an intro line and an "and N more" line leave room for this many rows.
MAX_LIST_ROWS = MAX_MESSAGE_BLOCKS - 5


def build_top_contacts(contacts: list[ContactView], *, max_rows: int = 20) -> Message:
    """Build the list of the strongest relationships, strongest first."""
    if not contacts:
        return _empty(
            "Your strongest relationships",
            "No relationships yet. Import mail with `crm-bot import PATH --owner ADDRESS`, then try again.",
        )
    rows = [_contact_row(c, detail=_strength_detail(c)) for c in contacts]
    return _list_message("Your strongest relationships", rows, max_rows=max_rows)


def build_going_cold(contacts: list[ContactView], *, max_rows: int = 20) -> Message:
    """Build the list of strong relationships that have gone quiet for longer than usual."""
    if not contacts:
        return _empty(
            "Going cold",
            "Nobody is going cold: every strong relationship is within its usual rhythm.",
        )
    rows = [_contact_row(c, detail=_strength_detail(c)) for c in contacts]
    return _list_message("Going cold", rows, max_rows=max_rows)


def build_org_people(
    query: str, org: OrgView | None, people: list[ContactView], now: datetime, *, max_rows: int = 20
) -> Message:
    """Build the list of the people an owner knows at one organisation."""
    if org is None:
        return _empty(
            "Organisation not found",
            f"No organisation in your mail matches “{escape_mrkdwn(query)}”. "
            "Try a shorter name or the mail domain, for example `/crm org example.com`.",
        )
    title = f"Your people at {org.name}"
    intro = _org_summary(org, now)
    if not people:
        return _empty(title, intro + "\nNobody there has written to you or heard from you yet.")
    rows = [_contact_row(c, detail=_strength_detail(c)) for c in people]
    return _list_message(title, rows, max_rows=max_rows, intro=intro)


def build_organisations(orgs: list[OrgView], now: datetime, *, max_rows: int = 30) -> Message:
    """Build a list of organisations with the number of people and the last contact."""
    if not orgs:
        return _empty("Organisations", "No organisations yet. Import mail first.")
    rows = [section(_org_summary(org, now, with_name=True)) for org in orgs]
    return _list_message("Organisations", rows, max_rows=max_rows)


def _contact_row(contact: ContactView, *, detail: str) -> Block:
    title = escape_mrkdwn(contact_title(contact))
    org = f" · {escape_mrkdwn(contact.organisation)}" if contact.organisation else ""
    text = f"*{title}*{org}\n{detail}"
    card = button("Card", ids.OPEN_CONTACT, contact_command(contact))
    return section(text, accessory=card)


def _strength_detail(contact: ContactView) -> str:
    return f"{format_strength(contact.strength)} · {escape_mrkdwn(contact.reason)}"


def _org_summary(org: OrgView, now: datetime, *, with_name: bool = False) -> str:
    name = f"*{escape_mrkdwn(org.name)}* · " if with_name else ""
    domains = ", ".join(escape_mrkdwn(d) for d in org.domains[:3])
    if len(org.domains) > 3:
        domains += f", {more_text(len(org.domains) - 3)}"
    internal = " · your organisation" if org.is_internal else ""
    return (
        f"{name}{plural(org.people, 'person', 'people')} · "
        f"best {strength_band(org.best_strength)} · last contact {format_age(org.last_contact, now)}"
        f"{internal}" + (f"\n{domains}" if domains else "")
    )


def _list_message(title: str, rows: list[Block], *, max_rows: int, intro: str | None = None) -> Message:
    shown, hidden = cut_list(rows, min(max_rows, MAX_LIST_ROWS))
    blocks: list[Block] = [header(title)]
    if intro:
        blocks.append(context(intro))
    blocks.extend(shown)
    if hidden:
        blocks.append(context(more_text(hidden)))
    text = f"{title}: {plural(len(rows), 'entry', 'entries')}"
    return Message(text=text, blocks=blocks)


def _empty(title: str, explanation: str) -> Message:
    return Message(text=f"{title}: {explanation}", blocks=[header(title), section(explanation)])
