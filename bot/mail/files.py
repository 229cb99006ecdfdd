"""A mail source that reads Maildir, mbox, .eml files and trees of RFC 822 files.

Accepted layouts, found by walking the given path:

- a Maildir (``cur/`` and ``new/``) with Maildir++ subfolders such as ``.Sent``;
- a tree of one-message files, such as the CMU Enron layout ``owner/folder/N.``;
- mbox files (``*.mbox``, ``*.mbx`` or any file that starts with a 'From ' line);
- a single .eml file, or a single mbox file.

Every directory that contains message files is one folder, and every mbox file is a
folder of its own. Hidden files and directories are ignored, except Maildir++
subfolders. Symbolic links to directories are not followed, and only regular files are
read.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Literal, NamedTuple

from bot.errors import InputError, SyncStateExpired
from bot.mail.headers import (
    DEFAULT_BULK_RECIPIENT_THRESHOLD,
    NotAMessage,
    mailbox_zone,
    parse_message,
)
from bot.mail.source import FolderRef
from bot.mail.types import Batch, FolderRole, MailItem, SkippedItem

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
DEFAULT_MAX_MESSAGE_BYTES = 100 * 1024 * 1024

# Sent folder names after _normalise_folder_name, in the languages mail clients localise
# to.
SENT_FOLDER_NAMES = frozenset(
    (
        "sent",
        "sent items",
        "sent mail",
        "sent messages",
        "sentmail",
        "gesendet",
        "gesendete elemente",
        "gesendete objekte",
        "gesendete nachrichten",
        "éléments envoyés",
        "elements envoyes",
        "messages envoyés",
        "envoyés",
        "enviados",
        "elementos enviados",
        "mensajes enviados",
        "itens enviados",
        "mensagens enviadas",
        "posta inviata",
        "elementi inviati",
        "inviati",
        "verzonden items",
        "verzonden",
        "skickat",
        "skickade objekt",
        "sendt",
        "sendte elementer",
        "lähetetyt",
        "lähetetyt viestit",
        "wysłane",
        "elementy wysłane",
        "odeslaná pošta",
        "odeslané",
        "отправленные",
        "送信済みアイテム",
        "已发送",
        "已发送邮件",
        "寄件備份",
    )
)
INBOX_FOLDER_NAMES = frozenset(
    (
        "inbox",
        "posteingang",
        "boîte de réception",
        "bandeja de entrada",
        "caixa de entrada",
        "posta in arrivo",
        "postvak in",
        "inkorgen",
        "innboks",
        "saapuneet",
        "odebrane",
        "doručená pošta",
        "входящие",
    )
)

_MBOX_SUFFIXES = frozenset((".mbox", ".mbx"))
# Names that are always one message per file: .eml exports and the numbered files of MH
# folders and the CMU Enron tree ('17', '17.'). Other files are opened to look for an
# mbox.
_MESSAGE_SUFFIXES = frozenset((".eml", ".msg"))
_NUMBERED_FILE = re.compile(r"^[0-9]+\.?$")
_DIGITS = re.compile(r"([0-9]+)")


def _normalise_folder_name(name: str) -> str:
    name = (
        unicodedata.normalize("NFC", name)
        .casefold()
        .replace("_", " ")
        .replace("-", " ")
    )
    return " ".join(name.split())


def folder_role(name: str) -> FolderRole:
    """Return the role of a folder from its name or relative path.

    The last path component decides ('[Gmail]/Sent Mail', 'allen-p/_sent_mail'). A
    Maildir++ name ('.Sent', '.INBOX.Sent Items') counts by its last dot-separated part.
    """
    components = [part for part in re.split(r"[/\\]", name) if part]
    if not components:
        return FolderRole.OTHER
    last = components[-1]
    if last.startswith("."):
        last = last.rsplit(".", 1)[1]
    normalised = _normalise_folder_name(last)
    if normalised in SENT_FOLDER_NAMES:
        return FolderRole.SENT
    if normalised in INBOX_FOLDER_NAMES:
        return FolderRole.INBOX
    return FolderRole.OTHER


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Return a sort key that orders digit runs by value, so '10.' sorts after '9.'."""
    digits = name[:-1] if name.endswith(".") else name
    if digits.isascii() and digits.isdigit():
        # Numbered message files ('17.'), the same key as the general loop below.
        number = (0, int(digits), digits)
        return (number, (1, 0, ".")) if len(digits) < len(name) else (number,)
    key: list[tuple[int, int, str]] = []
    for index, part in enumerate(_DIGITS.split(name)):
        if index % 2:
            key.append((0, int(part), part))
        elif part:
            key.append((1, 0, part))
    return tuple(key)


def _numbered_order(file: _MessageFile) -> tuple[int, str, str]:
    position = file.position
    digits = position.rstrip(".")
    return int(digits), digits, position


def _maildir_unique_name(file_name: str) -> str:
    """Return the part of a Maildir file name that flag changes keep ('123.host')."""
    return file_name.split(":", 1)[0]


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _looks_like_mbox(path: str, name: str | None = None) -> bool:
    """Return True for an mbox file: by suffix, or by a 'From ' line at its start.

    ``name`` is the file name of ``path``, when the caller has it already.
    """
    if name is None:
        name = os.path.basename(path)
    if _NUMBERED_FILE.match(name):
        return False
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _MBOX_SUFFIXES:
        return True
    if suffix in _MESSAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(5) == b"From "
    except OSError:
        return False  # read() reports the file as unreadable


@dataclass(frozen=True)
class _Folder:
    ref: FolderRef
    layout: Literal["files", "maildir", "mbox", "single"]
    path: Path


class _MessageFile(NamedTuple):
    """A one-message file: its cursor position (the name, or a Maildir unique name), its
    reference relative to the source root and its path."""

    position: str
    source_ref: str
    path: str


@dataclass(frozen=True)
class ReadChunk:
    """Part of a folder that can be read on its own: a batch of files, or a whole mbox.

    ``cursor`` is the folder's cursor before the chunk; ``files`` is None for an mbox,
    which is read from ``cursor`` to its end.
    """

    folder: FolderRef
    cursor: str | None
    files: tuple[_MessageFile, ...] | None
    complete: bool  # the folder's last chunk
    mbox_path: str | None = None

    def split(self, size: int) -> list[ReadChunk]:
        """Split a chunk of files into chunks of at most ``size`` files, read in order."""
        if self.files is None or len(self.files) <= size:
            return [self]
        parts: list[ReadChunk] = []
        cursor = self.cursor
        for start in range(0, len(self.files), size):
            files = self.files[start : start + size]
            last = start + size >= len(self.files)
            parts.append(ReadChunk(self.folder, cursor, files, self.complete and last))
            cursor = files[-1].position
        return parts


@dataclass
class _Entry:
    """One message of a folder: the cursor after it, its reference, bytes or skip."""

    cursor: str
    source_ref: str
    raw: bytes | None = None
    skipped: SkippedItem | None = None


class FilesSource:
    """Reads a Maildir, an mbox, an .eml file or a tree of message files by folder.

    The cursor of a file folder is the name of the last file read (in a Maildir, its
    unique part before ':'). Files are read in natural name order, so a later run reads
    only names that sort after the cursor. The cursor of an mbox is the number of
    messages read. An mbox that now contains fewer messages raises SyncStateExpired, and
    the importer then reads it again from the start.
    """

    kind = "files"

    def __init__(
        self,
        path: Path,
        *,
        mailbox_tz: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        bulk_recipient_threshold: int = DEFAULT_BULK_RECIPIENT_THRESHOLD,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(
                f"mail path {self.path} does not exist; give a Maildir, an mbox file, "
                "an .eml file or a folder of message files"
            )
        if batch_size < 1:
            raise InputError(f"batch size {batch_size} is invalid; use 1 or more")
        # An unknown zone raises ConfigError here rather than on the first message.
        mailbox_zone(mailbox_tz)
        self.mailbox_tz = mailbox_tz
        self.batch_size = batch_size
        self.bulk_recipient_threshold = bulk_recipient_threshold
        self.max_message_bytes = max_message_bytes
        self.skip_counts: Counter[str] = Counter()
        self._folders: dict[str, _Folder] | None = None
        # The message files that the last scan found in each file folder, as (name, path)
        # pairs. The first plan of a folder takes them instead of listing it again.
        self._scanned_files: dict[str, list[tuple[str, str]]] = {}
        self._now = datetime.now(timezone.utc)  # the time each read() started

    # --- Folders

    def folders(self) -> list[FolderRef]:
        self._folders = {folder.ref.key: folder for folder in self._scan()}
        return [folder.ref for folder in self._folders.values()]

    def _scan(self) -> list[_Folder]:
        root = self.path
        if root.is_file():
            if _looks_like_mbox(str(root)):
                role = folder_role(root.stem)
                ref = FolderRef(key=root.name, name=root.stem, role=role)
                return [_Folder(ref, "mbox", root)]
            ref = FolderRef(key=root.name, name=root.stem, role=FolderRole.OTHER)
            return [_Folder(ref, "single", root)]
        found: list[_Folder] = []
        pending = [(root, ".")]
        self._scanned_files = {}
        while pending:
            directory, relative = pending.pop()
            found.extend(self._scan_directory(directory, relative, pending))
        return sorted(found, key=lambda folder: natural_key(folder.ref.key))

    def _scan_directory(
        self, directory: Path, relative: str, pending: list[tuple[Path, str]]
    ) -> list[_Folder]:
        """Return the folders of a directory and queue its subdirectories.

        Only regular files count, so a FIFO or device file is never opened.
        """
        entries = self._list_directory(directory)
        subdirectories = sorted(
            entry.name for entry in entries if entry.is_dir(follow_symlinks=False)
        )
        prefix = "" if relative == "." else relative + "/"
        if "cur" in subdirectories and "new" in subdirectories:
            # Below a Maildir only Maildir++ subfolders hold mail; cur/ and new/ are
            # read as the folder itself.
            for name in subdirectories:
                if name not in ("cur", "new", "tmp") and _is_maildir(directory / name):
                    pending.append((directory / name, prefix + name))
            return [self._maildir_folder(directory, relative)]
        for name in subdirectories:
            if not name.startswith(".") or _is_maildir(directory / name):
                pending.append((directory / name, prefix + name))
        found: list[_Folder] = []
        message_files: list[tuple[str, str]] = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            if not _looks_like_mbox(entry.path, entry.name):
                message_files.append((entry.name, entry.path))
                continue
            key = prefix + entry.name
            suffix = os.path.splitext(entry.name)[1]
            name = key[: -len(suffix)] if suffix.lower() in _MBOX_SUFFIXES else key
            ref = FolderRef(key=key, name=name, role=folder_role(name))
            found.append(_Folder(ref, "mbox", directory / entry.name))
        if message_files:
            name = self.path.name if relative == "." else relative
            ref = FolderRef(key=relative, name=name, role=folder_role(name))
            found.append(_Folder(ref, "files", directory))
            self._scanned_files[relative] = message_files
        return found

    def _maildir_folder(self, path: Path, relative: str) -> _Folder:
        if relative == ".":
            # A Maildir root is the inbox, unless its own name says otherwise, as for a
            # path to 'Maildir/.Sent' or to an isync 'Mail/Sent'.
            role = folder_role(path.name)
            if role is FolderRole.OTHER:
                role = FolderRole.INBOX
            name = "INBOX" if role is FolderRole.INBOX else path.name.lstrip(".")
            return _Folder(FolderRef(key=".", name=name, role=role), "maildir", path)
        parent, _, leaf = relative.rpartition("/")
        display = leaf.lstrip(".").replace(".", "/") if leaf.startswith(".") else leaf
        name = f"{parent}/{display}" if parent else display
        return _Folder(
            FolderRef(key=relative, name=name, role=folder_role(leaf)), "maildir", path
        )

    def _folder(self, ref: FolderRef) -> _Folder:
        if self._folders is None or ref.key not in self._folders:
            self._folders = {folder.ref.key: folder for folder in self._scan()}
        folder = self._folders.get(ref.key)
        if folder is None:
            raise InputError(
                f"folder {ref.key!r} is not under {self.path}; list the folders again "
                "with folders() and use one of their keys"
            )
        return folder

    # --- Reading

    def read(self, folder: FolderRef, cursor: str | None) -> Iterator[Batch]:
        """Yield batches of the messages after ``cursor``, the last marked complete."""
        for chunk in self.plan(folder, cursor):
            yield from self.read_chunk(chunk)

    def plan(self, folder: FolderRef, cursor: str | None) -> list[ReadChunk]:
        """Split what ``read`` would read into chunks that can be read independently.

        A chunk is one batch of files, or a whole mbox, which can only be read in order.
        Reading the chunks in order gives the batches ``read`` gives.
        """
        spec = self._folder(folder)
        self._now = datetime.now(timezone.utc)
        if spec.layout == "mbox":
            return [ReadChunk(folder, cursor, None, True, str(spec.path))]
        if spec.layout == "single":
            files = [_MessageFile(spec.path.name, spec.path.name, str(spec.path))]
        elif spec.layout == "maildir":
            files = self._maildir_files(spec)
        else:
            files = self._message_files(spec)
        whole = ReadChunk(folder, cursor, tuple(self._ordered(files, cursor)), True)
        return whole.split(self.batch_size)

    def read_chunk(self, chunk: ReadChunk) -> Iterator[Batch]:
        """Yield the batches of one chunk of ``plan``."""
        spec = self._folder(chunk.folder)
        if chunk.files is None:
            yield from self._batches(spec, self._mbox_entries(spec, chunk.cursor), chunk.cursor)
            return
        batch = Batch(
            folder_key=spec.ref.key,
            folder_role=spec.ref.role,
            items=[],
            cursor=chunk.cursor,
            complete=chunk.complete,
        )
        for file in chunk.files:
            self._add(batch, self._read_file(file), spec)
        yield batch

    def _ref_prefix(self, spec: _Folder) -> str:
        return "" if spec.ref.key == "." else spec.ref.key + "/"

    def _message_files(self, spec: _Folder) -> list[_MessageFile]:
        """List the message files of a folder, leaving out hidden files and mboxes."""
        prefix = self._ref_prefix(spec)
        scanned = self._scanned_files.pop(spec.ref.key, None)
        if scanned is not None:
            return [_MessageFile(name, prefix + name, path) for name, path in scanned]
        mbox_paths = {
            str(folder.path)
            for folder in (self._folders or {}).values()
            if folder.layout == "mbox"
        }
        files: list[_MessageFile] = []
        for entry in self._list_directory(spec.path):
            if entry.name.startswith(".") or entry.path in mbox_paths:
                continue
            if not entry.is_file():
                continue
            files.append(_MessageFile(entry.name, prefix + entry.name, entry.path))
        return files

    def _maildir_files(self, spec: _Folder) -> list[_MessageFile]:
        """List cur/ and new/ by unique name, so a message moved to cur/ counts once."""
        prefix = self._ref_prefix(spec)
        by_unique: dict[str, _MessageFile] = {}
        for subdirectory in ("new", "cur"):
            for entry in self._list_directory(spec.path / subdirectory):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                unique = _maildir_unique_name(entry.name)
                source_ref = f"{prefix}{subdirectory}/{entry.name}"
                by_unique[unique] = _MessageFile(unique, source_ref, entry.path)
        return list(by_unique.values())

    def _list_directory(self, path: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as entries:
                return list(entries)
        except OSError as exc:
            self.skip_counts["unreadable-folder"] += 1
            log.warning(
                "skipped folder %s: %s; check its permissions",
                path,
                exc.strerror or exc,
            )
            return []

    @staticmethod
    def _ordered(files: list[_MessageFile], cursor: str | None) -> list[_MessageFile]:
        """Sort files in natural name order and keep those after ``cursor``."""

        def order(file: _MessageFile) -> tuple[tuple[tuple[int, int, str], ...], str]:
            return natural_key(file.position), file.position

        if all(_NUMBERED_FILE.match(file.position) for file in files):
            # Numbered files ('17.') in the same order, from a cheaper key: the number, its
            # digits (so '017.' comes before '17.'), then the name ('17' before '17.').
            ordered = sorted(files, key=_numbered_order)
        else:
            ordered = sorted(files, key=order)
        if cursor:
            after = (natural_key(cursor), cursor)
            ordered = [file for file in ordered if order(file) > after]
        return ordered

    def _read_file(self, file: _MessageFile) -> _Entry:
        try:
            raw = _read_bytes(file.path, self.max_message_bytes)
        except OSError as exc:
            detail = exc.strerror or str(exc)
            skipped = self._skip(file.source_ref, "unreadable", detail)
            return _Entry(file.position, file.source_ref, skipped=skipped)
        if raw is None:
            detail = f"larger than the {self.max_message_bytes}-byte limit"
            skipped = self._skip(file.source_ref, "too-large", detail)
            return _Entry(file.position, file.source_ref, skipped=skipped)
        return _Entry(file.position, file.source_ref, raw=raw)

    def _mbox_entries(self, spec: _Folder, cursor: str | None) -> Iterator[_Entry]:
        done = 0
        if cursor:
            if not cursor.isdigit():
                raise SyncStateExpired(
                    f"cursor {cursor!r} of mbox {spec.ref.key} is not a message count; "
                    "the folder is read again from the start"
                )
            done = int(cursor)
        base_ref = spec.ref.key
        try:
            handle = spec.path.open("rb")
        except OSError as exc:
            yield _Entry(
                cursor or "0",
                base_ref,
                skipped=self._skip(base_ref, "unreadable", exc.strerror or str(exc)),
            )
            return
        number = 0
        with handle:
            for raw in _mbox_messages(handle):
                number += 1
                if number <= done:
                    continue
                source_ref = f"{base_ref}#{number}"
                if len(raw) > self.max_message_bytes:
                    detail = f"larger than the {self.max_message_bytes}-byte limit"
                    yield _Entry(
                        str(number),
                        source_ref,
                        skipped=self._skip(source_ref, "too-large", detail),
                    )
                    continue
                yield _Entry(str(number), source_ref, raw=raw)
        if number < done:
            raise SyncStateExpired(
                f"mbox {spec.ref.key} contains {number} messages but its cursor "
                f"records {done} read; the file was rewritten, so it is read again"
            )

    def _batches(
        self, spec: _Folder, entries: Iterable[_Entry], cursor: str | None
    ) -> Iterator[Batch]:
        role = spec.ref.role
        batch = Batch(
            folder_key=spec.ref.key, folder_role=role, items=[], cursor=cursor
        )
        size = 0
        for entry in entries:
            if size == self.batch_size:
                # Another entry exists, so this batch is not the folder's last.
                yield batch
                batch = Batch(
                    folder_key=spec.ref.key,
                    folder_role=role,
                    items=[],
                    cursor=batch.cursor,
                )
                size = 0
            self._add(batch, entry, spec)
            size += 1
        batch.complete = True
        yield batch

    def _add(self, batch: Batch, entry: _Entry, spec: _Folder) -> None:
        """Add an entry to a batch as an item or a skip, and move the cursor past it."""
        if entry.skipped is not None:
            batch.skipped.append(entry.skipped)
        elif entry.raw is not None:
            parsed = self._parse(entry, spec)
            if isinstance(parsed, MailItem):
                batch.items.append(parsed)
            else:
                batch.skipped.append(parsed)
        batch.cursor = entry.cursor

    def _parse(self, entry: _Entry, spec: _Folder) -> MailItem | SkippedItem:
        raw = entry.raw or b""
        if not raw or raw.isspace():
            return self._skip(entry.source_ref, "not-a-message", "empty file")
        try:
            return parse_message(
                raw,
                source_ref=entry.source_ref,
                folder=spec.ref.key,
                folder_role=spec.ref.role,
                mailbox_tz=self.mailbox_tz,
                bulk_recipient_threshold=self.bulk_recipient_threshold,
                now=self._now,
            )
        except NotAMessage:
            return self._skip(
                entry.source_ref, "not-a-message", "no mail header fields"
            )
        except Exception as exc:  # noqa: BLE001 - one message must not stop an import
            # The exception text may quote header content, so only its type and place
            # are recorded. NOTE: no test reaches this branch, because parse_message
            # raises only NotAMessage on purpose.
            frames = traceback.extract_tb(exc.__traceback__)
            place = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            detail = f"{type(exc).__name__} at {place}"
            log.error("parsing %s failed with %s", entry.source_ref, detail)
            return self._skip(entry.source_ref, "parse-error", detail)

    def _skip(self, source_ref: str, reason: str, detail: str) -> SkippedItem:
        self.skip_counts[reason] += 1
        log.warning(
            "skipped %s under %s: %s (%s)", source_ref, self.path, reason, detail
        )
        return SkippedItem(source_ref=source_ref, reason=reason, detail=detail)


_FIRST_READ_BYTES = 64 * 1024


def _read_bytes(path: str, limit: int) -> bytes | None:
    """Return the content of a file, or None when it is larger than ``limit`` bytes.

    Plain os calls cost less than a buffered file object, which matters per message.
    A first read of 64 KB covers most messages, and a short read of a regular file
    means its end was reached.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        data = os.read(descriptor, _FIRST_READ_BYTES)
        if len(data) < _FIRST_READ_BYTES:
            return data if len(data) <= limit else None
        chunks = [data]
        total = len(data)
        while chunk := os.read(descriptor, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                return None
        return b"".join(chunks) if total <= limit else None
    finally:
        os.close(descriptor)


def _mbox_messages(handle: BinaryIO) -> Iterator[bytes]:
    """Split an mbox stream into raw messages without their 'From ' envelope lines.

    A message starts at a line beginning 'From ' that opens the file or follows a blank
    line, so an unescaped 'From ' inside a paragraph stays in the body. mboxrd quoting
    ('>From ') is undone. Text before the first envelope line counts as a message when
    it is not blank.
    """
    lines: list[bytes] = []
    started = False
    previous_blank = True
    for line in handle:
        if previous_blank and line.startswith(b"From "):
            if started or any(part.strip() for part in lines):
                yield b"".join(lines)
            lines = []
            started = True
        elif line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            lines.append(line[1:])
        else:
            lines.append(line)
        previous_blank = line in (b"\n", b"\r\n")
    if started or any(part.strip() for part in lines):
        yield b"".join(lines)
