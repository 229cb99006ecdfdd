"""The message metadata every mail source produces, whatever protocol it reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Sequence


class FolderRole(str, Enum):
    INBOX = "inbox"
    SENT = "sent"
    OTHER = "other"


@dataclass(frozen=True)
class Participant:
    """One party of a message.

    ``address`` is a lower-case SMTP address, or None when the source gave only a name
    (an unresolved Exchange DN, an empty group). ``name`` is the decoded display name.
    """

    address: str | None
    name: str | None = None


@dataclass
class MailItem:
    """Metadata of one message as read from a source; the body is never kept.

    ``sent_at`` is an aware UTC datetime. ``body_hash`` is a digest of the body used only to
    tell copies of the same message apart from different messages.
    """

    source_ref: str
    folder: str
    folder_role: FolderRole
    sent_at: datetime | None
    sender: Participant | None
    # Sequences: file imports give tuples that messages with the same list share.
    to: Sequence[Participant] = ()
    cc: Sequence[Participant] = ()
    bcc: Sequence[Participant] = ()
    reply_to: Sequence[Participant] = ()
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    conversation_id: str | None = None  # a server's conversation id (EWS, Graph), a thread hint
    subject: str | None = None
    list_id: str | None = None
    is_bulk: bool = False
    bulk_reason: str | None = None
    is_auto_reply: bool = False
    author: Participant | None = None  # the real author when a list rewrote From
    date_defect: str | None = None
    defects: list[str] = field(default_factory=list)
    body_hash: str | None = None

    @property
    def recipients(self) -> list[Participant]:
        return [*self.to, *self.cc, *self.bcc]


@dataclass
class SkippedItem:
    """A message a source could not read, with the reason counted in the import summary."""

    source_ref: str
    reason: str
    detail: str = ""


@dataclass
class Batch:
    """Items read from one folder, and the cursor to store once they are saved."""

    folder_key: str
    folder_role: FolderRole
    items: list[MailItem]
    skipped: list[SkippedItem] = field(default_factory=list)
    cursor: str | None = None
    complete: bool = False  # True on the last batch of a folder in this run
