"""Tests of company-name normalisation and the who-knows company search."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.relationships.matching import (
    MATCH_THRESHOLD,
    CompanyIndex,
    Match,
    normalize_company,
)
from tests.conftest import shared_path


def _load_case(case_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    data = json.loads(shared_path("cases", f"{case_id}.json").read_text())
    expected = json.loads(shared_path("cases", f"{case_id}.expected.json").read_text())["expected"]
    return data, expected


def _index_by_name(companies: list[dict[str, Any]]) -> CompanyIndex:
    """Index companies under their own name as the organisation id."""
    return CompanyIndex([(company["name"], [company["name"]], [company["domain"]]) for company in companies])


def _ids(matches: list[Match]) -> list[Any]:
    return [match.org_id for match in matches]


# --- normalize_company --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Harbor & Finch, Inc.", "harbor and finch"),
        ("Harbor and Finch", "harbor and finch"),
        ("HARBOR + FINCH LLC", "harbor and finch"),
        ("Kestrel & Co.", "kestrel"),
        ("Kestrel & Company", "kestrel"),
        ("Kestrel and Co", "kestrel"),
        ("K&L Freight LLC", "kl freight"),
        ("K and L Freight", "kl freight"),
        ("K & L Freight", "kl freight"),
        ("KL Freight", "kl freight"),
        ("A.B.C. Holdings", "abc holdings"),
        ("A. B. C. Holdings", "abc holdings"),
        ("A B C", "abc"),
        ("ABC Holdings Ltd", "abc holdings"),
        ("AT&T Inc.", "att"),
        ("Procter & Gamble Co.", "procter and gamble"),
        ("Johnson&Johnson", "johnson and johnson"),
        ("J.P. Morgan Chase & Co.", "jp morgan chase"),
        ("The Summit Group", "summit group"),
        ("Summit Group", "summit group"),
        ("Nestlé S.A.", "nestle"),
        ("Société Générale SA", "societe generale"),
        ("Acme GmbH & Co. KG", "acme"),
        ("Acme Pty. Ltd.", "acme"),
        ("Acme L.L.C.", "acme"),
        ("Acme Limited Liability Company", "acme"),
        ("Acme A/S", "acme"),
        ("Acme S.à r.l.", "acme"),
        ("Acme S.p.A.", "acme"),
        ("Acme Sp. z o.o.", "acme"),
        ("Acme Oy", "acme"),
        ("Acme AB", "acme"),
        ("Acme K.K.", "acme"),
        ("Acme Corp.", "acme"),
        ("Acme Incorporated", "acme"),
        ("McDonald's Corporation", "mcdonalds"),
        ("Amazon.com, Inc.", "amazon"),
        ("3M Company", "3m"),
        ("Smith &", "smith"),
        ("Capital Holdings Group", "capital holdings group"),
        ("The Company", "company"),
        ("Limited", "limited"),
        ("The", "the"),
    ],
)
def test_normalize_company(name: str, expected: str) -> None:
    assert normalize_company(name) == expected


@pytest.mark.parametrize("name", ["", "   ", "!!!", "&", "&&", "- / .", "and"])
def test_normalize_company_without_letters(name: str) -> None:
    assert normalize_company(name) == ""


def test_normalize_company_non_string() -> None:
    assert normalize_company(None) == ""  # type: ignore[arg-type]


def test_spelling_variants_share_key() -> None:
    data, expected = _load_case("B35")
    for first, second in expected["same_key"]:
        assert normalize_company(first) == normalize_company(second), (first, second)
        assert not normalize_company(first).endswith(" and"), first
    assert set(data["normalize"]) == {name for pair in expected["same_key"] for name in pair}


# --- search: expectations from the case files -------------------------------------------


def test_shorter_name_beats_longer_containing_name() -> None:
    data, expected = _load_case("B33")
    index = _index_by_name(data["companies"])
    assert set(data["queries"]) <= set(expected)
    for query in data["queries"]:
        rule = expected[query]
        results = index.search(query)
        assert results, query
        assert results[0].org_id == rule["first"], query
        if "strictly_above" in rule:
            all_scores = {match.org_id: match.score for match in index.search(query, min_score=0)}
            assert all_scores[rule["first"]] > all_scores[rule["strictly_above"]], query
        for never in expected["never_matched"]:
            assert never not in _ids(results), (query, never)
            below = {match.org_id: match.score for match in index.search(query, min_score=0)}
            assert below.get(never, 0.0) < MATCH_THRESHOLD, (query, never)


def test_ampersand_spellings_find_company() -> None:
    data, expected = _load_case("B35")
    index = _index_by_name(data["companies"])
    assert set(data["queries"]) == set(expected["query_first"])
    for query, first in expected["query_first"].items():
        results = index.search(query)
        assert results, query
        assert results[0].org_id == first, query
        if len(results) > 1:
            assert results[0].score > results[1].score, query


def test_co_suffix_ranks_above_longer_name() -> None:
    data, _expected = _load_case("B35")
    index = _index_by_name(data["companies"])
    ranked = _ids(index.search("Kestrel & Company"))
    assert ranked.index("Kestrel & Co.") < ranked.index("Kestrel Dynamics GmbH")


def test_initials_queries_find_company() -> None:
    data, expected = _load_case("B36")
    index = _index_by_name(data["companies"])
    assert set(data["queries"]) == set(expected)
    for query, expected_ids in expected.items():
        assert _ids(index.search(query)) == expected_ids, query


# --- search: own cases -------------------------------------------------------------------

COMPANIES = [
    (1, ["Acme Corp"], ["acme.com"]),
    (2, ["Acme Foods Ltd"], ["acmefoods.example"]),
    (3, ["Acne Studios"], []),
    (4, ["Harbour Logistics"], []),
    (5, ["Partners Group"], []),
    (6, ["Summit Group"], ["summitgroup.example"]),
    (7, ["Summit Dental Group"], []),
    (8, ["Orbit Labs GmbH", "Orbit"], ["orbit-labs.example", "orbitlabs.de"]),
    (9, ["Bücher & Söhne GmbH"], ["bücher.example"]),
    (10, ["Globex International"], []),
    (11, ["Initech"], ["initech.example"]),
]


@pytest.fixture(scope="module")
def index() -> CompanyIndex:
    return CompanyIndex(COMPANIES)


def test_typo_in_legal_suffix(index: CompanyIndex) -> None:
    results = index.search("Acme Crop")
    assert results[0].org_id == 1
    assert results[0].matched == "Acme Corp"
    assert results[0].score == 95.0


def test_typo_in_distinctive_word(index: CompanyIndex) -> None:
    results = index.search("Harbor Logistics")
    assert _ids(results) == [4]
    assert MATCH_THRESHOLD <= results[0].score < 100.0
    assert _ids(index.search("Globx International")) == [10]


def test_short_words_need_exact_spelling(index: CompanyIndex) -> None:
    assert _ids(index.search("Acne")) == [3]
    assert 1 not in _ids(index.search("Acne"))
    assert _ids(index.search("Acme Cord")) == []


def test_one_shared_word_below_threshold(index: CompanyIndex) -> None:
    assert _ids(index.search("Acme Steel")) == []
    assert _ids(index.search("Summit Dental")) == [7]
    assert _ids(index.search("Initech Foods")) == []


def test_single_word_query_prefers_shorter_name(index: CompanyIndex) -> None:
    results = index.search("Summit")
    assert _ids(results) == [6, 7]
    assert results[0].score > results[1].score


@pytest.mark.parametrize(
    ("query", "org_id", "matched"),
    [
        ("acme.com", 1, "acme.com"),
        ("ACME.COM", 1, "acme.com"),
        ("www.acme.com", 1, "acme.com"),
        ("https://www.acme.com/about", 1, "acme.com"),
        ("someone@acme.com", 1, "acme.com"),
        ("orbitlabs.de", 8, "orbitlabs.de"),
        ("bücher.example", 9, "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", 9, "xn--bcher-kva.example"),
    ],
)
def test_domain_query_scores_exact(index: CompanyIndex, query: str, org_id: int, matched: str) -> None:
    results = index.search(query)
    assert results[0] == Match(org_id=org_id, score=100.0, matched=matched)


def test_other_domain_same_label_scores_lower(index: CompanyIndex) -> None:
    results = index.search("acme.io")
    assert results[0].org_id == 1
    assert results[0].score == 90.0


@pytest.mark.parametrize(
    ("query", "org_id"),
    [("Acme", 1), ("acme", 1), ("Initech", 11), ("initech", 11), ("OrbitLabs", 8), ("Orbit Labs", 8), ("Bucher", 9)],
)
def test_domain_label_query_scores_exact(index: CompanyIndex, query: str, org_id: int) -> None:
    results = index.search(query)
    assert results[0].org_id == org_id
    assert results[0].score == 100.0


def test_exact_name_reports_name(index: CompanyIndex) -> None:
    assert index.search("Acme Foods Limited")[0] == Match(org_id=2, score=100.0, matched="Acme Foods Ltd")


def test_alias_names_share_organisation(index: CompanyIndex) -> None:
    results = index.search("Orbit")
    assert _ids(results) == [8]
    assert results[0].score == 100.0


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "!!!", "&", "- . /", "???"])
def test_empty_or_punctuation_query(index: CompanyIndex, query: str) -> None:
    assert index.search(query) == []


@pytest.mark.parametrize("query", ["Holdings", "Group", "Global Holdings Group", "Inc.", "LLC", "The Company"])
def test_generic_only_query_matches_nothing(index: CompanyIndex, query: str) -> None:
    assert index.search(query) == []


def test_generic_only_name_found_by_exact_key(index: CompanyIndex) -> None:
    assert _ids(index.search("Partners Group")) == [5]
    assert _ids(index.search("The Partners Group AG")) == [5]
    assert _ids(index.search("Partners")) == []


def test_generic_words_weigh_less_than_distinctive(index: CompanyIndex) -> None:
    scores = {match.org_id: match.score for match in index.search("Summit Group", min_score=0)}
    assert scores[6] == 100.0
    assert scores[7] < 100.0
    dental = {match.org_id: match.score for match in index.search("Summit Dental", min_score=0)}
    assert dental.get(6, 0.0) < MATCH_THRESHOLD


def test_generic_extra_word_in_query_costs_little(index: CompanyIndex) -> None:
    assert _ids(index.search("Initech Holdings")) == [11]
    assert _ids(index.search("Initech Foods")) == []


def test_limit_and_min_score(index: CompanyIndex) -> None:
    assert len(index.search("Summit", limit=1)) == 1
    assert index.search("Summit", limit=0) == []
    assert index.search("Summit", min_score=100.0) == []
    with pytest.raises(ValueError, match="zero or more"):
        index.search("Summit", limit=-1)


def test_one_match_per_organisation(index: CompanyIndex) -> None:
    results = index.search("Orbit Labs")
    assert _ids(results).count(8) == 1


def test_ties_keep_entry_order() -> None:
    tied = CompanyIndex([("b", ["Zephyr Alpha"], []), ("a", ["Zephyr Gamma"], [])])
    results = tied.search("Zephyr")
    assert _ids(results) == ["b", "a"]
    assert results[0].score == results[1].score


def test_invalid_entries_are_skipped() -> None:
    skipped = CompanyIndex([(1, ["", "!!!"], ["not a domain", "co.uk"]), (2, ["Initech"], [])])
    assert len(skipped) == 2
    assert _ids(skipped.search("Initech")) == [2]
    assert skipped.search("co.uk") == []


def test_empty_index() -> None:
    assert CompanyIndex([]).search("Acme") == []
