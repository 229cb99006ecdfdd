"""Tests of registrable domains, organisation names, free-mail and internal domains."""

from __future__ import annotations

import json
import logging
import mailbox
import socket
from email.utils import getaddresses
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.relationships import domains
from bot.relationships.domains import (
    DomainInfo,
    DomainPolicy,
    bundled_freemail,
    load_freemail_file,
    organisation_name_from_domain,
    parse_freemail_lines,
    registrable_domain,
    to_ascii_domain,
)
from tests.conftest import shared_path

OWNER_DOMAIN = "example.org"


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("harborfinch.example", "harborfinch.example"),
        ("eu.mail.harborfinch.example", "harborfinch.example"),
        ("sales.example.co.uk", "example.co.uk"),
        ("team.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("Mail.Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("  example.com  ", "example.com"),
        ("a.b.c.example.com", "example.com"),
        ("yahoo.co.jp", "yahoo.co.jp"),
        ("mail.yandex.ru", "yandex.ru"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("shop.BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("alice.github.io", "alice.github.io"),
        ("docs.alice.github.io", "alice.github.io"),
        ("github.io", "github.io"),
        ("s3.amazonaws.com", "amazonaws.com"),
    ],
)
def test_registrable_domain_valid(domain: str, expected: str) -> None:
    assert registrable_domain(domain) == expected


@pytest.mark.parametrize(
    "domain",
    [
        "",
        "   ",
        "localhost",
        "example",
        "co.uk",
        "com",
        "1.2.3.4",
        "192.168.0.1.",
        "[192.0.2.1]",
        "2001:db8::1",
        "a..example.com",
        ".example.com",
        "-bad.example.com",
        "bad-.example.com",
        "under_score.example.com",
        "space here.example.com",
        "example.c",
        "x" * 64 + ".example.com",
    ],
)
def test_registrable_domain_invalid(domain: str) -> None:
    assert registrable_domain(domain) is None


def test_registrable_domain_non_string() -> None:
    assert registrable_domain(None) is None  # type: ignore[arg-type]


def test_to_ascii_domain_converts_idn() -> None:
    assert to_ascii_domain("Bücher.Example.") == "xn--bcher-kva.example"


def test_suffix_list_loads_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def reject_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the public suffix list tried to use the network")

    monkeypatch.setattr(socket, "create_connection", reject_network)
    monkeypatch.setattr(socket, "getaddrinfo", reject_network)
    monkeypatch.setattr(socket.socket, "connect", reject_network)
    domains._suffix_list.cache_clear()
    domains._icann_suffix_list.cache_clear()
    registrable_domain.cache_clear()
    try:
        assert registrable_domain("eu.mail.harborfinch.example") == "harborfinch.example"
        assert registrable_domain("sales.example.co.uk") == "example.co.uk"
        assert registrable_domain("github.io") == "github.io"
    finally:
        registrable_domain.cache_clear()


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("harborfinch.example", "Harborfinch"),
        ("eu.mail.harborfinch.example", "Harborfinch"),
        ("example.co.uk", "Example"),
        ("team.example.co.uk", "Example"),
        ("orbit-labs.example", "Orbit Labs"),
        ("bluepeak.example", "Bluepeak"),
        ("xn--bcher-kva.example", "Bücher"),
        ("3m.com", "3m"),
    ],
)
def test_organisation_name_from_domain(domain: str, expected: str) -> None:
    assert organisation_name_from_domain(domain) == expected


@pytest.mark.parametrize("domain", ["co.uk", "localhost", "", "1.2.3.4"])
def test_organisation_name_rejects_invalid_domain(domain: str) -> None:
    with pytest.raises(ValueError, match="not a valid domain"):
        organisation_name_from_domain(domain)


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "live.com",
        "msn.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.co.jp",
        "ymail.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "proton.me",
        "protonmail.com",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
        "naver.com",
        "orange.fr",
        "free.fr",
        "t-online.de",
        "comcast.net",
        "verizon.net",
        "att.net",
        "btinternet.com",
        "i.softbank.jp",
        "mail.i.softbank.jp",
        "GMAIL.COM.",
    ],
)
def test_default_policy_knows_freemail(domain: str) -> None:
    assert DomainPolicy().is_freemail(domain)


@pytest.mark.parametrize(
    "domain",
    ["google.com", "microsoft.com", "apple.com", "softbank.jp", "harborfinch.example", "example.co.uk", "livenation.com"],
)
def test_company_domains_not_freemail(domain: str) -> None:
    assert not DomainPolicy().is_freemail(domain)


def test_bundled_freemail_file_parses_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    bundled_freemail.cache_clear()
    with caplog.at_level(logging.WARNING, logger=domains.__name__):
        freemail = bundled_freemail()
    assert caplog.records == []
    assert len(freemail.domains) > 200
    assert {"hotmail", "yahoo", "gmx", "yandex"} <= freemail.labels


def test_parse_freemail_lines_skips_invalid_entries(caplog: pytest.LogCaptureFixture) -> None:
    lines = ["# comment", "", "  Example.NET  # trailing comment", "mail.*", "not a domain", "-bad.*", "bücher.example"]
    with caplog.at_level(logging.WARNING, logger=domains.__name__):
        freemail = parse_freemail_lines(lines, source="test list")
    assert freemail.domains == {"example.net", "xn--bcher-kva.example"}
    assert freemail.labels == {"mail"}
    assert "'not a domain' at test list line 5" in caplog.text
    assert "'-bad.*' at test list line 6" in caplog.text


def test_load_freemail_file_replaces_bundled_list(tmp_path: Path) -> None:
    path = tmp_path / "freemail.txt"
    path.write_text("only.example\n", encoding="utf-8")
    policy = DomainPolicy(freemail=load_freemail_file(path))
    assert policy.is_freemail("only.example")
    assert not policy.is_freemail("gmail.com")


def test_freemail_extra_domains() -> None:
    policy = DomainPolicy(freemail_extra={"Freemail.Example"})
    assert policy.is_freemail("freemail.example")
    assert policy.is_freemail("mx.freemail.example")
    assert policy.is_freemail("gmail.com")


def test_internal_domain_covers_subdomains() -> None:
    policy = DomainPolicy(internal={OWNER_DOMAIN})
    assert policy.is_internal("example.org")
    assert policy.is_internal("sales.example.org")
    assert policy.is_internal("EU.Sales.Example.Org.")
    assert not policy.is_internal("example.com")
    assert not policy.is_internal("notexample.org")
    assert not policy.is_internal("harborfinch.example")


def test_internal_subdomain_covers_parent() -> None:
    policy = DomainPolicy(internal={"sales.example.org"})
    assert policy.is_internal("example.org")
    assert policy.is_internal("hr.example.org")


def test_freemail_internal_domain_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=domains.__name__):
        policy = DomainPolicy(internal={"gmail.com", OWNER_DOMAIN})
    assert not policy.is_internal("gmail.com")
    assert policy.is_freemail("gmail.com")
    assert policy.is_internal("example.org")
    assert "ignored internal domain 'gmail.com'" in caplog.text


@pytest.mark.parametrize("domain", ["co.uk", "not a domain", "localhost"])
def test_invalid_internal_domain_raises(domain: str) -> None:
    with pytest.raises(ConfigError, match="INTERNAL_DOMAINS"):
        DomainPolicy(internal={domain})


def test_classify_address() -> None:
    policy = DomainPolicy(freemail_extra={"freemail.example"}, internal={OWNER_DOMAIN})
    assert policy.classify("kofi.mensah@eu.mail.harborfinch.example") == DomainInfo(
        domain="eu.mail.harborfinch.example", registrable="harborfinch.example", is_freemail=False, is_internal=False
    )
    assert policy.classify("kim.park@sales.example.org") == DomainInfo(
        domain="sales.example.org", registrable="example.org", is_freemail=False, is_internal=True
    )
    assert policy.classify("maja.l.home@freemail.example") == DomainInfo(
        domain="freemail.example", registrable="freemail.example", is_freemail=True, is_internal=False
    )
    assert policy.classify("x@bücher.example").domain == "xn--bcher-kva.example"


def test_classify_invalid_domain_has_no_registrable() -> None:
    info = DomainPolicy().classify("someone@co.uk")
    assert info.registrable is None
    assert not info.is_freemail
    assert not info.is_internal
    assert DomainPolicy().classify("someone@localhost").registrable is None


@pytest.mark.parametrize("address", ["no-at-sign", "@example.com", ""])
def test_classify_rejects_non_address(address: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        DomainPolicy().classify(address)


def test_classify_is_cached() -> None:
    policy = DomainPolicy()
    for _ in range(3):
        policy.classify("a@gmail.com")
        policy.classify("b@gmail.com")
    info = policy._classify_domain.cache_info()
    assert info.misses == 1
    assert info.hits == 5


def _mbox_senders(path: Path) -> list[tuple[str, str]]:
    return [getaddresses([message["From"]])[0] for message in mailbox.mbox(path)]


def test_subdomains_share_company() -> None:
    path = shared_path("cases", "B16.mbox")
    expected = json.loads(shared_path("cases", "B16.expected.json").read_text())["expected"]
    policy = DomainPolicy(internal={OWNER_DOMAIN})
    companies: dict[str, list[str]] = {}
    for _name, address in _mbox_senders(path):
        info = policy.classify(address.lower())
        assert info.registrable is not None
        companies.setdefault(info.registrable, []).append(address.lower())
    assert companies == {company["domain"]: company["members"] for company in expected["companies"]}
    names = {organisation_name_from_domain(domain) for domain in companies}
    assert names == {"Harborfinch", "Example"}
    assert not names & set(expected["forbidden_company_names"])


def test_owner_organisation_is_internal() -> None:
    path = shared_path("cases", "B18.mbox")
    expected = json.loads(shared_path("cases", "B18.expected.json").read_text())["expected"]
    policy = DomainPolicy(internal={OWNER_DOMAIN})
    for address in expected["internal"]:
        assert policy.classify(address).is_internal, address
    for address in expected["external"]:
        assert not policy.classify(address).is_internal, address
    external_companies = {
        policy.classify(address.lower()).registrable
        for _name, address in _mbox_senders(path)
        if not policy.classify(address.lower()).is_internal
    }
    assert external_companies == set(expected["companies"])


def test_configured_freemail_is_not_a_company() -> None:
    path = shared_path("cases", "B19.mbox")
    expected = json.loads(shared_path("cases", "B19.expected.json").read_text())["expected"]
    policy = DomainPolicy(freemail_extra=set(expected["config"]["extra_free_mail_domains"]), internal={OWNER_DOMAIN})
    company_domains = set()
    for _name, address in _mbox_senders(path):
        info = policy.classify(address.lower())
        if not info.is_freemail:
            company_domains.add(info.registrable)
    assert company_domains == {"orbit-labs.example"}
    assert organisation_name_from_domain("orbit-labs.example") == "Orbit Labs"
