"""The Graph source with real MSAL and httpx against the fake Graph server over HTTPS."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote

import pytest
from sqlalchemy import select
from sqlmodel import Session

from bot.config import Settings
from bot.errors import ConfigError, SourceError, SyncStateExpired
from bot.mail.credentials import Secrets
from bot.mail.graph import MESSAGE_SELECT, GraphSettings, GraphSource, retry_after_seconds
from bot.mail.ingest import ensure_mailbox, import_source
from bot.mail.sync import sync_mailbox
from bot.relationships.compute import recompute
from bot.storage.models import Address, CalendarAttendee, CalendarEvent, ContactCard, FolderState, Mailbox, Message, SyncRun
from tests.conftest import shared_path
from tests.helpers import crash_on_cursor_save
from tests.fakes.graph_server import FakeGraphServer, GraphFault
from tests.fakes.mailstore import (
    INBOX,
    SENT,
    FakeAddress,
    FakeAttendee,
    FakeContact,
    FakeEvent,
    FakeMailbox,
    FakeMessage,
)

OWNER = "robin.hale@example.org"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "app secret value"
KOFI = FakeAddress("Kofi Mensah", "kofi.mensah@harborfinch.example")
ROBIN = FakeAddress("Robin Hale", OWNER)
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=timezone.utc)


def settings() -> Settings:
    return Settings(database_url="sqlite://")


def inbound(box: FakeMailbox, n: int, start: int = 0) -> list[FakeMessage]:
    added = []
    for i in range(start, start + n):
        added.append(
            box.add_message(
                FakeMessage(
                    "",
                    INBOX,
                    f"Order {i}",
                    T0 + timedelta(hours=i),
                    T0 + timedelta(hours=i, minutes=1),
                    KOFI,
                    to=[ROBIN],
                    cc=[FakeAddress("Lee Wong", "Lee.Wong@northwind.example")],
                    message_id=f"<order.{i}@harborfinch.example>",
                )
            )
        )
    return added


def outbound(box: FakeMailbox, n: int) -> None:
    for i in range(n):
        box.add_message(
            FakeMessage("", SENT, f"Re: Order {i}", T0 + timedelta(hours=i, minutes=30), None, ROBIN, to=[KOFI],
                        message_id=f"<reply.{i}@example.org>")
        )


@pytest.fixture
def box() -> FakeMailbox:
    return FakeMailbox(OWNER)


@pytest.fixture
def server(box, tmp_path):
    with FakeGraphServer([box], tmp_path / "tls") as fake:
        fake.add_app(CLIENT_ID, SECRET, {OWNER})
        yield fake


def graph_config(server: FakeGraphServer, **extra) -> dict:
    config = {
        "tenant_id": server.tenant_id,
        "client_id": CLIENT_ID,
        "graph_url": server.graph_url,
        "authority_host": server.base,
        "ca_bundle": str(server.cert_path),
    }
    config.update(extra)
    return config


def make_source(server: FakeGraphServer, sleeps: list[float] | None = None, secret: str = SECRET, **extra) -> GraphSource:
    sink = sleeps if sleeps is not None else []
    return GraphSource(
        GraphSettings.from_config(OWNER, graph_config(server, **extra)),
        Secrets("env:GRAPH", {"client_secret": secret}),
        sleep=sink.append,
    )


def mailbox_row(engine, server: FakeGraphServer, **extra) -> Mailbox:
    return ensure_mailbox(
        engine, OWNER, source_kind="graph", source_config=graph_config(server, **extra), credentials_ref="env:GRAPH"
    )


def factory_for(server: FakeGraphServer, sleeps: list[float], **extra):  # type: ignore[no-untyped-def]
    def build(mailbox: Mailbox, _settings: Settings) -> GraphSource:
        config = dict(mailbox.source_config)
        config.update(extra)
        return GraphSource(
            GraphSettings.from_config(mailbox.owner_address, config, mailbox.timezone),
            Secrets("env:GRAPH", {"client_secret": SECRET}),
            sleep=sleeps.append,
        )

    return build


def read_all(source: GraphSource, folder_index: int = 0, cursor: str | None = None) -> list:
    return list(source.read(source.folders()[folder_index], cursor))


def stored_messages(engine, mailbox_id: int) -> list[Message]:
    with Session(engine) as session:
        return list(
            session.execute(select(Message).where(Message.mailbox_id == mailbox_id).order_by(Message.sent_at)).scalars()
        )


# --- reading ------------------------------------------------------------------------------------


def test_delta_pages_become_batches(box, server):
    inbound(box, 7)
    batches = read_all(make_source(server, page_size=3))
    assert [len(b.items) for b in batches] == [3, 3, 1]
    assert [b.complete for b in batches] == [False, False, True]
    assert "$skiptoken=" in batches[0].cursor
    assert "$deltatoken=" in batches[-1].cursor
    assert server.count("delta") == 3
    first = batches[0].items[0]
    assert first.sender == first.sender.__class__("kofi.mensah@harborfinch.example", "Kofi Mensah")
    assert first.cc[0].address == "lee.wong@northwind.example"
    assert first.sent_at == T0
    assert first.message_id == "<order.0@harborfinch.example>"
    assert first.conversation_id is not None
    assert first.source_ref.startswith("graph:AAMkAD")


def test_delta_request_select_and_prefer(box, server):
    inbound(box, 2)
    batches = read_all(make_source(server, page_size=50))
    first = [r for r in server.requests if r.route == "delta"][0]
    selected = parse_qs(unquote(first.query))["$select"][0].split(",")
    assert selected == MESSAGE_SELECT
    assert "body" not in selected
    assert 'IdType="ImmutableId"' in first.prefer
    assert "odata.maxpagesize=50" in first.prefer
    assert not batches[0].items[0].source_ref.endswith("-moveable")


def test_one_token_serves_every_page(box, server):
    inbound(box, 9)
    source = make_source(server, page_size=2)
    read_all(source)
    read_all(source, folder_index=1)
    assert server.count("delta") == 6
    assert server.count("token") == 1
    assert server.count("openid") == 1
    assert list(server.token_scopes.values()) == [server.base + "/.default"]


def test_delta_link_reads_only_new_and_ignores_removed(box, server):
    added = inbound(box, 3)
    source = make_source(server)
    cursor = read_all(source)[-1].cursor
    box.delete_message(added[0].item_id)
    inbound(box, 1, start=3)
    batches = read_all(make_source(server), cursor=cursor)
    subjects = [item.subject for batch in batches for item in batch.items]
    assert subjects == ["Order 3"]
    assert batches[-1].skipped == []


def test_sent_items_folder(box, server):
    outbound(box, 2)
    items = [i for b in read_all(make_source(server), folder_index=1) for i in b.items]
    assert [i.folder_role.value for i in items] == ["sent", "sent"]
    assert items[0].sender.address == OWNER


def test_drafts_are_skipped(box, server):
    box.add_message(FakeMessage("", INBOX, "Draft", None, None, ROBIN, to=[KOFI], is_draft=True))
    batches = read_all(make_source(server))
    assert batches[0].items == []
    assert [s.reason for s in batches[0].skipped] == ["draft"]


def test_legacy_dn_address_keeps_only_the_name(box, server):
    box.add_message(
        FakeMessage("", INBOX, "Handover", T0, T0, FakeAddress("Sofia Lind", "/o=ExampleOrg/ou=Exchange Administrative Group/cn=Recipients/cn=slind", "EX"),
                    to=[ROBIN])
    )
    item = read_all(make_source(server))[0].items[0]
    assert item.sender.address is None
    assert item.sender.name == "Sofia Lind"


def test_cursor_for_another_host_is_not_followed(box, server):
    inbound(box, 1)
    source = make_source(server)
    with pytest.raises(SyncStateExpired):
        read_all(source, cursor="https://attacker.example/v1.0/users/x/mailFolders/inbox/messages/delta?$deltatoken=x")
    assert server.count("delta") == 0


def test_settings_reject_invalid_values(server):
    with pytest.raises(ConfigError, match="tenant_id"):
        GraphSettings.from_config(OWNER, {"client_id": CLIENT_ID})
    with pytest.raises(ConfigError, match="https"):
        GraphSettings.from_config(OWNER, graph_config(server, graph_url="http://127.0.0.1:1/v1.0"))
    with pytest.raises(ConfigError, match="folder"):
        GraphSettings.from_config(OWNER, graph_config(server, folders=["Projects"]))


# --- throttling and faults -------------------------------------------------------------------------


def test_throttled_request_waits_for_retry_after(box, server):
    inbound(box, 2)
    server.inject("delta", GraphFault.throttled(retry_after=7), times=2)
    sleeps: list[float] = []
    items = [i for b in read_all(make_source(server, sleeps)) for i in b.items]
    assert len(items) == 2
    assert sleeps == [7.0, 7.0]


def test_throttled_without_retry_after_backs_off_exponentially(box, server):
    inbound(box, 1)
    server.inject("delta", GraphFault.throttled(retry_after=None), times=3)
    sleeps: list[float] = []
    items = [i for b in read_all(make_source(server, sleeps)) for i in b.items]
    assert len(items) == 1
    assert sleeps == [2.0, 4.0, 8.0]


def test_long_retry_after_defers_the_sync(engine, box, server):
    inbound(box, 2)
    server.inject("delta", GraphFault.throttled(retry_after=900, status=503))
    mailbox = mailbox_row(engine, server)
    now = datetime(2024, 6, 14, 13, 0, tzinfo=timezone.utc)
    sleeps: list[float] = []
    outcome = sync_mailbox(engine, mailbox, settings(), clock=lambda: now, source_factory=factory_for(server, sleeps),
                           read_calendar=False)
    assert outcome.outcome == "deferred"
    assert outcome.stored == 0
    assert sleeps == []
    with Session(engine) as session:
        row = session.get(Mailbox, mailbox.id)
        run = session.execute(select(SyncRun).where(SyncRun.mailbox_id == mailbox.id)).scalars().one()
    assert row.next_sync_not_before.astimezone(timezone.utc) == now + timedelta(seconds=900)
    assert run.outcome == "deferred"


def test_retry_after_counts_towards_the_maximum_wait(box, server):
    inbound(box, 1)
    server.inject("delta", GraphFault.throttled(retry_after=400), times=2)
    sleeps: list[float] = []
    from bot.errors import SourceDeferred

    with pytest.raises(SourceDeferred) as raised:
        read_all(make_source(server, sleeps))
    assert sleeps == [400.0]
    assert raised.value.retry_after_seconds == 400.0


@pytest.mark.parametrize(
    "fault",
    [GraphFault("malformed"), GraphFault("drop"), GraphFault("status", status=500), GraphFault("status", status=502)],
    ids=["malformed-json", "dropped-connection", "http-500", "http-502"],
)
def test_transient_failure_is_retried(box, server, fault):
    inbound(box, 2)
    server.inject("delta", fault)
    sleeps: list[float] = []
    items = [i for b in read_all(make_source(server, sleeps)) for i in b.items]
    assert len(items) == 2
    assert sleeps == [2.0]


def test_slow_answer_times_out_and_is_retried(box, server):
    inbound(box, 1)
    server.inject("delta", GraphFault("slow", delay=2.5))
    sleeps: list[float] = []
    items = [i for b in read_all(make_source(server, sleeps, timeout_seconds=1)) for i in b.items]
    assert len(items) == 1
    assert sleeps == [2.0]


def test_persistent_failure_fails_the_sync_in_plain_words(engine, box, server):
    inbound(box, 1)
    server.inject("delta", GraphFault("status", status=500), times=10)
    mailbox = mailbox_row(engine, server)
    outcome = sync_mailbox(engine, mailbox, settings(), source_factory=factory_for(server, []), read_calendar=False)
    assert outcome.outcome == "failed"
    assert "returned 500" in outcome.error
    with Session(engine) as session:
        row = session.get(Mailbox, mailbox.id)
    assert row.last_sync_error == outcome.error


@pytest.mark.parametrize(
    "fault",
    [GraphFault("gone"), GraphFault("status", status=400, code="resyncRequired")],
    ids=["410-sync-state-not-found", "400-resync-required"],
)
def test_expired_delta_link_reads_the_folder_again(engine, box, server, fault):
    inbound(box, 3)
    mailbox = mailbox_row(engine, server)
    assert import_source(engine, mailbox, make_source(server), settings=settings()).stored == 3
    inbound(box, 1, start=3)
    server.inject("delta", fault)
    summary = import_source(engine, mailbox, make_source(server), settings=settings())
    assert summary.resynced_folders == ["inbox"]
    assert summary.stored == 1
    assert summary.duplicates == 3
    assert len(stored_messages(engine, mailbox.id)) == 4


def test_mailbox_outside_the_access_policy_is_denied(box, tmp_path):
    inbound(box, 1)
    with FakeGraphServer([box], tmp_path / "tls") as fake:
        fake.add_app(CLIENT_ID, SECRET, {"someone.else@example.org"})
        with pytest.raises(SourceError, match="application access policy"):
            read_all(make_source(fake))


def test_wrong_client_secret_is_a_plain_error(box, server):
    with pytest.raises(SourceError, match="invalid_client"):
        read_all(make_source(server, secret="wrong"))
    assert server.count("delta") == 0


def test_retry_after_http_date():
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    value = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 110 <= retry_after_seconds(value) <= 121
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_crash_between_items_and_cursor_stores_nothing_twice(engine, box, server):
    inbound(box, 7)
    outbound(box, 3)
    mailbox = mailbox_row(engine, server)
    crash = RuntimeError("process killed before the delta link was saved")
    with crash_on_cursor_save(3, crash), pytest.raises(RuntimeError):
        import_source(engine, mailbox, make_source(server, page_size=3), settings=settings())
    assert len(stored_messages(engine, mailbox.id)) == 6
    summary = import_source(engine, mailbox, make_source(server, page_size=3), settings=settings())
    messages = stored_messages(engine, mailbox.id)
    assert len(messages) == 10
    assert summary.stored == 4
    assert {m.copies for m in messages} == {1}
    with Session(engine) as session:
        cursors = dict(session.execute(select(FolderState.folder_key, FolderState.cursor)).all())
    assert all("$deltatoken=" in c for c in cursors.values())


# --- calendar and contacts ------------------------------------------------------------------------------


def test_meetings_and_contacts_are_stored(engine, box, server):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    box.add_event(
        FakeEvent("AAMkEvent1", "Planning", now - timedelta(days=2), now - timedelta(days=2, hours=-1), ROBIN,
                  [FakeAttendee(KOFI, "Accept"), FakeAttendee(FakeAddress("Lee Wong", "lee.wong@northwind.example"), "Decline")])
    )
    box.add_contact(FakeContact("AAMkContact1", "Kofi Mensah", "Harbor Finch Ltd", "Buyer", ["kofi.mensah@harborfinch.example"]))
    mailbox = mailbox_row(engine, server)
    outcome = sync_mailbox(engine, mailbox, settings(), source_factory=factory_for(server, []))
    assert outcome.outcome == "ok"
    assert (outcome.meetings, outcome.contacts) == (1, 1)
    with Session(engine) as session:
        event = session.execute(select(CalendarEvent)).scalars().one()
        attendees = session.execute(
            select(Address.address, CalendarAttendee.response).join(Address, Address.id == CalendarAttendee.address_id)
        ).all()
        card = session.execute(select(ContactCard)).scalars().one()
    assert event.starts_at.astimezone(timezone.utc) == now - timedelta(days=2)
    assert sorted(attendees) == [("kofi.mensah@harborfinch.example", "accepted"), ("lee.wong@northwind.example", "declined")]
    assert (card.company_name, card.job_title) == ("Harbor Finch Ltd", "Buyer")


# --- the Enron mailbox ------------------------------------------------------------------------------------


def test_enron_mailbox_matches_the_file_import(tmp_path):
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema
    from tests.fakes.exchange_harness import (
        ENRON_OWNER,
        enron_mailbox,
        file_import_snapshot,
        message_count,
        newest_time,
        relationship_snapshot,
        snapshot_differences,
    )

    tarball = shared_path("data", "mail", "enron-maildir-9-mailboxes.tar.xz")
    box = enron_mailbox(tarball)
    assert len(box.messages) >= 5000
    now = newest_time(box)
    expected, expected_messages = file_import_snapshot(box, tmp_path, now)
    engine = make_engine(f"sqlite:///{tmp_path / 'graph.db'}")
    create_schema(engine)
    with FakeGraphServer([box], tmp_path / "tls") as fake:
        fake.add_app(CLIENT_ID, SECRET, {ENRON_OWNER})
        config = graph_config(fake, page_size=1000)
        mailbox = ensure_mailbox(engine, ENRON_OWNER, source_kind="graph", source_config=config, credentials_ref="env:GRAPH")
        source = GraphSource(GraphSettings.from_config(ENRON_OWNER, config), Secrets("env:GRAPH", {"client_secret": SECRET}))
        summary = import_source(engine, mailbox, source, settings=settings())
    recompute(engine, mailbox.id, now, settings=settings())
    actual = relationship_snapshot(engine, mailbox.id)
    assert summary.read == len(box.messages)
    assert message_count(engine, mailbox.id) == expected_messages
    assert len(actual) == len(expected)
    assert snapshot_differences(expected, actual) == []
