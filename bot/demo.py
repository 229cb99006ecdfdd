"""The demo run by ``make demo``: import sample mail, print relationships and a who-knows answer.

It imports a generated sample mailbox of invented people and, when the Enron corpus is
found next to the project (``../shared/data/mail``) or named by ``CRM_DEMO_ENRON``, three
real Enron mailboxes. Everything goes into a demo database of its own, so the demo never
touches a real one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

import platformdirs

from bot.cli.main import main as cli

ROOT = Path(__file__).resolve().parent.parent
ENRON_TARBALL = "enron-maildir-9-mailboxes.tar.xz"
# Each Enron mailbox of the corpus and its owner's address as seen in the sent mail.
ENRON_OWNERS = {
    "allen-p": "phillip.allen@enron.com",
    "badeer-r": "robert.badeer@enron.com",
    "buy-r": "rick.buy@enron.com",
    "cuilla-m": "martin.cuilla@enron.com",
    "dean-c": "craig.dean@enron.com",
    "fossum-d": "drew.fossum@enron.com",
    "grigsby-m": "mike.grigsby@enron.com",
    "lewis-a": "andrew.lewis@enron.com",
    "presto-k": "m..presto@enron.com",
}
ENRON_DEMO = [(box, ENRON_OWNERS[box]) for box in ("allen-p", "buy-r", "presto-k")]


def _enron_tarball() -> Path | None:
    named = os.environ.get("CRM_DEMO_ENRON")
    candidates = [Path(named)] if named else []
    candidates.append(ROOT.parent / "shared" / "data" / "mail" / ENRON_TARBALL)
    for path in candidates:
        if path.is_file():
            return path
    return None


def run(work: Path) -> int:
    from bot.sample import generate

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    db = f"sqlite:///{work / 'demo.db'}"
    sample = generate(work / "sample")

    def step(*args: str) -> None:
        print(f"\n$ crm-bot {' '.join(args)}", flush=True)
        status = cli([*args, "--db", db])
        if status != 0:
            raise SystemExit(status)

    step("import", str(sample), "--owner", "robin.hale@example.org", "--name", "Robin Hale", "--no-progress")
    step("contacts", "--owner", "robin.hale@example.org", "--limit", "8")
    step("whoknows", "harbor finch")

    tarball = _enron_tarball()
    if tarball is None:
        print("\n(The Enron corpus was not found; set CRM_DEMO_ENRON to its tarball to import real mail too.)")
        return 0
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if any(m.name.startswith(f"maildir/{box}/") for box, _ in ENRON_DEMO)]
        archive.extractall(work / "enron", members=members, filter="data")
    owners = work / "enron-owners.csv"
    owners.write_text("".join(f"{box},{owner}\n" for box, owner in ENRON_DEMO), encoding="utf-8")
    step("import", str(work / "enron" / "maildir"), "--owners", str(owners), "--no-progress")
    step("contacts", "--owner", ENRON_DEMO[0][1], "--limit", "10")
    step("whoknows", "reliant")
    return 0


def main() -> int:
    work = Path(platformdirs.user_cache_dir("crm-bot", appauthor=False)) / "demo"
    return run(work)


if __name__ == "__main__":
    sys.exit(main())
