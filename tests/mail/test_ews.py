"""The EWS source with real exchangelib against the fake EWS server on loopback."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from bot.config import Settings
from bot.errors import SourceError
from bot.mail.credentials import Secrets
from bot.mail.ews import EwsSettings, EwsSource, clear_dn_cache
from bot.mail.ingest import ensure_mailbox, import_source
from bot.mail.sync import sync_mailbox
from bot.relationships import queries
from bot.relationships.compute import recompute
from bot.storage.models import (
    Address,
    CalendarAttendee,
    CalendarEvent,
    ContactCard,
    FolderState,
    Mailbox,
    Message,
    Organisation,
    SyncRun,
)
from tests.conftest import shared_path
from tests.helpers import crash_on_cursor_save
from tests.fakes.ews_server import FakeEwsServer, Fault
from tests.fakes.mailstore import (
    INBOX,
    SENT,
    FakeAddress,
    FakeAttendee,
    FakeContact,
    FakeEvent,
    FakeMailbox,
    FakeMessage,
    message_from_case,
)

OWNER = "robin.hale@example.org"
SERVICE = "svc-crm@example.org"
PASSWORD = "correct horse"
KOFI = FakeAddress("Kofi Mensah", "kofi.mensah@harborfinch.example", mailbox_type="OneOff")
ROBIN = FakeAddress("Robin Hale", OWNER)
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=timezone.utc)


def settings() -> Settings:
    return Settings(database_url="sqlite://")


def inbound(box: FakeMailbox, n: int, start: int = 0, sender: FakeAddress = KOFI) -> None:
    for i in range(start, start + n):
        box.add_message(
            FakeMessage(
                "",
                INBOX,
                f"Order {i}",
                T0 + timedelta(hours=i),
                T0 + timedelta(hours=i, minutes=1),
                sender,
                to=[ROBIN],
                message_id=f"<order.{i}@harborfinch.example>",
            )
        )


def outbound(box: FakeMailbox, n: int, to: FakeAddress = KOFI) -> None:
    for i in range(n):
        box.add_message(
            FakeMessage(
                "",
                SENT,
                f"Re: Order {i}",
                T0 + timedelta(hours=i, minutes=30),
                None,
                ROBIN,
                to=[to],
                message_id=f"<reply.{i}@example.org>",
                in_reply_to=f"<order.{i}@harborfinch.example>",
            )
        )


@pytest.fixture
def box() -> FakeMailbox:
    clear_dn_cache()
    return FakeMailbox(OWNER)


@pytest.fixture
def server(box):
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={SERVICE: {OWNER}}) as fake:
        yield fake


def make_source(server: FakeEwsServer, sleeps: list[float] | None = None, **config) -> EwsSource:
    values = {"ews_url": server.url, "auth": "basic", "version": "15.1.2507.6"}
    values.update(config)
    ews_settings = EwsSettings.from_config(OWNER, values)
    secrets = Secrets("env:TEST", {"username": SERVICE, "password": PASSWORD})
    sink = sleeps if sleeps is not None else []
    return EwsSource(ews_settings, secrets, sleep=sink.append)


def mailbox_row(engine, server: FakeEwsServer, timezone_name: str = "UTC", **config) -> Mailbox:
    values = {"ews_url": server.url, "auth": "basic", "version": "15.1.2507.6"}
    values.update(config)
    return ensure_mailbox(
        engine, OWNER, source_kind="ews", timezone=timezone_name, source_config=values, credentials_ref="env:TEST"
    )


def factory_for(server: FakeEwsServer, sleeps: list[float], **config):  # type: ignore[no-untyped-def]
    def build(mailbox: Mailbox, _settings: Settings) -> EwsSource:
        values = dict(mailbox.source_config)
        values.update(config)
        ews_settings = EwsSettings.from_config(mailbox.owner_address, values, mailbox.timezone)
        return EwsSource(ews_settings, Secrets("env:TEST", {"username": SERVICE, "password": PASSWORD}), sleep=sleeps.append)

    return build


def stored_messages(engine, mailbox_id: int) -> list[Message]:
    with Session(engine) as session:
        return list(
            session.execute(select(Message).where(Message.mailbox_id == mailbox_id).order_by(Message.sent_at)).scalars()
        )


def folder_cursor(engine, mailbox_id: int, key: str) -> str | None:
    with Session(engine) as session:
        return session.execute(
            select(FolderState.cursor).where(FolderState.mailbox_id == mailbox_id, FolderState.folder_key == key)
        ).scalar_one_or_none()


def contacts_by_address(engine, mailbox_id: int) -> dict:
    with Session(engine) as session:
        return {a: v for v in queries.top_contacts(session, mailbox_id, limit=None) for a in v.addresses}


# --- reading ---------------------------------------------------------------------------------


def test_sync_pages_become_batches(box, server):
    inbound(box, 7)
    source = make_source(server, page_size=3)
    inbox = source.folders()[0]
    batches = list(source.read(inbox, None))
    assert [len(b.items) for b in batches] == [3, 3, 1]
    assert [b.complete for b in batches] == [False, False, True]
    assert len({b.cursor for b in batches}) == 3
    assert server.count("SyncFolderItems") == 3
    assert server.count("GetItem") == 3
    first = batches[0].items[0]
    assert first.sender.address == "kofi.mensah@harborfinch.example"
    assert first.sender.name == "Kofi Mensah"
    assert first.to[0].address == OWNER
    assert first.sent_at == T0
    assert first.message_id == "<order.0@harborfinch.example>"
    assert first.conversation_id is not None
    assert first.folder_role.value == "inbox"


def test_folders_default_to_inbox_and_sent_items(server):
    source = make_source(server)
    assert [(f.key, f.role.value) for f in source.folders()] == [("inbox", "inbox"), ("sentitems", "sent")]


def test_stored_state_reads_only_new(box, server):
    inbound(box, 4)
    source = make_source(server)
    inbox = source.folders()[0]
    first_run = list(source.read(inbox, None))
    cursor = first_run[-1].cursor
    inbound(box, 2, start=4)
    second_run = list(make_source(server).read(inbox, cursor))
    subjects = [item.subject for batch in second_run for item in batch.items]
    assert subjects == ["Order 4", "Order 5"]


def test_only_metadata_fields_are_requested(box, server):
    inbound(box, 1)
    source = make_source(server)
    list(source.read(source.folders()[0], None))
    requested = dict(server.requested_fields)
    assert requested["SyncFolderItems"] == {"item:ItemClass"}
    assert requested["GetItem"] == {
        "item:ItemClass",
        "item:Subject",
        "item:DateTimeSent",
        "item:DateTimeReceived",
        "item:InReplyTo",
        "item:ConversationId",
        "message:InternetMessageId",
        "message:References",
        "message:From",
        "message:Sender",
        "message:ToRecipients",
        "message:CcRecipients",
        "message:BccRecipients",
        "message:ReplyTo",
    }


def test_sent_items_carry_the_owner_as_sender(box, server):
    outbound(box, 2)
    source = make_source(server)
    sent = source.folders()[1]
    items = [item for batch in source.read(sent, None) for item in batch.items]
    assert [i.folder_role.value for i in items] == ["sent", "sent"]
    assert items[0].sender.address == OWNER
    assert items[0].in_reply_to == "<order.0@harborfinch.example>"


def test_auto_reply_recognised_by_item_class(box, server):
    box.add_message(
        FakeMessage("", INBOX, "Out of office", T0, T0, KOFI, to=[ROBIN], item_class="IPM.Note.Rules.OofTemplate.Microsoft")
    )
    box.add_message(FakeMessage("", INBOX, "Lunch?", T0, T0, KOFI, to=[ROBIN]))
    source = make_source(server)
    items = [i for b in source.read(source.folders()[0], None) for i in b.items]
    assert [i.is_auto_reply for i in items] == [True, False]


def test_sender_without_address_keeps_the_name(box, server, engine):
    box.add_message(FakeMessage("", INBOX, "Hello", T0, T0, FakeAddress("Printer Room", None, mailbox_type="OneOff"), to=[ROBIN]))
    source = make_source(server)
    items = [i for b in source.read(source.folders()[0], None) for i in b.items]
    assert items[0].sender.address is None
    assert items[0].sender.name == "Printer Room"
    mailbox = mailbox_row(engine, server)
    summary = import_source(engine, mailbox, make_source(server), settings=settings())
    assert summary.stored == 1
    assert stored_messages(engine, mailbox.id)[0].from_address_id is None


def test_folder_path_below_inbox(box, server):
    box.add_message(FakeMessage("", "inbox/Projects", "Tender", T0, T0, KOFI, to=[ROBIN]))
    inbound(box, 1)
    source = make_source(server, folders=["inbox/Projects"])
    folder = source.folders()[0]
    items = [i for b in source.read(folder, None) for i in b.items]
    assert (folder.key, folder.role.value) == ("path:inbox/Projects", "inbox")
    assert [i.subject for i in items] == ["Tender"]
    assert server.count("FindFolder") == 1


def test_internet_headers_mark_list_mail_and_auto_replies(box, server):
    box.add_message(
        FakeMessage("", INBOX, "Weekly prices", T0, T0, KOFI, to=[ROBIN],
                    headers=[("List-Id", "Prices <prices.harborfinch.example>"), ("Precedence", "list")])
    )
    box.add_message(
        FakeMessage("", INBOX, "Away", T0, T0, KOFI, to=[ROBIN], headers=[("Auto-Submitted", "auto-replied")])
    )
    box.add_message(FakeMessage("", INBOX, "Lunch", T0, T0, KOFI, to=[ROBIN]))
    source = make_source(server, read_headers=True)
    items = [i for b in source.read(source.folders()[0], None) for i in b.items]
    assert [(i.is_bulk, i.list_id, i.is_auto_reply) for i in items] == [
        (True, "prices.harborfinch.example", False),
        (False, None, True),
        (False, None, False),
    ]
    assert "item:InternetMessageHeaders" in dict(server.requested_fields)["GetItem"]


def test_version_probe_without_configured_build(box, server):
    inbound(box, 1)
    source = make_source(server, version=None)
    items = [i for b in source.read(source.folders()[0], None) for i in b.items]
    assert len(items) == 1
    assert server.count("ConvertId") == 1
    assert source.account.version.build.major_version == 15


def test_configured_build_skips_the_probe(box, server):
    inbound(box, 1)
    source = make_source(server)
    list(source.read(source.folders()[0], None))
    assert server.count("ConvertId") == 0


def test_impersonation_sends_the_owner_identity(box):
    inbound(box, 1)
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={}) as denied:
        source = make_source(denied)
        with pytest.raises(SourceError, match="ApplicationImpersonation"):
            list(source.read(source.folders()[0], None))


def test_delegate_access_to_a_shared_mailbox(box):
    inbound(box, 2)
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, delegates={SERVICE: {OWNER}}) as fake:
        source = make_source(fake, access="delegate")
        items = [i for b in source.read(source.folders()[0], None) for i in b.items]
        assert len(items) == 2
    with FakeEwsServer([box], users={SERVICE: PASSWORD}) as fake:
        source = make_source(fake, access="delegate")
        with pytest.raises(SourceError, match="denied access"):
            list(source.read(source.folders()[0], None))


def test_wrong_password_is_a_plain_error(box, server):
    source = EwsSource(
        EwsSettings.from_config(OWNER, {"ews_url": server.url, "auth": "basic", "version": "15.1.2507.6"}),
        Secrets("env:TEST", {"username": SERVICE, "password": "wrong"}),
        sleep=lambda s: None,
    )
    with pytest.raises(SourceError, match="rejected the login"):
        list(source.read(source.folders()[0], None))


def test_settings_reject_invalid_values():
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="page_size"):
        EwsSettings.from_config(OWNER, {"ews_url": "https://mail.example.org/EWS/Exchange.asmx", "page_size": 600})
    with pytest.raises(ConfigError, match="folder"):
        EwsSettings.from_config(OWNER, {"ews_url": "https://mail.example.org/EWS/Exchange.asmx", "folders": ["outbox"]})
    with pytest.raises(ConfigError, match="unknown keys"):
        EwsSettings.from_config(OWNER, {"ews_url": "https://mail.example.org/EWS/Exchange.asmx", "pasword": "x"})
    with pytest.raises(ConfigError, match="ews_url"):
        EwsSettings.from_config(OWNER, {})


def test_same_metadata_different_body_counts_once(engine, box, server):
    # Two newsletters sent in the same minute to the same people with the same subject differ
    # only in their bodies, which this source never reads: they count as one message.
    for n in range(2):
        box.add_message(FakeMessage("", INBOX, "Conference series", T0, T0, KOFI, to=[ROBIN], message_id=f"<news.{n}@x>"))
    mailbox = mailbox_row(engine, server)
    summary = import_source(engine, mailbox, make_source(server), settings=settings())
    assert summary.read == 2
    assert summary.stored == 1
    assert summary.duplicates == 1


# --- legacy Exchange addresses --------------------------------------------------------------------


def test_legacy_dn_resolved_or_kept_as_name(engine):
    case = json.loads(shared_path("cases", "B08.json").read_text())
    expected = json.loads(shared_path("cases", "B08.expected.json").read_text())["expected"]
    clear_dn_cache()
    box = FakeMailbox(case["mailbox"])
    for item in case["items"]:
        box.add_message(message_from_case(item))
    directory = {dn: FakeAddress("Jules Morel", smtp) for dn, smtp in case["directory_resolve"]["results"].items()}
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={SERVICE: {OWNER}}, directory=directory) as fake:
        mailbox = mailbox_row(engine, fake)
        summary = import_source(engine, mailbox, make_source(fake), settings=settings())
        assert summary.stored == 3
        resolve_calls = fake.count("ResolveNames")
    recompute(engine, mailbox.id, settings=settings())
    found = contacts_by_address(engine, mailbox.id)
    for contact in expected["contacts"]:
        view = found[contact["address"]]
        assert view.inbound == contact["inbound"]
        assert view.is_internal == contact["internal"]
    # DNs compare without case, so both spellings of Jules Morel's DN cost one lookup.
    assert resolve_calls == 2
    with Session(engine) as session:
        addresses = session.execute(select(Address.address)).scalars().all()
        organisations = session.execute(select(Organisation.name)).scalars().all()
    sofia = stored_messages(engine, mailbox.id)[1]
    assert not [a for a in addresses if a.lower().startswith(expected["forbidden_address_prefix_ci"])]
    assert sofia.from_address_id is None
    for name in expected["forbidden_company_names"]:
        assert not [o for o in organisations if name.lower() in (o or "").lower()]


def test_unresolved_dn_keeps_display_name(box, server):
    box.add_message(
        FakeMessage(
            "",
            INBOX,
            "Handover notes",
            T0,
            T0,
            FakeAddress("Sofia Lind", "/o=ExampleOrg/ou=Exchange Administrative Group/cn=Recipients/cn=slind", "EX"),
            to=[ROBIN],
        )
    )
    source = make_source(server)
    item = [i for b in source.read(source.folders()[0], None) for i in b.items][0]
    assert item.sender.address is None
    assert item.sender.name == "Sofia Lind"


# --- time zones --------------------------------------------------------------------------------


def test_times_without_offset_read_in_mailbox_zone(engine):
    case = json.loads(shared_path("cases", "B11.json").read_text())
    expected = json.loads(shared_path("cases", "B11.expected.json").read_text())["expected"]
    box = FakeMailbox(OWNER)
    for item in case["items"]:
        box.add_message(message_from_case(item))
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={SERVICE: {OWNER}}) as fake:
        mailbox = mailbox_row(engine, fake, timezone_name=case["mailbox_timezone"])
        sleeps: list[float] = []
        outcome = sync_mailbox(engine, mailbox, settings(), source_factory=factory_for(fake, sleeps), read_calendar=False)
    assert outcome.outcome == "ok"
    messages = stored_messages(engine, mailbox.id)
    by_ref = {m.source_ref.split(":", 1)[1]: m for m in messages}
    for item_id, utc in expected["utc"].items():
        assert by_ref[item_id].sent_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") == utc
    assert [m.source_ref.split(":", 1)[1] for m in messages] == expected["order"]
    view = contacts_by_address(engine, mailbox.id)["ines.duarte@northwind.example"]
    assert view.last_inbound.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") == expected["last_interaction_utc"]


# --- throttling and faults ---------------------------------------------------------------------------


def b10_mailbox(case: dict) -> FakeMailbox:
    box = FakeMailbox("robin.hale@example.org")
    box.state_names[0] = case["main"]["stored_sync_state"]
    for response in case["main"]["responses"]:
        for item in response.get("items", []):
            box.add_message(message_from_case(item))
    box.state_names[box.seq] = case["main"]["responses"][-1]["sync_state"]
    return box


def store_cursor(engine, mailbox: Mailbox, key: str, cursor: str) -> None:
    with Session(engine) as session:
        session.add(FolderState(mailbox_id=mailbox.id, folder_key=key, folder_role="inbox", cursor=cursor))
        session.commit()


def test_server_busy_waits_for_the_hint_then_reads(engine):
    case = json.loads(shared_path("cases", "B10.json").read_text())
    expected = json.loads(shared_path("cases", "B10.expected.json").read_text())["expected"]["main"]
    box = b10_mailbox(case)
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={SERVICE: {OWNER}}) as fake:
        for response in case["main"]["responses"]:
            if response.get("error") == "ErrorServerBusy":
                fake.inject("SyncFolderItems", Fault.busy(response["back_off_ms"]))
        mailbox = mailbox_row(engine, fake, folders=["inbox"], max_wait_seconds=case["config"]["max_wait_s"])
        store_cursor(engine, mailbox, "inbox", case["main"]["stored_sync_state"])
        sleeps: list[float] = []
        outcome = sync_mailbox(engine, mailbox, settings(), source_factory=factory_for(fake, sleeps), read_calendar=False)
        sync_requests = fake.count("SyncFolderItems")
    assert outcome.outcome == expected["status"]
    assert outcome.stored == expected["items_stored"]
    assert sync_requests == expected["requests"]
    assert sleeps == [30.0, 60.0]
    assert sum(sleeps) >= expected["min_total_wait_s"]
    assert folder_cursor(engine, mailbox.id, "inbox") == expected["sync_state_after"]
    assert len(stored_messages(engine, mailbox.id)) == 3


def test_back_off_longer_than_allowed_defers_the_sync(engine):
    case = json.loads(shared_path("cases", "B10.json").read_text())
    expected = json.loads(shared_path("cases", "B10.expected.json").read_text())["expected"]["variant_long_backoff"]
    box = b10_mailbox(case)
    now = datetime(2024, 6, 14, 13, 0, tzinfo=timezone.utc)
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={SERVICE: {OWNER}}) as fake:
        fake.inject("SyncFolderItems", Fault.busy(case["variant_long_backoff"]["responses"][0]["back_off_ms"]))
        mailbox = mailbox_row(engine, fake, folders=["inbox"], max_wait_seconds=case["config"]["max_wait_s"])
        store_cursor(engine, mailbox, "inbox", case["variant_long_backoff"]["stored_sync_state"])
        sleeps: list[float] = []
        outcome = sync_mailbox(
            engine, mailbox, settings(), clock=lambda: now, source_factory=factory_for(fake, sleeps), read_calendar=False
        )
    assert outcome.outcome == expected["status"]
    assert outcome.stored == expected["items_stored"]
    assert sleeps == []
    assert folder_cursor(engine, mailbox.id, "inbox") == expected["sync_state_after"]
    with Session(engine) as session:
        row = session.get(Mailbox, mailbox.id)
        run = session.execute(select(SyncRun).where(SyncRun.mailbox_id == mailbox.id)).scalars().one()
    assert row.next_sync_not_before.astimezone(timezone.utc) >= now + timedelta(seconds=expected["retry_not_before_s"])
    assert run.outcome == "deferred"
    assert "requested a wait of 900s" in row.last_sync_error
    # A sync before that time is skipped without a request.
    again = sync_mailbox(engine, row, settings(), clock=lambda: now + timedelta(minutes=5), read_calendar=False)
    assert again.outcome == "skipped"


@pytest.mark.parametrize(
    "fault",
    [Fault.http(503), Fault("malformed"), Fault("drop"), Fault.http(500)],
    ids=["http-503", "malformed-xml", "dropped-connection", "http-500"],
)
def test_transient_failure_is_retried(box, server, fault):
    inbound(box, 2)
    server.inject("SyncFolderItems", fault)
    sleeps: list[float] = []
    source = make_source(server, sleeps)
    items = [i for b in source.read(source.folders()[0], None) for i in b.items]
    assert len(items) == 2
    assert len(sleeps) == 1


def test_slow_response_times_out_and_is_retried(box, server):
    inbound(box, 1)
    server.inject("GetItem", Fault.slow(2.5))
    sleeps: list[float] = []
    source = make_source(server, sleeps, timeout_seconds=1)
    items = [i for b in source.read(source.folders()[0], None) for i in b.items]
    assert len(items) == 1
    assert len(sleeps) == 1
    assert server.count("GetItem") == 2


def test_persistent_failure_fails_the_sync_in_plain_words(engine, box, server):
    inbound(box, 1)
    server.inject("SyncFolderItems", Fault.http(500), times=10)
    mailbox = mailbox_row(engine, server)
    sleeps: list[float] = []
    outcome = sync_mailbox(engine, mailbox, settings(), source_factory=factory_for(server, sleeps), read_calendar=False)
    assert outcome.outcome == "failed"
    assert "failed on 4 attempts" in outcome.error
    with Session(engine) as session:
        row = session.get(Mailbox, mailbox.id)
        run = session.execute(select(SyncRun).where(SyncRun.mailbox_id == mailbox.id)).scalars().one()
    assert row.last_sync_error == outcome.error
    assert row.last_sync_ok_at is None
    assert run.outcome == "failed"


def test_rejected_sync_state_reads_the_folder_again(engine, box, server):
    inbound(box, 3)
    mailbox = mailbox_row(engine, server)
    first = import_source(engine, mailbox, make_source(server), settings=settings())
    assert first.stored == 3
    box.expire_cursors()
    inbound(box, 1, start=3)
    second = import_source(engine, mailbox, make_source(server), settings=settings())
    assert second.resynced_folders == ["inbox", "sentitems"]
    assert second.stored == 1
    assert second.duplicates == 3
    assert len(stored_messages(engine, mailbox.id)) == 4


def test_crash_between_items_and_state_stores_nothing_twice(engine, box, server):
    inbound(box, 7)
    outbound(box, 3)
    mailbox = mailbox_row(engine, server, page_size=3)
    crash = RuntimeError("process killed before the sync state was saved")
    with crash_on_cursor_save(3, crash), pytest.raises(RuntimeError):
        import_source(engine, mailbox, make_source(server, page_size=3), settings=settings())
    assert len(stored_messages(engine, mailbox.id)) == 6
    summary = import_source(engine, mailbox, make_source(server, page_size=3), settings=settings())
    messages = stored_messages(engine, mailbox.id)
    assert len(messages) == 10
    assert summary.stored == 4
    assert summary.duplicates == 0
    assert {m.copies for m in messages} == {1}


# --- calendar, contacts and OAuth -------------------------------------------------------------------------


def test_meetings_and_contacts_are_stored(engine, box, server):
    now = datetime.now(timezone.utc)
    box.add_event(
        FakeEvent(
            "AAMkEvent1",
            "Quarterly review",
            now - timedelta(days=3),
            now - timedelta(days=3) + timedelta(hours=1),
            ROBIN,
            [FakeAttendee(KOFI, "Accept"), FakeAttendee(FakeAddress("Lee Wong", "lee.wong@northwind.example"), "Tentative", optional=True)],
        )
    )
    box.add_event(FakeEvent("AAMkEvent2", "Old", now - timedelta(days=900), now - timedelta(days=900), ROBIN, []))
    box.add_contact(FakeContact("AAMkContact1", "Kofi Mensah", "Harbor Finch Ltd", "Head of Purchasing", ["Kofi.Mensah@harborfinch.example"]))
    mailbox = mailbox_row(engine, server)
    outcome = sync_mailbox(engine, mailbox, settings(), source_factory=factory_for(server, []))
    assert outcome.outcome == "ok"
    assert outcome.meetings == 1
    assert outcome.contacts == 1
    with Session(engine) as session:
        event = session.execute(select(CalendarEvent)).scalars().one()
        attendees = session.execute(
            select(Address.address, CalendarAttendee.response).join(Address, Address.id == CalendarAttendee.address_id)
        ).all()
        card = session.execute(select(ContactCard)).scalars().one()
    assert event.source_id == "ews:AAMkEvent1"
    assert event.subject is None  # subjects are kept only when the settings allow them
    assert sorted(attendees) == [("kofi.mensah@harborfinch.example", "Accept"), ("lee.wong@northwind.example", "Tentative")]
    assert card.company_name == "Harbor Finch Ltd"
    assert card.job_title == "Head of Purchasing"
    assert card.addresses == ["kofi.mensah@harborfinch.example"]
    assert card.person_id is not None


def test_oauth_token_from_the_identity_provider(box, tmp_path):
    from tests.fakes.graph_server import FakeGraphServer

    inbound(box, 1)
    with FakeGraphServer([], tmp_path / "tls") as idp:
        idp.add_app("ews-app", "app-secret", set())

        def owner_of(token: str) -> str | None:
            return OWNER if idp.token_is_valid(token) else None

        with FakeEwsServer([box], bearer=owner_of, tls=(idp.cert_path, idp.key_path)) as fake:
            config = {
                "ews_url": fake.url,
                "auth": "oauth2",
                "version": "15.1.2507.6",
                "tenant_id": idp.tenant_id,
                "client_id": "ews-app",
                "authority_host": idp.base,
                "ca_bundle": str(idp.cert_path),
            }
            assert fake.url.startswith("https://127.0.0.1:")
            source = EwsSource(EwsSettings.from_config(OWNER, config), Secrets("env:T", {"client_secret": "app-secret"}))
            items = [i for b in source.read(source.folders()[0], None) for i in b.items]
        assert len(items) == 1
        assert idp.count("token") == 1
        assert list(idp.token_scopes.values()) == ["https://outlook.office365.com/.default"]


# --- the Enron mailbox ----------------------------------------------------------------------------------


def test_enron_mailbox_matches_the_file_import(tmp_path):
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
    clear_dn_cache()
    box = enron_mailbox(tarball)
    assert len(box.messages) >= 5000
    now = newest_time(box)
    expected, expected_messages = file_import_snapshot(box, tmp_path, now)
    from bot.storage.db import make_engine
    from bot.storage.schema import create_schema

    engine = make_engine(f"sqlite:///{tmp_path / 'ews.db'}")
    create_schema(engine)
    with FakeEwsServer([box], users={SERVICE: PASSWORD}, impersonation={SERVICE: {ENRON_OWNER}}) as fake:
        mailbox = ensure_mailbox(
            engine,
            ENRON_OWNER,
            source_kind="ews",
            source_config={"ews_url": fake.url, "auth": "basic", "version": "15.1.2507.6", "page_size": 512},
            credentials_ref="env:TEST",
        )
        source = EwsSource(
            EwsSettings.from_config(ENRON_OWNER, dict(mailbox.source_config)),
            Secrets("env:TEST", {"username": SERVICE, "password": PASSWORD}),
        )
        summary = import_source(engine, mailbox, source, settings=settings())
    recompute(engine, mailbox.id, now, settings=settings())
    actual = relationship_snapshot(engine, mailbox.id)
    assert summary.read == len(box.messages)
    assert message_count(engine, mailbox.id) == expected_messages
    assert len(actual) == len(expected)
    assert snapshot_differences(expected, actual) == []
