"""Header parsing of real mail: names, addresses, dates, bulk signals and the corpus."""

from __future__ import annotations

import json
import mailbox
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.mail.headers import (
    NotAMessage,
    clean_archive_name,
    is_exchange_dn,
    parse_addresses,
    parse_message,
)
from bot.mail.types import FolderRole, MailItem, Participant
from bot.timeutil import isoformat_z
from tests.mail.test_files import enron_maildir, enron_manifest  # noqa: F401 - fixtures

NOW = datetime(2024, 12, 1, tzinfo=timezone.utc)


def parse(
    headers: str,
    body: str = "Body text.\n",
    *,
    mailbox_tz: str | None = None,
    threshold: int = 20,
) -> MailItem:
    raw = (
        headers.strip("\n").replace("\n", "\r\n").encode("utf-8")
        + b"\r\n\r\n"
        + body.encode()
    )
    return parse_raw(raw, mailbox_tz=mailbox_tz, threshold=threshold)


def parse_raw(
    raw: bytes, *, mailbox_tz: str | None = None, threshold: int = 20
) -> MailItem:
    return parse_message(
        raw,
        source_ref="test",
        folder="inbox",
        folder_role=FolderRole.INBOX,
        mailbox_tz=mailbox_tz,
        bulk_recipient_threshold=threshold,
        now=NOW,
    )


def addresses(participants: list[Participant]) -> list[str | None]:
    return [participant.address for participant in participants]


# --- Display names and address lists


def test_encoded_name_with_comma() -> None:
    item = parse(
        """
From: =?utf-8?Q?Lindqvist=2C_Maja?= <maja.lindqvist@example.com>
To: Robin Hale <robin.hale@example.org>
Cc: =?utf-8?Q?Ortega=2C_Lu=C3=ADs?= <luis.ortega@example.com>
Date: Tue, 04 Jun 2024 10:12:00 +0200
"""
    )
    assert item.sender == Participant("maja.lindqvist@example.com", "Lindqvist, Maja")
    assert list(item.cc) == [Participant("luis.ortega@example.com", "Ortega, Luís")]
    assert list(item.to) == [Participant("robin.hale@example.org", "Robin Hale")]


def test_unquoted_comma_in_names() -> None:
    item = parse(
        """
From: Theo Marsh, Jr <theo.marsh@bluepeak.example>
To: Robin Hale <robin.hale@example.org>, Okafor, Nadia <nadia.okafor@northwind.example>
"""
    )
    assert item.sender == Participant("theo.marsh@bluepeak.example", "Theo Marsh, Jr")
    assert list(item.to) == [
        Participant("robin.hale@example.org", "Robin Hale"),
        Participant("nadia.okafor@northwind.example", "Okafor, Nadia"),
    ]


def test_fragments_without_domain_dropped() -> None:
    defects: list[str] = []
    found = parse_addresses(
        'Theo, "Theo Marsh", Okafor, robin@localhost, x@1.2.3.4', defects
    )
    assert found == []
    assert "address-without-valid-domain" in defects


def test_encoded_comma_not_split() -> None:
    found = parse_addresses(
        "=?utf-8?B?TGluZHF2aXN0LCBNYWph?= <maja@example.com>, b@example.com"
    )
    assert found == [
        Participant("maja@example.com", "Lindqvist, Maja"),
        Participant("b@example.com", None),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "m.keller@example.com <mkeller.pay@example.net>",
        '"m.keller@example.com" <mkeller.pay@example.net>',
        "'m.keller@example.com' <MKeller.Pay@Example.NET>",
    ],
)
def test_angle_address_wins_over_address_like_name(value: str) -> None:
    assert parse_addresses(value) == [Participant("mkeller.pay@example.net", None)]


def test_empty_group_yields_nothing() -> None:
    assert parse_addresses("undisclosed-recipients:;") == []
    assert parse_addresses("Undisclosed recipients: ;") == []


def test_named_group_yields_members() -> None:
    found = parse_addresses(
        'Launch Team: Ana Silva <ana.silva@harborfinch.example>, "B" <b@x.example>;'
        ", after@x.example"
    )
    assert found == [
        Participant("ana.silva@harborfinch.example", "Ana Silva"),
        Participant("b@x.example", "B"),
        Participant("after@x.example", None),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Maja.Lindqvist@Bluepeak.EXAMPLE", "maja.lindqvist@bluepeak.example"),
        ("  <kofi@harborfinch.example.>  ", "kofi@harborfinch.example"),
        ("'cdean12@earthlink.net'", "cdean12@earthlink.net"),
        ("mailto:ana@harborfinch.example", "ana@harborfinch.example"),
        ("<@relay.example:lee@harborfinch.example>", "lee@harborfinch.example"),
        ("ryan.o'rourke@enron.com", "ryan.o'rourke@enron.com"),
        ("k..allen@enron.com", "k..allen@enron.com"),
        ("kofi@harborfinch.example (Kofi Mensah)", "kofi@harborfinch.example"),
    ],
)
def test_address_normalised(value: str, expected: str) -> None:
    assert addresses(parse_addresses(value)) == [expected]


@pytest.mark.parametrize(
    "value",
    [
        "no-domain",
        "user@",
        "@example.com",
        "user@localhost",
        "user@under_score.example",
        "user@example.123",
        "user@exa mple.com",
        "a@b@example.com",
    ],
)
def test_invalid_address_dropped(value: str) -> None:
    assert parse_addresses(value) == []


def test_name_before_bare_address() -> None:
    assert parse_addresses("Kofi Mensah kofi@harborfinch.example") == [
        Participant("kofi@harborfinch.example", "Kofi Mensah")
    ]


def test_comment_supplies_name() -> None:
    assert parse_addresses("kofi@harborfinch.example (Kofi Mensah)") == [
        Participant("kofi@harborfinch.example", "Kofi Mensah")
    ]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("Buy, Rick </O=ENRON/OU=NA/CN=RECIPIENTS/CN=RBUY>", "Buy, Rick"),
        (
            '"Lind, Sofia" </o=ExampleOrg/ou=Exchange Administrative Group'
            "/cn=Recipients/cn=slind>",
            "Lind, Sofia",
        ),
        ("Jules Morel <EX:/O=ORBIT/OU=FIRST/CN=RECIPIENTS/CN=JMOREL>", "Jules Morel"),
        (
            "ISO Market Participants"
            " <IMCEAEX-_O=CAISO_OU=CORPORATE_CN=ISO+20MARKET@caiso.com>",
            "ISO Market Participants",
        ),
    ],
)
def test_exchange_dn_is_never_an_address(value: str, name: str) -> None:
    assert parse_addresses(value) == [Participant(None, name)]


def test_exchange_dn_detection() -> None:
    assert is_exchange_dn("/O=ENRON/OU=NA/CN=RECIPIENTS/CN=RBUY")
    assert is_exchange_dn(
        "/o=exchangelabs/ou=exchange administrative group/cn=recipients/cn=x"
    )
    assert is_exchange_dn(
        "IMCEAEX-_O=VINSON+20+26+20ELKINS_OU=VELAW_CN=RECIPIENTS@velaw.com"
    )
    assert not is_exchange_dn("olivia@example.com")
    assert parse_addresses("/O=ENRON/OU=NA/CN=RECIPIENTS/CN=RBUY") == []


def test_thousands_of_recipients() -> None:
    to = ", ".join(f"Person {n} <person{n}@example.com>" for n in range(5000))
    item = parse(
        f"From: a@example.com\nTo: {to}\nDate: Tue, 04 Jun 2024 10:00:00 +0000"
    )
    assert len(item.to) == 5000
    assert item.to[4999] == Participant("person4999@example.com", "Person 4999")
    assert item.is_bulk is True
    assert item.bulk_reason == "recipients-over-20"


def test_repeated_to_fields_are_joined() -> None:
    item = parse("From: a@example.com\nTo: b@example.com\nTo: c@example.com")
    assert addresses(item.to) == ["b@example.com", "c@example.com"]


def test_folded_header_unfolded() -> None:
    item = parse(
        "From: Ana Ruiz\n <ana.ruiz@harborfinch.example>\nSubject: Renewal\n\tcall\n"
        "To: a@example.com,\n b@example.com"
    )
    assert item.sender == Participant("ana.ruiz@harborfinch.example", "Ana Ruiz")
    assert item.subject == "Renewal call"
    assert addresses(item.to) == ["a@example.com", "b@example.com"]


# --- Exported archives: X-From, X-To and X-cc


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("Phillip K Allen", "Phillip K Allen"),
        ("David W Delainey/HOU/ECT@ECT", "David W Delainey"),
        (
            "Kitchen, Louise </O=ENRON/OU=NA/CN=RECIPIENTS/CN=LKITCHEN>",
            "Kitchen, Louise",
        ),
        ('"Hetrick, Nancy" <Nancy.Hetrick@ENRON.com>@ENRON', "Hetrick, Nancy"),
        ("Ken Lay- Chairman of the Board@ENRON", "Ken Lay- Chairman of the Board"),
        ("Erica Tollefson (E-mail) <ericatollefson@yahoo.com>", "Erica Tollefson"),
        ("mark.friedman@enron.com", None),
        ("<portfolio@mworld.com>", None),
        ("kathyd@edihealthcare.com (Kathy, Bob, Sam & Zachary)", None),
        ("", None),
    ],
)
def test_archive_name_cleaned(value: str, name: str | None) -> None:
    assert clean_archive_name(value) == name


def test_name_from_x_from_when_from_is_bare() -> None:
    item = parse(
        """
From: phillip.allen@enron.com
To: tim.belden@enron.com
X-From: Phillip K Allen
X-To: Tim Belden <Tim Belden/Enron@EnronXGate>
"""
    )
    assert item.sender == Participant("phillip.allen@enron.com", "Phillip K Allen")
    assert list(item.to) == [Participant("tim.belden@enron.com", "Tim Belden")]


def test_x_from_ignored_when_from_has_name() -> None:
    item = parse("From: Phil Allen <phillip.allen@enron.com>\nX-From: Phillip K Allen")
    assert item.sender == Participant("phillip.allen@enron.com", "Phil Allen")


def test_x_to_names_matched_by_position() -> None:
    item = parse(
        """
From: rick.buy@enron.com
To: louise.kitchen@enron.com, john.lavorato@enron.com
Cc: mike.grigsby@enron.com
X-To: Kitchen, Louise </O=ENRON/OU=NA/CN=RECIPIENTS/CN=LKITCHEN>,
 John J Lavorato/Corp/Enron@Enron
X-cc: Grigsby, Mike </O=ENRON/OU=NA/CN=RECIPIENTS/CN=MGRIGSB>
"""
    )
    assert list(item.to) == [
        Participant("louise.kitchen@enron.com", "Kitchen, Louise"),
        Participant("john.lavorato@enron.com", "John J Lavorato"),
    ]
    assert list(item.cc) == [Participant("mike.grigsby@enron.com", "Grigsby, Mike")]


def test_x_to_with_other_count_leaves_names_empty() -> None:
    item = parse(
        """
From: rick.buy@enron.com
To: a.one@enron.com, b.two@enron.com
X-To: Smith, Amy, Jones, Bob
"""
    )
    assert [participant.name for participant in item.to] == [None, None]


def test_x_to_with_other_address_leaves_names_empty() -> None:
    item = parse(
        """
From: rick.buy@enron.com
To: a.one@enron.com, b.two@enron.com
X-To: Amy One <b.two@enron.com>, Bob Two <a.one@enron.com>
"""
    )
    assert [participant.name for participant in item.to] == [None, None]


# --- Dates


def test_impossible_date_uses_newest_received() -> None:
    item = parse(
        """
Received: from mx1.example.net by mx.example.org; Wed, 01 Mar 2023 10:05:12 +0000
Received: from laptop by mx1.example.net; Wed, 01 Mar 2023 10:04:00 +0000
From: Kofi Mensah <kofi.mensah@harborfinch.example>
Date: Tue, 31 Feb 2023 10:00:00 +0000
"""
    )
    assert item.sent_at == datetime(2023, 3, 1, 10, 5, 12, tzinfo=timezone.utc)
    assert item.date_defect is not None
    assert "31 Feb 2023" in item.date_defect
    assert "Received" in item.date_defect


@pytest.mark.parametrize(
    "date",
    [
        "Mon, 31 Dec 1979 16:00:00 -0800",
        "Thu, 01 Jan 1970 00:00:00 +0000",
        "Tue, 01 Jan 1980 00:00:00 -1200",
        "Fri, 01 Jan 2999 00:00:00 +0000",
        "Tue, 03 Dec 2024 12:00:00 +0000",
        "not a date",
    ],
)
def test_implausible_date_without_received(date: str) -> None:
    item = parse(f"From: a@example.com\nDate: {date}")
    assert item.sent_at is None
    assert item.date_defect is not None
    assert "no valid Received time" in item.date_defect


def test_date_one_hour_ahead_accepted() -> None:
    item = parse("From: a@example.com\nDate: Sun, 01 Dec 2024 01:00:00 +0000")
    assert item.sent_at == datetime(2024, 12, 1, 1, 0, tzinfo=timezone.utc)
    assert item.date_defect is None


def test_missing_date_uses_received() -> None:
    item = parse(
        "Received: by mx.example.org with SMTP id q1; Tue, 4 Jun 2024 12:00:05 +0200\n"
        "From: a@example.com"
    )
    assert item.sent_at == datetime(2024, 6, 4, 10, 0, 5, tzinfo=timezone.utc)
    assert item.date_defect == "missing Date header; used the newest Received time"


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 05 Mar 2024 09:15:00", datetime(2024, 3, 5, 8, 15, tzinfo=timezone.utc)),
        (
            "Wed, 10 Jul 2024 09:15:00",
            datetime(2024, 7, 10, 7, 15, tzinfo=timezone.utc),
        ),
        (
            "Wed, 10 Jul 2024 09:15:00 CEST",
            datetime(2024, 7, 10, 7, 15, tzinfo=timezone.utc),
        ),
        (
            "Wed, 10 Jul 2024 09:15:00 -0000",
            datetime(2024, 7, 10, 9, 15, tzinfo=timezone.utc),
        ),
        (
            "Wed, 10 Jul 2024 09:15:00 +0000",
            datetime(2024, 7, 10, 9, 15, tzinfo=timezone.utc),
        ),
        (
            "Wed, 10 Jul 2024 09:15:00 EDT",
            datetime(2024, 7, 10, 13, 15, tzinfo=timezone.utc),
        ),
        ("10 Jul 24 09:15 +0100", datetime(2024, 7, 10, 8, 15, tzinfo=timezone.utc)),
        (
            "Mon, 14 May 2001 16:39:00 -0700 (PDT)",
            datetime(2001, 5, 14, 23, 39, tzinfo=timezone.utc),
        ),
        (
            "Sat, 28 Jan 0002 13:00:10 -0800 (PST)",
            datetime(2002, 1, 28, 21, 0, 10, tzinfo=timezone.utc),
        ),
    ],
)
def test_date_read_in_mailbox_zone(date: str, expected: datetime) -> None:
    item = parse(f"From: a@example.com\nDate: {date}", mailbox_tz="Europe/Berlin")
    assert item.sent_at == expected
    assert item.sent_at.tzinfo is timezone.utc
    assert item.date_defect is None


def test_naive_date_defaults_to_utc() -> None:
    item = parse("From: a@example.com\nDate: Tue, 05 Mar 2024 09:15:00")
    assert item.sent_at == datetime(2024, 3, 5, 9, 15, tzinfo=timezone.utc)


def test_unknown_mailbox_zone_rejected() -> None:
    with pytest.raises(ConfigError, match="Europe/Berlin"):
        parse("From: a@example.com", mailbox_tz="Europe/Atlantis")


# --- Damaged and incomplete messages


def test_eight_bit_header_in_unknown_charset() -> None:
    raw = (
        b"From: J\xf6rg M\xfcller <joerg@example.de>\r\n"
        b"Subject: \xc4nderung =?x-unknown?Q?caf=E9?=\r\n"
        b"Date: Tue, 04 Jun 2024 10:00:00 +0000\r\n\r\nbody\r\n"
    )
    item = parse_raw(raw)
    assert item.sender == Participant("joerg@example.de", "Jörg Müller")
    assert item.subject == "Änderung café"
    assert "header-bytes-not-utf8" in item.defects


def test_broken_encoded_word_kept_readable() -> None:
    item = parse("From: =?utf-8?B?###?= <a@example.com>\nSubject: =?utf-8?Q?half")
    assert item.sender is not None
    assert item.sender.address == "a@example.com"
    assert item.subject == "=?utf-8?Q?half"


def test_missing_from_date_and_message_id() -> None:
    item = parse("To: robin.hale@example.org\nSubject: Anonymous")
    assert item.sender is None
    assert item.sent_at is None
    assert item.message_id is None
    assert "from-missing" in item.defects
    assert item.date_defect == "missing Date header; no valid Received time"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x89PNG\r\n\x1a\n\x00\x00",
        b"just some text\nwith lines\n",
        b"Note: buy milk\n",
    ],
)
def test_not_a_message_raises(raw: bytes) -> None:
    with pytest.raises(NotAMessage, match="not an RFC 5322 message"):
        parse_raw(raw)


def test_mbox_envelope_line_skipped() -> None:
    raw = (
        b"From ana@example.com Tue Jun  4 10:00:00 2024\nFrom: ana@example.com\n\nhi\n"
    )
    assert parse_raw(raw).sender == Participant("ana@example.com", None)


# --- Ids, subject and body digest


def test_message_ids_parsed() -> None:
    item = parse(
        """
From: a@example.com
Message-ID: <B22.Same@Harborfinch.example>
In-Reply-To: Your message of Tue <b20.out.1@example.org>
References: <root@example.org>
 <b20.out.1@example.org>
Subject: =?utf-8?Q?Re:_Gr=C3=BC=C3=9Fe?= aus Berlin
"""
    )
    assert item.message_id == "B22.Same@Harborfinch.example"
    assert item.in_reply_to == "b20.out.1@example.org"
    assert item.references == ["root@example.org", "b20.out.1@example.org"]
    assert item.subject == "Re: Grüße aus Berlin"


def test_body_digest_ignores_line_ends() -> None:
    headers = "From: a@example.com\nDate: Tue, 04 Jun 2024 10:00:00 +0000"
    crlf = parse(headers, "Line one\r\nLine two\r\n")
    lf = parse_raw(b"From: a@example.com\n\nLine one\nLine two\n\n\n")
    other = parse(headers, "Line one\r\nLine three\r\n")
    assert crlf.body_hash == lf.body_hash
    assert crlf.body_hash != other.body_hash


# --- Bulk mail and automatic replies


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("List-Id: Growth Forum <growth-forum.lists.example.net>", "list-id"),
        (
            "List-Unsubscribe: <mailto:unsubscribe@mailer.example.net>",
            "list-unsubscribe",
        ),
        ("Precedence: bulk", "precedence-bulk"),
        ("Precedence: List", "precedence-list"),
        ("Precedence: junk", "precedence-junk"),
        ("Auto-Submitted: auto-generated", "auto-submitted-auto-generated"),
        (
            "Auto-Submitted: auto-notified; owner-email=x@example.com",
            "auto-submitted-auto-notified",
        ),
    ],
)
def test_bulk_signal(extra: str, reason: str) -> None:
    item = parse(f"From: a@example.com\nTo: b@example.com\n{extra}")
    assert item.is_bulk is True
    assert item.bulk_reason == reason
    assert item.is_auto_reply is False


@pytest.mark.parametrize(
    "sender",
    [
        "noreply@example.com",
        "no-reply@accounts.example.com",
        "No_Reply@example.com",
        "donotreply@example.com",
        "do-not-reply@example.com",
        "MAILER-DAEMON@mx.example.com",
        "postmaster@example.com",
        "notifications@github.example",
        "bounce-12345@mailer.example.net",
        "bounces+abc@mailer.example.net",
    ],
)
def test_no_reply_sender_is_bulk(sender: str) -> None:
    item = parse(f"From: Service <{sender}>\nTo: b@example.com")
    assert item.bulk_reason == "no-reply-sender"


@pytest.mark.parametrize("sender", ["noreen@example.com", "bouncer.bob@example.com"])
def test_similar_sender_not_bulk(sender: str) -> None:
    assert parse(f"From: {sender}\nTo: b@example.com").is_bulk is False


def test_recipient_threshold_argument() -> None:
    to = ", ".join(f"p{n}@example.com" for n in range(5))
    assert parse(f"From: a@example.com\nTo: {to}", threshold=5).is_bulk is False
    item = parse(f"From: a@example.com\nTo: {to}\nCc: x@example.com", threshold=5)
    assert item.bulk_reason == "recipients-over-5"


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied",
        "X-Autoreply: yes",
        "X-Autorespond: vacation",
        "Precedence: auto_reply",
        "In-Reply-To: <x@example.org>\nX-Auto-Response-Suppress: All",
        "References: <x@example.org>\nX-Auto-Response-Suppress: DR, OOF, AutoReply",
    ],
)
def test_auto_reply_fields(extra: str) -> None:
    item = parse(f"From: a@example.com\nSubject: Re: Proposal\n{extra}")
    assert item.is_auto_reply is True
    assert item.is_bulk is False


def test_suppress_field_alone_is_no_auto_reply() -> None:
    item = parse("From: a@example.com\nSubject: Meeting\nX-Auto-Response-Suppress: All")
    assert item.is_auto_reply is False


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: Contract redlines",
        "Out of Office AutoReply: East Power Meeting",
        "Automatic reply: Proposal for the pilot",
        "Autoreply: Status",
        "Auto-Reply: Status",
        "Abwesenheitsnotiz: Angebot",
        "Automatische Antwort: Angebot",
        "Réponse automatique : Devis",
        "Respuesta automática: Pedido",
        "Risposta automatica: Ordine",
        "Automatisch antwoord: Offerte",
        "[Auto-Reply] Status",
    ],
)
def test_auto_reply_subject(subject: str) -> None:
    assert parse(f"From: a@example.com\nSubject: {subject}").is_auto_reply is True


@pytest.mark.parametrize(
    "subject",
    [
        "Out of office on Thursday",
        "Out of Office Procedure",
        "Re: automatic reply rules",
        "",
    ],
)
def test_ordinary_subject_not_auto_reply(subject: str) -> None:
    assert parse(f"From: a@example.com\nSubject: {subject}").is_auto_reply is False


# --- Mailing lists that rewrite From


LIST_POST = """
From: "Priya Raman via Growth Forum" <growth-forum@lists.example.net>
To: growth-forum@lists.example.net
List-Id: Growth Forum <growth-forum.lists.example.net>
"""


def test_list_author_from_reply_to() -> None:
    item = parse(LIST_POST + "Reply-To: Priya Raman <priya.raman@bluepeak.example>")
    assert item.author == Participant("priya.raman@bluepeak.example", "Priya Raman")
    assert item.list_id == "growth-forum.lists.example.net"
    assert item.bulk_reason == "list-id"


def test_list_author_from_cc() -> None:
    item = parse(
        LIST_POST
        + "Reply-To: growth-forum@lists.example.net\n"
        + "Cc: Raman, Priya <priya.raman@bluepeak.example>"
    )
    assert item.author == Participant("priya.raman@bluepeak.example", "Raman, Priya")


def test_list_author_needs_matching_name() -> None:
    item = parse(LIST_POST + "Reply-To: Chen Wu <chen.wu@northwind.example>")
    assert item.author is None


def test_via_name_without_list_fields_keeps_author_empty() -> None:
    item = parse(
        'From: "Priya Raman via LinkedIn" <messages@linkedin.example>\n'
        "Reply-To: Priya Raman <priya.raman@bluepeak.example>"
    )
    assert item.author is None
    assert item.list_id is None


# --- Input cases


def case_items(cases_dir: Path, name: str) -> list[MailItem]:
    path = cases_dir / name
    if path.suffix == ".eml":
        raws = [path.read_bytes()]
    else:
        raws = [message.as_bytes() for message in mailbox.mbox(str(path), create=False)]
    return [
        parse_message(
            raw,
            source_ref=f"{name}#{index}",
            folder="cases",
            folder_role=FolderRole.INBOX,
            mailbox_tz="Europe/Berlin",
            now=NOW,
        )
        for index, raw in enumerate(raws)
    ]


def expected(cases_dir: Path, case: str) -> dict:
    return json.loads((cases_dir / f"{case}.expected.json").read_text())["expected"]


def all_participants(items: list[MailItem]) -> list[Participant]:
    found: list[Participant] = []
    for item in items:
        found.extend(p for p in (item.sender, item.author) if p is not None)
        found.extend(item.to + item.cc + item.bcc + item.reply_to)
    return found


def test_case_encoded_comma_names(cases_dir: Path) -> None:
    (item,) = case_items(cases_dir, "B01.eml")
    want = expected(cases_dir, "B01")
    by_address = {p.address: p.name for p in all_participants([item])}
    for contact in want["contacts"]:
        assert by_address[contact["address"]] in contact["name_any_of"]
    assert all(p.address and "@" in p.address for p in all_participants([item]))
    assert (
        len(by_address) == want["contact_count"] + 1
    )  # the owner is the third address


def test_case_unquoted_comma_names(cases_dir: Path) -> None:
    (item,) = case_items(cases_dir, "B02.eml")
    want = expected(cases_dir, "B02")
    assert item.sender is not None
    assert item.sender.address == want["sender"]["address"]
    assert item.sender.name in want["sender"]["name_any_of"]
    assert addresses(item.recipients) == want["recipients"]
    assert item.to[1].name in ("Okafor, Nadia", "Nadia Okafor")
    seen = {p.address for p in all_participants([item])}
    assert not seen & set(want["forbidden_addresses"])


def test_case_address_like_names(cases_dir: Path) -> None:
    items = case_items(cases_dir, "B04.mbox")
    want = expected(cases_dir, "B04")
    senders = [item.sender.address for item in items if item.sender]
    assert senders == [want["contacts"][0]["address"]] * want["contacts"][0]["inbound"]
    seen = {p.address for p in all_participants(items)}
    assert not seen & set(want["forbidden_addresses"])
    assert not any(p.name and "@" in p.name for p in all_participants(items))


def test_case_group_syntax(cases_dir: Path) -> None:
    (item,) = case_items(cases_dir, "B05.eml")
    want = expected(cases_dir, "B05")
    assert item.sender is not None
    assert [item.sender.address, *addresses(item.recipients)] == want["contacts"]
    names = {p.name for p in all_participants([item])}
    assert not names & set(want["forbidden_names"])


def test_case_impossible_date(cases_dir: Path) -> None:
    (item,) = case_items(cases_dir, "B06.eml")
    want = expected(cases_dir, "B06")
    assert isoformat_z(item.sent_at) == want["message_time_utc"]
    assert item.date_defect is not None
    assert item.sender is not None
    assert [item.sender.address] == want["contacts"]


def test_case_address_letter_case(cases_dir: Path) -> None:
    items = case_items(cases_dir, "B13.mbox")
    want = expected(cases_dir, "B13")
    maja = want["contacts"][0]["address"]
    inbound = [item for item in items if item.sender and item.sender.address == maja]
    outbound = [item for item in items if maja in addresses(item.recipients)]
    assert len(inbound) == want["contacts"][0]["inbound"]
    assert len(outbound) == want["contacts"][0]["outbound"]
    assert {p.address for p in all_participants(items)} == {
        maja,
        "robin.hale@example.org",
    }


def test_case_list_rewrites_from(cases_dir: Path) -> None:
    items = case_items(cases_dir, "B15.mbox")
    want = expected(cases_dir, "B15")
    attributions = {
        f"<{item.message_id}>": item.author.address for item in items if item.author
    }
    assert attributions == want["attributions"]
    assert all(item.list_id == "growth-forum.lists.example.net" for item in items)
    assert all(" via " not in (item.author.name or "") for item in items if item.author)


def test_case_auto_replies(cases_dir: Path) -> None:
    items = case_items(cases_dir, "B20.mbox")
    want = expected(cases_dir, "B20")
    replies = {
        item.sender.address: item.is_auto_reply
        for item in items
        if item.sender and item.sender.address in want["inbound"]
    }
    assert replies == {address: True for address in want["inbound"]}
    outbound = [
        item
        for item in items
        if item.sender and item.sender.address == "robin.hale@example.org"
    ]
    assert [f"<{item.message_id}>" for item in outbound] == [
        opportunity["thread_message_id"] for opportunity in want["opportunities"]
    ]
    assert not any(item.is_auto_reply for item in outbound)


def test_case_duplicates_and_missing_ids(cases_dir: Path) -> None:
    items = case_items(cases_dir, "B22.mbox")
    want = expected(cases_dir, "B22")
    ana = [
        item
        for item in items
        if item.sender and item.sender.address == "ana.ruiz@harborfinch.example"
    ]
    kofi = [
        item
        for item in items
        if item.sender and item.sender.address == "kofi.mensah@harborfinch.example"
    ]
    assert (
        len({(item.message_id, item.body_hash) for item in ana})
        == want["inbound"][ana[0].sender.address]
    )
    assert [item.message_id for item in kofi] == [None, None]
    assert (
        len({item.body_hash for item in kofi})
        == want["inbound"][kofi[0].sender.address]
    )
    assert (
        len({(item.message_id, item.body_hash) for item in items})
        == want["messages_stored"]
    )


# --- The Enron corpus


def test_enron_corpus_matches_manifest(
    enron_maildir: Path,  # noqa: F811 - the fixture imported above
    enron_manifest: list[dict[str, str]],  # noqa: F811
) -> None:
    mismatched: list[str] = []
    named_senders = 0
    for row in enron_manifest:
        raw = (enron_maildir.parent / row["path"]).read_bytes()
        item = parse_message(
            raw,
            source_ref=row["path"],
            folder=row["folder"],
            folder_role=FolderRole.OTHER,
            now=NOW,
        )
        assert f"<{item.message_id}>" == row["message_id"], row["path"]
        if row["date_utc"] >= "1980-01-02":
            assert isoformat_z(item.sent_at) == row["date_utc"], row["path"]
        else:
            assert item.sent_at is None, row["path"]
            assert item.date_defect is not None
        # The manifest counts raw comma-separated fragments. DNs and fragments without
        # a domain are dropped here on purpose, and such messages carry a defect code.
        clean = not {"exchange-dn-address", "address-without-valid-domain"} & set(
            item.defects
        )
        sender = item.sender.address if item.sender else ""
        # A few manifest rows hold the raw From value ('legal <.hall@enron.com>').
        listed = parse_addresses(row["from"])
        listed_sender = listed[0].address if listed else row["from"]
        if clean and (sender, len(item.to), len(item.cc)) != (
            listed_sender,
            int(row["to_count"]),
            int(row["cc_count"]),
        ):
            mismatched.append(row["path"])
        named_senders += bool(item.sender and item.sender.name)
    assert mismatched == []
    # Every Enron file has an X-From line, and nearly all of them carry a name.
    assert named_senders > 0.9 * len(enron_manifest)
