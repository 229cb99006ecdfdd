"""FilesSource on real files: Maildir, mbox, .eml, file trees and the Enron corpus."""

from __future__ import annotations

import csv
import gzip
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from bot.errors import ConfigError, InputError, SyncStateExpired
from bot.mail.files import FilesSource, folder_role, natural_key
from bot.mail.source import FolderRef
from bot.mail.types import Batch, FolderRole
from tests.conftest import ROOT, shared_path

ENRON_TARBALL = ("data", "mail", "enron-maildir-9-mailboxes.tar.xz")
ENRON_MANIFEST = ("data", "mail", "enron-maildir-9-mailboxes.manifest.tsv.gz")
CACHE_DIR = ROOT / ".cache" / "mail-tests"


@pytest.fixture(scope="session")
def enron_maildir() -> Path:
    """Return the unpacked Enron 'maildir' folder; the tarball is unpacked once."""
    tarball = shared_path(*ENRON_TARBALL)
    target = CACHE_DIR / f"enron-{tarball.stat().st_size}"
    if not (target / "maildir").is_dir():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=CACHE_DIR))
        with tarfile.open(tarball) as archive:
            archive.extractall(staging, filter="data")
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging)  # another test run unpacked it first
    return target / "maildir"


@pytest.fixture(scope="session")
def enron_manifest() -> list[dict[str, str]]:
    """Return the manifest rows: path, folder, message_id, date_utc, from and counts."""
    with gzip.open(shared_path(*ENRON_MANIFEST), "rt", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def message(
    subject: str,
    sender: str = "Ana Ruiz <ana.ruiz@harborfinch.example>",
    body: str = "",
) -> bytes:
    return (
        f"From: {sender}\r\n"
        "To: Robin Hale <robin.hale@example.org>\r\n"
        f"Subject: {subject}\r\n"
        "Date: Tue, 04 Jun 2024 10:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@harborfinch.example>\r\n"
        "\r\n"
        f"{body or subject}\r\n"
    ).encode()


def read_all(
    source: FilesSource, folder: FolderRef, cursor: str | None = None
) -> list[Batch]:
    return list(source.read(folder, cursor))


def folder_by_key(source: FilesSource, key: str) -> FolderRef:
    folders = {folder.key: folder for folder in source.folders()}
    assert key in folders, f"folder {key!r} not in {sorted(folders)}"
    return folders[key]


# --- Folder roles and ordering


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("sent", FolderRole.SENT),
        ("sent_items", FolderRole.SENT),
        ("_sent_mail", FolderRole.SENT),
        ("Sent Items", FolderRole.SENT),
        ("Sent Mail", FolderRole.SENT),
        ("Gesendete Elemente", FolderRole.SENT),
        ("Éléments envoyés", FolderRole.SENT),
        (
            "E\u0301le\u0301ments envoye\u0301s",
            FolderRole.SENT,
        ),  # NFD, as macOS stores it
        ("Enviados", FolderRole.SENT),
        ("[Gmail]/Sent Mail", FolderRole.SENT),
        (".Sent", FolderRole.SENT),
        (".INBOX.Sent Items", FolderRole.SENT),
        ("allen-p/_sent_mail", FolderRole.SENT),
        ("inbox", FolderRole.INBOX),
        ("INBOX", FolderRole.INBOX),
        ("allen-p/inbox", FolderRole.INBOX),
        ("notes_inbox", FolderRole.OTHER),
        ("all_documents", FolderRole.OTHER),
        ("Sent to accounting", FolderRole.OTHER),
        ("deleted_items", FolderRole.OTHER),
        ("", FolderRole.OTHER),
    ],
)
def test_folder_role_from_name(name: str, role: FolderRole) -> None:
    assert folder_role(name) is role


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["10.", "9.", "1.", "100.", "2.", "1a.", "a."]
    assert sorted(names, key=natural_key) == [
        "1.",
        "1a.",
        "2.",
        "9.",
        "10.",
        "100.",
        "a.",
    ]


def test_numbered_files_sort_in_natural_order(tmp_path: Path) -> None:
    names = ["10.", "017.", "9", "17.", "17", "9.", "0.", "100", "1."]
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(message(f"message {name}"))
    source = FilesSource(tmp_path)
    [chunk] = source.plan(folder_by_key(source, "inbox"), None)
    expected = sorted(names, key=lambda name: (natural_key(name), name))
    assert [file.position for file in chunk.files] == expected
    assert expected[:5] == ["0.", "1.", "9", "9.", "10."]
    # The cursor keeps only the files after it, in the same order.
    [rest] = source.plan(folder_by_key(source, "inbox"), "17")
    assert [file.position for file in rest.files] == ["17.", "100"]


def test_files_read_in_numeric_order(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    for number in (10, 9, 1, 2, 11):
        (folder / f"{number}.").write_bytes(message(f"message {number}"))
    source = FilesSource(tmp_path, batch_size=2)
    batches = read_all(source, folder_by_key(source, "inbox"))
    refs = [item.source_ref for batch in batches for item in batch.items]
    assert refs == ["inbox/1.", "inbox/2.", "inbox/9.", "inbox/10.", "inbox/11."]
    assert [batch.cursor for batch in batches] == ["2.", "10.", "11."]
    assert [batch.complete for batch in batches] == [False, False, True]
    assert all(batch.folder_role is FolderRole.INBOX for batch in batches)


# --- Cursors


def test_resume_after_cursor(tmp_path: Path) -> None:
    folder = tmp_path / "sent"
    folder.mkdir()
    for number in range(1, 6):
        (folder / f"{number}.").write_bytes(message(f"message {number}"))
    source = FilesSource(tmp_path, batch_size=2)
    ref = folder_by_key(source, "sent")
    first = next(iter(source.read(ref, None)))
    assert first.cursor == "2."
    assert first.complete is False

    resumed = read_all(source, ref, first.cursor)
    subjects = [item.subject for batch in resumed for item in batch.items]
    assert subjects == ["message 3", "message 4", "message 5"]
    assert resumed[-1].complete is True
    assert resumed[-1].cursor == "5."


def test_resume_finds_only_new_files(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "1.").write_bytes(message("first"))
    source = FilesSource(tmp_path)
    ref = folder_by_key(source, "inbox")
    cursor = read_all(source, ref)[-1].cursor
    (folder / "2.").write_bytes(message("second"))

    batches = read_all(source, ref, cursor)
    assert [item.subject for batch in batches for item in batch.items] == ["second"]


def test_cursor_at_end_gives_empty_complete_batch(tmp_path: Path) -> None:
    (tmp_path / "1.").write_bytes(message("only"))
    source = FilesSource(tmp_path)
    ref = folder_by_key(source, ".")
    batches = read_all(source, ref, "1.")
    assert len(batches) == 1
    assert batches[0].items == []
    assert batches[0].complete is True
    assert batches[0].cursor == "1."


def test_batch_size_splits_folder(tmp_path: Path) -> None:
    for number in range(1, 1202):
        (tmp_path / f"{number}.").write_bytes(message(f"m{number}"))
    source = FilesSource(tmp_path)
    batches = read_all(source, folder_by_key(source, "."))
    assert [len(batch.items) for batch in batches] == [500, 500, 201]
    assert [batch.complete for batch in batches] == [False, False, True]


# --- Files that are not messages


def test_broken_files_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "1.").write_bytes(message("good"))
    (tmp_path / "2.").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    )
    (tmp_path / "3.").write_bytes(b"")
    (tmp_path / "4.").write_bytes(b"x" * 2048)
    (tmp_path / ".hidden").write_bytes(message("hidden"))
    source = FilesSource(tmp_path, max_message_bytes=1024)
    with caplog.at_level(logging.WARNING, logger="bot.mail.files"):
        batches = read_all(source, folder_by_key(source, "."))

    items = [item for batch in batches for item in batch.items]
    skipped = {
        entry.source_ref: entry.reason for batch in batches for entry in batch.skipped
    }
    assert [item.subject for item in items] == ["good"]
    assert skipped == {"2.": "not-a-message", "3.": "not-a-message", "4.": "too-large"}
    assert source.skip_counts == {"not-a-message": 2, "too-large": 1}
    logged = [record.getMessage() for record in caplog.records]
    assert any("2." in line and "not-a-message" in line for line in logged)
    assert any("4." in line and "too-large" in line for line in logged)


def test_large_message_read_whole(tmp_path: Path) -> None:
    body = "x" * 79 + "\n"
    (tmp_path / "1.").write_bytes(message("large", body=body * 3000))
    source = FilesSource(tmp_path)
    (batch,) = read_all(source, folder_by_key(source, "."))
    assert [item.subject for item in batch.items] == ["large"]
    small = FilesSource(tmp_path, max_message_bytes=200_000)
    (batch,) = read_all(small, folder_by_key(small, "."))
    assert [entry.reason for entry in batch.skipped] == ["too-large"]


def test_file_removed_during_read_is_unreadable(tmp_path: Path) -> None:
    for number in (1, 2, 3):
        (tmp_path / f"{number}.").write_bytes(message(f"m{number}"))
    source = FilesSource(tmp_path, batch_size=1)
    batches = source.read(folder_by_key(source, "."), None)
    first = next(batches)
    # Batches are yielded once the next file is read, so file 3 is still unread here.
    (tmp_path / "3.").unlink()
    rest = list(batches)

    assert [item.subject for item in first.items] == ["m1"]
    assert [item.subject for batch in rest for item in batch.items] == ["m2"]
    assert [(entry.source_ref, entry.reason) for entry in rest[-1].skipped] == [
        ("3.", "unreadable")
    ]
    assert rest[-1].cursor == "3."
    assert source.skip_counts["unreadable"] == 1


def test_fifo_in_tree_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "1.").write_bytes(message("good"))
    os.mkfifo(tmp_path / "pipe")
    source = FilesSource(tmp_path)
    batches = read_all(source, folder_by_key(source, "."))
    assert [item.subject for batch in batches for item in batch.items] == ["good"]
    assert all(batch.skipped == [] for batch in batches)


# --- Layouts


def write_maildir(path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)


def test_maildir_with_cur_new_and_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_maildir(root)
    write_maildir(root / ".Sent")
    write_maildir(root / ".Archive.2023")
    (root / "cur" / "1700000001.M1P1.host:2,S").write_bytes(message("seen"))
    (root / "new" / "1700000002.M2P1.host").write_bytes(message("unseen"))
    (root / "tmp" / "1700000003.M3P1.host").write_bytes(message("being delivered"))
    (root / "dovecot-uidlist").write_bytes(b"3 V1 N4\n")
    (root / ".Sent" / "cur" / "1700000004.M4P1.host:2,S").write_bytes(
        message("sent one")
    )
    (root / ".Archive.2023" / "cur" / "1600000000.M5P1.host:2,").write_bytes(
        message("old")
    )

    source = FilesSource(root)
    folders = {folder.key: folder for folder in source.folders()}
    assert set(folders) == {".", ".Sent", ".Archive.2023"}
    assert folders["."].name == "INBOX"
    assert folders["."].role is FolderRole.INBOX
    assert folders[".Sent"].name == "Sent"
    assert folders[".Sent"].role is FolderRole.SENT
    assert folders[".Archive.2023"].name == "Archive/2023"
    assert folders[".Archive.2023"].role is FolderRole.OTHER

    inbox = read_all(source, folders["."])
    assert [item.subject for batch in inbox for item in batch.items] == [
        "seen",
        "unseen",
    ]
    assert [item.source_ref for batch in inbox for item in batch.items] == [
        "cur/1700000001.M1P1.host:2,S",
        "new/1700000002.M2P1.host",
    ]
    assert inbox[-1].cursor == "1700000002.M2P1.host"
    sent = read_all(source, folders[".Sent"])
    assert [item.folder_role for batch in sent for item in batch.items] == [
        FolderRole.SENT
    ]


def test_maildir_flag_change_does_not_repeat(tmp_path: Path) -> None:
    write_maildir(tmp_path)
    (tmp_path / "new" / "1700000001.M1P1.host").write_bytes(message("first"))
    source = FilesSource(tmp_path)
    ref = folder_by_key(source, ".")
    cursor = read_all(source, ref)[-1].cursor
    # A mail client moves the message to cur/ and adds flags after it was read.
    os.rename(
        tmp_path / "new" / "1700000001.M1P1.host",
        tmp_path / "cur" / "1700000001.M1P1.host:2,S",
    )
    (tmp_path / "new" / "1700000009.M2P1.host").write_bytes(message("second"))

    batches = read_all(source, ref, cursor)
    assert [item.subject for batch in batches for item in batch.items] == ["second"]


def mbox_bytes(*messages: bytes) -> bytes:
    parts = []
    for index, raw in enumerate(messages):
        envelope = f"From sender{index}@example.net Tue Jun  4 10:00:0{index} 2024\n"
        parts.append(envelope.encode() + raw.replace(b"\r\n", b"\n") + b"\n")
    return b"".join(parts)


def test_mbox_file_as_folder(tmp_path: Path) -> None:
    body = "Line one\nFrom the start this was planned.\n\n>From quoted line"
    path = tmp_path / "Sent.mbox"
    path.write_bytes(
        mbox_bytes(message("one", body=body), message("two"), message("three"))
    )
    source = FilesSource(path, batch_size=2)
    (ref,) = source.folders()
    assert ref.key == "Sent.mbox"
    assert ref.name == "Sent"
    assert ref.role is FolderRole.SENT

    batches = read_all(source, ref)
    items = [item for batch in batches for item in batch.items]
    assert [item.subject for item in items] == ["one", "two", "three"]
    assert [item.source_ref for item in items] == [
        "Sent.mbox#1",
        "Sent.mbox#2",
        "Sent.mbox#3",
    ]
    assert [batch.cursor for batch in batches] == ["2", "3"]

    resumed = read_all(source, ref, "2")
    assert [item.subject for batch in resumed for item in batch.items] == ["three"]


def test_mbox_rewritten_shorter_expires_cursor(tmp_path: Path) -> None:
    path = tmp_path / "archive.mbox"
    path.write_bytes(mbox_bytes(message("one")))
    source = FilesSource(path)
    (ref,) = source.folders()
    with pytest.raises(SyncStateExpired, match="contains 1 messages"):
        read_all(source, ref, "5")
    with pytest.raises(SyncStateExpired, match="not a message count"):
        read_all(source, ref, "cur/123.host")


def test_directory_of_mbox_and_eml_files(tmp_path: Path) -> None:
    (tmp_path / "Inbox").write_bytes(
        mbox_bytes(message("in mbox 1"), message("in mbox 2"))
    )
    (tmp_path / "Inbox.msf").write_bytes(b'// <!-- <mdb:mork:z v="1.4"/> -->\n')
    (tmp_path / "note.eml").write_bytes(message("saved eml"))
    nested = tmp_path / "Projects"
    nested.mkdir()
    (nested / "Sent Items.mbox").write_bytes(mbox_bytes(message("sent from mbox")))

    source = FilesSource(tmp_path)
    folders = {folder.key: folder for folder in source.folders()}
    assert set(folders) == {".", "Inbox", "Projects/Sent Items.mbox"}
    assert folders["Inbox"].role is FolderRole.INBOX
    assert folders["Projects/Sent Items.mbox"].role is FolderRole.SENT
    assert folders["Projects/Sent Items.mbox"].name == "Projects/Sent Items"

    mbox = read_all(source, folders["Inbox"])
    assert [item.subject for batch in mbox for item in batch.items] == [
        "in mbox 1",
        "in mbox 2",
    ]
    loose = read_all(source, folders["."])
    assert [item.subject for batch in loose for item in batch.items] == ["saved eml"]
    assert [entry.source_ref for batch in loose for entry in batch.skipped] == [
        "Inbox.msf"
    ]


def test_single_eml_file(tmp_path: Path) -> None:
    path = tmp_path / "offer.eml"
    path.write_bytes(message("offer"))
    source = FilesSource(path)
    (ref,) = source.folders()
    assert ref.key == "offer.eml"
    batches = read_all(source, ref)
    assert [item.source_ref for batch in batches for item in batch.items] == [
        "offer.eml"
    ]
    assert batches[-1].complete is True
    assert read_all(source, ref, batches[-1].cursor)[0].items == []


def test_case_inputs_folder(cases_dir: Path) -> None:
    source = FilesSource(cases_dir, mailbox_tz="Europe/Berlin")
    folders = {folder.key: folder for folder in source.folders()}
    assert {"B04.mbox", "B13.mbox", "B15.mbox", "B20.mbox", "B22.mbox"} <= set(folders)
    loose = read_all(source, folders["."])
    subjects = {
        item.source_ref: item.subject for batch in loose for item in batch.items
    }
    assert subjects["B01.eml"] == "Intro call next week"
    assert subjects["B06.eml"] == "Quarterly numbers"
    skipped = {entry.source_ref for batch in loose for entry in batch.skipped}
    assert "README.md" in skipped
    b22 = read_all(source, folders["B22.mbox"])
    assert len([item for batch in b22 for item in batch.items]) == 4


def test_maildir_subfolder_given_directly(tmp_path: Path) -> None:
    sent = tmp_path / "Maildir" / ".Sent"
    write_maildir(sent)
    (sent / "cur" / "1700000004.M4P1.host:2,S").write_bytes(message("sent one"))
    (ref,) = FilesSource(sent).folders()
    assert ref.key == "."
    assert ref.name == "Sent"
    assert ref.role is FolderRole.SENT


def test_isync_layout_of_named_maildirs(tmp_path: Path) -> None:
    for name in ("Inbox", "Sent", "Archive"):
        write_maildir(tmp_path / name)
        (tmp_path / name / "cur" / "1700000001.M1P1.host:2,S").write_bytes(
            message(name)
        )
    folders = {folder.key: folder for folder in FilesSource(tmp_path).folders()}
    assert {key: folder.role for key, folder in folders.items()} == {
        "Archive": FolderRole.OTHER,
        "Inbox": FolderRole.INBOX,
        "Sent": FolderRole.SENT,
    }


# --- Errors at construction


def test_missing_path_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        FilesSource(tmp_path / "absent")


def test_unknown_time_zone_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        FilesSource(tmp_path, mailbox_tz="Mars/Olympus")


def test_unknown_folder_key_rejected(tmp_path: Path) -> None:
    (tmp_path / "1.").write_bytes(message("one"))
    source = FilesSource(tmp_path)
    with pytest.raises(InputError, match="not under"):
        read_all(
            source, FolderRef(key="nowhere", name="nowhere", role=FolderRole.OTHER)
        )


# --- The Enron corpus


def test_enron_mailbox_folders_and_counts(
    enron_maildir: Path, enron_manifest: list[dict[str, str]]
) -> None:
    source = FilesSource(enron_maildir / "allen-p")
    folders = {folder.key: folder for folder in source.folders()}
    expected = {row["folder"] for row in enron_manifest if row["mailbox"] == "allen-p"}
    assert set(folders) == expected
    assert folders["_sent_mail"].role is FolderRole.SENT
    assert folders["sent_items"].role is FolderRole.SENT
    assert folders["inbox"].role is FolderRole.INBOX
    assert folders["all_documents"].role is FolderRole.OTHER

    read = 0
    for ref in folders.values():
        for batch in source.read(ref, None):
            assert batch.skipped == []
            read += len(batch.items)
    assert read == sum(1 for row in enron_manifest if row["mailbox"] == "allen-p")
    assert source.skip_counts == {}


def test_enron_folder_in_numeric_order(enron_maildir: Path) -> None:
    source = FilesSource(enron_maildir / "allen-p")
    batches = read_all(source, folder_by_key(source, "_sent_mail"))
    refs = [item.source_ref for batch in batches for item in batch.items]
    numbers = [int(ref.split("/")[-1].rstrip(".")) for ref in refs]
    assert numbers == sorted(numbers)
    assert refs[:11] == [f"_sent_mail/{number}." for number in range(1, 12)]
    sender = batches[0].items[0].sender
    assert sender is not None
    assert sender.address == "phillip.allen@enron.com"
    assert sender.name == "Phillip K Allen"
