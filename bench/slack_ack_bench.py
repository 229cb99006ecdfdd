"""Measure how fast the Slack HTTP server acknowledges concurrent slash commands.

Starts a fake Slack Web API on loopback in this process and the real Bolt app
behind the real HTTP server in a child process, sends N signed `/crm` commands
at once, and prints the acknowledgement latency (p50, p99, max) and the time
until every reply reached its response_url. Slack allows 3 seconds per ack.

    python bench/slack_ack_bench.py                       # /crm help on an empty database
    python bench/slack_ack_bench.py --maildir /tmp/enron/maildir/badeer-r \
        --owner robert.badeer@enron.com --command "top"  # real queries after each ack
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.slack_api import VALID_TOKEN, FakeSlack  # noqa: E402
from tests.slack.conftest import SIGNING_SECRET, sign, slash_command_body  # noqa: E402

USER_ID = "U0BENCH"
WARM_UP = 5


def serve(database_url: str, api_url: str, ready: "multiprocessing.Queue[int]") -> None:
    """Child process: build the app and serve it on a free port, reporting the port."""
    from bot.config import Settings
    from bot.slack.app import build_app, make_web_client
    from bot.slack.server import make_server
    from bot.storage.db import make_engine

    settings = Settings(
        database_url=database_url,
        slack_bot_token=VALID_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=api_url,
        log_level="WARNING",
    )
    engine = make_engine(database_url)
    server = make_server(build_app(settings, engine, client=make_web_client(settings)), "127.0.0.1", 0)
    ready.put(server.server_address[1])
    server.serve_forever()


def prepare_database(path: Path, maildir: Path | None, owner: str | None) -> str:
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema

    url = f"sqlite:///{path}"
    engine = make_engine(url)
    create_schema(engine)
    if maildir is not None and owner is not None:
        from bot.config import get_settings
        from bot.mail.files import FilesSource
        from bot.mail.ingest import ensure_mailbox, import_source
        from bot.relationships.compute import recompute

        mailbox = ensure_mailbox(engine, owner)
        import_source(engine, mailbox, FilesSource(maildir), settings=get_settings())
        recompute(engine, mailbox.id)
    engine.dispose()
    return url


def send(port: int, body: str, barrier: threading.Barrier, latencies: list[float], statuses: list[int]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.connect()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": sign(body, timestamp),
    }
    barrier.wait()
    started = time.perf_counter()
    connection.request("POST", "/slack/events", body=body.encode(), headers=headers)
    response = connection.getresponse()
    response.read()
    latencies.append(time.perf_counter() - started)
    statuses.append(response.status)
    connection.close()


def warm_up(port: int, fake: FakeSlack, count: int = WARM_UP) -> None:
    """Send a few commands one by one first, so imports and statement caches are not measured."""
    for index in range(count):
        body = slash_command_body("/crm", "help", user_id=USER_ID, response_url=fake.response_url(f"warm-{index}"))
        send(port, body, threading.Barrier(1), [], [])
    fake.wait_for("response_url", count, timeout=60)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="concurrent slash commands per round (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of concurrent commands (default 5)")
    parser.add_argument("--command", default="help", help="the /crm text each request sends (default help)")
    parser.add_argument("--maildir", type=Path, help="a mail export to import first, e.g. an Enron Maildir")
    parser.add_argument("--owner", help="the owner address of --maildir; the bench user is linked to it")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="slack-bench-"))
    database_url = prepare_database(workdir / "bench.db", args.maildir, args.owner)
    with FakeSlack() as fake:
        fake.add_user(USER_ID, args.owner or "bench@example.org")
        ready: multiprocessing.Queue[int] = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=serve, args=(database_url, fake.api_url, ready), daemon=True
        )
        child.start()
        try:
            port = ready.get(timeout=60)
            warm_up(port, fake)
            latencies: list[float] = []
            statuses: list[int] = []
            round_p99: list[float] = []
            answered: list[float] = []
            for round_number in range(args.rounds):
                round_latencies: list[float] = []
                barrier = threading.Barrier(args.requests)
                threads = []
                started = time.perf_counter()
                for index in range(args.requests):
                    body = slash_command_body(
                        "/crm", args.command, user_id=USER_ID, response_url=fake.response_url(f"{round_number}-{index}")
                    )
                    thread = threading.Thread(target=send, args=(port, body, barrier, round_latencies, statuses))
                    thread.start()
                    threads.append(thread)
                for thread in threads:
                    thread.join()
                fake.wait_for("response_url", WARM_UP + args.requests * (round_number + 1), timeout=120)
                answered.append(time.perf_counter() - started)
                round_p99.append(percentile(round_latencies, 0.99))
                latencies.extend(round_latencies)
        finally:
            child.terminate()
            child.join()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"requests: {args.rounds} rounds of {args.requests} concurrent signed `/crm {args.command}`, "
        f"after {WARM_UP} warm-up requests"
    )
    print(f"HTTP statuses: {sorted(set(statuses))}")
    print(f"ack latency p50: {statistics.median(latencies) * 1000:.0f} ms")
    print(f"ack latency p99: {percentile(latencies, 0.99) * 1000:.0f} ms")
    print(f"ack latency max: {max(latencies) * 1000:.0f} ms")
    print("p99 of each round: " + ", ".join(f"{value * 1000:.0f}" for value in round_p99) + " ms")
    print(f"all answers at response_url after (median round): {statistics.median(answered) * 1000:.0f} ms")
    return 0 if set(statuses) == {200} else 1


if __name__ == "__main__":
    sys.exit(main())
