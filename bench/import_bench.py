"""Import throughput and peak memory on the Enron corpus, against a bare header-parsing loop.

Run with ``make bench`` or ``.venv/bin/python bench/import_bench.py [--tarball PATH]
[--rounds N]``. Each measurement runs in a fresh child process so that its peak resident
memory (``ru_maxrss``) is its own. Each round times the bare loop and the imports one after
the other, and the ratios are taken within a round, because a shared machine's speed drifts
between rounds. Prints a Markdown table and the median ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARBALL = ROOT.parent / "shared" / "data" / "mail" / "enron-maildir-9-mailboxes.tar.xz"


def bare_loop(maildir: Path) -> dict:
    """Parse the headers of every file with the email package and nothing else."""
    from email import policy
    from email.parser import BytesParser

    parser = BytesParser(policy=policy.compat32)
    files = [p for p in sorted(maildir.rglob("*")) if p.is_file()]
    started = time.perf_counter()
    for path in files:
        message = parser.parsebytes(path.read_bytes(), headersonly=True)
        message.get("From")
    elapsed = time.perf_counter() - started
    return {"messages": len(files), "seconds": elapsed}


def full_import(maildir: Path, db_path: Path, mode: str) -> dict:
    """Import all nine mailboxes with the bot's own code, as `crm-bot import` does.

    ``mode`` "together" imports them in one run, as `crm-bot import DIR --owners FILE`
    does, with reader processes chosen as the command chooses them; "one-process" does
    the same reading in this process (``--readers 0``); "separate" runs one import per
    mailbox, as nine `crm-bot import PATH --owner ADDRESS` commands do.
    """
    os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    from bot.config import get_settings
    from bot.demo import ENRON_OWNERS
    from bot.mail.files import FilesSource
    from bot.mail.ingest import ImportJob, ensure_mailbox, import_source, import_sources
    from bot.relationships.compute import recompute
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema

    settings = get_settings()
    engine = make_engine(settings.database_url)
    create_schema(engine)
    started = time.perf_counter()
    jobs = [ImportJob(ensure_mailbox(engine, owner), FilesSource(maildir / box)) for box, owner in ENRON_OWNERS.items()]
    if mode == "separate":
        summaries = [import_source(engine, job.mailbox, job.source, settings=settings) for job in jobs]
    else:
        summaries = import_sources(engine, jobs, settings=settings, readers=0 if mode == "one-process" else None)
    import_seconds = time.perf_counter() - started
    for job in jobs:
        recompute(engine, job.mailbox.id, settings=settings)
    elapsed = time.perf_counter() - started
    return {
        "messages": sum(summary.read for summary in summaries),
        "stored": sum(summary.stored for summary in summaries),
        "duplicates": sum(summary.duplicates for summary in summaries),
        "skipped": sum(summary.skipped_total for summary in summaries),
        "seconds": elapsed,
        "import_seconds": import_seconds,
    }


def child(kind: str, maildir: str, db_path: str) -> None:
    if kind == "bare":
        result = bare_loop(Path(maildir))
    else:
        result = full_import(Path(maildir), Path(db_path), kind)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(kind: str, maildir: Path, db_path: Path) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(maildir), str(db_path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of bare loop, one-process import, nine separate imports and the import of the nine "
        "mailboxes in one run; the ratios are per round (default 3)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if not args.tarball.is_file():
        print(f"bench: the Enron tarball {args.tarball} was not found; pass --tarball PATH", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print(f"bench: invalid --rounds {args.rounds}; pass 1 or more", file=sys.stderr)
        return 2
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with tarfile.open(args.tarball) as archive:
            archive.extractall(work, filter="data")
        maildir = work / "maildir"
        # Warm the page cache so that every run reads from memory.
        bare_loop(maildir)
        for number in range(args.rounds):
            # The runs of a round follow each other closely, so a round's ratios compare
            # runs made at about the same machine speed.
            bare = run_child("bare", maildir, work / "unused.db")
            single = run_child("one-process", maildir, work / f"single-{number}.db")
            separate = run_child("separate", maildir, work / f"separate-{number}.db")
            full = run_child("together", maildir, work / f"bench-{number}.db")
            db_size = (work / f"bench-{number}.db").stat().st_size / 1e6
            rounds.append((bare, single, separate, full))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| round | run | messages | seconds | messages/s | ratio to the bare loop | peak RSS MB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    ratios: dict[str, list[float]] = {"one process": [], "separate imports": [], "import": [], "with computation": []}
    for number, (bare, single, separate, full) in enumerate(rounds, start=1):
        bare_rate = bare["messages"] / bare["seconds"]
        rows = [
            ("bare header-parsing loop (email package)", bare["messages"], bare["seconds"], None, bare["peak_rss_mb"]),
            ("import in one process (--readers 0)", single["messages"], single["import_seconds"], "one process", None),
            ("nine imports, one per mailbox", separate["messages"], separate["import_seconds"], "separate imports", None),
            ("import of the nine mailboxes in one run", full["messages"], full["import_seconds"], "import", None),
            ("import and relationship computation", full["messages"], full["seconds"], "with computation", full["peak_rss_mb"]),
        ]
        for label, messages, seconds, key, rss in rows:
            rate = messages / seconds
            ratio = 1.0 if key is None else rate / bare_rate
            if key is not None:
                ratios[key].append(ratio)
            memory = f"{rss:.0f}" if rss is not None else ""
            print(f"| {number} | {label} | {messages:,} | {seconds:.2f} | {rate:,.0f} | {ratio:.2f} | {memory} |")
    print()
    for key, values in ratios.items():
        listed = " / ".join(f"{value:.2f}" for value in values)
        print(f"{key} / bare loop speed ratio: median {statistics.median(values):.2f} (rounds: {listed})")
    full = rounds[-1][3]
    print(f"stored {full['stored']:,}, duplicates {full['duplicates']:,}, skipped {full['skipped']:,}; database {db_size:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
