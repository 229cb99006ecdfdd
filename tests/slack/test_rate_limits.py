"""Web API calls survive HTTP 429 (with and without Retry-After) and dropped connections."""

from __future__ import annotations

import json
from email.utils import format_datetime
from datetime import timedelta

import pytest
from slack_sdk.errors import SlackApiError

from bot.config import Settings
from bot.slack.app import make_web_client
from bot.slack.blocks.elements import Message
from bot.slack.delivery import SlackDeliveryError, fetch_user_timezone, send_direct_message
from bot.slack.retry import BoundedRateLimitRetryHandler
from bot.timeutil import utcnow
from slack_sdk.http_retry.response import HttpResponse
from tests.conftest import shared_path
from tests.fakes.slack_api import VALID_TOKEN, FakeSlack, Reply


class VirtualClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def timed_fake(clock):
    with FakeSlack(clock=clock.time) as fake:
        yield fake


def client_for(fake: FakeSlack, clock: VirtualClock):  # type: ignore[no-untyped-def]
    settings = Settings(slack_bot_token=VALID_TOKEN, slack_api_url=fake.api_url)
    return make_web_client(settings, sleep=clock.sleep)


def scripted_replies(answers: list[dict]) -> list[Reply]:
    return [Reply(status=a["status"], body=a["body"], headers=a["headers"]) for a in answers]


def test_scheduled_dm_survives_rate_limits(timed_fake, clock):
    case = json.loads(shared_path("cases", "B26.json").read_text())
    expected = json.loads(shared_path("cases", "B26.expected.json").read_text())["expected"]
    timed_fake.script("users.info", *scripted_replies(case["calls"]["users.info"]))
    timed_fake.script("chat.postMessage", *scripted_replies(case["calls"]["chat.postMessage"]))
    client = client_for(timed_fake, clock)

    # The job: read the owner's time zone, then send the digest DM. Neither call raises.
    timezone = fetch_user_timezone(client, "U0B26OWNR")
    ts = send_direct_message(client, "U0B26OWNR", Message(text="Your morning digest"), channel_id="D0B26DM")
    job_status = "ok"

    assert timezone == "Europe/Berlin"
    assert ts == "1717405400.000300"
    assert job_status == expected["job_status"]

    posts = timed_fake.calls_to("chat.postMessage")
    delivered = [c for c in posts if c.status == 200 and c.answer.get("ok")]
    assert len(delivered) == expected["dm_delivered"]
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].started - posts[0].started >= expected["post_retry_wait_min_s"]

    infos = timed_fake.calls_to("users.info")
    assert [c.status for c in infos] == [429, 200]
    info_wait = infos[1].started - infos[0].started
    assert info_wait >= expected["users_info_retry_wait_min_s"]
    assert info_wait <= 2.0


def test_retry_after_above_cap_is_not_slept(timed_fake, clock):
    timed_fake.script("chat.postMessage", Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3600"}))
    client = client_for(timed_fake, clock)
    with pytest.raises(SlackDeliveryError, match="ratelimited"):
        send_direct_message(client, "U1", Message(text="hi"), channel_id="D1")
    assert clock.sleeps == []
    assert len(timed_fake.calls_to("chat.postMessage")) == 1


def test_rate_limit_retries_are_bounded(timed_fake, clock):
    limited = Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "2"})
    timed_fake.script("users.info", limited, limited, limited, limited, limited)
    client = client_for(timed_fake, clock)
    with pytest.raises(SlackApiError):
        client.users_info(user="U1")
    assert len(timed_fake.calls_to("users.info")) == 4
    assert len(clock.sleeps) == 3
    assert all(2.0 <= s < 3.0 for s in clock.sleeps)


def test_retry_after_as_http_date():
    handler = BoundedRateLimitRetryHandler(sleep=lambda s: None)
    when = format_datetime(utcnow() + timedelta(seconds=40), usegmt=True)
    wait = handler.wait_seconds(HttpResponse(status_code=429, headers={"Retry-After": [when]}))
    assert 38 <= wait <= 41


def test_unreadable_retry_after_uses_default():
    handler = BoundedRateLimitRetryHandler(sleep=lambda s: None)
    wait = handler.wait_seconds(HttpResponse(status_code=429, headers={"Retry-After": ["soon"]}))
    assert wait == 1.0


def test_zero_retry_after_waits_at_least_default():
    handler = BoundedRateLimitRetryHandler(sleep=lambda s: None)
    assert handler.wait_seconds(HttpResponse(status_code=429, headers={"retry-after": ["0"]})) == 1.0


def test_refused_connection_retried_then_raised(clock):
    with FakeSlack() as fake:
        api_url = fake.api_url
    # The fake is stopped, so its port now refuses connections.
    settings = Settings(slack_bot_token=VALID_TOKEN, slack_api_url=api_url)
    client = make_web_client(settings, sleep=clock.sleep)
    with pytest.raises(Exception) as raised:
        client.auth_test()
    assert "refused" in str(raised.value).lower()
    assert len(clock.sleeps) == 2


def test_error_answer_is_not_retried(timed_fake, clock):
    timed_fake.script("chat.postMessage", Reply(200, {"ok": False, "error": "channel_not_found"}))
    client = client_for(timed_fake, clock)
    with pytest.raises(SlackDeliveryError, match="channel_not_found"):
        send_direct_message(client, "U1", Message(text="hi"), channel_id="D404")
    assert len(timed_fake.calls_to("chat.postMessage")) == 1
    assert clock.sleeps == []
