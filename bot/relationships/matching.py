"""Company name matching for the who-knows search.

Names are compared through a normalised key (see ``normalize_company``). A search scores each
candidate name on 0 to 100:

- 100: the query is a domain of the organisation ('acme.com', 'www.acme.com',
  'someone@acme.com'), the query's words equal the organisation's domain label ('Acme' for
  acme.com, 'Orbit Labs' for orbit-labs.example), or the query's key equals a name's key.
- up to 99: the query's words without spaces equal a name's words without spaces
  ('HarborFinch' and 'Harbor & Finch'), or a weighted token match (below).
- 95 or less: the same rules after dropping a misspelt legal suffix at the end of the query
  ('Acme Crop' is read as 'Acme Corp').
- 90 or less: the same rules for a query that is a domain the index lacks, applied to its
  label ('acme.io' finds the organisation of acme.com at 90).

The weighted token match aligns query tokens with name tokens one to one. Two tokens match
with similarity 1 when equal, and with their OSA similarity (1 - edits / longer length) when
both have at least 5 letters and the similarity is at least 0.8. Generic words ('group',
'holdings') weigh 0.3, other tokens 1, and 'and', 'of', 'the' are ignored. With M the matched
weight, Uq the query weight left unmatched and Uc the name weight left unmatched, the score is
100 * M / (M + Uq + 0.25 * Uc). Unmatched query words cost four times as much as unmatched
name words: 'Summit' still finds 'Summit Dental Group', but 'Summit Group' scores 100 against
'Summit Group' and 84 against 'Summit Dental Group', and 'Summit Dental' scores 48 against
'Summit Group'.

``search`` returns organisations scoring at least ``MATCH_THRESHOLD`` (60). A query made only
of generic words or legal suffixes ('Holdings') matches only a name whose key equals it, or an
explicit domain. A candidate must share a distinctive token (exactly or by spelling) with the
query, so a search scores only the names found through an inverted token index.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz import process
from rapidfuzz.distance import OSA

from bot.relationships.addresses import fold_accents
from bot.relationships.domains import registrable_domain, to_ascii_domain

log = logging.getLogger(__name__)

MATCH_THRESHOLD = 60.0
EXACT_SCORE = 100.0
FUZZY_MAX_SCORE = 99.0
SUFFIX_TYPO_FACTOR = 0.95
DOMAIN_LABEL_FACTOR = 0.9
GENERIC_WEIGHT = 0.3
DISTINCTIVE_WEIGHT = 1.0
UNMATCHED_NAME_COST = 0.25
TOKEN_SIMILARITY_CUTOFF = 0.8
FUZZY_TOKEN_MIN_LENGTH = 5

# Words that describe a kind of business rather than one business. They stay in the key.
GENERIC_WORDS = frozenset(
    {
        "group",
        "groups",
        "holding",
        "holdings",
        "international",
        "intl",
        "global",
        "worldwide",
        "partners",
        "partner",
        "partnership",
        "services",
        "service",
        "solutions",
        "systems",
        "technologies",
        "technology",
        "tech",
        "industries",
        "industry",
        "enterprises",
        "enterprise",
        "capital",
        "company",
        "companies",
        "corporation",
        "associates",
        "consulting",
        "consultants",
        "ventures",
        "management",
        "investments",
        "investment",
        "resources",
        "trading",
        "products",
        "brands",
        "sons",
        "labs",
        "lab",
        "network",
        "networks",
    }
)

# Words ignored by scoring; they stay in the key.
STOPWORDS = frozenset({"and", "of", "the", "for", "et", "und", "y", "de", "du", "des", "la", "le", "les"})

# Legal forms stripped from the end of a name, written as they appear in names. Each is
# tokenised like a name, so 'L.L.C.' becomes ('llc',) and 'A/S' becomes ('as',).
LEGAL_SUFFIXES = (
    "Inc",
    "Incorporated",
    "Corp",
    "Corporation",
    "Co",
    "Company",
    "& Co",
    "Co Ltd",
    "LLC",
    "L.L.C.",
    "Limited Liability Company",
    "Ltd",
    "Limited",
    "Private Limited",
    "PLC",
    "LLP",
    "LP",
    "L.P.",
    "LLLP",
    "PLLC",
    "Limited Partnership",
    "ULC",
    "GmbH",
    "mbH",
    "GmbH & Co KG",
    "AG",
    "KG",
    "KGaA",
    "OHG",
    "UG",
    "SE",
    "SA",
    "S.A.",
    "SAS",
    "S.A.S.",
    "SARL",
    "S.à r.l.",
    "SA de CV",
    "S.A. de C.V.",
    "SpA",
    "S.p.A.",
    "SRL",
    "S.r.l.",
    "SL",
    "SLU",
    "Lda",
    "Ltda",
    "BV",
    "B.V.",
    "NV",
    "N.V.",
    "BVBA",
    "AB",
    "AS",
    "A/S",
    "ASA",
    "ApS",
    "Oy",
    "Oyj",
    "Pty",
    "Pty Ltd",
    "Pte Ltd",
    "Pvt Ltd",
    "KK",
    "K.K.",
    "Kabushiki Kaisha",
    "Sdn Bhd",
    "Bhd",
    "s.r.o.",
    "a.s.",
    "Sp. z o.o.",
    "d.o.o.",
    "Kft",
    "Zrt",
    "Nyrt",
)

# Single-token legal forms that a misspelling in a query is checked against ('crop' for 'corp').
_TYPO_CHECKED_SUFFIXES = ("inc", "corp", "ltd", "llc", "gmbh", "plc", "limited", "company", "corporation", "incorporated")

_APOSTROPHES = re.compile(r"['\u2019\u02bc`]")
# Ampersand abbreviations written without spaces: 'K&L', 'AT&T', 'P&G'.
_AMPERSAND_ABBREVIATION = re.compile(r"\b([a-z]{1,3})&([a-z]{1,3})\b")
# Initials joined by dots: 'a.b.c.', 'l.l.c.', 's.a'.
_DOTTED_INITIALS = re.compile(r"\b[a-z0-9](?:\.[a-z0-9])+\b\.?")
_NON_WORD = re.compile(r"[\W_]+")
# A web address used as a name: 'Amazon.com' is the company Amazon.
_WEB_SUFFIX = re.compile(r"(?<=[a-z0-9])\.(?:com|net|org|io|ai)\b")


@dataclass(frozen=True)
class Match:
    """One organisation found by a search, with the name or domain that matched."""

    org_id: Hashable
    score: float
    matched: str


def _join_initials(tokens: list[str]) -> list[str]:
    """Join runs of single characters ('a b c' to 'abc', 'k and l' to 'kl')."""
    result: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if len(token) != 1:
            result.append(token)
            index += 1
            continue
        run = [token]
        index += 1
        while index < len(tokens):
            if len(tokens[index]) == 1:
                run.append(tokens[index])
                index += 1
            elif tokens[index] == "and" and index + 1 < len(tokens) and len(tokens[index + 1]) == 1:
                run.append(tokens[index + 1])
                index += 2
            else:
                break
        result.append("".join(run))
    return result


def _tokenize(name: str) -> list[str]:
    """Fold, lower-case and split a name into tokens, before legal suffixes are stripped."""
    text = fold_accents(name).casefold()
    text = _APOSTROPHES.sub("", text)
    text = _AMPERSAND_ABBREVIATION.sub(r"\1\2", text)
    text = _WEB_SUFFIX.sub("", text)
    text = text.replace("&", " and ").replace("+", " and ")
    text = _DOTTED_INITIALS.sub(lambda match: match.group(0).replace(".", ""), text)
    tokens = _NON_WORD.sub(" ", text).split()
    return _join_initials(tokens)


_SUFFIX_TOKENS: tuple[tuple[str, ...], ...] = tuple(
    sorted({tuple(_tokenize(suffix)) for suffix in LEGAL_SUFFIXES}, key=len, reverse=True)
)
_SINGLE_SUFFIXES = frozenset(suffix[0] for suffix in _SUFFIX_TOKENS if len(suffix) == 1)


def _strip_trailing_and(tokens: list[str]) -> list[str]:
    while len(tokens) > 1 and tokens[-1] == "and":
        tokens = tokens[:-1]
    return tokens


def _strip_legal_suffixes(tokens: list[str]) -> list[str]:
    """Remove legal forms from the end, longest first and repeatedly, keeping one token."""
    stripped = True
    while stripped:
        stripped = False
        for suffix in _SUFFIX_TOKENS:
            size = len(suffix)
            if len(tokens) > size and tuple(tokens[-size:]) == suffix:
                tokens = _strip_trailing_and(tokens[:-size])
                stripped = True
                break
    return tokens


def company_key_tokens(name: str) -> list[str]:
    """Return the tokens of a company name's normalised key."""
    if not isinstance(name, str):
        return []
    tokens = _tokenize(name)
    if len(tokens) > 1 and tokens[0] == "the":
        tokens = tokens[1:]
    tokens = _strip_legal_suffixes(tokens)
    tokens = _strip_trailing_and(tokens)
    if tokens == ["and"]:
        return []
    return tokens


def normalize_company(name: str) -> str:
    """Return the key under which spellings of one company name compare equal.

    Folds accents (NFKD), lower-cases, maps '&' and '+' to 'and', and drops apostrophes and
    other punctuation. Joins initials: 'A.B.C.' and 'A B C' give 'abc', and 'K&L' and 'K and L'
    give 'kl'. Drops a leading 'the'. Strips legal forms (Inc, LLC, GmbH, '& Co', Pty Ltd and
    the rest of ``LEGAL_SUFFIXES``) from the end, and never leaves a trailing 'and'. A name
    that is only a legal form keeps it: 'Company' gives 'company'. Returns '' for a name
    without letters or digits.
    """
    return " ".join(company_key_tokens(name))


_FUZZY_GENERIC_WORDS = sorted(word for word in GENERIC_WORDS if len(word) >= FUZZY_TOKEN_MIN_LENGTH)


def _scoring_tokens(key_tokens: Sequence[str]) -> tuple[str, ...]:
    tokens = tuple(token for token in key_tokens if token not in STOPWORDS)
    return tokens or tuple(key_tokens)


def _token_weight(token: str) -> float:
    return GENERIC_WEIGHT if token in GENERIC_WORDS else DISTINCTIVE_WEIGHT


def _is_weak(tokens: Sequence[str]) -> bool:
    """Return whether every token is a generic word or a legal form."""
    return all(token in GENERIC_WORDS or token in _SINGLE_SUFFIXES for token in tokens)


def _fuzzy_eligible(token: str) -> bool:
    return len(token) >= FUZZY_TOKEN_MIN_LENGTH and token.isalpha()


def _resembles_generic(token: str) -> bool:
    """Return whether a token is a misspelt generic word ('gruop'), which fuzzy matching may pair."""
    if not _fuzzy_eligible(token) or token in GENERIC_WORDS:
        return False
    match = process.extractOne(
        token, _FUZZY_GENERIC_WORDS, scorer=OSA.normalized_similarity, score_cutoff=TOKEN_SIMILARITY_CUTOFF
    )
    return match is not None


def _is_suffix_typo(token: str) -> bool:
    """Return whether a token misspells a legal form by one edit ('crop', 'icn', 'limted')."""
    if token in _SINGLE_SUFFIXES or len(token) < 3:
        return False
    for suffix in _TYPO_CHECKED_SUFFIXES:
        if OSA.distance(token, suffix, score_cutoff=1) > 1:
            continue
        # A one-letter substitution in a short word is as likely another word ('cord').
        if sorted(token) == sorted(suffix) or max(len(token), len(suffix)) >= FUZZY_TOKEN_MIN_LENGTH:
            return True
    return False


_Offer = Callable[[Hashable, float, str], None]


@dataclass(frozen=True)
class _Name:
    org_id: Hashable
    display: str
    key: str
    tokens: tuple[str, ...]
    weights: tuple[float, ...]
    total_weight: float
    positions: dict[str, tuple[int, ...]]  # token to its indexes in ``tokens``


@dataclass(frozen=True)
class _DomainHit:
    org_id: Hashable
    domain: str


def _label_tokens(registrable: str) -> list[str]:
    """Return the key tokens of a registrable domain's label: 'orbit-labs.example' gives ['orbit', 'labs']."""
    label = registrable.split(".", 1)[0]
    if label.startswith("xn--"):
        try:
            label = label.encode("ascii").decode("idna")
        except UnicodeError:
            log.debug("kept punycode label %r because it does not decode", label)
    return company_key_tokens(label.replace("-", " "))


def _label_key(registrable: str) -> str:
    """Return the label's tokens without spaces: 'orbit-labs.example' gives 'orbitlabs'."""
    tokens = _label_tokens(registrable)
    return "".join(_scoring_tokens(tokens)) if tokens else ""


def _domain_in_query(query: str) -> str | None:
    """Return the domain a query names ('acme.com', 'https://www.acme.com/x', 'a@acme.com'), or None."""
    text = query.strip().lower()
    if not text or any(char.isspace() for char in text):
        return None
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = text.split("/", 1)[0]
    text = text.rpartition("@")[2]
    if "." not in text:
        return None
    return to_ascii_domain(text)


class _QueryScorer:
    """Token similarities of one query, cached across the candidates it is scored against."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self.tokens = tokens
        self.weights = tuple(_token_weight(token) for token in tokens)
        self.total_weight = sum(self.weights)
        self._similarity: dict[tuple[str, str], float] = {}

    def similarity(self, query_token: str, name_token: str) -> float:
        """Return the OSA similarity of two different tokens, or 0 below the cutoff."""
        if not (_fuzzy_eligible(query_token) and _fuzzy_eligible(name_token)):
            return 0.0
        pair = (query_token, name_token)
        cached = self._similarity.get(pair)
        if cached is None:
            cached = OSA.normalized_similarity(query_token, name_token, score_cutoff=TOKEN_SIMILARITY_CUTOFF)
            self._similarity[pair] = cached
        return cached

    def score(self, name: _Name) -> float:
        """Return the weighted token-alignment score of one name, capped at FUZZY_MAX_SCORE.

        Equal tokens are paired first. The remaining query tokens are then paired greedily,
        most similar first, with the remaining name tokens.
        """
        used_name: set[int] = set()
        matched = 0.0
        unmatched_query = self.total_weight
        unmatched_name = name.total_weight
        left_over: list[int] = []
        for query_index, query_token in enumerate(self.tokens):
            name_index = next((i for i in name.positions.get(query_token, ()) if i not in used_name), None)
            if name_index is None:
                left_over.append(query_index)
                continue
            used_name.add(name_index)
            weight = self.weights[query_index]
            matched += weight
            unmatched_query -= weight
            unmatched_name -= weight
        if left_over and len(used_name) < len(name.tokens):
            pairs: list[tuple[float, int, int]] = []
            for query_index in left_over:
                for name_index, name_token in enumerate(name.tokens):
                    if name_index in used_name:
                        continue
                    similarity = self.similarity(self.tokens[query_index], name_token)
                    if similarity > 0.0:
                        pairs.append((similarity, query_index, name_index))
            pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
            used_query: set[int] = set()
            for similarity, query_index, name_index in pairs:
                if query_index in used_query or name_index in used_name:
                    continue
                used_query.add(query_index)
                used_name.add(name_index)
                query_weight = self.weights[query_index]
                name_weight = name.weights[name_index]
                matched += similarity * (query_weight + name_weight) / 2
                unmatched_query -= similarity * query_weight
                unmatched_name -= similarity * name_weight
        if matched <= 0.0:
            return 0.0
        score = 100.0 * matched / (matched + unmatched_query + UNMATCHED_NAME_COST * unmatched_name)
        return min(score, FUZZY_MAX_SCORE)


class CompanyIndex:
    """An in-memory index of organisation names and domains for the who-knows search.

    Build it once from ``(org_id, names, domains)`` entries and rebuild it when organisations
    change. Domains should be company domains: free-mail domains belong to no organisation.
    """

    def __init__(self, entries: Iterable[tuple[Hashable, Sequence[str], Sequence[str]]]) -> None:
        self._names: list[_Name] = []
        self._by_key: dict[str, list[int]] = defaultdict(list)
        self._by_compact: dict[str, list[int]] = defaultdict(list)
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._by_domain: dict[str, list[_DomainHit]] = defaultdict(list)
        self._by_label: dict[str, list[_DomainHit]] = defaultdict(list)
        self._org_order: dict[Hashable, int] = {}
        for org_id, names, domains in entries:
            self._org_order.setdefault(org_id, len(self._org_order))
            for name in names:
                self._add_name(org_id, name)
            for domain in domains:
                self._add_domain(org_id, domain)
        self._vocabulary = sorted(token for token in self._postings if _fuzzy_eligible(token))

    def __len__(self) -> int:
        return len(self._org_order)

    def _add_name(self, org_id: Hashable, name: str) -> None:
        key_tokens = company_key_tokens(name)
        if not key_tokens:
            log.debug("skipped organisation %r name without letters or digits", org_id)
            return
        tokens = _scoring_tokens(key_tokens)
        weights = tuple(_token_weight(token) for token in tokens)
        positions: dict[str, list[int]] = defaultdict(list)
        for position, token in enumerate(tokens):
            positions[token].append(position)
        entry = _Name(
            org_id=org_id,
            display=name,
            key=" ".join(key_tokens),
            tokens=tokens,
            weights=weights,
            total_weight=sum(weights),
            positions={token: tuple(indexes) for token, indexes in positions.items()},
        )
        index = len(self._names)
        self._names.append(entry)
        self._by_key[entry.key].append(index)
        self._by_compact["".join(tokens)].append(index)
        for token in set(tokens):
            if token not in GENERIC_WORDS:
                self._postings[token].append(index)

    def _add_domain(self, org_id: Hashable, domain: str) -> None:
        registrable = registrable_domain(domain)
        if registrable is None:
            log.warning("skipped invalid domain %r of organisation %r; expected a name such as 'acme.com'", domain, org_id)
            return
        hit = _DomainHit(org_id=org_id, domain=registrable)
        self._by_domain[registrable].append(hit)
        label_key = _label_key(registrable)
        if label_key:
            self._by_label[label_key].append(hit)

    def search(self, query: str, limit: int = 10, *, min_score: float = MATCH_THRESHOLD) -> list[Match]:
        """Return up to ``limit`` organisations scoring at least ``min_score``, best first.

        Ties are ordered by the shorter matched text, then by the order of the entries. An
        empty query, or one without letters or digits, returns []. Raises ValueError for a
        negative limit.
        """
        if limit < 0:
            raise ValueError(f"search limit must be zero or more, got {limit}")
        if not isinstance(query, str) or not query.strip() or limit == 0:
            return []
        best: dict[Hashable, tuple[float, str]] = {}

        def offer(org_id: Hashable, score: float, matched: str) -> None:
            score = round(score, 1)
            current = best.get(org_id)
            # On a tie the first offer stays: explicit domains, then exact names, then the rest.
            if current is None or score > current[0]:
                best[org_id] = (score, matched)

        domain = _domain_in_query(query)
        registrable = registrable_domain(domain) if domain is not None else None
        name_factor = 1.0
        if registrable is not None:
            for hit in self._by_domain.get(registrable, []):
                offer(hit.org_id, EXACT_SCORE, hit.domain)
            # A domain the index lacks ('acme.io' when acme.com is known) is a strong hint only.
            name_factor = DOMAIN_LABEL_FACTOR
            self._match_names(_label_tokens(registrable), name_factor, min_score, offer)

        key_tokens = company_key_tokens(query)
        self._match_names(key_tokens, name_factor, min_score, offer)
        scoring = _scoring_tokens(key_tokens) if key_tokens else ()
        if len(scoring) >= 2 and scoring[-1] == key_tokens[-1] and _is_suffix_typo(scoring[-1]):
            self._match_names(key_tokens[:-1], name_factor * SUFFIX_TYPO_FACTOR, min_score, offer)

        ranked = sorted(
            ((score, matched, org_id) for org_id, (score, matched) in best.items() if score >= min_score),
            key=lambda item: (-item[0], len(item[1]), self._org_order[item[2]]),
        )
        results = [Match(org_id=org_id, score=score, matched=matched) for score, matched, org_id in ranked]
        return results[:limit]

    def _match_names(self, key_tokens: list[str], factor: float, min_score: float, offer: _Offer) -> None:
        """Offer every name that the query tokens match, with scores multiplied by ``factor``."""
        key_tokens = _strip_trailing_and(key_tokens)
        if not key_tokens:
            return
        key = " ".join(key_tokens)
        for index in self._by_key.get(key, []):
            offer(self._names[index].org_id, EXACT_SCORE * factor, self._names[index].display)
        tokens = _scoring_tokens(key_tokens)
        if _is_weak(tokens):
            return
        compact = "".join(tokens)
        for hit in self._by_label.get(compact, []):
            offer(hit.org_id, EXACT_SCORE * factor, hit.domain)
        for index in self._by_compact.get(compact, []):
            offer(self._names[index].org_id, FUZZY_MAX_SCORE * factor, self._names[index].display)

        # Query tokens that may match a generic name word cannot be ruled out per candidate.
        open_count = sum(1 for token in tokens if token in GENERIC_WORDS or _resembles_generic(token))
        distinctive_count = len(tokens) - open_count
        scorer = _QueryScorer(tokens)
        for index, matchable in self._candidates(tokens).items():
            # Upper bound of the score: every matchable token matched in full at weight 1,
            # every other distinctive token unmatched, no unmatched name weight.
            best_case = 100.0 * (matchable + open_count) / (open_count + distinctive_count) * factor
            if best_case < min_score:
                continue
            name = self._names[index]
            score = scorer.score(name) * factor
            if score > 0.0:
                offer(name.org_id, score, name.display)

    def _candidates(self, tokens: Sequence[str]) -> dict[int, int]:
        """Map each name sharing a distinctive token with the query (exactly or by spelling)
        to the number of distinctive query tokens it shares."""
        matchable: dict[int, int] = defaultdict(int)
        for token in tokens:
            if token in GENERIC_WORDS or _resembles_generic(token):
                continue
            names = set(self._postings.get(token, ()))
            if _fuzzy_eligible(token):
                similar = process.extract(
                    token,
                    self._vocabulary,
                    scorer=OSA.normalized_similarity,
                    score_cutoff=TOKEN_SIMILARITY_CUTOFF,
                    limit=None,
                )
                for choice, _score, _index in similar:
                    names.update(self._postings[choice])
            for index in names:
                matchable[index] += 1
        return matchable
