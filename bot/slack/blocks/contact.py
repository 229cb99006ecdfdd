"""The contact card of `/crm contact` and the list of other matches under it."""

from __future__ import annotations

from datetime import datetime

from bot.relationships.views import ContactView
from bot.slack import ids
from bot.slack.blocks.elements import (
    Block,
    Message,
    actions,
    button,
    context,
    fields_section,
    header,
    section,
)
from bot.slack.blocks.formatting import (
    format_cadence,
    format_when,
    format_strength,
    strength_band,
)
from bot.slack.blocks.limits import cut_list, escape_mrkdwn, more_text

MAX_OTHER_ADDRESSES = 5
MAX_OTHER_MATCHES = 4


def contact_title(contact: ContactView) -> str:
    """Return the name to show for a contact: the display name, else the first address."""
    if contact.name:
        return contact.name
    if contact.addresses:
        return contact.addresses[0]
    return f"person {contact.person_id}"


def contact_command(contact: ContactView) -> str:
    """Return the `/crm` text that opens this contact's card."""
    if contact.addresses:
        return f"contact {contact.addresses[0]}"
    return f"contact {contact_title(contact)}"


def build_contact_card(
    contact: ContactView, now: datetime, *, other_matches: list[ContactView] | None = None
) -> Message:
    """Build the card of one contact; ``other_matches`` become buttons to their own cards."""
    title = contact_title(contact)
    band = strength_band(contact.strength)
    blocks: list[Block] = [
        header(title),
        section(
            f"*Strength:* {format_strength(contact.strength)}\n_{escape_mrkdwn(contact.reason)}_"
        ),
        fields_section(
            [
                f"*Organisation*\n{escape_mrkdwn(_organisation_label(contact))}",
                f"*Usual rhythm*\n{format_cadence(contact.cadence_days)}",
                f"*Last from them*\n{format_when(contact.last_inbound, now)}",
                f"*Last from you*\n{format_when(contact.last_outbound, now)}",
                f"*Two-way threads*\n{contact.two_way_threads}",
                f"*Messages*\n{contact.inbound} in, {contact.outbound} out",
                f"*First contact*\n{format_when(contact.first_contact, now)}",
            ]
        ),
    ]

    addresses_line = _addresses_line(contact)
    if addresses_line:
        blocks.append(context(addresses_line))

    others = other_matches or []
    if others:
        shown, hidden = cut_list(others, MAX_OTHER_MATCHES)
        names = ", ".join(escape_mrkdwn(contact_title(c)) for c in shown)
        if hidden:
            names += f", {more_text(hidden)}"
        blocks.append(section(f"*Also matching:* {names}"))
        blocks.append(
            actions(
                [
                    button(contact_title(c), f"{ids.OPEN_CONTACT}_{i}", contact_command(c))
                    for i, c in enumerate(shown)
                ]
            )
        )

    text = f"{title}: {band} relationship. {contact.reason}"
    return Message(text=text, blocks=blocks)


def _organisation_label(contact: ContactView) -> str:
    if contact.organisation:
        suffix = " (your organisation)" if contact.is_internal else ""
        return contact.organisation + suffix
    return "unknown"


def _addresses_line(contact: ContactView) -> str:
    shown, hidden = cut_list(contact.addresses, MAX_OTHER_ADDRESSES)
    if not shown:
        return ""
    label = "Address" if len(contact.addresses) == 1 else "Addresses"
    line = f"{label}: " + ", ".join(escape_mrkdwn(a) for a in shown)
    if hidden:
        line += f", {more_text(hidden)}"
    return line
