"""Named leases: one holder at a time, renewal, expiry and release."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from bot.config import Settings
from bot.mail.sync import SYNC_LEASE, sync_all_if_lease_held
from bot.storage import lease
from bot.storage.models import SchedulerLease
from tests.helpers import at

TTL = timedelta(minutes=10)


def test_second_holder_waits_for_expiry(engine):
    assert lease.acquire(engine, "job", "a:1", TTL, now=at(0))
    assert not lease.acquire(engine, "job", "b:2", TTL, now=at(0) + timedelta(minutes=5))
    assert lease.acquire(engine, "job", "a:1", TTL, now=at(0) + timedelta(minutes=6))
    # a:1 renewed at minute 6, so b:2 must wait until minute 16.
    assert not lease.acquire(engine, "job", "b:2", TTL, now=at(0) + timedelta(minutes=15))
    assert lease.acquire(engine, "job", "b:2", TTL, now=at(0) + timedelta(minutes=17))
    with Session(engine) as session:
        assert session.get(SchedulerLease, "job").holder == "b:2"


def test_release_frees_the_lease(engine):
    assert lease.acquire(engine, "job", "a:1", TTL, now=at(0))
    lease.release(engine, "job", "b:2")
    assert not lease.acquire(engine, "job", "b:2", TTL, now=at(0))
    lease.release(engine, "job", "a:1")
    assert lease.acquire(engine, "job", "b:2", TTL, now=at(0))


def test_leases_are_independent(engine):
    assert lease.acquire(engine, "one", "a:1", TTL, now=at(0))
    assert lease.acquire(engine, "two", "b:2", TTL, now=at(0))


def test_scheduled_sync_skips_without_the_lease(engine):
    settings = Settings(database_url="sqlite://")
    assert lease.acquire(engine, SYNC_LEASE, "other-host:1", timedelta(hours=1))
    assert sync_all_if_lease_held(engine, settings, "this-host:2", timedelta(minutes=30)) is None
    lease.release(engine, SYNC_LEASE, "other-host:1")
    assert sync_all_if_lease_held(engine, settings, "this-host:2", timedelta(minutes=30)) == []
