"""Requests and throughput of the EWS and Graph sources against the loopback fakes, on Enron mail.

Run with ``.venv/bin/python bench/exchange_bench.py [--tarball PATH]`` from the project root.
The mailbox is the one of the equality tests: all of fossum-d and the inbox of buy-r, 5,939
messages, less the 6 that share sender, recipients, minute and subject with a message of
another body (5,933). For every setting the script measures:

* a full read of Inbox and Sent Items (the source alone, no database);
* a full import into a fresh SQLite file (source plus importer, as ``crm-bot sync`` runs it);
* an incremental sync right after it, with nothing new.

Requests are counted by the fake servers, so they include the folder lookups, the version
probe and the token requests. Both fakes run in this process, on loopback, so the times are
an upper bound of what the bot's own code costs, not a forecast for a real server.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_TARBALL = ROOT.parent / "shared" / "data" / "mail" / "enron-maildir-9-mailboxes.tar.xz"
SERVICE = "svc-crm@enron.com"
PASSWORD = "bench password"
CLIENT_ID = "bench-app"
SECRET = "bench secret"


def ews_runs(box, tmp: Path) -> list[dict]:  # type: ignore[no-untyped-def]
    from bot.mail.credentials import Secrets
    from bot.mail.ews import EwsSettings, EwsSource, clear_dn_cache
    from tests.fakes.ews_server import FakeEwsServer

    results = []
    for label, extra in (
        ("EWS, defaults (page 256, GetItem 100)", {}),
        ("EWS, page 512, GetItem 250", {"page_size": 512, "fetch_chunk": 250}),
    ):
        with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={SERVICE: {box.owner}}) as fake:
            config = {"ews_url": fake.url, "auth": "basic", "version": "15.1.2507.6", **extra}

            def make() -> EwsSource:
                clear_dn_cache()
                return EwsSource(
                    EwsSettings.from_config(box.owner, config), Secrets("env:BENCH", {"username": SERVICE, "password": PASSWORD})
                )

            results.append(measure(label, box, make, fake.count, tmp / f"ews-{len(results)}.db", "ews", config))
    return results


def graph_runs(box, tmp: Path) -> list[dict]:  # type: ignore[no-untyped-def]
    from bot.mail.credentials import Secrets
    from bot.mail.graph import GraphSettings, GraphSource
    from tests.fakes.graph_server import FakeGraphServer

    results = []
    for label, page in (("Graph, defaults (page 200)", 200), ("Graph, page 1000", 1000)):
        with FakeGraphServer([box], tmp / f"tls-{page}") as fake:
            fake.add_app(CLIENT_ID, SECRET, {box.owner})
            config = {
                "tenant_id": fake.tenant_id,
                "client_id": CLIENT_ID,
                "graph_url": fake.graph_url,
                "authority_host": fake.base,
                "ca_bundle": str(fake.cert_path),
                "page_size": page,
            }

            def make() -> GraphSource:
                return GraphSource(GraphSettings.from_config(box.owner, config), Secrets("env:BENCH", {"client_secret": SECRET}))

            results.append(measure(label, box, make, fake.count, tmp / f"graph-{page}.db", "graph", config))
    return results


def measure(label, box, make, count, db_path: Path, kind: str, config: dict) -> dict:  # type: ignore[no-untyped-def]
    from bot.config import Settings
    from bot.mail.ingest import ensure_mailbox, import_source
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema

    source = make()
    before = count()
    started = time.perf_counter()
    read = sum(len(batch.items) + len(batch.skipped) for folder in source.folders() for batch in source.read(folder, None))
    read_seconds = time.perf_counter() - started
    read_requests = count() - before
    close = getattr(source, "close", None)
    if close:
        close()

    engine = make_engine(f"sqlite:///{db_path}")
    create_schema(engine)
    settings = Settings(database_url="sqlite://")
    mailbox = ensure_mailbox(engine, box.owner, source_kind=kind, source_config=config, credentials_ref="env:BENCH")
    source = make()
    started = time.perf_counter()
    summary = import_source(engine, mailbox, source, settings=settings)
    import_seconds = time.perf_counter() - started
    before = count()
    again = import_source(engine, mailbox, make(), settings=settings)
    empty_requests = count() - before
    engine.dispose()
    return {
        "label": label,
        "messages": read,
        "read_requests": read_requests,
        "read_seconds": read_seconds,
        "import_seconds": import_seconds,
        "stored": summary.stored,
        "empty_requests": empty_requests,
        "empty_read": again.read,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL, help="the Enron maildir tarball")
    args = parser.parse_args()
    if not args.tarball.exists():
        print(f"error: {args.tarball} not found; pass --tarball PATH", file=sys.stderr)
        return 2
    from tests.fakes.exchange_harness import enron_mailbox

    started = time.perf_counter()
    box = enron_mailbox(args.tarball)
    print(f"mailbox of {len(box.messages):,} messages built in {time.perf_counter() - started:.1f}s")
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, {platform.system()}")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        results = ews_runs(box, tmp) + graph_runs(box, tmp)
    print()
    print("| source and setting | messages | requests | requests per 1,000 | read msg/s | import msg/s | requests, nothing new |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        per_thousand = r["read_requests"] * 1000 / r["messages"]
        print(
            f"| {r['label']} | {r['messages']:,} | {r['read_requests']:,} | {per_thousand:.1f} | "
            f"{r['messages'] / r['read_seconds']:,.0f} | {r['messages'] / r['import_seconds']:,.0f} | {r['empty_requests']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
