"""Concurrent writers on the default SQLite store never get 'database is locked'."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlmodel import Session

from bot.storage.db import make_engine
from bot.config import Settings
from bot.mail.ingest import ensure_mailbox, import_source
from bot.slack.idempotency import claim
from bot.storage.models import Address, AuditEvent, Delivery, ProcessedEvent, SchedulerLease
from bot.storage.schema import create_schema
from bot.timeutil import utcnow
from tests.conftest import shared_path
from tests.helpers import OWNER, ListSource, mail


def test_sqlite_connection_settings(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_three_writers_never_see_locked(tmp_path):
    case = json.loads(shared_path("cases", "B37.json").read_text())
    expected = json.loads(shared_path("cases", "B37.expected.json").read_text())["expected"]
    duration = float(case["duration_s"])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    create_schema(make_engine(url))
    errors: list[BaseException] = []
    counts = {"dm": 0, "approvals": 0}
    stop = threading.Event()

    with Session(make_engine(url)) as session:
        session.add(SchedulerLease(name="scheduler", holder="test", expires_at=utcnow()))
        session.commit()
    ensure_mailbox(make_engine(url), OWNER)

    def guarded(func):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                func()
            except BaseException as exc:  # noqa: BLE001 - the test reports every error
                errors.append(exc)
                stop.set()

        return run

    @guarded
    def ingest() -> None:
        # The product's importer: 2,000 new contacts in transactions of 200 messages.
        engine = make_engine(url)
        mailbox = ensure_mailbox(engine, OWNER)
        items = [mail(f"p{number}@example.com", [OWNER], number / 100, f"Note {number}") for number in range(2000)]
        summary = import_source(
            engine, mailbox, ListSource(items, batch_size=200), settings=Settings(database_url=url)
        )
        assert summary.stored == 2000

    @guarded
    def scheduler() -> None:
        engine = make_engine(url)
        tick = 0
        while not stop.is_set():
            with Session(engine) as session:
                lease = session.get(SchedulerLease, "scheduler")
                lease.expires_at = utcnow() + timedelta(seconds=30)
                session.add(lease)
                if tick % 10 == 0:
                    session.add(
                        Delivery(mailbox_id=1, digest_date=f"d{tick}", outcome="sent", created_at=utcnow())
                    )
                    counts["dm"] += 1
                session.commit()
            tick += 1
            time.sleep(0.05)

    @guarded
    def slack_handler() -> None:
        # The Slack side's run-once record of a click, then the audit row of the decision.
        engine = make_engine(url)
        while not stop.is_set():
            number = counts["approvals"]
            assert claim(engine, "T1", f"approve:{number}", utcnow())
            with Session(engine) as session:
                session.add(AuditEvent(actor="U1", action="intro_decision", detail={"approved": True}, created_at=utcnow()))
                session.commit()
            counts["approvals"] += 1
            time.sleep(0.2)

    threads = [threading.Thread(target=f) for f in (ingest, scheduler, slack_handler)]
    for thread in threads:
        thread.start()
    threads[0].join(timeout=duration * 6)
    stop.wait(max(0.0, duration - 0.1)) if not errors else None
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    with Session(make_engine(url)) as session:
        # Every contact plus the owner's own address.
        assert session.execute(select(func.count(Address.id))).scalar_one() == expected["contacts_stored"] + 1
        assert session.execute(select(func.count(ProcessedEvent.id))).scalar_one() == counts["approvals"]
        assert session.execute(select(func.count(Delivery.id))).scalar_one() == counts["dm"]
        assert session.execute(select(func.count(AuditEvent.id))).scalar_one() == counts["approvals"]
    assert counts["dm"] > 0
    assert counts["approvals"] > 0
    with make_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == expected["journal_mode"]
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= expected["busy_timeout_ms_min"]
