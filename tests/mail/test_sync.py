"""Credentials references, mailbox sync with health records, the scheduler job and the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select
from sqlmodel import Session

from bot.cli.main import main
from bot.config import Settings
from bot.errors import ConfigError, InputError
from bot.mail.credentials import Secrets, resolve, validate_reference
from bot.mail.ews import EwsSource, clear_dn_cache
from bot.mail.ingest import ensure_mailbox
from bot.mail.sync import SYNC_JOB_ID, build_source, schedule_syncs, sync_all, sync_mailbox
from bot.storage.db import make_engine
from bot.storage.models import Mailbox, Message, SyncRun
from bot.storage.schema import create_schema
from tests.fakes.ews_server import FakeEwsServer, Fault
from tests.fakes.mailstore import INBOX, FakeAddress, FakeMailbox, FakeMessage

OWNER = "robin.hale@example.org"
OTHER = "ana.silva@example.org"
SERVICE = "svc-crm@example.org"
PASSWORD = "correct horse"
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=timezone.utc)


def settings() -> Settings:
    return Settings(database_url="sqlite://")


def fill(box: FakeMailbox, n: int) -> None:
    for i in range(n):
        box.add_message(
            FakeMessage("", INBOX, f"Note {i}", T0 + timedelta(hours=i), None,
                        FakeAddress("Kofi Mensah", "kofi.mensah@harborfinch.example"), to=[FakeAddress(None, box.owner)])
        )


# --- credentials references --------------------------------------------------------------------------


def test_env_reference_with_json_object():
    secrets = resolve("env:EWS_LOGIN", {"EWS_LOGIN": json.dumps({"username": SERVICE, "password": PASSWORD})})
    assert secrets.username == SERVICE
    assert secrets.password == PASSWORD


def test_env_reference_with_a_single_secret():
    secrets = resolve("env:GRAPH_SECRET", {"GRAPH_SECRET": "s3cr3t{not-json"})
    assert secrets.client_secret == "s3cr3t{not-json"
    assert secrets.password == "s3cr3t{not-json"


def test_file_reference(tmp_path):
    path = tmp_path / "ews.json"
    path.write_text(json.dumps({"username": SERVICE, "password": PASSWORD}))
    assert resolve(f"file:{path}").password == PASSWORD


def test_secrets_never_show_in_repr():
    secrets = Secrets("env:X", {"username": SERVICE, "password": PASSWORD})
    for text in (repr(secrets), str(secrets), f"{secrets}"):
        assert PASSWORD not in text
        assert SERVICE not in text
    assert "password=***" in repr(secrets)


@pytest.mark.parametrize(
    ("reference", "environ", "message"),
    [
        ("env:MISSING", {}, "is not set"),
        ("file:/nonexistent/secret.json", {}, "cannot read the file"),
        ("env:BAD", {"BAD": '{"password": 5}'}, "must be a string"),
    ],
)
def test_unusable_reference_is_a_config_error(reference, environ, message):
    with pytest.raises(ConfigError, match=message):
        resolve(reference, environ)


def test_invalid_json_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{username: svc}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve(f"file:{path}")


@pytest.mark.parametrize("reference", ["hunter2", "env:", "env:BAD-NAME", "file:", "vault:x"])
def test_reference_syntax_is_checked(reference):
    with pytest.raises(InputError, match="credentials reference"):
        validate_reference(reference)


def test_missing_key_names_the_reference_and_key():
    with pytest.raises(ConfigError, match="env:X have no 'username'"):
        Secrets("env:X", {"password": PASSWORD}).require("username", "basic login to EWS")


# --- sync with health records -----------------------------------------------------------------------


@pytest.fixture
def boxes():
    clear_dn_cache()
    return FakeMailbox(OWNER), FakeMailbox(OTHER)


@pytest.fixture
def server(boxes):
    with FakeEwsServer(list(boxes), users={SERVICE: PASSWORD}, impersonation={SERVICE: {OWNER, OTHER}}) as fake:
        yield fake


def ews_mailbox(engine, server: FakeEwsServer, owner: str = OWNER, reference: str = "env:CRM_TEST_EWS", **extra) -> Mailbox:
    config = {"ews_url": server.url, "auth": "basic", "version": "15.1.2507.6"}
    config.update(extra)
    return ensure_mailbox(engine, owner, source_kind="ews", source_config=config, credentials_ref=reference)


@pytest.fixture
def ews_login(monkeypatch):
    monkeypatch.setenv("CRM_TEST_EWS", json.dumps({"username": SERVICE, "password": PASSWORD}))


def test_source_is_built_from_the_mailbox_row(engine, server, ews_login):
    mailbox = ews_mailbox(engine, server)
    source = build_source(mailbox, settings())
    assert isinstance(source, EwsSource)
    assert source.settings.ews_url == server.url
    assert PASSWORD not in repr(source)


def test_sync_records_health_and_counts(engine, boxes, server, ews_login):
    fill(boxes[0], 3)
    mailbox = ews_mailbox(engine, server)
    now = datetime(2024, 7, 1, tzinfo=timezone.utc)
    outcome = sync_mailbox(engine, mailbox, settings(), clock=lambda: now)
    assert (outcome.outcome, outcome.read, outcome.stored) == ("ok", 3, 3)
    with Session(engine) as session:
        row = session.get(Mailbox, mailbox.id)
        runs = session.execute(select(SyncRun).where(SyncRun.mailbox_id == mailbox.id)).scalars().all()
    assert row.last_sync_ok_at.astimezone(timezone.utc) == now
    assert row.last_sync_error is None
    assert row.messages_read == 3
    assert [(r.kind, r.outcome, r.counts["stored"]) for r in runs] == [("sync", "ok", 3)]
    boxes[0].add_message(FakeMessage("", INBOX, "Fresh", T0 + timedelta(days=9), None,
                                     FakeAddress(None, "lee.wong@northwind.example"), to=[FakeAddress(None, OWNER)]))
    second = sync_mailbox(engine, row, settings(), clock=lambda: now + timedelta(minutes=15))
    assert (second.read, second.stored) == (1, 1)
    third = sync_mailbox(engine, row, settings(), clock=lambda: now + timedelta(minutes=30))
    assert (third.outcome, third.read, third.stored) == ("ok", 0, 0)
    with Session(engine) as session:
        assert session.get(Mailbox, mailbox.id).messages_read == 4


def test_missing_secret_fails_in_plain_words(engine, server, monkeypatch):
    monkeypatch.delenv("CRM_TEST_EWS", raising=False)
    mailbox = ews_mailbox(engine, server)
    outcome = sync_mailbox(engine, mailbox, settings())
    assert outcome.outcome == "failed"
    assert "environment variable CRM_TEST_EWS is not set" in outcome.error
    with Session(engine) as session:
        row = session.get(Mailbox, mailbox.id)
        run = session.execute(select(SyncRun)).scalars().one()
    assert row.last_sync_error == outcome.error
    assert (run.outcome, run.error) == ("failed", outcome.error)


def test_paused_mailbox_is_skipped(engine, boxes, server, ews_login):
    fill(boxes[0], 1)
    mailbox = ews_mailbox(engine, server)
    with Session(engine) as session:
        row = session.get(Mailbox, mailbox.id)
        row.paused = True
        session.add(row)
        session.commit()
        session.refresh(row)
    outcome = sync_mailbox(engine, row, settings())
    assert outcome.outcome == "skipped"
    assert server.count() == 0


def test_sync_all_goes_on_after_a_failing_mailbox(engine, boxes, server, ews_login):
    fill(boxes[0], 2)
    fill(boxes[1], 4)
    ews_mailbox(engine, server, owner=OWNER, reference="env:CRM_TEST_NOT_SET")
    ews_mailbox(engine, server, owner=OTHER)
    outcomes = sync_all(engine, settings())
    assert [(o.owner, o.outcome, o.stored) for o in outcomes] == [(OWNER, "failed", 0), (OTHER, "ok", 4)]


def test_deferred_mailbox_waits_until_the_server_allows(engine, boxes, server, ews_login):
    fill(boxes[0], 1)
    mailbox = ews_mailbox(engine, server)
    server.inject("SyncFolderItems", Fault.busy(3_600_000))
    now = datetime(2024, 7, 1, tzinfo=timezone.utc)
    assert sync_mailbox(engine, mailbox, settings(), clock=lambda: now).outcome == "deferred"
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(Mailbox, mailbox.id)
    assert sync_mailbox(engine, row, settings(), clock=lambda: now + timedelta(minutes=59)).outcome == "skipped"
    later = sync_mailbox(engine, row, settings(), clock=lambda: now + timedelta(minutes=61))
    assert (later.outcome, later.stored) == ("ok", 1)
    with Session(engine) as session:
        assert session.get(Mailbox, mailbox.id).next_sync_not_before is None


@pytest.mark.parametrize("started", [False, True], ids=["before-start", "running"])
def test_schedule_adds_one_coalescing_job(engine, started):
    scheduler = BackgroundScheduler()
    if started:
        scheduler.start(paused=True)
    job = schedule_syncs(scheduler, engine, settings(), interval_minutes=10)
    again = schedule_syncs(scheduler, engine, settings(), interval_minutes=5)
    jobs = scheduler.get_jobs()
    assert [j.id for j in jobs] == [SYNC_JOB_ID]
    assert job.id == again.id
    assert jobs[0].coalesce is True
    assert jobs[0].max_instances == 1
    assert jobs[0].trigger.interval == timedelta(minutes=5)
    with pytest.raises(ConfigError):
        schedule_syncs(scheduler, engine, settings(), interval_minutes=0)
    if started:
        scheduler.shutdown(wait=False)


# --- command line -------------------------------------------------------------------------------------


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    create_schema(make_engine(url))
    return url


def test_cli_add_list_and_sync(db_url, boxes, server, ews_login, capsys):
    fill(boxes[0], 2)
    code = main(["mailbox", "add", "--owner", OWNER, "--source", "ews", "--ews-url", server.url, "--auth", "basic",
                 "--version", "15.1.2507.6", "--credentials", "env:CRM_TEST_EWS", "--timezone", "Europe/Berlin",
                 "--setting", "page_size=1", "--db", db_url])
    assert code == 0
    assert "reads ews from" in capsys.readouterr().out
    assert main(["sync", "--mailbox", OWNER, "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert f"{OWNER}: ok; read 2, stored 2" in out
    assert server.count("SyncFolderItems") == 3  # two pages of one item, then the empty Sent Items
    assert main(["mailbox", "list", "--json", "--db", db_url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["owner"] == OWNER
    assert rows[0]["credentials"] == "env:CRM_TEST_EWS"
    assert rows[0]["messages_read"] == 2
    assert rows[0]["last_sync_ok_at"] is not None
    engine = make_engine(db_url)
    with Session(engine) as session:
        row = session.execute(select(Mailbox)).scalars().one()
        assert row.timezone == "Europe/Berlin"
        assert row.source_config["page_size"] == 1
        assert PASSWORD not in json.dumps(row.source_config)
        assert len(session.execute(select(Message)).scalars().all()) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "ews", "--credentials", "env:X"], "needs --ews-url"),
        (["--source", "ews", "--ews-url", "https://mail.example.org/EWS/Exchange.asmx"], "needs --credentials"),
        (["--source", "ews", "--ews-url", "https://mail.example.org/EWS/Exchange.asmx", "--credentials", "hunter2"],
         "invalid credentials reference"),
        (["--source", "graph", "--credentials", "env:X"], "needs --tenant-id and --client-id"),
        (["--source", "graph", "--tenant-id", "t", "--client-id", "c", "--credentials", "env:X", "--ews-url", "https://x"],
         "applies to --source ews only"),
        (["--source", "files"], "needs --path"),
        (["--source", "ews", "--ews-url", "https://mail.example.org/EWS/Exchange.asmx", "--credentials", "env:X",
          "--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--source", "ews", "--ews-url", "https://mail.example.org/EWS/Exchange.asmx", "--credentials", "env:X",
          "--setting", "pagesize=10"], "unknown keys pagesize"),
        (["--source", "ews", "--ews-url", "https://mail.example.org/EWS/Exchange.asmx", "--credentials", "env:X",
          "--setting", "page_size"], "write KEY=VALUE"),
    ],
)
def test_cli_rejects_bad_input_with_exit_2(db_url, capsys, argv, message):
    code = main(["mailbox", "add", "--owner", OWNER, *argv, "--db", db_url])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_cli_sync_unknown_mailbox(db_url, capsys):
    assert main(["sync", "--mailbox", "nobody@example.org", "--db", db_url]) == 2
    assert "no mailbox for nobody@example.org" in capsys.readouterr().err


@pytest.mark.parametrize("reference", ["plain:hunter2-secret", "hunter2-secret", "env:hunter2-secret"])
def test_invalid_reference_never_echoes_value(reference):
    from bot.errors import InputError
    from bot.mail.credentials import validate_reference

    with pytest.raises(InputError) as caught:
        validate_reference(reference)
    assert "hunter2" not in str(caught.value)
