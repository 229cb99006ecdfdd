"""Large file imports read in forked reader processes store exactly what one process stores."""

from __future__ import annotations

import gc
import logging
import mailbox as mailbox_module
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.config import Settings
from bot.mail import ingest, readahead
from bot.mail.files import FilesSource
from bot.mail.ingest import ImportJob, _fewer_collections, ensure_mailbox, import_source, import_sources
from bot.demo import ENRON_OWNERS
from bot.sample import generate
from bot.storage.db import make_engine
from bot.storage.schema import create_schema
from tests.helpers import ListSource, crash_on_cursor_save, mail
from tests.mail.test_files import enron_maildir  # noqa: F401 - fixture

OWNER = "robin.hale@northwind.example"
SETTINGS = Settings()


@pytest.fixture
def corpus(tmp_path) -> Path:
    """The sample mailbox, plus copies of its inbox in another folder, an mbox and bad files."""
    root = generate(tmp_path / "mail")
    inbox = next(p for p in root.rglob("*") if p.is_dir() and p.name == "inbox")
    copies = root / "archive"
    shutil.copytree(inbox, copies)
    (copies / "cur" if (copies / "cur").is_dir() else copies).joinpath("empty-file").write_bytes(b"")
    box = mailbox_module.mbox(str(root / "lists.mbox"))
    for number in range(40):
        box.add(
            f"From: Ann Lee <ann{number % 5}@partner.example>\nTo: {OWNER}\n"
            f"Date: Mon, 1 Jun 2026 10:{number:02d}:00 +0000\nSubject: note {number}\n\nbody {number}\n"
        )
    box.add("From: Ann Lee <ann0@partner.example>\nSubject: no date\n\nx\n")
    box.add("From: nobody\nDate: Mon, 1 Jun 2026 11:00:00 +0000\nSubject: no address\n\nx\n")
    box.flush()
    return root


def fail_reads_in_readers(monkeypatch, fails) -> None:  # type: ignore[no-untyped-def]
    """Make reader processes raise on the chunks for which ``fails(source, chunk)`` is true."""
    parent = os.getpid()
    original = FilesSource.read_chunk

    def failing(self, chunk):  # type: ignore[no-untyped-def]
        if os.getpid() != parent and fails(self, chunk):
            raise RuntimeError("disk read failed")
        return original(self, chunk)

    monkeypatch.setattr(FilesSource, "read_chunk", failing)


def fresh_sqlite(path: Path):
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    return engine


def run_import(engine, root: Path, *, readers: int, batch_size: int = 9, owner: str = OWNER):
    box = ensure_mailbox(engine, owner)
    source = FilesSource(root, batch_size=batch_size)
    return import_source(engine, box, source, settings=SETTINGS, readers=readers)


def snapshot(engine) -> dict:
    """Everything an import writes, without ids, in a form both backends print alike."""
    queries = {
        "messages": """
            SELECT b.owner_address, m.fingerprint, m.internet_message_id, m.in_reply_to, m.subject_key, m.source_ref,
                   m.folder_role, CAST(m.sent_at AS VARCHAR), m.date_defect, a.address, m.recipient_count,
                   m.is_bulk, m.is_auto_reply, m.copies
            FROM message m JOIN mailbox b ON b.id = m.mailbox_id LEFT JOIN address a ON a.id = m.from_address_id""",
        "participants": """
            SELECT b.owner_address, m.fingerprint, a.address, p.role FROM messageparticipant p
            JOIN message m ON m.id = p.message_id JOIN mailbox b ON b.id = m.mailbox_id
            JOIN address a ON a.id = p.address_id""",
        "addresses": "SELECT a.address, a.domain, a.display_name, a.kind, a.is_freemail, p.display_name, p.kind "
        "FROM address a JOIN person p ON p.id = a.person_id",
        "folders": "SELECT b.owner_address, f.folder_key, f.folder_role, f.cursor, f.items_stored "
        "FROM folderstate f JOIN mailbox b ON b.id = f.mailbox_id",
    }
    with engine.connect() as connection:
        result = {
            name: sorted(
                (tuple(str(value)[:19] if "sent_at" in str(key) else value for key, value in row._mapping.items()) for row in connection.execute(text(sql))),
                key=repr,
            )
            for name, sql in queries.items()
        }
    return result


def test_readers_store_what_one_process_stores(engine, corpus, tmp_path):
    reference_engine = fresh_sqlite(tmp_path / "reference.db")
    expected = run_import(reference_engine, corpus, readers=0)
    got = run_import(engine, corpus, readers=2)
    assert got.as_dict() == expected.as_dict()
    assert got.stored > 100
    assert got.duplicates > 50
    assert got.skipped == {"not-a-message": 1, "missing-date": 1, "no-participants": 1}
    assert snapshot(engine) == snapshot(reference_engine)
    # Importing again adds nothing, whichever way it reads.
    again = run_import(engine, corpus, readers=2)
    assert again.stored == 0
    assert again.duplicates == expected.stored + expected.duplicates


def test_failed_reader_leaves_folder_to_importer(engine, corpus, tmp_path, monkeypatch, caplog):
    reference_engine = fresh_sqlite(tmp_path / "reference.db")
    expected = run_import(reference_engine, corpus, readers=0)
    seen = {"count": 0}

    def third_chunk(source, chunk):  # type: ignore[no-untyped-def]
        seen["count"] += 1
        return seen["count"] == 3

    fail_reads_in_readers(monkeypatch, third_chunk)
    with caplog.at_level(logging.WARNING, logger="bot.mail.ingest"):
        got = run_import(engine, corpus, readers=1)
    assert "RuntimeError: disk read failed" in caplog.text
    assert "in this process" in caplog.text
    assert got.as_dict() == expected.as_dict()
    assert snapshot(engine) == snapshot(reference_engine)


def test_dead_reader_leaves_rest_to_importer(engine, corpus, tmp_path, monkeypatch, caplog):
    reference_engine = fresh_sqlite(tmp_path / "reference.db")
    expected = run_import(reference_engine, corpus, readers=0)
    parent = os.getpid()
    original = FilesSource.read_chunk

    def dying(self, chunk):  # type: ignore[no-untyped-def]
        if os.getpid() != parent and chunk.folder.key.endswith("sent"):
            os._exit(3)
        return original(self, chunk)

    monkeypatch.setattr(FilesSource, "read_chunk", dying)
    with caplog.at_level(logging.WARNING, logger="bot.mail.ingest"):
        got = run_import(engine, corpus, readers=2)
    assert "the reader process ended" in caplog.text
    assert got.as_dict() == expected.as_dict()
    assert snapshot(engine) == snapshot(reference_engine)


def test_interrupted_import_resumes_after_last_batch(engine, corpus, tmp_path, monkeypatch):
    reference_engine = fresh_sqlite(tmp_path / "reference.db")
    expected = run_import(reference_engine, corpus, readers=0)
    # One batch a transaction, so that the crash comes after three commits.
    monkeypatch.setattr(ingest, "GROUP_MESSAGES", 1)
    with crash_on_cursor_save(4, KeyboardInterrupt()), pytest.raises(KeyboardInterrupt):
        run_import(engine, corpus, readers=2)
    with engine.connect() as connection:
        committed = connection.execute(text("SELECT COUNT(*) FROM message")).scalar()
        counted = connection.execute(text("SELECT SUM(items_stored) FROM folderstate")).scalar()
    assert 0 < committed <= 3 * 9  # the three batches written before the crash
    assert counted == committed
    resumed = run_import(engine, corpus, readers=2)
    assert resumed.stored == expected.stored - committed
    assert snapshot(engine)["messages"] == snapshot(reference_engine)["messages"]
    assert [p for p in readahead_children() if p.is_alive()] == []


def test_crash_rolls_back_whole_group(engine, corpus, tmp_path):
    reference_engine = fresh_sqlite(tmp_path / "reference.db")
    expected = run_import(reference_engine, corpus, readers=0)
    with crash_on_cursor_save(6, KeyboardInterrupt()), pytest.raises(KeyboardInterrupt):
        run_import(engine, corpus, readers=2)
    with engine.connect() as connection:
        committed = connection.execute(text("SELECT COUNT(*) FROM message")).scalar()
        counted = connection.execute(text("SELECT COALESCE(SUM(items_stored), 0) FROM folderstate")).scalar()
    # Rows and cursors commit together, however many batches a transaction contains.
    assert committed < expected.stored
    assert counted == committed
    resumed = run_import(engine, corpus, readers=2)
    assert resumed.stored == expected.stored - committed
    assert snapshot(engine) == snapshot(reference_engine)


def test_batches_ready_share_transaction(engine, corpus, tmp_path, monkeypatch):
    reference_engine = fresh_sqlite(tmp_path / "reference.db")
    expected = run_import(reference_engine, corpus, readers=0)
    original = ingest.Importer._store_prepared
    sizes: list[int] = []

    def slow_first(self, batches, summary):  # type: ignore[no-untyped-def]
        if not sizes:
            time.sleep(1.0)  # the readers deliver the rest meanwhile
        sizes.append(len(batches))
        return original(self, batches, summary)

    monkeypatch.setattr(ingest.Importer, "_store_prepared", slow_first)
    summary = run_import(engine, corpus, readers=1)
    assert max(sizes) > 1
    assert len(sizes) < sum(sizes)  # fewer transactions than batches
    assert summary.stored == expected.stored
    assert snapshot(engine) == snapshot(reference_engine)


def readahead_children():  # type: ignore[no-untyped-def]
    import multiprocessing

    return [p for p in multiprocessing.active_children() if p.name.startswith("mail-reader")]


def test_chunks_read_the_batches_read_gives(corpus):
    source = FilesSource(corpus, batch_size=4)
    for folder in source.folders():
        whole = [(b.cursor, b.complete, [i.source_ref for i in b.items], [s.source_ref for s in b.skipped]) for b in source.read(folder, None)]
        chunks = [part for chunk in source.plan(folder, None) for part in chunk.split(3)]
        parts = [
            (b.cursor, b.complete, [i.source_ref for i in b.items], [s.source_ref for s in b.skipped])
            for chunk in chunks
            for b in source.read_chunk(chunk)
        ]
        assert [ref for batch in parts for ref in batch[2] + batch[3]] == [ref for batch in whole for ref in batch[2] + batch[3]]
        assert parts[-1][:2] == whole[-1][:2]
        assert all(not complete for _, complete, _, _ in parts[:-1])
        # Each chunk starts where the one before it ended.
        for before, after in zip(chunks, chunks[1:]):
            if before.files and after.files:
                assert after.cursor == before.files[-1].position


def test_auto_readers_need_large_single_thread_import(monkeypatch, corpus):
    source = FilesSource(corpus)
    chunks = [chunk for folder in source.folders() for chunk in source.plan(folder, None)]
    monkeypatch.setattr(readahead.threading, "active_count", lambda: 1)
    monkeypatch.setattr(readahead.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    count = readahead._message_estimate(chunks)
    monkeypatch.setattr(readahead, "MIN_MESSAGES", count + 1)
    assert readahead.auto_readers(chunks) == 0
    monkeypatch.setattr(readahead, "MIN_MESSAGES", count)
    assert readahead.auto_readers(chunks) == readahead.MAX_READERS
    monkeypatch.setattr(readahead.threading, "active_count", lambda: 2)
    assert readahead.auto_readers(chunks) == 0  # forking a threaded process is unsafe
    monkeypatch.setattr(readahead.threading, "active_count", lambda: 1)
    monkeypatch.setattr(readahead.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert readahead.auto_readers(chunks) == 1  # the importer reads too
    monkeypatch.setattr(readahead.os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert readahead.auto_readers(chunks) == 0


def test_collections_are_relaxed_only_during_imports():
    before = gc.get_threshold()
    with _fewer_collections():
        assert gc.get_threshold()[0] == 50_000
        with _fewer_collections():
            assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == 50_000
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("readers", [0, 2])
def test_import_unfreezes_written_objects(engine, corpus, readers, monkeypatch):
    counts: list[int] = []
    original = ingest.Importer._store_prepared

    def counting(self, batches, summary):  # type: ignore[no-untyped-def]
        counts.append(gc.get_freeze_count())
        return original(self, batches, summary)

    monkeypatch.setattr(ingest.Importer, "_store_prepared", counting)
    run_import(engine, corpus, readers=readers)
    # Each write freezes what exists after it, so the frozen count grows during the import.
    assert len(counts) >= 2
    assert counts[-1] > counts[0]
    assert gc.get_freeze_count() == 0


def test_enron_mailbox_reads_the_same_with_readers(enron_maildir, tmp_path):  # noqa: F811
    """Real mail: all of fossum-d, with the copies of each message in several folders."""
    owner = ENRON_OWNERS["fossum-d"]
    results = {}
    for readers in (0, 2):
        engine = fresh_sqlite(tmp_path / f"readers-{readers}.db")
        box = ensure_mailbox(engine, owner)
        summary = import_source(engine, box, FilesSource(enron_maildir / "fossum-d"), settings=SETTINGS, readers=readers)
        results[readers] = (summary.as_dict(), snapshot(engine))
        engine.dispose()
    assert results[2] == results[0]
    summary = results[2][0]
    assert summary["read"] == 4796
    assert summary["stored"] + summary["duplicates"] + sum(summary["skipped"].values()) == 4796


@pytest.mark.parametrize("readers", [0, 2])
def test_copy_adds_name_stored_message_lacks(engine, tmp_path, readers):
    message = (
        "From: {owner}\nTo: {to}\nDate: Mon, 1 Jun 2026 10:00:00 +0000\n"
        "Message-ID: <{mid}@northwind.example>\nSubject: plan\n\nsee you\n"
    )
    for folder, to, mid in (("a-sent", "ann@partner.example", "first"), ("b-archive", "Ann Lee <ann@partner.example>", "second")):
        (tmp_path / "mail" / folder).mkdir(parents=True)
        (tmp_path / "mail" / folder / "1").write_text(message.format(owner=OWNER, to=to, mid=mid))
    summary = run_import(engine, tmp_path / "mail", readers=readers)
    assert summary.stored == 1
    assert summary.duplicates == 1
    with engine.connect() as connection:
        name = connection.execute(text("SELECT display_name FROM address WHERE address = 'ann@partner.example'")).scalar()
    assert name == "Ann Lee"


SECOND_OWNER = "kai.berg@example.org"


@pytest.fixture
def team(tmp_path) -> list[tuple[Path, str]]:
    """Two mailboxes of different sample mail, the first with copies and an empty file."""
    first = generate(tmp_path / "team" / "robin")
    inbox = next(p for p in first.rglob("*") if p.is_dir() and p.name == "inbox")
    copies = first / "archive"
    shutil.copytree(inbox, copies)
    (copies / "cur" if (copies / "cur").is_dir() else copies).joinpath("empty").write_bytes(b"")
    second = generate(tmp_path / "team" / "kai", seed=11)
    return [(first, OWNER), (second, SECOND_OWNER)]


def run_together(engine, team: list[tuple[Path, str]], *, readers: int):
    jobs = [ImportJob(ensure_mailbox(engine, owner), FilesSource(path, batch_size=9)) for path, owner in team]
    return import_sources(engine, jobs, settings=SETTINGS, readers=readers)


def separate_reference(tmp_path, team: list[tuple[Path, str]]):
    engine = fresh_sqlite(tmp_path / "separate.db")
    summaries = [run_import(engine, path, readers=0, owner=owner).as_dict() for path, owner in team]
    return engine, summaries


@pytest.mark.parametrize("readers", [0, 2])
def test_one_run_matches_separate_imports(engine, team, tmp_path, readers):
    reference, expected = separate_reference(tmp_path, team)
    got = run_together(engine, team, readers=readers)
    assert [summary.as_dict() for summary in got] == expected
    assert all(summary["stored"] > 50 for summary in expected)
    assert expected[0]["duplicates"] > 50
    assert snapshot(engine) == snapshot(reference)
    with engine.connect() as connection:
        outcomes = connection.execute(text("SELECT outcome FROM syncrun ORDER BY id")).scalars().all()
    assert outcomes == ["ok", "ok"]
    again = run_together(engine, team, readers=readers)
    assert [summary.stored for summary in again] == [0, 0]


@pytest.mark.parametrize("readers", [0, 2])
def test_runs_record_counts_once(engine, team, readers):
    # A file mailbox, read ahead, then one read in this process from another kind of source.
    items = [mail(f"p{number}@example.com", [SECOND_OWNER], number / 10, f"Note {number}") for number in range(7)]
    jobs = [
        ImportJob(ensure_mailbox(engine, OWNER), FilesSource(team[0][0], batch_size=9)),
        ImportJob(ensure_mailbox(engine, SECOND_OWNER), ListSource(items, batch_size=3)),
    ]
    got = import_sources(engine, jobs, settings=SETTINGS, readers=readers)
    assert got[1].stored == 7
    with engine.connect() as connection:
        runs = connection.execute(
            text("SELECT mailbox_id, outcome, finished_at IS NOT NULL FROM syncrun ORDER BY id")
        ).all()
        boxes = connection.execute(
            text("SELECT id, messages_read, messages_skipped, last_import_at IS NOT NULL FROM mailbox ORDER BY id")
        ).all()
    assert [tuple(run) for run in runs] == [(jobs[0].mailbox.id, "ok", True), (jobs[1].mailbox.id, "ok", True)]
    assert [tuple(box) for box in boxes] == [
        (jobs[0].mailbox.id, got[0].read, got[0].skipped_total, True),
        (jobs[1].mailbox.id, 7, 0, True),
    ]


def test_failed_reader_in_second_mailbox(engine, team, tmp_path, monkeypatch, caplog):
    reference, expected = separate_reference(tmp_path, team)
    second = team[1][0]
    fail_reads_in_readers(monkeypatch, lambda source, chunk: source.path == second and chunk.folder.role.value == "sent")
    with caplog.at_level(logging.WARNING, logger="bot.mail.ingest"):
        got = run_together(engine, team, readers=2)
    assert "RuntimeError: disk read failed" in caplog.text
    assert [summary.as_dict() for summary in got] == expected
    assert snapshot(engine) == snapshot(reference)


def test_error_fails_unfinished_mailboxes(engine, team, tmp_path):
    reference, expected = separate_reference(tmp_path, team)
    with crash_on_cursor_save(30, RuntimeError("disk full")), pytest.raises(RuntimeError):
        run_together(engine, team, readers=2)
    with engine.connect() as connection:
        runs = connection.execute(text("SELECT outcome, error FROM syncrun ORDER BY id")).all()
    assert [tuple(run) for run in runs] == [("failed", "RuntimeError: disk full")] * 2
    resumed = run_together(engine, team, readers=2)
    assert resumed[1].stored == expected[1]["stored"]
    assert snapshot(engine)["messages"] == snapshot(reference)["messages"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe buffer sizes are set with a Linux fcntl")
def test_reader_pipes_hold_a_megabyte():
    import fcntl
    import multiprocessing

    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    try:
        readahead._widen(sender)
        f_getpipe_sz = 1032
        assert fcntl.fcntl(sender.fileno(), f_getpipe_sz) >= min(readahead.PIPE_BYTES, int(Path("/proc/sys/fs/pipe-max-size").read_text()))
    finally:
        receiver.close()
        sender.close()


def test_importer_reads_chunks_while_reader_lags(engine, corpus, tmp_path, monkeypatch):
    reference_engine = fresh_sqlite(tmp_path / "reference.db")
    expected = run_import(reference_engine, corpus, readers=0)
    parent = os.getpid()
    original = FilesSource.read_chunk
    read_here: list[str] = []

    def slow_reader(self, chunk):  # type: ignore[no-untyped-def]
        if os.getpid() == parent:
            read_here.append(chunk.folder.key)
        else:
            time.sleep(0.05)
        return original(self, chunk)

    monkeypatch.setattr(FilesSource, "read_chunk", slow_reader)
    got = run_import(engine, corpus, readers=1)
    assert read_here, "the importer never read a chunk while the reader lagged"
    assert got.as_dict() == expected.as_dict()
    assert snapshot(engine) == snapshot(reference_engine)


def test_claims_hand_out_each_chunk_once():
    import multiprocessing

    claims = readahead._Claims(multiprocessing.get_context("fork"), 3)
    assert claims.owner(0) is None
    assert claims.claim(1) == 0
    assert claims.claim(-1) == 1
    assert claims.owner(0) == 1
    assert claims.owner(1) == -1
    assert claims.owner(2) is None
    assert claims.claim(0) == 2
    assert claims.claim(0) is None
