"""Named leases in the database, so that one process of a deployment runs each periodic job.

Several ``crm-bot serve`` processes may share one PostgreSQL database. Each runs its own
APScheduler, and APScheduler 3.x cannot coordinate processes, so every periodic job first
takes the job's lease: the process that holds an unexpired lease runs the job, the others
skip that run. A lease that its holder stops renewing expires, and another process takes
it over at its next run.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.storage.db import retry_write
from bot.storage.models import SchedulerLease
from bot.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)


def process_holder() -> str:
    """Name this process as a lease holder: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire(engine: Engine, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
    """Take or renew the lease ``name`` for ``ttl``; return True when ``holder`` now holds it."""

    def _write() -> bool:
        at = now or utcnow()
        with Session(engine) as session:
            # FOR UPDATE makes two PostgreSQL processes that both see an expired lease take
            # turns; SQLite's BEGIN IMMEDIATE already serialises the transaction.
            row = session.get(SchedulerLease, name, with_for_update=True)
            if row is None:
                session.add(SchedulerLease(name=name, holder=holder, expires_at=at + ttl))
            elif row.holder == holder or as_utc(row.expires_at) <= at:
                if row.holder != holder:
                    log.info("lease %s taken over from %s by %s", name, row.holder, holder)
                row.holder = holder
                row.expires_at = at + ttl
                session.add(row)
            else:
                return False
            session.commit()
            return True

    try:
        return retry_write(_write)
    except IntegrityError:
        # Another process created the lease between our read and our insert.
        return False


def release(engine: Engine, name: str, holder: str) -> None:
    """Give up a lease this holder has, so another process can take it at once."""

    def _write() -> None:
        with Session(engine) as session:
            row = session.get(SchedulerLease, name, with_for_update=True)
            if row is not None and row.holder == holder:
                session.delete(row)
                session.commit()

    retry_write(_write)
