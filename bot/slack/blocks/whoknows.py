"""The reply to `/whoknows`: which owners know people at an organisation.

Colleagues see another owner only as the owner, a strength band, a recency band
and a head count; names and addresses appear only for the asking owner's own
relationships.
"""

from __future__ import annotations

from datetime import datetime

from bot.relationships.views import OwnerHit, WhoKnowsResult
from bot.slack.blocks.contact import contact_title
from bot.slack.blocks.elements import Block, Message, context, divider, header, section
from bot.slack.blocks.formatting import plural, recency_band, strength_band
from bot.slack.blocks.limits import cut_list, escape_mrkdwn, more_text

# Five organisations of three blocks each, plus header and footer, stay far below 50 blocks.
MAX_ORGANISATIONS = 5
MAX_OWNERS = 8
MAX_OWN_NAMES = 5


def build_whoknows(
    query: str,
    results: list[WhoKnowsResult],
    now: datetime,
    *,
    viewer_mailbox_id: int | None,
    owner_labels: dict[int, str] | None = None,
) -> Message:
    """Build the who-knows reply for one asker.

    Args:
        viewer_mailbox_id: the asker's own mailbox; only its hits show people's names.
        owner_labels: mailbox id to the text naming its owner, such as a Slack mention.
    """
    shown_query = escape_mrkdwn(query)
    if not results:
        explanation = (
            f"Nobody who shares their mailbox knows someone at “{shown_query}”. "
            "Try another spelling or the company's mail domain, for example `/whoknows example.com`."
        )
        return Message(text=explanation, blocks=[header("Who knows"), section(explanation)])

    labels = owner_labels or {}
    blocks: list[Block] = [header(f"Who knows someone at “{query}”")]
    shown_orgs, hidden_orgs = cut_list(results, MAX_ORGANISATIONS)
    for result in shown_orgs:
        blocks.extend(_organisation_blocks(result, now, viewer_mailbox_id, labels))
    if hidden_orgs:
        blocks.append(context(f"{more_text(hidden_orgs, 'more organisations')} match; add more of the name to narrow it."))

    owners = sum(len(r.owners) for r in results)
    text = f"Who knows someone at {query}: {plural(len(results), 'organisation')}, {plural(owners, 'owner')}"
    return Message(text=text, blocks=blocks)


def _organisation_blocks(
    result: WhoKnowsResult, now: datetime, viewer_mailbox_id: int | None, labels: dict[int, str]
) -> list[Block]:
    domains = ", ".join(escape_mrkdwn(d) for d in result.domains[:3])
    blocks: list[Block] = [divider(), section(f"*{escape_mrkdwn(result.organisation)}*" + (f" · {domains}" if domains else ""))]
    shown, hidden = cut_list(result.owners, MAX_OWNERS)
    lines = [_owner_line(hit, now, viewer_mailbox_id, labels) for hit in shown]
    if hidden:
        lines.append(more_text(hidden, "more owners"))
    if not lines:
        lines.append("No owner who shares knows someone here.")
    blocks.append(section("\n".join(lines)))
    return blocks


def _owner_line(hit: OwnerHit, now: datetime, viewer_mailbox_id: int | None, labels: dict[int, str]) -> str:
    band = strength_band(hit.strength)
    recency = recency_band(hit.last_contact, now)
    count = plural(hit.contacts, "person", "people")
    if viewer_mailbox_id is not None and hit.mailbox_id == viewer_mailbox_id:
        names, hidden = cut_list([contact_title(p) for p in hit.people], MAX_OWN_NAMES)
        listed = ", ".join(escape_mrkdwn(n) for n in names)
        if hidden:
            listed += f", {more_text(hidden)}"
        who = f": {listed}" if listed else ""
        return f"• *You* · {band} · last contact {recency} · {count}{who}"
    owner = labels.get(hit.mailbox_id) or escape_mrkdwn(hit.owner)
    return f"• {owner} · {band} · last contact {recency} · knows {count} there"
