"""Import throughput and peak memory on the Enron corpus, against a bare header-parsing loop.

Run with ``make bench`` or ``.venv/bin/python bench/import_bench.py [--tarball PATH]``.
Each measurement runs in a fresh child process so that its peak resident memory
(``ru_maxrss``) is its own. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def full_import(maildir: Path, db_path: Path, readers: int | None = None) -> dict:
    """Import all nine mailboxes with the bot's own code, as `crm-bot import` does.

    ``readers`` None chooses reader processes as `crm-bot import` does; 0 reads in this
    process.
    """
    os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    from bot.config import get_settings
    from bot.mail.files import FilesSource
    from bot.mail.ingest import ensure_mailbox, import_source
    from bot.relationships.compute import recompute
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema

    settings = get_settings()
    engine = make_engine(settings.database_url)
    create_schema(engine)
    read = stored = duplicates = skipped = 0
    started = time.perf_counter()
    import_seconds = 0.0
    from bot.demo import ENRON_OWNERS

    for box, owner in ENRON_OWNERS.items():
        mailbox = ensure_mailbox(engine, owner)
        t0 = time.perf_counter()
        summary = import_source(engine, mailbox, FilesSource(maildir / box), settings=settings, readers=readers)
        import_seconds += time.perf_counter() - t0
        recompute(engine, mailbox.id, settings=settings)
        read += summary.read
        stored += summary.stored
        duplicates += summary.duplicates
        skipped += summary.skipped_total
    elapsed = time.perf_counter() - started
    return {
        "messages": read,
        "stored": stored,
        "duplicates": duplicates,
        "skipped": skipped,
        "seconds": elapsed,
        "import_seconds": import_seconds,
    }


def child(kind: str, maildir: str, db_path: str) -> None:
    if kind == "bare":
        result = bare_loop(Path(maildir))
    else:
        result = full_import(Path(maildir), Path(db_path), readers=0 if kind == "one-process" else None)
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
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if not args.tarball.is_file():
        print(f"bench: the Enron tarball {args.tarball} was not found; pass --tarball PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with tarfile.open(args.tarball) as archive:
            archive.extractall(work, filter="data")
        maildir = work / "maildir"
        # Warm the page cache so both runs read from memory.
        bare_loop(maildir)
        bare = run_child("bare", maildir, work / "unused.db")
        single = run_child("one-process", maildir, work / "single.db")
        full = run_child("import", maildir, work / "bench.db")
        db_size = (work / "bench.db").stat().st_size / 1e6
    bare_rate = bare["messages"] / bare["seconds"]
    single_rate = single["messages"] / single["import_seconds"]
    import_rate = full["messages"] / full["import_seconds"]
    total_rate = full["messages"] / full["seconds"]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| run | messages | seconds | messages/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| bare header-parsing loop (email package) | {bare['messages']:,} | {bare['seconds']:.2f} | {bare_rate:,.0f} | {bare['peak_rss_mb']:.0f} |")
    print(f"| import in one process (--readers 0) | {single['messages']:,} | {single['import_seconds']:.2f} | {single_rate:,.0f} | |")
    print(f"| import (read, parse, store) | {full['messages']:,} | {full['import_seconds']:.2f} | {import_rate:,.0f} | |")
    print(f"| import and relationship computation | {full['messages']:,} | {full['seconds']:.2f} | {total_rate:,.0f} | {full['peak_rss_mb']:.0f} |")
    print()
    print(
        f"import / bare loop speed ratio: {import_rate / bare_rate:.2f} "
        f"(one process: {single_rate / bare_rate:.2f}); with computation: {total_rate / bare_rate:.2f}"
    )
    print(f"stored {full['stored']:,}, duplicates {full['duplicates']:,}, skipped {full['skipped']:,}; database {db_size:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
