"""The mailbox content that the fake EWS and Graph servers serve, and its change log.

A ``FakeMailbox`` contains messages per folder, calendar items and contacts. Every change gets a sequence number, so both fakes can respond to
incremental requests (an EWS sync state or a Graph delta token is a folder key, a
generation and a sequence number). Bumping ``generation`` makes every cursor handed out
before invalid, which is how the fakes simulate an expired sync state.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bot.mail.headers import parse_message
from bot.mail.types import FolderRole, Participant

INBOX = "inbox"
SENT = "sentitems"
CALENDAR = "calendar"
CONTACTS = "contacts"

SENT_FOLDER_NAMES = {"sent", "sent_items", "_sent_mail"}


@dataclass
class FakeAddress:
    name: str | None
    address: str | None
    routing_type: str = "SMTP"
    mailbox_type: str = "Mailbox"


@dataclass
class FakeMessage:
    item_id: str
    folder: str
    subject: str | None
    sent: datetime | None  # a naive value is served without an offset
    received: datetime | None
    sender: FakeAddress | None  # the From header
    to: list[FakeAddress] = field(default_factory=list)
    cc: list[FakeAddress] = field(default_factory=list)
    bcc: list[FakeAddress] = field(default_factory=list)
    reply_to: list[FakeAddress] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    conversation_id: str | None = None
    item_class: str = "IPM.Note"
    is_draft: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)  # Internet headers, served on request
    raw_path: Path | None = None  # the file the message was read from, for the file import
    # A digest of the body, never served: Exchange sources read no bodies. Tests use it to
    # find distinct messages that only their bodies tell apart.
    body_hash: str | None = None


@dataclass
class FakeAttendee:
    person: FakeAddress
    response: str = "Unknown"  # EWS ResponseType: Accept, Decline, Tentative, NoResponseReceived, Unknown
    optional: bool = False


@dataclass
class FakeEvent:
    item_id: str
    subject: str
    start: datetime
    end: datetime
    organizer: FakeAddress
    attendees: list[FakeAttendee] = field(default_factory=list)
    is_cancelled: bool = False


@dataclass
class FakeContact:
    item_id: str
    display_name: str
    company_name: str | None = None
    job_title: str | None = None
    emails: list[str] = field(default_factory=list)


@dataclass
class Change:
    seq: int
    folder: str
    kind: str  # create | update | delete
    item_id: str


class FakeMailbox:
    """One mailbox's folders and their change log; safe to use from the server threads."""

    def __init__(self, owner: str, owner_name: str | None = None):
        self.owner = owner.lower()
        self.owner_name = owner_name
        self.messages: dict[str, FakeMessage] = {}
        self.events: dict[str, FakeEvent] = {}
        self.contacts: dict[str, FakeContact] = {}
        self.changes: list[Change] = []
        self.generation = 1
        self.seq = 0
        self.lock = threading.RLock()
        self._counter = 0
        self._conversations: dict[str, str] = {}  # Message-ID -> conversation id
        # Fixed cursor texts for chosen sequence numbers, so a test can start from a named state.
        self.state_names: dict[int, str] = {}

    def new_id(self, prefix: str) -> str:
        self._counter += 1
        raw = f"{prefix}:{self.owner}:{self._counter}".encode()
        return "AAMkAD" + base64.urlsafe_b64encode(hashlib.sha1(raw).digest()).decode().rstrip("=")

    def add_message(self, message: FakeMessage) -> FakeMessage:
        with self.lock:
            if not message.item_id:
                message.item_id = self.new_id(message.folder)
            if message.conversation_id is None:
                message.conversation_id = self._conversation_for(message)
            self.messages[message.item_id] = message
            self._log(message.folder, "create", message.item_id)
            return message

    def _conversation_for(self, message: FakeMessage) -> str:
        """Join the conversation of the parent named by In-Reply-To or References, else start one.

        Exchange starts a new conversation for a message without a Thread-Index header
        unless it replies to a message the mailbox contains.
        """
        parents = [message.in_reply_to, *reversed((message.references or "").split())]
        for parent_id in parents:
            if parent_id and parent_id in self._conversations:
                conversation = self._conversations[parent_id]
                break
        else:
            seed = (message.message_id or message.item_id).encode("utf-8", "surrogatepass")
            conversation = "AAQkAD" + base64.b64encode(hashlib.sha1(seed).digest()[:16]).decode()
        if message.message_id:
            self._conversations.setdefault(message.message_id, conversation)
        return conversation

    def update_message(self, item_id: str) -> None:
        with self.lock:
            self._log(self.messages[item_id].folder, "update", item_id)

    def delete_message(self, item_id: str) -> None:
        with self.lock:
            message = self.messages.pop(item_id)
            self._log(message.folder, "delete", item_id)

    def add_event(self, event: FakeEvent) -> None:
        with self.lock:
            self.events[event.item_id] = event
            self._log(CALENDAR, "create", event.item_id)

    def add_contact(self, contact: FakeContact) -> None:
        with self.lock:
            self.contacts[contact.item_id] = contact
            self._log(CONTACTS, "create", contact.item_id)

    def expire_cursors(self) -> None:
        """Make every sync state and delta token handed out so far invalid."""
        with self.lock:
            self.generation += 1
            self.state_names.clear()

    def _log(self, folder: str, kind: str, item_id: str) -> None:
        self.seq += 1
        self.changes.append(Change(self.seq, folder, kind, item_id))

    def folder_messages(self, folder: str) -> list[FakeMessage]:
        with self.lock:
            return [m for m in self.messages.values() if m.folder == folder]

    def changes_after(self, folder: str, seq: int, limit: int) -> tuple[list[Change], bool]:
        """Return up to ``limit`` changes of a folder after ``seq`` and whether they are the last ones.

        A create or update of an item that was deleted later is dropped, as a server drops it.
        """
        with self.lock:
            pending = [c for c in self.changes if c.folder == folder and c.seq > seq]
            live = []
            for change in pending:
                if change.kind in ("create", "update") and change.item_id not in self.messages:
                    if folder not in (CALENDAR, CONTACTS):
                        continue
                live.append(change)
            page = live[:limit]
            return page, len(live) <= limit

    def cursor(self, folder: str, seq: int) -> str:
        if seq in self.state_names:
            return self.state_names[seq]
        payload = json.dumps({"f": folder, "g": self.generation, "s": seq}).encode()
        return base64.b64encode(payload).decode()

    def parse_cursor(self, folder: str, text: str) -> int | None:
        """Return the sequence number of a cursor, or None when it is invalid or expired."""
        for seq, name in self.state_names.items():
            if name == text:
                return seq
        try:
            data = json.loads(base64.b64decode(text.encode(), validate=True))
        except (ValueError, TypeError):
            return None
        if not isinstance(data, dict) or data.get("f") != folder or data.get("g") != self.generation:
            return None
        seq = data.get("s")
        return seq if isinstance(seq, int) else None


# --- Items written as exchangelib field names ------------------------------------------------


def address_from_case(value: dict | None) -> FakeAddress | None:
    """Convert ``{"name", "email_address", "routing_type", "mailbox_type"}`` to a FakeAddress."""
    if not value:
        return None
    return FakeAddress(
        name=value.get("name"),
        address=value.get("email_address"),
        routing_type=value.get("routing_type", "SMTP"),
        mailbox_type=value.get("mailbox_type", "Mailbox"),
    )


def message_from_case(item: dict, folder: str = INBOX) -> FakeMessage:
    """Convert an item written with exchangelib Message field names into a FakeMessage.

    A ``datetime_received`` without an offset stays naive, so the fake serves it that way.
    """
    received = datetime.fromisoformat(item["datetime_received"]) if item.get("datetime_received") else None
    sent = datetime.fromisoformat(item["datetime_sent"]) if item.get("datetime_sent") else received
    return FakeMessage(
        item_id=item["item_id"],
        folder=folder,
        subject=item.get("subject"),
        sent=sent,
        received=received,
        sender=address_from_case(item.get("sender")),
        to=[a for a in map(address_from_case, item.get("to_recipients", [])) if a],
        cc=[a for a in map(address_from_case, item.get("cc_recipients", [])) if a],
        message_id=item.get("message_id"),
        item_class=item.get("item_class", "IPM.Note"),
    )


# --- The Enron corpus -------------------------------------------------------------------

ENRON_TARBALL = ("data", "mail", "enron-maildir-9-mailboxes.tar.xz")


def unpack_enron(tarball: Path, cache_dir: Path) -> Path:
    """Unpack the corpus once into ``cache_dir`` and return its ``maildir`` folder."""
    maildir = cache_dir / "maildir"
    marker = cache_dir / ".unpacked"
    if marker.exists():
        return maildir
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:xz") as archive:
        archive.extractall(cache_dir, filter="data")
    marker.write_text("ok\n")
    return maildir


def enron_files(maildir: Path, owner: str, folders: set[str] | None = None) -> list[tuple[Path, str]]:
    """List (file, folder role) pairs of one Enron mailbox in a stable order.

    Folders named sent, sent_items or _sent_mail are served as Sent Items, every other
    folder as Inbox; ``folders`` limits the folders read.
    """
    result: list[tuple[Path, str]] = []
    root = maildir / owner
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folders is not None and folder.name not in folders:
            continue
        role = SENT if folder.name in SENT_FOLDER_NAMES else INBOX
        files = [p for p in folder.rglob("*") if p.is_file()]
        files.sort(key=lambda p: (str(p.parent), _numeric_name(p)))
        result.extend((path, role) for path in files)
    return result


def _numeric_name(path: Path) -> int:
    digits = path.name.rstrip(".")
    return int(digits) if digits.isdigit() else 0


def _fake_address(participant: Participant) -> FakeAddress:
    address = participant.address
    if address and address.lower().startswith("/o="):
        return FakeAddress(participant.name, address, routing_type="EX")
    if address:
        return FakeAddress(participant.name, address)
    return FakeAddress(participant.name, None, mailbox_type="OneOff")


def message_from_file(path: Path, folder: str) -> FakeMessage:
    """Read one RFC 5322 file into the fields an Exchange server keeps for it.

    The header values come from the bot's own header parser, so the fake servers present
    the same addresses, names and times as the file import of the same file. The equality
    tests therefore compare the transport and the conversion of each source.
    """
    role = FolderRole.SENT if folder == SENT else FolderRole.INBOX
    item = parse_message(path.read_bytes(), source_ref=str(path), folder=folder, folder_role=role)
    return FakeMessage(
        item_id="",
        folder=folder,
        subject=item.subject,
        sent=item.sent_at,
        received=item.sent_at,
        sender=_fake_address(item.sender) if item.sender is not None else None,
        to=[_fake_address(p) for p in item.to],
        cc=[_fake_address(p) for p in item.cc],
        bcc=[_fake_address(p) for p in item.bcc],
        reply_to=[_fake_address(p) for p in item.reply_to],
        message_id=f"<{item.message_id}>" if item.message_id else None,
        in_reply_to=f"<{item.in_reply_to}>" if item.in_reply_to else None,
        references=" ".join(f"<{r}>" for r in item.references) or None,
        raw_path=path,
        body_hash=item.body_hash,
    )


def write_maildir(mailbox: FakeMailbox, dest: Path) -> Path:
    """Copy the source files of every message into ``dest/inbox`` and ``dest/sent_items``.

    The copy gives the file import exactly the messages the fake servers serve, in the same
    folder roles.
    """
    counters = {INBOX: 0, SENT: 0}
    names = {INBOX: "inbox", SENT: "sent_items"}
    for message in mailbox.messages.values():
        if message.raw_path is None or message.folder not in names:
            continue
        counters[message.folder] += 1
        target = dest / names[message.folder] / f"{counters[message.folder]}."
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(message.raw_path.read_bytes())
    return dest
