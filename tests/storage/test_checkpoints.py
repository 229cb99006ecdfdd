"""The checkpoint thread that copies the SQLite write-ahead log while an import writes."""

from __future__ import annotations

import threading

from sqlalchemy import text

from bot.config import Settings
from bot.mail.ingest import ensure_mailbox, import_source
from bot.storage.db import (
    DEFERRED_AUTOCHECKPOINT_PAGES,
    SQLITE_AUTOCHECKPOINT_PAGES,
    BackgroundCheckpoints,
    make_engine,
)
from bot.storage.schema import create_schema
from tests.helpers import OWNER, ListSource, mail


def _autocheckpoint(connection) -> int:  # type: ignore[no-untyped-def]
    return connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()


def _write_rows(engine, checkpoints: BackgroundCheckpoints, count: int) -> None:  # type: ignore[no-untyped-def]
    for number in range(count):
        with engine.begin() as connection:
            checkpoints.defer(connection)
            assert _autocheckpoint(connection) == DEFERRED_AUTOCHECKPOINT_PAGES
            connection.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": "x" * 4000 + str(number)})
        checkpoints.notify()


def test_thread_copies_log_to_file(tmp_path):
    path = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    size_before = path.stat().st_size
    with BackgroundCheckpoints(engine) as checkpoints:
        assert checkpoints.active
        _write_rows(engine, checkpoints, 200)
    assert checkpoints.checkpoints >= 1
    # Copied pages reach the database file itself, not only the log.
    assert path.stat().st_size > size_before + 100 * 4000
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM notes")).scalar() == 200


def test_pool_restores_default_threshold(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    with BackgroundCheckpoints(engine) as checkpoints:
        _write_rows(engine, checkpoints, 3)
        with engine.connect() as connection:
            # The pool hands out the writer's connection again, with SQLite's default.
            assert _autocheckpoint(connection) == SQLITE_AUTOCHECKPOINT_PAGES


def test_inactive_without_database_file(engine):
    if engine.dialect.name == "sqlite":
        engine = make_engine("sqlite://")
    with BackgroundCheckpoints(engine) as checkpoints:
        assert not checkpoints.active
        with engine.connect() as connection:
            checkpoints.defer(connection)
            if engine.dialect.name == "sqlite":
                assert _autocheckpoint(connection) == SQLITE_AUTOCHECKPOINT_PAGES
        checkpoints.notify()
    assert checkpoints.checkpoints == 0


def test_import_joins_checkpoint_thread(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    create_schema(engine)
    mailbox = ensure_mailbox(engine, OWNER)
    items = [mail(f"p{number}@example.com", [OWNER], number / 100, f"Note {number}") for number in range(300)]
    threads = threading.active_count()
    summary = import_source(engine, mailbox, ListSource(items, batch_size=50), settings=Settings(database_url=url))
    assert summary.stored == 300
    assert threading.active_count() == threads
    assert not [thread for thread in threading.enumerate() if thread.name == "wal-checkpoints"]
