"""The crm-bot command line, run in-process on real files and a real SQLite database."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.demo import ENRON_OWNERS
from bot.sample import generate
from tests.conftest import shared_path

SAMPLE_OWNER = "robin.hale@example.org"


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def sample(tmp_path) -> Path:
    return generate(tmp_path / "mail")


def run_json(capsys, *args: str):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_import_prints_summary(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    out = capsys.readouterr().out
    assert "stored" in out
    assert "duplicates" in out
    assert "organisations" in out
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    again = capsys.readouterr().out
    assert "stored      0" in again


def test_contacts_json_fields(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    contacts = run_json(capsys, "contacts", "--owner", SAMPLE_OWNER, "--db", db, "--limit", "50")
    required = {"name", "addresses", "organisation", "strength", "inbound", "outbound", "first_contact",
                "last_inbound", "last_outbound", "cadence_days", "last_two_way", "days_since_two_way"}
    assert contacts
    for contact in contacts:
        assert required <= set(contact)
        assert SAMPLE_OWNER not in contact["addresses"]
        assert 0 <= contact["strength"] <= 100
    addresses = {a for c in contacts for a in c["addresses"]}
    assert "news@mailer.example.net" not in addresses
    strengths = [c["strength"] for c in contacts]
    assert strengths == sorted(strengths, reverse=True)
    maja = next(c for c in contacts if "maja.lindqvist@bluepeak.example" in c["addresses"])
    assert "maja.lindqvist@orbit-labs.example" in maja["addresses"]
    assert "maja.l.home@gmail.com" in maja["addresses"]
    ines = next(c for c in contacts if "ines.duarte@kestrel-dynamics.example" in c["addresses"])
    assert ines["inbound"] == 0
    assert ines["last_two_way"] is None
    theo = next(c for c in contacts if "theo.marsh@bluepeak.example" in c["addresses"])
    assert theo["days_since_two_way"] > 100


def test_whoknows_json(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    results = run_json(capsys, "whoknows", "Harbor Finch", "--db", db)
    assert results[0]["domains"] == ["harborfinch.example"]
    owner = results[0]["owners"][0]
    assert owner["owner"] == SAMPLE_OWNER
    assert owner["contacts"] == 2
    assert set(owner) >= {"owner", "strength", "last_contact", "contacts"}
    assert run_json(capsys, "whoknows", "Holdings", "--db", db) == []
    assert run_json(capsys, "whoknows", "example.org", "--db", db) == []


def test_orgs_lists_companies(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    orgs = run_json(capsys, "orgs", "--owner", SAMPLE_OWNER, "--db", db)
    names = {o["organisation"]: o for o in orgs}
    assert names["Harborfinch"]["people"] == 2
    assert not any(o["domains"] == ["gmail.com"] for o in orgs)
    internal = [o for o in orgs if o["internal"]]
    assert [o["domains"] for o in internal] == [["example.org"]]


def test_merge_and_unmerge(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    assert main(["merge", "ana.silva@harborfinch.example", "kofi.mensah@harborfinch.example",
                 "--owner", SAMPLE_OWNER, "--db", db]) == 0
    contacts = run_json(capsys, "contacts", "--owner", SAMPLE_OWNER, "--db", db, "--limit", "50")
    ana = next(c for c in contacts if "ana.silva@harborfinch.example" in c["addresses"])
    assert "kofi.mensah@harborfinch.example" in ana["addresses"]
    merges = run_json(capsys, "merges", "--db", db)
    explicit = [m for m in merges if m["reason"] == "explicit"]
    assert len(explicit) == 1
    assert explicit[0]["kept_name"] == "Ana Silva"
    assert main(["unmerge", str(explicit[0]["id"]), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    contacts = run_json(capsys, "contacts", "--owner", SAMPLE_OWNER, "--db", db, "--limit", "50")
    ana = next(c for c in contacts if "ana.silva@harborfinch.example" in c["addresses"])
    assert "kofi.mensah@harborfinch.example" not in ana["addresses"]


def test_read_commands_create_no_database(capsys, tmp_path):
    missing = tmp_path / "absent" / "crm.db"
    assert main(["status", "--db", f"sqlite:///{missing}"]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_unknown_owner_and_merge_are_reported(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    capsys.readouterr()
    assert main(["contacts", "--owner", "nobody@example.com", "--db", db]) == 2
    assert "no mailbox" in capsys.readouterr().err
    assert main(["unmerge", "999", "--db", db]) == 2
    assert "no merge" in capsys.readouterr().err
    assert main(["merge", SAMPLE_OWNER, "ana.silva@harborfinch.example", "--db", db]) == 2
    assert "owners are never contacts" in capsys.readouterr().err


def test_status_reports_counts(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    [status] = run_json(capsys, "status", "--db", db)
    assert status["owner"] == SAMPLE_OWNER
    assert status["messages"] > 600
    assert status["two_way_relationships"] >= 7
    assert status["last_import"] is not None
    assert status["last_sync_error"] is None
    assert {f["role"] for f in status["folders"]} == {"inbox", "sent"}
    capsys.readouterr()
    assert main(["status", "--owner", SAMPLE_OWNER, "--db", db]) == 0
    assert "last import" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["import", "/nonexistent/path", "--owner", SAMPLE_OWNER], "does not exist"),
        (["import", ".", "--owner", "not-an-address"], "invalid owner address"),
        (["contacts", "--owner", "nobody@example.com"], "no database at"),
        (["contacts", "--owner", SAMPLE_OWNER, "--now", "yesterday"], "invalid date"),
        (["contacts", "--owner", SAMPLE_OWNER, "--limit", "0"], "give 1 or more"),
        (["frobnicate"], "invalid choice"),
        (["whoknows", " "], "too short"),
        (["unmerge", "999", "--owner", SAMPLE_OWNER], "no database at"),
    ],
)
def test_input_errors_exit_2(capsys, db, args, message):
    assert main([*args, "--db", db]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_invalid_setting_exits_2(capsys, db, monkeypatch):
    from bot.config import get_settings

    monkeypatch.setenv("STRENGTH_HALF_LIFE_DAYS", "-3")
    get_settings.cache_clear()
    try:
        assert main(["contacts", "--owner", SAMPLE_OWNER, "--db", db]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "STRENGTH_HALF_LIFE_DAYS" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "url, message",
    [
        ("not-a-url", "invalid database URL"),
        ("mysql://localhost/crm", "unsupported database 'mysql'"),
    ],
)
def test_invalid_database_url_exits_2(capsys, url, message):
    assert main(["status", "--db", url]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_file_that_is_not_sqlite_exits_2(capsys, tmp_path):
    path = tmp_path / "mail.bin"
    path.write_bytes(b"\x00\x01not a database" * 1000)
    assert main(["status", "--db", f"sqlite:///{path}"]) == 2
    err = capsys.readouterr().err
    assert f"failed to open {path} as a SQLite database" in err
    assert len(err.strip().splitlines()) == 1


def test_unreachable_postgresql_exits_1(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://crm:topsecret@127.0.0.1:{port}/crm"
    assert main(["status", "--db", url]) == 1
    err = capsys.readouterr().err
    assert "database failed" in err
    assert f"port {port} failed" in err
    assert "topsecret" not in err
    assert len(err.strip().splitlines()) == 1


def test_closed_stdout_ends_quietly(db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db, "--no-progress"]) == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "orgs", "--owner", SAMPLE_OWNER, "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert b"Traceback" not in err
    assert b"BrokenPipeError" not in err


@pytest.fixture(scope="module")
def enron(tmp_path_factory) -> Path:
    tarball = shared_path("data", "mail", "enron-maildir-9-mailboxes.tar.xz")
    target = tmp_path_factory.mktemp("enron")
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="data")
    return target / "maildir"


def test_enron_corpus_imports_completely(capsys, tmp_path, enron):
    db = f"sqlite:///{tmp_path / 'enron.db'}"
    total_read = 0
    counts: dict[str, list[str]] = {}
    for box, owner in ENRON_OWNERS.items():
        assert main(["import", str(enron / box), "--owner", owner, "--db", db, "--no-progress"]) == 0
        out = capsys.readouterr().out
        read = int(out.split("read ", 1)[1].split(" messages", 1)[0].replace(",", ""))
        stored = int(out.split("stored", 1)[1].split()[0].replace(",", ""))
        duplicates = int(out.split("duplicates", 1)[1].split()[0].replace(",", ""))
        skipped = int(out.split("skipped", 1)[1].split()[0].replace(",", ""))
        assert read == stored + duplicates + skipped
        assert skipped <= read * 0.01
        total_read += read
        counts[box] = [f"{value:,}" for value in (read, stored, duplicates, skipped)]
    assert total_read == 20_995

    # All nine mailboxes in one run store what nine runs store.
    owners = tmp_path / "owners.csv"
    owners.write_text("".join(f"{box},{owner}\n" for box, owner in ENRON_OWNERS.items()))
    together = f"sqlite:///{tmp_path / 'together.db'}"
    assert main(["import", str(enron), "--owners", str(owners), "--db", together, "--no-progress"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    for box, owner in ENRON_OWNERS.items():
        assert rows[box][1:6] == [owner, *counts[box]]
    assert rows["all"][1] == "20,995"

    for box in ("allen-p", "buy-r", "presto-k"):
        owner = ENRON_OWNERS[box]
        contacts = run_json(capsys, "contacts", "--owner", owner, "--db", db, "--limit", "10")
        assert len(contacts) == 10
        addresses = [a for c in contacts for a in c["addresses"]]
        box_surname = box.split("-")[0]
        # The owner and the owner's aliases are never contacts.
        assert not any(box_surname in a.split("@")[0] for a in addresses)
        for contact in contacts:
            assert contact["inbound"] + contact["outbound"] > 0
            assert not any(word in a for a in contact["addresses"] for word in ("noreply", "announce", "newsletter", "webmaster"))


def test_contacts_now_leaves_stored_data(capsys, db, sample):
    assert main(["import", str(sample), "--owner", SAMPLE_OWNER, "--db", db]) == 0
    before = run_json(capsys, "contacts", "--owner", SAMPLE_OWNER, "--db", db, "--limit", "50")
    early = run_json(capsys, "contacts", "--owner", SAMPLE_OWNER, "--db", db, "--now", "2025-12-01")
    assert 0 < len(early) < len(before) or early != before
    for contact in early:
        for field in ("last_inbound", "last_outbound"):
            assert contact[field] is None or contact[field] <= "2025-12-01T00:00:00Z"
    nothing = run_json(capsys, "contacts", "--owner", SAMPLE_OWNER, "--db", db, "--now", "1990-01-01")
    assert nothing == []
    after = run_json(capsys, "contacts", "--owner", SAMPLE_OWNER, "--db", db, "--limit", "50")
    assert after == before


@pytest.fixture
def team(tmp_path) -> Path:
    root = tmp_path / "team"
    generate(root / "robin")
    generate(root / "kai", seed=11)
    return root


def test_owners_file_imports_each_mailbox(capsys, db, team, tmp_path):
    owners = tmp_path / "owners.csv"
    owners.write_text(f"# folder,owner,name\nrobin,{SAMPLE_OWNER},Robin Hale\n\nkai, kai.berg@example.org\n")
    assert main(["import", str(team), "--owners", str(owners), "--db", db, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "of 2 mailboxes" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["robin"][1] == SAMPLE_OWNER
    assert rows["kai"][1] == "kai.berg@example.org"

    separate = f"sqlite:///{tmp_path / 'separate.db'}"
    for folder, owner in (("robin", SAMPLE_OWNER), ("kai", "kai.berg@example.org")):
        assert main(["import", str(team / folder), "--owner", owner, "--db", separate, "--no-progress"]) == 0
        single = capsys.readouterr().out
        counts = [single.split(word, 1)[1].split()[0] for word in ("stored", "duplicates", "skipped", "people")]
        assert rows[folder][3:7] == counts
    assert int(rows["all"][1].replace(",", "")) == sum(int(rows[f][2].replace(",", "")) for f in ("robin", "kai"))
    for owner in (SAMPLE_OWNER, "kai.berg@example.org"):
        assert run_json(capsys, "contacts", "--owner", owner, "--db", db) == run_json(
            capsys, "contacts", "--owner", owner, "--db", separate
        )


@pytest.mark.parametrize(
    "lines, extra, message",
    [
        ("robin\n", [], "line 1: 'robin' is not 'folder,owner address[,owner name]'"),
        ("robin,a@example.org\nnobody,b@example.org\n", [], "line 2: folder 'nobody' does not exist"),
        ("robin,a@example.org\nrobin/,b@example.org\n", [], "line 2: folder 'robin/' is already on line 1"),
        ("robin,a@example.org\nkai,A@example.org\n", [], "line 2: owner 'A@example.org' is already on line 1"),
        ("# nothing\n", [], "lists no mailbox"),
        ("robin,not-an-address\n", [], "invalid owner address"),
        ("robin,a@example.org\n", ["--name", "Robin"], "with --owners, put each owner's name in the file"),
        ("robin,a@example.org\n", ["--owner", "a@example.org"], "not allowed with argument --owners"),
    ],
)
def test_owners_file_errors_exit_2(capsys, db, team, tmp_path, lines, extra, message):
    owners = tmp_path / "owners.csv"
    owners.write_text(lines)
    assert main(["import", str(team), "--owners", str(owners), *extra, "--db", db]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_import_needs_an_owner(capsys, db, team):
    assert main(["import", str(team), "--db", db]) == 2
    assert "one of the arguments --owner --owners is required" in capsys.readouterr().err
