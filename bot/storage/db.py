"""Engine creation for SQLite and PostgreSQL, and short write transactions."""

from __future__ import annotations

import logging
import sqlite3
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

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY in
        # WAL mode, without waiting for the busy timeout; IMMEDIATE takes the write lock first.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


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
