"""Small mail inputs that broke other software of this kind, imported end to end.

Each test imports one input file with the file source, the importer and the relationship
computation, then checks the expected result stored next to the input.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from bot.config import Settings
from bot.mail.files import FilesSource
from bot.mail.ingest import ensure_mailbox, import_source
from bot.mail.types import FolderRole, MailItem, Participant
from bot.relationships import queries
from bot.relationships.compute import recompute
from bot.storage.models import (
    Address,
    Message,
    MessageParticipant,
    Organisation,
    OrganisationDomain,
    Person,
    Relationship,
    RoleChange,
)
from bot.timeutil import isoformat_z, parse_iso
from tests.conftest import shared_path
from tests.helpers import ListSource

OWNER = "robin.hale@example.org"


def expected(case: str) -> dict:
    return json.loads(shared_path("cases", f"{case}.expected.json").read_text())["expected"]


def run(engine, path: Path, *, settings: Settings | None = None, now=None, preload: list[MailItem] | None = None) -> int:
    settings = settings or Settings(database_url="sqlite://")
    mailbox = ensure_mailbox(engine, OWNER, owner_name="Robin Hale", timezone="Europe/Berlin")
    if preload:
        import_source(engine, mailbox, ListSource(preload), settings=settings)
    summary = import_source(engine, mailbox, FilesSource(path, mailbox_tz="Europe/Berlin"), settings=settings)
    assert summary.outcome == "ok"
    recompute(engine, mailbox.id, now, settings=settings)
    return mailbox.id


def contacts(engine, mailbox_id) -> dict[str, object]:
    with Session(engine) as session:
        views = queries.top_contacts(session, mailbox_id, limit=None)
    return {address: view for view in views for address in view.addresses}


def company_domains(engine, mailbox_id) -> set[str]:
    """Registrable domains of the external organisations the mailbox has relationships with."""
    with Session(engine) as session:
        return set(
            session.execute(
                select(OrganisationDomain.domain)
                .join(Organisation, Organisation.id == OrganisationDomain.organisation_id)
                .join(Relationship, Relationship.organisation_id == Organisation.id)
                .where(Relationship.mailbox_id == mailbox_id, Organisation.is_internal.is_(False))
            ).scalars()
        )


def stored_companies(engine) -> set[str]:
    """Registrable domains of every external organisation in the store."""
    with Session(engine) as session:
        return set(
            session.execute(
                select(OrganisationDomain.domain)
                .join(Organisation, Organisation.id == OrganisationDomain.organisation_id)
                .where(Organisation.is_internal.is_(False))
            ).scalars()
        )


def all_addresses(engine) -> set[str]:
    with Session(engine) as session:
        return set(session.execute(select(Address.address)).scalars())


def org_of(view) -> str | None:
    return view.organisation


def test_encoded_name_with_comma(engine):
    want = expected("B01")
    mailbox_id = run(engine, shared_path("cases", "B01.eml"))
    found = contacts(engine, mailbox_id)
    assert set(found) == {c["address"] for c in want["contacts"]}
    assert len({id(v) for v in found.values()}) == want["contact_count"]
    for contact in want["contacts"]:
        view = found[contact["address"]]
        with Session(engine) as session:
            stored = session.execute(
                select(Person.display_name).join(Address, Address.person_id == Person.id).where(
                    Address.address == contact["address"]
                )
            ).scalar_one()
        assert stored in contact["name_any_of"]
        assert view.name in contact["name_any_of"]
    assert all("@" in a for a in all_addresses(engine))
    assert OWNER not in found
    assert company_domains(engine, mailbox_id) == {c["company_domain"] for c in want["contacts"]}


def test_unquoted_comma_in_names(engine):
    want = expected("B02")
    mailbox_id = run(engine, shared_path("cases", "B02.eml"))
    found = contacts(engine, mailbox_id)
    sender = found[want["sender"]["address"]]
    with Session(engine) as session:
        stored = session.execute(
            select(Person.display_name).join(Address, Address.person_id == Person.id).where(
                Address.address == want["sender"]["address"]
            )
        ).scalar_one()
    assert stored in want["sender"]["name_any_of"]
    assert sender.name in want["sender"]["name_any_of"]
    assert all_addresses(engine) == set(want["recipients"]) | {want["sender"]["address"]}
    assert len({id(v) for v in found.values()}) == want["contact_count"]
    for fragment in want["forbidden_addresses"]:
        assert fragment not in all_addresses(engine)
    assert found["nadia.okafor@northwind.example"].name in ("Okafor, Nadia", "Nadia Okafor")


def test_display_name_that_looks_like_an_address(engine):
    want = expected("B04")
    mailbox_id = run(engine, shared_path("cases", "B04.mbox"))
    found = contacts(engine, mailbox_id)
    for contact in want["contacts"]:
        assert found[contact["address"]].inbound == contact["inbound"]
    for address in want["forbidden_addresses"]:
        assert address not in all_addresses(engine)
    assert company_domains(engine, mailbox_id) == {c["company_domain"] for c in want["contacts"]}
    assert not company_domains(engine, mailbox_id) & set(want["forbidden_company_domains"])


def test_group_syntax(engine):
    want = expected("B05")
    mailbox_id = run(engine, shared_path("cases", "B05.eml"))
    found = contacts(engine, mailbox_id)
    assert set(found) == set(want["contacts"])
    assert len(found) == want["contact_count"]
    names = {v.name for v in found.values()}
    for forbidden in want["forbidden_names"]:
        assert forbidden not in names
        assert all(forbidden.lower() not in a for a in all_addresses(engine))


def test_impossible_date_uses_received(engine):
    want = expected("B06")
    mailbox_id = run(engine, shared_path("cases", "B06.eml"))
    with Session(engine) as session:
        message = session.execute(select(Message)).scalar_one()
    assert isoformat_z(message.sent_at) == want["message_time_utc"]
    assert message.date_defect
    found = contacts(engine, mailbox_id)
    assert set(found) == set(want["contacts"])
    for address in want["contacts"]:
        assert found[address].inbound == 1


def test_address_case_folded(engine):
    want = expected("B13")
    mailbox_id = run(engine, shared_path("cases", "B13.mbox"))
    found = contacts(engine, mailbox_id)
    assert len({id(v) for v in found.values()}) == want["contact_count"]
    for contact in want["contacts"]:
        view = found[contact["address"]]
        assert view.addresses == [contact["address"]]
        assert view.inbound == contact["inbound"]
        assert view.outbound == contact["outbound"]
    assert company_domains(engine, mailbox_id) == {c["company_domain"] for c in want["contacts"]}


def test_list_rewritten_from(engine):
    want = expected("B15")
    mailbox_id = run(engine, shared_path("cases", "B15.mbox"))
    with Session(engine) as session:
        rows = session.execute(
            select(Message.internet_message_id, Address.address).join(Address, Address.id == Message.from_address_id)
        ).all()
        people = session.execute(select(Person.display_name, Person.kind)).all()
    attributed = {f"<{mid}>": address for mid, address in rows}
    assert attributed == want["attributions"]
    found = contacts(engine, mailbox_id)
    assert set(found) == set(want["person_contacts"])
    for name, kind in people:
        if kind == "person":
            assert want["forbidden_name_substring"] not in (name or "")
    assert not company_domains(engine, mailbox_id) & set(want["forbidden_company_domains"])
    with Session(engine) as session:
        org_domains = set(session.execute(select(OrganisationDomain.domain)).scalars())
    assert not org_domains & set(want["forbidden_company_domains"])
    assert stored_companies(engine) == {"bluepeak.example", "northwind.example"}


def test_company_from_subdomains(engine):
    want = expected("B16")
    mailbox_id = run(engine, shared_path("cases", "B16.mbox"))
    with Session(engine) as session:
        orgs = queries.organisations(session, mailbox_id)
    external = {tuple(v.domains): v for v in orgs if not v.is_internal}
    assert {d for v in external.values() for d in v.domains} == {c["domain"] for c in want["companies"]}
    found = contacts(engine, mailbox_id)
    for company in want["companies"]:
        org = next(v for v in external.values() if company["domain"] in v.domains)
        assert org.people == len(company["members"])
        for member in company["members"]:
            assert found[member].organisation_id == org.organisation_id
    names = {v.name for v in orgs}
    assert not names & set(want["forbidden_company_names"])
    assert {v.name for v in external.values()} == {"Harborfinch", "Example"}


def test_own_organisation_is_internal(engine):
    want = expected("B18")
    mailbox_id = run(engine, shared_path("cases", "B18.mbox"))
    assert company_domains(engine, mailbox_id) == set(want["companies"])
    assert stored_companies(engine) == set(want["companies"])
    found = contacts(engine, mailbox_id)
    for address in want["internal"]:
        if address in found:
            assert found[address].is_internal
    for address in want["external"]:
        assert not found[address].is_internal
    assert (OWNER in found) is want["owner_is_contact"]
    with Session(engine) as session:
        for result in queries.who_knows(session, "example"):
            assert "example.org" not in result.domains
        answers = queries.who_knows(session, "harborfinch")
        assert answers
        for result in answers:
            for hit in result.owners:
                people = {a for view in hit.people for a in view.addresses}
                assert not people & set(want["internal"])
        assert queries.going_cold(session, mailbox_id, now=parse_iso("2030-01-01")) == []
        assert session.execute(select(RoleChange)).first() is None


def test_free_mail_then_new_employer(engine):
    want = expected("B19")
    preload = []
    for person in want["preload"]:
        preload.append(
            MailItem(
                source_ref="preload",
                folder="inbox",
                folder_role=FolderRole.INBOX,
                sent_at=parse_iso(person["last_interaction_utc"]),
                sender=Participant(person["address"], person["name"]),
                to=[Participant(OWNER, "Robin Hale")],
                subject="Earlier",
                body_hash="preload",
            )
        )
    settings = Settings(
        database_url="sqlite://", freemail_domains_extra=",".join(want["config"]["extra_free_mail_domains"])
    )
    run(engine, shared_path("cases", "B19.mbox"), settings=settings, preload=preload)
    assert stored_companies(engine) == set(want["companies_after"])
    with Session(engine) as session:
        changes = session.execute(select(RoleChange)).scalars().all()
        domains = dict(session.execute(select(OrganisationDomain.organisation_id, OrganisationDomain.domain)).all())
        moved = [
            {
                "kind": "new_company",
                "contact_name": session.get(Person, change.person_id).display_name,
                "from_domain": domains[change.from_organisation_id],
                "to_domain": domains[change.to_organisation_id],
            }
            for change in changes
        ]
    assert moved == want["opportunities"]


def test_auto_replies_are_not_replies(engine):
    want = expected("B20")
    now = parse_iso(want["evaluate_at_utc"])
    mailbox_id = run(engine, shared_path("cases", "B20.mbox"), now=now)
    found = contacts(engine, mailbox_id)
    for address, inbound in want["inbound"].items():
        assert found[address].inbound == inbound
        assert found[address].outbound == 1
    with Session(engine) as session:
        waiting = queries.awaiting_replies(
            session, mailbox_id, now=now, threshold_days=want["awaiting_reply_threshold_days"]
        )
    got = [{"kind": "awaiting_reply", "contact": view.addresses[0], "thread_message_id": f"<{mid}>"} for view, mid, _ in waiting]
    assert sorted(got, key=str) == sorted(want["opportunities"], key=str)
    # Without the auto-replies in the store, every strength is the same.
    strengths = {address: view.strength for address, view in found.items()}
    with Session(engine) as session:
        auto = session.execute(select(Message.id).where(Message.is_auto_reply.is_(True))).scalars().all()
        assert len(auto) == 2
        session.execute(MessageParticipant.__table__.delete().where(MessageParticipant.message_id.in_(auto)))
        session.execute(Message.__table__.delete().where(Message.id.in_(auto)))
        session.commit()
    recompute(engine, mailbox_id, now, settings=Settings(database_url="sqlite://"))
    after = contacts(engine, mailbox_id)
    assert {address: view.strength for address, view in after.items()} == strengths


def test_duplicates_and_missing_message_ids(engine):
    want = expected("B22")
    mailbox_id = run(engine, shared_path("cases", "B22.mbox"))
    found = contacts(engine, mailbox_id)
    for address, inbound in want["inbound"].items():
        assert found[address].inbound == inbound
    with Session(engine) as session:
        assert len(session.execute(select(Message.id)).all()) == want["messages_stored"]
    # A second import of the same file stores nothing more.
    run(engine, shared_path("cases", "B22.mbox"))
    with Session(engine) as session:
        assert len(session.execute(select(Message.id)).all()) == want["messages_stored"]
