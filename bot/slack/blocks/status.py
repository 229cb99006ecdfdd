"""Mailbox health: `/crm status` and the health part of the Home tab."""

from __future__ import annotations

from datetime import datetime

from bot.relationships.views import MailboxStatus
from bot.slack.blocks.elements import Block, Message, context, fields_section, header, section
from bot.slack.blocks.formatting import format_age, format_date, format_when
from bot.slack.blocks.limits import cut_list, escape_mrkdwn, more_text

MAX_FOLDERS = 8


def build_status(status: MailboxStatus, now: datetime) -> Message:
    """Build the health report of one mailbox."""
    blocks: list[Block] = [header("Mailbox health")]
    blocks.extend(build_status_blocks(status, now))
    text = f"Mailbox health: {status.messages} messages, {status.two_way_relationships} two-way relationships"
    return Message(text=text, blocks=blocks)


def build_status_blocks(status: MailboxStatus, now: datetime) -> list[Block]:
    """Build the health section without a header, for reuse on the Home tab."""
    blocks: list[Block] = [
        section(f"{_health_line(status, now)}\n_{escape_mrkdwn(status.owner)} · source: {status.source_kind}_"),
        fields_section(
            [
                f"*Messages read*\n{status.messages}",
                f"*Two-way relationships*\n{status.two_way_relationships}",
                f"*People*\n{status.people}",
                f"*Organisations*\n{status.organisations}",
                f"*Mail from*\n{format_date(status.first_message)} to {format_date(status.last_message)}",
                f"*Last import*\n{format_when(status.last_import_at, now)}",
            ]
        ),
    ]
    folders = _folder_lines(status.folders)
    if folders:
        blocks.append(context(folders))
    return blocks


def _health_line(status: MailboxStatus, now: datetime) -> str:
    error_is_current = status.last_sync_error and (
        status.last_sync_ok_at is None
        or (status.last_sync_error_at is not None and status.last_sync_error_at > status.last_sync_ok_at)
    )
    if error_is_current:
        when = format_age(status.last_sync_error_at, now)
        return (
            f":warning: The last sync failed {when}: {escape_mrkdwn(status.last_sync_error or '')}\n"
            "Ask your administrator to check the mail connection; `/crm status` shows when it recovers."
        )
    if status.last_sync_ok_at is not None:
        return f":white_check_mark: Synced {format_age(status.last_sync_ok_at, now)}."
    if status.last_import_at is not None:
        return f":white_check_mark: Imported {format_age(status.last_import_at, now)}; no live sync is set up."
    return ":hourglass: No mail has been read yet. Your administrator connects the mailbox."


def _folder_lines(folders: list[dict]) -> str:
    shown, hidden = cut_list(folders, MAX_FOLDERS)
    parts = []
    for folder in shown:
        name = folder.get("folder") or folder.get("role") or "folder"
        items = folder.get("items_stored", folder.get("items"))
        label = escape_mrkdwn(str(name))
        parts.append(f"{label}: {items}" if items is not None else label)
    if hidden:
        parts.append(more_text(hidden))
    return "Folders: " + ", ".join(parts) if parts else ""
