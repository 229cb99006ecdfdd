"""Engine creation for SQLite and PostgreSQL, and short write transactions."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, create_engine

from bot.errors import ConfigError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Select psycopg 3 for plain postgresql:// URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


SUPPORTED_BACKENDS = ("sqlite", "postgresql")
URL_EXAMPLES = "sqlite:///path.db or postgresql+psycopg://user@host/db"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and BEGIN IMMEDIATE.

    Raises ConfigError for a URL that cannot be parsed or names another database. The
    message leaves the URL out because it may contain a password.
    """
    url = normalize_url(url)
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise ConfigError(f"invalid database URL; use {URL_EXAMPLES} (set by --db or DATABASE_URL)") from None
    if backend not in SUPPORTED_BACKENDS:
        raise ConfigError(f"unsupported database {backend!r}; use {URL_EXAMPLES} (set by --db or DATABASE_URL)")
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Take transaction control from the sqlite3 module so that BEGIN below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"failed to open {engine.url.database} as a SQLite database ({exc}); "
                "give a new file or one written by crm-bot"
            ) from None
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection, record):  # type: ignore[no-untyped-def]
        if record.info.pop(_DEFERRED_KEY, False):
            dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY in
        # WAL mode, without waiting for the busy timeout; IMMEDIATE takes the write lock first.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


# SQLite's default: a commit that leaves more pages than this in the write-ahead log copies
# them into the database file before it returns.
SQLITE_AUTOCHECKPOINT_PAGES = 1000
# While a checkpoint thread runs, a writer copies the log itself only past this many pages
# (40 MB of 4 KB pages), which happens only when the thread falls far behind.
DEFERRED_AUTOCHECKPOINT_PAGES = 10_000
_DEFERRED_KEY = "deferred_autocheckpoint"


class BackgroundCheckpoints:
    """A thread that copies the write-ahead log into a SQLite database file.

    In WAL mode the commit that takes the log past 1,000 pages copies it into the
    database file and syncs both files before it returns, so a long run of write
    transactions pauses every few commits. Inside this context the writer calls
    ``defer(connection)`` in each transaction and ``notify()`` after each commit, and the
    checkpoints run here instead, on a connection of their own. The sqlite3 module
    releases the GIL while SQLite works, so the copy and the syncs overlap the writer's
    next batch. A PASSIVE checkpoint does not wait for the writer, and SQLite keeps
    committed data through a crash in the middle of one.

    Outside SQLite files (PostgreSQL, in-memory SQLite) the context does nothing. Start it
    after any fork, since a process must not fork while a second thread runs.
    """

    def __init__(self, engine: Engine):
        database = engine.url.database if is_sqlite(engine) else None
        self._path = database if database and database != ":memory:" and not database.startswith("file:") else None
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    @property
    def active(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> BackgroundCheckpoints:
        if self._path is not None:
            self._thread = threading.Thread(target=self._run, args=(self._path,), name="wal-checkpoints", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def defer(self, connection) -> None:  # type: ignore[no-untyped-def]
        """Raise the checkpoint threshold of a writer's connection until it returns to the pool."""
        if self._thread is not None:
            connection.exec_driver_sql(f"PRAGMA wal_autocheckpoint={DEFERRED_AUTOCHECKPOINT_PAGES}")
            connection.connection.info[_DEFERRED_KEY] = True

    def notify(self) -> None:
        """Tell the thread that a transaction committed."""
        self._wake.set()

    def _run(self, path: str) -> None:
        try:
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("failed to open %s for background checkpoints (%s), so each commit copies the log itself", path, exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    # PASSIVE copies the frames that no reader still needs, without waiting for locks.
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    log.warning("checkpoint of %s failed (%s), so a later checkpoint or commit copies the log", path, exc)
        finally:
            connection.close()


@contextmanager
def write_session(engine: Engine, attempts: int = 5) -> Iterator[Session]:
    """Open a session for one short write transaction and commit it.

    The busy timeout already waits for the lock; a lock error that still reaches here is
    retried by the caller through ``retry_write``.
    """
    with Session(engine, expire_on_commit=False) as session:
        yield session
        session.commit()


def retry_write(func, *args, attempts: int = 8, **kwargs):  # type: ignore[no-untyped-def]
    """Run a write function again when the database reports it is locked or a serialisation failure."""
    delay = 0.05
    for attempt in range(1, attempts + 1):
        try:
            return func(*args, **kwargs)
        except OperationalError as exc:
            text = str(exc).lower()
            if attempt == attempts or not ("locked" in text or "busy" in text or "could not serialize" in text):
                raise
            log.warning("database busy on attempt %d, retrying in %.2fs: %s", attempt, delay, exc.orig)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")
