"""Once-only keys for Slack deliveries, so retries and double clicks never repeat an effect.

Slack retries an event when it gets no 2xx response within 3 seconds (up to three
retries, with ``X-Slack-Retry-Num`` set), and a user can click a button twice
before the first click is handled. Each effect claims a key in ProcessedEvent
first; the unique constraint on (team_id, key) lets exactly one claimant win, on
SQLite and PostgreSQL alike, across threads and processes.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.storage.db import retry_write
from bot.storage.models import ProcessedEvent

log = logging.getLogger(__name__)

# Kinds of keys and how long they are kept. Signed requests are only accepted for
# 5 minutes, and Slack's last event retry comes about 5 minutes after the first
# delivery, so both are kept a little longer. Decisions are kept for good.
REQUEST_PREFIX = "request:"
EVENT_PREFIX = "event:"
DECISION_PREFIX = "decision:"
KEEP_REQUEST_KEYS = timedelta(minutes=10)
KEEP_EVENT_KEYS = timedelta(hours=1)
PRUNE_EVERY = timedelta(minutes=10)


def claim(engine: Engine, team_id: str, key: str, now: datetime) -> bool:
    """Record ``key`` as handled; return True for the first claimant and False for every later one."""
    return retry_write(_insert_key, engine, team_id, key, now)


def release(engine: Engine, team_id: str, key: str) -> None:
    """Forget a claim whose effect failed, so that the user can try again."""

    def _delete() -> None:
        with Session(engine) as session:
            session.exec(delete(ProcessedEvent).where(ProcessedEvent.team_id == team_id, ProcessedEvent.key == key))
            session.commit()

    retry_write(_delete)


def claimed_at(engine: Engine, team_id: str, key: str) -> datetime | None:
    """Return when ``key`` was claimed, or None."""
    with Session(engine) as session:
        row = session.exec(
            select(ProcessedEvent.created_at).where(ProcessedEvent.team_id == team_id, ProcessedEvent.key == key)
        ).first()
    return row[0] if row else None


# One statement for SQLite (3.35 or newer) and PostgreSQL, written once so that every
# signed request does not pay for building and compiling it. rowcount is not reliable
# for INSERT .. ON CONFLICT with psycopg (it is -1), so the new row's id is returned
# instead: a skipped insert returns no row.
INSERT_KEY = text(
    "INSERT INTO processedevent (team_id, key, created_at) VALUES (:team_id, :key, :created_at) "
    "ON CONFLICT (team_id, key) DO NOTHING RETURNING id"
).bindparams(bindparam("created_at", type_=ProcessedEvent.__table__.c.created_at.type))


def _insert_key(engine: Engine, team_id: str, key: str, now: datetime) -> bool:
    with engine.begin() as connection:
        inserted = connection.execute(INSERT_KEY, {"team_id": team_id, "key": key, "created_at": now}).first()
    return inserted is not None


class KeyPruner:
    """Deletes expired request and event keys, at most once per ``PRUNE_EVERY`` in each process."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._last_run: datetime | None = None

    def maybe_prune(self, now: datetime) -> int:
        with self._lock:
            if self._last_run is not None and now - self._last_run < PRUNE_EVERY:
                return 0
            self._last_run = now
        deleted = retry_write(prune_keys, self._engine, now)
        if deleted:
            log.info("deleted %d expired request and event keys", deleted)
        return deleted


def prune_keys(engine: Engine, now: datetime) -> int:
    """Delete request and event keys older than they are needed; decisions stay."""
    with engine.begin() as connection:
        requests = connection.execute(
            delete(ProcessedEvent).where(
                ProcessedEvent.key.startswith(REQUEST_PREFIX),
                ProcessedEvent.created_at < now - KEEP_REQUEST_KEYS,
            )
        )
        events = connection.execute(
            delete(ProcessedEvent).where(
                ProcessedEvent.key.startswith(EVENT_PREFIX),
                ProcessedEvent.created_at < now - KEEP_EVENT_KEYS,
            )
        )
    return requests.rowcount + events.rowcount
