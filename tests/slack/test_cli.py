"""`crm-bot serve`, `link`, `unlink` and `console` as an administrator runs them."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import pytest
from sqlmodel import Session, select

from bot.cli.main import main
from bot.cli.slack_cmds import on_start
from bot.config import get_settings
from bot.console import Console, open_console, render_blocks, repl
from bot.slack.blocks.help import build_help
from bot.storage.models import SlackUser
from tests.fakes.slack_api import VALID_TOKEN
from tests.slack.conftest import ENRON_NOW, SIGNING_SECRET, SlackHTTP, slash_command_body

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def slack_env(monkeypatch, fake_slack, enron_engine):
    url = str(enron_engine.url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("SLACK_API_URL", fake_slack.api_url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_signed_command(fake_slack, slack_env, tmp_path):
    fake_slack.add_user("U0BADEER", "robert.badeer@enron.com")
    port = free_port()
    environment = {**os.environ, "LOG_LEVEL": "INFO"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli.main", "serve", "--port", str(port), "--now", "2002-06-01"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        http = wait_for_server(port, process)
        answer = http.post(
            slash_command_body("/crm", "contact grigsby", user_id="U0BADEER", response_url=fake_slack.response_url("serve"))
        )
        assert answer.status == 200
        reply = fake_slack.wait_for("response_url", 1, timeout=20)[0]
        assert "Mike Grigsby" in reply.params["text"]
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert f"crm-bot: listening for Slack requests on http://127.0.0.1:{port}/slack/events" in output
    assert "scheduled mailbox syncs every 15 minutes" in output
    assert VALID_TOKEN not in output
    assert SIGNING_SECRET not in output


def wait_for_server(port: int, process: subprocess.Popen) -> SlackHTTP:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"crm-bot serve exited early: {process.stdout.read() if process.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    server = type("Bound", (), {"server_address": ("127.0.0.1", port)})()
    return SlackHTTP(server)  # type: ignore[arg-type]


def test_serve_without_signing_secret_fails_clearly(monkeypatch, slack_env, capsys):
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    get_settings.cache_clear()
    assert main(["serve", "--port", "0", "--no-scheduler"]) == 2
    error = capsys.readouterr().err
    assert "SLACK_SIGNING_SECRET is not set" in error
    assert "SLACK_APP_TOKEN" in error


def test_serve_with_rejected_token_fails_clearly(monkeypatch, slack_env, capsys):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    get_settings.cache_clear()
    assert main(["serve", "--port", "0", "--no-scheduler"]) == 2
    error = capsys.readouterr().err
    assert "Slack rejected the bot token" in error
    assert "xoxb-revoked" not in error


def test_serve_port_out_of_range_exits_2(slack_env, capsys):
    assert main(["serve", "--port", "99999", "--no-scheduler"]) == 2
    error = capsys.readouterr().err
    assert "invalid port '99999'" in error
    assert len(error.strip().splitlines()) == 1


def test_serve_port_in_use_exits_2(slack_env, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--no-scheduler"]) == 2
    error = capsys.readouterr().err
    assert f"failed to listen on 127.0.0.1:{port}" in error
    assert "Traceback" not in error


def test_on_start_schedules_mailbox_syncs(slack_env, enron_engine):
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler()
    on_start(scheduler, enron_engine, get_settings(), sync_minutes=7)
    jobs = scheduler.get_jobs()
    assert len(jobs) == 1
    assert jobs[0].trigger.interval.total_seconds() == 7 * 60


def test_link_checks_profile_email(fake_slack, slack_env, enron_engine, capsys):
    fake_slack.add_user("U0BADEER", "robert.badeer@enron.com")
    assert main(["link", "U0BADEER", "robert.badeer@enron.com"]) == 0
    assert "linked Slack user U0BADEER of team T0FAKE" in capsys.readouterr().out
    with Session(enron_engine) as session:
        user = session.exec(select(SlackUser)).one()
    assert user.linked_by == "admin"
    assert user.team_id == "T0FAKE"


def test_link_refuses_someone_elses_mailbox(fake_slack, slack_env, enron_engine, capsys):
    fake_slack.add_user("U0MALLORY", "mallory@enron.com")
    assert main(["link", "U0MALLORY", "robert.badeer@enron.com"]) == 1
    error = capsys.readouterr().err
    assert "mallory@enron.com, which is not an address of the mailbox of robert.badeer@enron.com" in error
    with Session(enron_engine) as session:
        assert session.exec(select(SlackUser)).first() is None


def test_link_refuses_second_user_for_same_mailbox(fake_slack, slack_env, enron_engine, capsys):
    fake_slack.add_user("U0BADEER", "robert.badeer@enron.com")
    fake_slack.add_user("U0TWIN", "robert.badeer@enron.com")
    assert main(["link", "U0BADEER", "robert.badeer@enron.com"]) == 0
    assert main(["link", "U0TWIN", "robert.badeer@enron.com"]) == 1
    assert "already linked to Slack user U0BADEER" in capsys.readouterr().err


def test_link_unknown_address_says_import(fake_slack, slack_env, capsys):
    fake_slack.add_user("U0NEW", "new@example.org")
    assert main(["link", "U0NEW", "new@example.org"]) == 2
    assert "crm-bot import PATH --owner new@example.org" in capsys.readouterr().err


def test_unlink_detaches_user(fake_slack, slack_env, enron_engine, capsys):
    fake_slack.add_user("U0BADEER", "robert.badeer@enron.com")
    main(["link", "U0BADEER", "robert.badeer@enron.com"])
    assert main(["unlink", "U0BADEER", "--team", "T0FAKE"]) == 0
    with Session(enron_engine) as session:
        assert session.exec(select(SlackUser)).one().mailbox_id is None
    assert main(["unlink", "U0BADEER", "--team", "T0FAKE"]) == 2


def test_console_command_prints_blocks(enron_engine, capsys):
    status = main(
        ["console", "--owner", "robert.badeer@enron.com", "--db", str(enron_engine.url), "--now", "2002-06-01", "--command", "/crm top"]
    )
    output = capsys.readouterr().out
    assert status == 0
    assert "Your strongest relationships" in output
    assert "[1] Card" in output
    assert "*" not in output


def test_console_unknown_owner_says_import(enron_engine, capsys):
    assert main(["console", "--owner", "nobody@enron.com", "--db", str(enron_engine.url), "--command", "/crm top"]) == 2
    assert "crm-bot import PATH --owner nobody@enron.com" in capsys.readouterr().err


def test_console_buttons_chosen_by_number(enron_engine):
    console: Console = open_console(enron_engine, "robert.badeer@enron.com", now=ENRON_NOW)
    home = console.run("home")
    assert "[1] Strongest" in home.text
    strongest = console.run("1")
    assert "Your strongest relationships" in strongest.text
    strongest_buttons = list(console.buttons)
    assert "There is no button 99; choose one of 1 to" in console.run("99").text
    assert console.buttons == strongest_buttons
    first_card_value = console.buttons[0]["value"]
    card = console.run("1")
    assert first_card_value.split(" ", 1)[1] in card.text
    assert "Strength:" in card.text


def test_console_number_before_any_reply(enron_engine):
    console = open_console(enron_engine, "robert.badeer@enron.com", now=ENRON_NOW)
    assert "the last reply has none" in console.run("1").text
    assert "1 to 0" not in console.run("2").text


def test_console_repl_reads_until_quit(enron_engine):
    console = open_console(enron_engine, "robert.badeer@enron.com", now=ENRON_NOW)
    output = io.StringIO()
    assert repl(console, io.StringIO("/crm status\n\nquit\n"), output) == 0
    assert "Mailbox health" in output.getvalue()
    assert output.getvalue().count("crm> ") == 3


def test_console_whoknows_is_audited_as_cli_user(enron_engine):
    from bot.storage.models import AuditEvent

    console = open_console(enron_engine, "robert.badeer@enron.com", now=ENRON_NOW)
    console.run("/whoknows apbenergy")
    with Session(enron_engine) as session:
        audit = session.exec(select(AuditEvent)).one()
    assert audit.actor.startswith("cli:")
    assert audit.team_id == "local"


def test_render_blocks_numbers_buttons():
    rendered = render_blocks(build_help().blocks)
    assert "[1] Strongest" in rendered.text
    assert "[4] Help" in rendered.text
    assert [b["value"] for b in rendered.buttons] == ["top", "cold", "status", "help"]


def test_console_dates_an_archive_by_its_last_mail(enron_engine):
    from bot.console import open_console

    console = open_console(enron_engine, "robert.badeer@enron.com")
    assert console.commands.clock is not None
    assert console.commands.clock().year in (2001, 2002)
