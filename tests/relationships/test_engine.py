"""The relationship engine on real SQLite and PostgreSQL: counts, threads, owners, noise."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from bot.config import Settings
from bot.errors import SourceError
from bot.mail.ingest import ensure_mailbox, import_source
from bot.mail.types import FolderRole
from bot.relationships import identity, queries
from bot.relationships.compute import cadence_days, recompute
from bot.storage.models import Message, OwnerAddress, Person, RoleChange
from tests.helpers import OWNER, ListSource, at, load, mail

ANA = "ana.silva@harborfinch.example"
KOFI = "kofi.mensah@harborfinch.example"
LEE = "lee.wong@northwind.example"


def contacts(engine, mailbox_id, **kwargs):
    with Session(engine) as session:
        return {a: v for v in queries.top_contacts(session, mailbox_id, limit=None, **kwargs) for a in v.addresses}


def test_two_way_outranks_one_way(engine):
    items = []
    for day in range(0, 60, 6):
        items.append(mail(OWNER, [ANA], day, f"Topic {day}"))
        items.append(mail(ANA, [OWNER], day + 1, f"Re: Topic {day}"))
        items.append(mail(KOFI, [OWNER], day, f"Offer {day}"))
        items.append(mail(KOFI, [OWNER], day + 2, f"Offer again {day}"))
    mailbox_id, _ = load(engine, items, now=at(70))
    found = contacts(engine, mailbox_id)
    assert found[ANA].two_way_threads == 10
    assert found[KOFI].two_way_threads == 0
    assert found[ANA].strength > 3 * found[KOFI].strength
    assert found[KOFI].inbound == 20
    assert found[KOFI].outbound == 0


def test_strength_decays_with_time(engine):
    items = [mail(OWNER, [ANA], 0, "Plan"), mail(ANA, [OWNER], 1, "Re: Plan")]
    mailbox_id, _ = load(engine, items, now=at(10))
    recent = contacts(engine, mailbox_id)[ANA].strength
    recompute(engine, mailbox_id, at(10 + 360), settings=Settings(database_url="sqlite://"))
    later = contacts(engine, mailbox_id)[ANA].strength
    assert 0 < later < recent / 3


def test_owner_is_never_a_contact(engine):
    items = [
        mail(OWNER, [ANA, OWNER], 0, "Plan"),
        mail(ANA, [OWNER], 1, "Re: Plan", cc=[OWNER.upper()]),
    ]
    mailbox_id, _ = load(engine, items)
    found = contacts(engine, mailbox_id)
    assert OWNER not in found
    assert set(found) == {ANA}


def test_owner_aliases_learned_from_sent_folders(engine):
    alias = "r.hale@example.org"
    assistant = "pat.lee@example.org"
    names = {OWNER: "Robin Hale", alias: "Hale, Robin", assistant: "Pat Lee"}
    items = []
    for day in range(20):
        items.append(mail(OWNER, [ANA], day, f"A{day}", names=names))
        items.append(mail(alias, [KOFI], day, f"B{day}", names=names, folder=FolderRole.SENT))
    items.append(mail(assistant, [LEE], 3, "On Robin's behalf", names=names, folder=FolderRole.SENT))
    items.append(mail(KOFI, [alias], 30, "Re: B1", names=names))
    mailbox_id, _ = load(engine, items, name="Robin Hale")
    with Session(engine) as session:
        owned = dict(
            session.execute(
                select(OwnerAddress.address, OwnerAddress.origin).where(OwnerAddress.mailbox_id == mailbox_id)
            ).all()
        )
    assert owned == {OWNER: "given", alias: "learned"}
    found = contacts(engine, mailbox_id)
    assert alias not in found
    assert found[KOFI].inbound == 1
    assert found[KOFI].outbound == 20
    # The assistant's one message from the sent folder is not the owner's.
    assert LEE not in found


def test_import_twice_adds_nothing(engine):
    items = [mail(OWNER, [ANA], d, f"S{d}") for d in range(5)]
    mailbox_id, first = load(engine, items)
    _, second = load(engine, items)
    assert first.stored == 5
    assert second.stored == 0
    with Session(engine) as session:
        assert session.execute(select(func.count(Message.id))).scalar_one() == 5


def test_copy_in_two_folders_counts_once(engine):
    original = mail(OWNER, [ANA], 1, "Plan", message_id="a@x")
    copy = mail(OWNER, [ANA], 1, "Plan", message_id="b@x", folder=FolderRole.OTHER)
    mailbox_id, summary = load(engine, [original, copy])
    assert summary.stored == 1
    assert summary.duplicates == 1
    assert contacts(engine, mailbox_id)[ANA].outbound == 1


def test_interrupted_import_resumes(engine):
    items = [mail(ANA, [OWNER], d, f"S{d}") for d in range(9)]
    settings = Settings(database_url="sqlite://")
    mailbox = ensure_mailbox(engine, OWNER)
    with pytest.raises(SourceError):
        import_source(engine, mailbox, ListSource(items, batch_size=2, fail_after_batches=2), settings=settings)
    with Session(engine) as session:
        assert session.execute(select(func.count(Message.id))).scalar_one() == 4
    summary = import_source(engine, mailbox, ListSource(items, batch_size=2), settings=settings)
    assert summary.stored == 5
    assert summary.duplicates == 0
    with Session(engine) as session:
        assert session.execute(select(func.count(Message.id))).scalar_one() == 9


def test_bulk_and_auto_replies_create_nothing(engine):
    items = [
        mail("news@mailer.example.net", [OWNER], 1, "Weekly", bulk=True),
        mail(OWNER, [LEE], 2, "Contract"),
        mail(LEE, [OWNER], 2.01, "Automatic reply: Contract", auto_reply=True),
    ]
    mailbox_id, _ = load(engine, items)
    found = contacts(engine, mailbox_id)
    assert "news@mailer.example.net" not in found
    assert found[LEE].inbound == 0
    assert found[LEE].outbound == 1
    assert found[LEE].two_way_threads == 0


def test_subject_threads_need_a_reply_from_a_recipient(engine):
    items = [
        mail(OWNER, [ANA], 0, "Budget"),
        mail(ANA, [OWNER], 1, "RE: Budget"),
        mail(OWNER, [KOFI], 0, "Offsite"),
        # Lee was not on the first message, so this is no reply and no two-way thread.
        mail(LEE, [OWNER, KOFI], 2, "AW: Offsite"),
    ]
    mailbox_id, _ = load(engine, items)
    found = contacts(engine, mailbox_id)
    assert found[ANA].two_way_threads == 1
    assert found[LEE].two_way_threads == 0


def test_subject_threads_end_after_the_window(engine):
    items = [mail(OWNER, [ANA], 0, "Status"), mail(ANA, [OWNER], 200, "Re: Status")]
    mailbox_id, _ = load(engine, items)
    assert contacts(engine, mailbox_id)[ANA].two_way_threads == 0


def test_reply_headers_thread_across_subjects(engine):
    items = [
        mail(OWNER, [ANA], 0, "Budget", message_id="root@x"),
        mail(ANA, [OWNER], 100, "Something else", message_id="child@x", in_reply_to="root@x"),
    ]
    mailbox_id, _ = load(engine, items)
    assert contacts(engine, mailbox_id)[ANA].two_way_threads == 1


def test_cadence_is_median_gap():
    from datetime import date

    days = {date(2024, 1, d) for d in (1, 8, 15, 29)}
    assert cadence_days(days) == 7.0
    assert cadence_days({date(2024, 1, 1), date(2024, 1, 2)}) is None


def test_same_name_same_org_merges_and_unmerges(engine):
    names = {ANA: "Ana Silva", "a.silva@harborfinch.example": "Silva, Ana"}
    items = [
        mail(OWNER, [ANA], 0, "One", names=names),
        mail("a.silva@harborfinch.example", [OWNER], 1, "Re: One", names=names),
    ]
    mailbox_id, _ = load(engine, items)
    found = contacts(engine, mailbox_id)
    assert found[ANA] is found["a.silva@harborfinch.example"]
    assert found[ANA].two_way_threads == 1
    merges = identity.list_merges(engine, "local")
    assert [m.reason for m in merges] == ["same-name-same-org"]
    identity.unmerge(engine, "local", merges[0].id)
    recompute(engine, mailbox_id, at(400), settings=Settings(database_url="sqlite://"))
    found = contacts(engine, mailbox_id)
    assert found[ANA] is not found["a.silva@harborfinch.example"]
    # An undone merge is not made again.
    assert len(identity.list_merges(engine, "local")) == 1


def test_explicit_merge(engine):
    items = [mail(OWNER, [ANA], 0, "One"), mail("ana@home.example", [OWNER], 1, "Re: One")]
    mailbox_id, _ = load(engine, items)
    identity.merge_addresses(engine, "local", ANA, "ana@home.example")
    recompute(engine, mailbox_id, at(400), settings=Settings(database_url="sqlite://"))
    found = contacts(engine, mailbox_id)
    assert sorted(found[ANA].addresses) == [ANA, "ana@home.example"]
    assert found[ANA].inbound == 1


def test_moved_person_records_role_change(engine):
    names = {
        "maja@bluepeak.example": "Maja Lindqvist",
        "maja@orbit-labs.example": "Maja Lindqvist",
        "maja.home@gmail.com": "Maja Lindqvist",
    }
    items = [
        mail("maja@bluepeak.example", [OWNER], 0, "Hi", names=names),
        mail("maja.home@gmail.com", [OWNER], 30, "Photos", names=names),
        mail("maja@orbit-labs.example", [OWNER], 60, "New role", names=names),
    ]
    mailbox_id, _ = load(engine, items)
    found = contacts(engine, mailbox_id)
    view = found["maja@orbit-labs.example"]
    assert sorted(view.addresses) == sorted(names)
    assert view.organisation == identity_org_name(engine, "orbit-labs.example")
    with Session(engine) as session:
        changes = session.execute(select(RoleChange)).scalars().all()
    assert len(changes) == 1
    # Running again records nothing new.
    recompute(engine, mailbox_id, at(400), settings=Settings(database_url="sqlite://"))
    with Session(engine) as session:
        assert session.execute(select(func.count(RoleChange.id))).scalar_one() == 1


def identity_org_name(engine, domain):
    from bot.storage.models import Organisation, OrganisationDomain

    with Session(engine) as session:
        return session.execute(
            select(Organisation.name)
            .join(OrganisationDomain, OrganisationDomain.organisation_id == Organisation.id)
            .where(OrganisationDomain.domain == domain)
        ).scalar_one()


def test_who_knows_across_mailboxes(engine):
    other = "sam.reed@example.org"
    load(engine, [mail(OWNER, [ANA], 0, "A"), mail(ANA, [OWNER], 1, "Re: A")])
    load(engine, [mail(other, [KOFI], 0, "B"), mail(KOFI, [other], 1, "Re: B")], owner=other)
    with Session(engine) as session:
        results = queries.who_knows(session, "harborfinch")
    assert len(results) == 1
    assert results[0].domains == ["harborfinch.example"]
    assert sorted(hit.owner for hit in results[0].owners) == [OWNER, other]
    assert all(hit.contacts == 1 for hit in results[0].owners)


def test_internal_colleagues_are_not_companies(engine):
    colleague = "jules.morel@sales.example.org"
    items = [mail(OWNER, [colleague], 0, "Plan"), mail(colleague, [OWNER], 1, "Re: Plan")]
    mailbox_id, _ = load(engine, items)
    found = contacts(engine, mailbox_id)
    assert found[colleague].is_internal
    with Session(engine) as session:
        assert queries.who_knows(session, "example") == []
        assert queries.going_cold(session, mailbox_id, now=at(900)) == []


def test_going_cold_lists_quiet_strong_relationships(engine):
    items = []
    for day in range(0, 120, 7):
        items.append(mail(OWNER, [ANA], day, f"W{day}"))
        items.append(mail(ANA, [OWNER], day + 1, f"Re: W{day}"))
    mailbox_id, _ = load(engine, items, now=at(125))
    with Session(engine) as session:
        assert queries.going_cold(session, mailbox_id, now=at(125)) == []
        cold = queries.going_cold(session, mailbox_id, now=at(200))
    assert [v.addresses[0] for v in cold] == [ANA]


def test_person_rows_survive_merges(engine):
    names = {ANA: "Ana Silva", "a.silva@harborfinch.example": "Ana Silva"}
    items = [mail(ANA, [OWNER], 0, "A", names=names), mail("a.silva@harborfinch.example", [OWNER], 1, "B", names=names)]
    load(engine, items)
    with Session(engine) as session:
        merged = session.execute(select(Person).where(Person.merged_into_id.is_not(None))).scalars().all()
    assert len(merged) == 1


def test_file_import_finds_files_added_later(engine, tmp_path):
    from bot.mail.files import FilesSource
    from bot.sample import _message

    inbox = tmp_path / "box" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "5.").write_bytes(bytes(_message(("Ana", ANA), [("Robin", OWNER)], "One", at(1))))
    settings = Settings(database_url="sqlite://")
    mailbox = ensure_mailbox(engine, OWNER)
    first = import_source(engine, mailbox, FilesSource(tmp_path / "box"), settings=settings)
    # A file whose name sorts before the first one arrives later.
    (inbox / "1.").write_bytes(bytes(_message(("Kofi", KOFI), [("Robin", OWNER)], "Two", at(2))))
    second = import_source(engine, mailbox, FilesSource(tmp_path / "box"), settings=settings)
    assert first.stored == 1
    assert second.stored == 1
    assert second.duplicates == 1


def test_archive_end_ignores_broken_clocks():
    from bot.relationships.compute import archive_end

    times = [at(day) for day in range(100)] + [at(900), at(901), at(902)]
    assert archive_end(times) == at(99)
    # A late group that is a large share of the mailbox is real mail.
    late = [at(day) for day in range(10)] + [at(900 + day) for day in range(10)]
    assert archive_end(late) == at(909)
    assert archive_end([at(1), at(2)]) == at(2)


def test_owner_domains_of_two_companies_stay_apart(engine):
    other = "sam.reed@globex.example"
    load(engine, [mail(OWNER, ["jules.morel@example.org"], 0, "A"), mail("jules.morel@example.org", [OWNER], 1, "Re: A")])
    load(engine, [mail(other, ["lee.park@globex.example"], 0, "B"), mail("lee.park@globex.example", [other], 1, "Re: B")], owner=other)
    with Session(engine) as session:
        orgs = {}
        for mailbox_id in (1, 2):
            for view in queries.organisations(session, mailbox_id):
                orgs[tuple(view.domains)] = view
    assert orgs[("example.org",)].is_internal
    assert orgs[("globex.example",)].is_internal
    assert orgs[("example.org",)].organisation_id != orgs[("globex.example",)].organisation_id


def test_alias_needs_owner_first_name(engine):
    craig = "craig.dean@example.org"
    clint = "clint.dean@example.org"
    names = {craig: "Dean, Craig", clint: "Clint Dean"}
    items = [mail(craig, [ANA], d, f"C{d}", names=names, folder=FolderRole.SENT) for d in range(12)]
    items += [mail(clint, [KOFI], d, f"K{d}", names=names, folder=FolderRole.SENT) for d in range(10)]
    mailbox_id, _ = load(engine, items, owner=craig)
    with Session(engine) as session:
        owned = set(
            session.execute(select(OwnerAddress.address).where(OwnerAddress.mailbox_id == mailbox_id)).scalars()
        )
    assert owned == {craig}


def test_strength_examples_in_docs():
    from datetime import timedelta as days_

    from bot.relationships.strength import StrengthParams, combine, decay, message_weight

    params = StrengthParams()
    now = at(0)

    def score(ages: list[int]) -> float:
        sums = {}
        for direction in ("out", "in"):
            sums[direction] = sum(
                message_weight(direction, False, 1, params) * decay(now - days_(days=a), now, params.half_life_days)
                for a in ages
            )
        return round(combine(sums["out"], sums["in"], params))

    assert score([0]) == 29
    assert score([0, 7, 14]) == 63
    assert score([0, 3, 7, 10, 14, 21]) == 86
    assert score([30 * k for k in range(12)]) == 90
    assert score([365 + 30 * k for k in range(12)]) == 44
