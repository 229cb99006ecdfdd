"""Subject normalisation used to thread mail without reply headers."""

import pytest

from bot.mail.threads import has_reply_prefix, normalize_subject, subject_key


@pytest.mark.parametrize(
    "subject, expected",
    [
        ("RE: Fwd: [Growth Forum] Pricing", "pricing"),
        ("AW: WG: Angebot", "angebot"),
        ("Re[2]: hello", "hello"),
        ("Sv: Vs: møte", "møte"),
        ("回复：会议", "会议"),
        ("FW: RE: 2001 plan", "2001 plan"),
        ("  re :  spaced  out ", "spaced out"),
        ("TR: RE: devis", "devis"),
        ("Antw: offerte", "offerte"),
        ("RV: Propuesta", "propuesta"),
        ("Odp: oferta", "oferta"),
        ("[EXT] RE: x", "x"),
        ("Meeting: agenda", "meeting: agenda"),
        ("Résumé", "résumé"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_subject(subject, expected):
    assert normalize_subject(subject) == expected


def test_subject_key_ignores_prefixes_and_case():
    assert subject_key("Re: Budget 2027") == subject_key("budget 2027")
    assert subject_key("Budget 2027") != subject_key("Budget 2028")


def test_empty_subject_has_no_key():
    assert subject_key("") is None
    assert subject_key("Re:") is None


def test_reply_prefix_detection():
    assert has_reply_prefix("Re: x")
    assert has_reply_prefix("AW: x")
    assert not has_reply_prefix("Agenda: x")
    assert not has_reply_prefix(None)
