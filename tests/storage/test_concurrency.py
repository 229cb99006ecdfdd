"""Concurrent writers on the default SQLite store never get 'database is locked'."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlmodel import Session

from bot.storage.db import make_engine
from bot.storage.models import Address, AuditEvent, Delivery, Mailbox, Person, SchedulerLease
from bot.storage.schema import create_schema
from bot.timeutil import utcnow
from tests.conftest import shared_path


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
        session.add(Mailbox(owner_address="robin.hale@example.org", created_at=utcnow()))
        session.add(SchedulerLease(name="scheduler", holder="test", expires_at=utcnow()))
        session.commit()

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
        engine = make_engine(url)
        for chunk in range(10):
            with Session(engine) as session:
                for n in range(200):
                    number = chunk * 200 + n
                    person = Person(display_name=f"Person {number}", created_at=utcnow())
                    session.add(person)
                    session.flush()
                    session.add(
                        Address(address=f"p{number}@example.com", domain="example.com", person_id=person.id)
                    )
                    # The transaction stays open while the rows are "parsed".
                    time.sleep(duration / 10 / 200 / 2)
                session.commit()

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
        engine = make_engine(url)
        while not stop.is_set():
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
        assert session.execute(select(func.count(Address.id))).scalar_one() == expected["contacts_stored"]
        assert session.execute(select(func.count(Delivery.id))).scalar_one() == counts["dm"]
        assert session.execute(select(func.count(AuditEvent.id))).scalar_one() == counts["approvals"]
    assert counts["dm"] > 0
    assert counts["approvals"] > 0
    with make_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == expected["journal_mode"]
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= expected["busy_timeout_ms_min"]
