"""Tests of address normalisation, address kinds and person-name keys."""

from __future__ import annotations

import json
import mailbox
from email.utils import getaddresses

import pytest

from bot.relationships.addresses import (
    address_kind,
    fold_accents,
    normalize_address,
    normalize_person_name,
    split_via_name,
)
from tests.conftest import shared_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("maja.lindqvist@bluepeak.example", "maja.lindqvist@bluepeak.example"),
        ("Maja.Lindqvist@Bluepeak.EXAMPLE", "maja.lindqvist@bluepeak.example"),
        ("  MAJA.LINDQVIST@BLUEPEAK.EXAMPLE\t", "maja.lindqvist@bluepeak.example"),
        ("<ana.ruiz@harborfinch.example>", "ana.ruiz@harborfinch.example"),
        ("mailto:Ana.Ruiz@harborfinch.example", "ana.ruiz@harborfinch.example"),
        ("ana@harborfinch.example.", "ana@harborfinch.example"),
        ("a+tag@example.com", "a+tag@example.com"),
        ("o'brien@example.com", "o'brien@example.com"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("josé@example.com", "josé@example.com"),
        ("kevin.m..presto@example.com", "kevin.m..presto@example.com"),
    ],
)
def test_normalize_address_valid(raw: str, expected: str) -> None:
    assert normalize_address(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "Lindqvist",
        "Okafor, Nadia",
        "@example.com",
        "someone@",
        "someone@localhost",
        "someone@example",
        "someone@1.2.3.4",
        "someone@[192.0.2.1]",
        "some one@example.com",
        "someone@exa mple.com",
        "someone@ex_ample.com",
        "someone@-example.com",
        "someone@example..com",
        ".someone@example.com",
        "someone.@example.com",
        "...@example.com",
        '"some one"@example.com',
        "x" * 65 + "@example.com",
        "/o=ExampleOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=sofia.lind",
        "/O=EXAMPLEORG/OU=FIRST ADMINISTRATIVE GROUP/CN=RECIPIENTS/CN=JULES",
        "IMCEAEX-_O=EXAMPLEORG_OU=EXCHANGE+20ADMINISTRATIVE+20GROUP_CN=RECIPIENTS_CN=JULES@example.org",
        "imceaex-_o=exampleorg_cn=jules@example.org",
        "IMCEANOTES-jules+40example+2Ecom@example.org",
    ],
)
def test_normalize_address_rejects(raw: str) -> None:
    assert normalize_address(raw) is None


def test_normalize_address_non_string() -> None:
    assert normalize_address(None) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a+tag@example.com", "a@example.com"),
        ("A+Tag+More@Example.com", "a@example.com"),
        ("+tag@example.com", "+tag@example.com"),
        ("plain@example.com", "plain@example.com"),
    ],
)
def test_normalize_address_folds_plus_tag(raw: str, expected: str) -> None:
    assert normalize_address(raw, fold_plus=True) == expected


def test_normalize_address_always_has_one_at_sign() -> None:
    samples = ["a@b@example.com", "@@", "a@", "@", "x@y.z", "a@b.co", "Robin Hale <robin.hale@example.org>"]
    for raw in samples:
        result = normalize_address(raw)
        if result is not None:
            assert result.count("@") == 1, raw
            local, _, domain = result.partition("@")
            assert local, raw
            assert "." in domain, raw


def test_address_case_variants_merge() -> None:
    path = shared_path("cases", "B13.mbox")
    expected = json.loads(shared_path("cases", "B13.expected.json").read_text())["expected"]
    seen: set[str] = set()
    for message in mailbox.mbox(path):
        for header in ("From", "To"):
            for _name, address in getaddresses([message[header]]):
                normalized = normalize_address(address)
                assert normalized is not None, address
                seen.add(normalized)
    external = seen - {"robin.hale@example.org"}
    assert external == {contact["address"] for contact in expected["contacts"]}


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("noreply@example.com", "noreply"),
        ("no-reply@example.com", "noreply"),
        ("no_reply@example.com", "noreply"),
        ("do-not-reply@example.com", "noreply"),
        ("donotreply@example.com", "noreply"),
        ("DoNotReply@example.com", "noreply"),
        ("digest-noreply@example.com", "noreply"),
        ("mailer-daemon@example.com", "noreply"),
        ("MAILER-DAEMON@example.com", "noreply"),
        ("postmaster@example.com", "noreply"),
        ("bounce@example.com", "noreply"),
        ("bounces+12345@example.com", "noreply"),
        ("bounce-8f2a@example.com", "noreply"),
        ("growth-forum-bounces@lists.example.net", "noreply"),
        ("notifications@example.com", "noreply"),
        ("notification@example.com", "noreply"),
        ("calendar-notification@example.com", "noreply"),
        ("alerts@example.com", "noreply"),
        ("newsletter@example.com", "noreply"),
        ("news@example.com", "noreply"),
        ("info@example.com", "role"),
        ("sales@example.com", "role"),
        ("support@example.com", "role"),
        ("support.uk@example.com", "role"),
        ("sales-emea@example.com", "role"),
        ("admin@example.com", "role"),
        ("office@example.com", "role"),
        ("team@example.com", "role"),
        ("contact@example.com", "role"),
        ("billing@example.com", "role"),
        ("hello@example.com", "role"),
        ("jobs@example.com", "role"),
        ("hr@example.com", "role"),
        ("careers@example.com", "role"),
        ("maja.lindqvist@bluepeak.example", "person"),
        ("m.keller@example.com", "person"),
        ("infoman@example.com", "person"),
        ("salesforce.admin.jane@example.com", "person"),
        ("newsome@example.com", "person"),
        ("jules@example.org", "person"),
    ],
)
def test_address_kind(address: str, kind: str) -> None:
    assert address_kind(address) == kind


def test_address_kind_bare_local_part() -> None:
    assert address_kind("noreply") == "noreply"
    assert address_kind("") == "person"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Maja Lindqvist", "maja lindqvist"),
        ("Lindqvist, Maja", "maja lindqvist"),
        ('"Lindqvist, Maja"', "maja lindqvist"),
        ("MAJA LINDQVIST", "maja lindqvist"),
        ("Ortega, Luís", "luis ortega"),
        ("Luís Ortega", "luis ortega"),
        ("Søren Kierkegaard", "soren kierkegaard"),
        ("Straße, Jürgen", "jurgen strasse"),
        ("Seán O'Brien", "sean obrien"),
        ("Anne-Marie Dupont", "anne marie dupont"),
        ("Phillip K Allen", "phillip allen"),
        ("Phillip K. Allen", "phillip allen"),
        ("Dr. Jane Doe", "jane doe"),
        ("Jane Doe, PhD", "jane doe"),
        ("Jane Doe, MD", "jane doe"),
        ("Theo Marsh, Jr", "theo marsh jr"),
        ("Theo Marsh Jr.", "theo marsh jr"),
        ("Marsh, Theo, Jr.", "theo marsh jr"),
        ("Henry Ford III", "henry ford iii"),
        ("Maja Senior", "maja senior"),
        ("Junior Silva", "junior silva"),
        ("Jack Ma", "jack ma"),
        ("Ma, Jack", "jack ma"),
        ("Md Rahman", "md rahman"),
        ("Priya Raman via Growth Forum", "priya raman"),
        ("Maja Lindqvist (Bluepeak)", "maja lindqvist"),
        ('"Moseley, Cheryl" <cmoseley@example.com>', "cheryl moseley"),
        ("Presto, Kevin M. </O=EXAMPLEORG/OU=NA/CN=RECIPIENTS/CN=MPRESTO>", "kevin presto"),
    ],
)
def test_normalize_person_name(name: str, expected: str) -> None:
    assert normalize_person_name(name) == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Lindqvist, Maja", "Maja Lindqvist"),
        ("Phillip K Allen", "Phillip Allen"),
        ("Ortega, Luís", "Luis Ortega"),
        ("Theo Marsh, Jr", "Theo Marsh Jr."),
    ],
)
def test_person_name_spellings_share_key(first: str, second: str) -> None:
    assert normalize_person_name(first) == normalize_person_name(second)


def test_generational_suffix_keeps_people_apart() -> None:
    assert normalize_person_name("Theo Marsh Jr") != normalize_person_name("Theo Marsh")
    assert normalize_person_name("Theo Marsh Jr") != normalize_person_name("Theo Marsh Sr")


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        "   ",
        "Maja",
        "Lindqvist",
        "Jr",
        "maja.lindqvist",
        "maja.lindqvist@bluepeak.example",
        "m.keller@example.com",
        "Maja <maja@bluepeak.example>",
        "J. Smith",
        "Dr. Smith",
        "K",
        "!!!",
    ],
)
def test_normalize_person_name_too_weak(name: str | None) -> None:
    assert normalize_person_name(name) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Priya Raman via Growth Forum", ("Priya Raman", "Growth Forum")),
        ("'Priya Raman' via Growth Forum", ("Priya Raman", "Growth Forum")),
        ('"Priya Raman via Growth Forum"', ("Priya Raman", "Growth Forum")),
        ("Priya Raman (via Growth Forum)", ("Priya Raman", "Growth Forum")),
        ("Priya Raman [via Growth Forum]", ("Priya Raman", "Growth Forum")),
        ("Chen Wu VIA growth-forum", ("Chen Wu", "growth-forum")),
    ],
)
def test_split_via_name(name: str, expected: tuple[str, str]) -> None:
    assert split_via_name(name) == expected


@pytest.mark.parametrize("name", [None, "", "Priya Raman", "Octavia Smith", "Via Verde", "via Growth Forum", "Priya via"])
def test_split_via_name_without_list(name: str | None) -> None:
    assert split_via_name(name) is None


def test_via_names_give_author() -> None:
    path = shared_path("cases", "B15.mbox")
    expected = json.loads(shared_path("cases", "B15.expected.json").read_text())["expected"]
    authors = []
    for message in mailbox.mbox(path):
        name, _address = getaddresses([message["From"]])[0]
        split = split_via_name(name)
        assert split is not None, name
        person, list_name = split
        assert list_name == "Growth Forum"
        assert expected["forbidden_name_substring"] not in person
        authors.append(normalize_person_name(name))
    assert authors == ["priya raman", "chen wu"]


def test_fold_accents() -> None:
    assert fold_accents("Łódź Ærøskøbing Þór Café") == "Lodz AEroskobing Thor Cafe"
