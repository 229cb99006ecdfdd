"""Retry handlers for slack_sdk's WebClient: HTTP 429 and dropped connections.

slack_sdk 3.x ships ``RateLimitErrorRetryHandler`` but leaves it out of the
default handlers (``default_retry_handlers()`` has only one connection retry).
The built-in one also sleeps with ``time.sleep``, parses ``Retry-After`` with
``int()`` (an HTTP-date or "1.5" raises), and obeys any wait, however long.

This subclass keeps its behaviour: wait Retry-After plus up to one second of
jitter, or about one second without the header. It adds an injectable sleep, a
parser that accepts seconds or an HTTP-date, and a cap. A wait above
``max_wait_seconds`` is not slept, so the call fails with ``ratelimited`` and the
caller decides.
"""

from __future__ import annotations

import logging
import random
import time
from email.utils import parsedate_to_datetime
from typing import Callable

from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.timeutil import utcnow

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]

# Wait used when a 429 carries no usable Retry-After. Slack documents Retry-After on
# every 429; one second plus jitter is the same floor slack_sdk uses.
DEFAULT_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 120.0
MAX_RATE_LIMIT_RETRIES = 3
MAX_CONNECTION_RETRIES = 2


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Retries HTTP 429 responses after Retry-After, with a bounded wait and an injectable sleep."""

    def __init__(
        self,
        max_retry_count: int = MAX_RATE_LIMIT_RETRIES,
        *,
        sleep: Sleep = time.sleep,
        default_wait_seconds: float = DEFAULT_WAIT_SECONDS,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.sleep = sleep
        self.default_wait_seconds = default_wait_seconds
        self.max_wait_seconds = max_wait_seconds
        self.jitter = jitter

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = self.wait_seconds(response)
        if wait > self.max_wait_seconds:
            log.warning(
                "Slack asked to wait %.0fs before retrying %s, more than the maximum of %.0fs; not retrying",
                wait,
                _method(request),
                self.max_wait_seconds,
            )
            return False
        return True

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise RuntimeError(f"rate-limit retry of {_method(request)} needs a response") from error
        wait = self.wait_seconds(response) + self.jitter()
        log.info(
            "Slack rate-limited %s (attempt %d); retrying in %.1fs",
            _method(request),
            state.current_attempt + 1,
            wait,
        )
        state.next_attempt_requested = True
        self.sleep(wait)
        state.increment_current_attempt()

    def wait_seconds(self, response: HttpResponse) -> float:
        """Return the wait a 429 requests: Retry-After in seconds or as an HTTP-date, else the default."""
        value = _header(response, "retry-after")
        if value is None:
            return self.default_wait_seconds
        try:
            return max(self.default_wait_seconds, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            log.warning("ignored an unreadable Retry-After header %r", value[:40])
            return self.default_wait_seconds
        if when.tzinfo is None:
            return self.default_wait_seconds
        return max(self.default_wait_seconds, (when - utcnow()).total_seconds())


class BackoffConnectionRetryHandler(ConnectionErrorRetryHandler):
    """Retries a dropped or refused connection with exponential back-off and an injectable sleep."""

    def __init__(self, max_retry_count: int = MAX_CONNECTION_RETRIES, *, sleep: Sleep = time.sleep) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.sleep = sleep

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = self.interval_calculator.calculate_sleep_duration(state.current_attempt)
        log.warning("connection to Slack failed for %s (%s); retrying in %.1fs", _method(request), type(error).__name__, wait)
        state.next_attempt_requested = True
        self.sleep(wait)
        state.increment_current_attempt()


def retry_handlers(sleep: Sleep = time.sleep) -> list[RetryHandler]:
    """Return the handlers every WebClient of the bot uses."""
    return [BackoffConnectionRetryHandler(sleep=sleep), BoundedRateLimitRetryHandler(sleep=sleep)]


def _header(response: HttpResponse, name: str) -> str | None:
    for key, values in response.headers.items():
        if key.lower() == name:
            value = values[0] if isinstance(values, list) else values
            return str(value).strip() or None
    return None


def _method(request: HttpRequest) -> str:
    return request.url.rsplit("/", 1)[-1]
