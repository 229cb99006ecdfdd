"""Verification of Slack's request signatures in HTTP mode, with replay protection.

Slack signs every request: ``X-Slack-Signature`` is ``v0=`` and the hex
HMAC-SHA256 of ``v0:<X-Slack-Request-Timestamp>:<raw body>`` under the app's
signing secret, and a request whose timestamp is more than five minutes from
now must be rejected (https://api.slack.com/authentication/verifying-requests-from-slack).
This middleware replaces Bolt's own verification, which logs the raw body (with
the payload's verification token) when a check fails. It also rejects replays,
which Bolt's does not: a signature seen once is rejected the second time while its
timestamp is still fresh.

Where the signatures seen are kept depends on the database. On PostgreSQL, where
several processes may serve Slack, they are ProcessedEvent rows, so a replay sent
to another process is caught too. SQLite serves one process, and every SQLite
transaction of this project takes the write lock, so a row per request would make
acks wait behind queries; there the signatures stay in this process's memory.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Literal

from slack_bolt.middleware import Middleware
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import Clock, SignatureVerifier
from sqlalchemy.engine import Engine

from bot.slack.idempotency import REQUEST_PREFIX, KeyPruner, claim
from bot.storage.models import LOCAL_TEAM

log = logging.getLogger(__name__)

MAX_CLOCK_SKEW_SECONDS = 60 * 5


class _InjectedClock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SeenSignatures:
    """Signatures accepted by this process, each kept until its timestamp expires."""

    PRUNE_EVERY_SECONDS = 60.0

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def add(self, signature: str, timestamp: int, now: float) -> bool:
        """Record a signature; return False when it was already recorded."""
        with self._lock:
            if now >= self._next_prune:
                self._expiry = {kept: expiry for kept, expiry in self._expiry.items() if expiry > now}
                self._next_prune = now + self.PRUNE_EVERY_SECONDS
            if self._expiry.get(signature, 0.0) > now:
                return False
            self._expiry[signature] = timestamp + MAX_CLOCK_SKEW_SECONDS
            return True


class SignedRequestGuard(Middleware):
    """Rejects unsigned, badly signed, expired and replayed requests with HTTP 401.

    Args:
        now: returns the current Unix time in seconds; tests pass a fixed clock.
        replay_store: "database" or "memory"; by default the database on PostgreSQL and
            memory on SQLite.
    """

    def __init__(
        self,
        signing_secret: str,
        engine: Engine,
        *,
        now: Callable[[], float] = time.time,
        replay_store: Literal["database", "memory"] | None = None,
    ) -> None:
        self._verifier = SignatureVerifier(signing_secret, clock=_InjectedClock(now))
        self._engine = engine
        self._now = now
        self._pruner = KeyPruner(engine)
        self._lock = threading.Lock()
        if replay_store is None:
            replay_store = "memory" if engine.dialect.name == "sqlite" else "database"
        self._seen = SeenSignatures() if replay_store == "memory" else None
        self.rejected: dict[str, int] = {}  # counts by kind: unsigned, expired, forged, replayed

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        if req.mode == "socket_mode":
            # Socket Mode requests come over the app's own authenticated WebSocket.
            return next()

        timestamp = _first(req, "x-slack-request-timestamp")
        signature = _first(req, "x-slack-signature")
        if not timestamp or not signature:
            return self._reject("unsigned", "missing X-Slack-Signature or X-Slack-Request-Timestamp header")
        if not timestamp.isdigit():
            return self._reject("unsigned", "X-Slack-Request-Timestamp is not a Unix time")
        now = self._now()
        if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            return self._reject("expired", f"timestamp {int(now - int(timestamp))}s old, outside the 5-minute window")
        if not self._verifier.is_valid(req.raw_body, timestamp, signature):
            return self._reject("forged", "signature does not match the body and the signing secret")

        if not self._first_time(req, signature, int(timestamp), now):
            if _first(req, "x-slack-retry-num"):
                # Slack's own retry of a request already accepted: return 200 so that Slack
                # stops retrying, but never run the listeners a second time.
                log.info("ignored a repeated Slack delivery that was already accepted once")
                return BoltResponse(status=200, body="")
            return self._reject("replayed", "this signature was already accepted once")
        return next()

    def _first_time(self, req: BoltRequest, signature: str, timestamp: int, now: float) -> bool:
        if self._seen is not None:
            return self._seen.add(signature, timestamp, now)
        team_id = req.context.team_id or req.context.enterprise_id or LOCAL_TEAM
        stamp = datetime.fromtimestamp(now, tz=timezone.utc)
        first = claim(self._engine, team_id, REQUEST_PREFIX + signature, stamp)
        self._pruner.maybe_prune(stamp)
        return first

    def _reject(self, kind: str, reason: str) -> BoltResponse:
        with self._lock:
            self.rejected[kind] = self.rejected.get(kind, 0) + 1
            count = self.rejected[kind]
        log.warning("rejected Slack request: %s (%d %s requests so far): %s", kind, count, kind, reason)
        return BoltResponse(status=401, body={"error": "invalid request"})


def _first(req: BoltRequest, name: str) -> str | None:
    values = req.headers.get(name)
    if not values:
        return None
    return values[0].strip() or None
