"""Domain rules: registrable domains, organisation names, free-mail and internal domains.

Registrable domains come from the Public Suffix List bundled with the ``publicsuffixlist``
package. The package reads its own copy of the list from disk and never downloads a newer
one unless ``publicsuffixlist.update`` is run by hand, so these functions need no network.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

import idna
from publicsuffixlist import PublicSuffixList

from bot.errors import ConfigError

log = logging.getLogger(__name__)

FREEMAIL_RESOURCE = "data/freemail.txt"

# One DNS label in its ASCII (A-label) form: letters, digits and inner hyphens, 1 to 63 chars.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_DOMAIN_LENGTH = 253
_CACHE_SIZE = 65536


@cache
def _suffix_list() -> PublicSuffixList:
    """Return the full list, with both ICANN and private-section suffixes."""
    return PublicSuffixList()


@cache
def _icann_suffix_list() -> PublicSuffixList:
    """Return the list restricted to ICANN suffixes."""
    return PublicSuffixList(only_icann=True)


@lru_cache(maxsize=_CACHE_SIZE)
def to_ascii_domain(domain: str) -> str | None:
    """Return a domain in lower-case ASCII form (IDN labels as punycode), or None if invalid.

    Accepts surrounding whitespace, any letter case and one trailing dot. Rejects IP
    literals, names without a dot, empty labels and labels that are not letters, digits
    and inner hyphens.
    """
    if not isinstance(domain, str):
        return None
    text = domain.strip()
    if text.endswith("."):
        text = text[:-1]
    if text.startswith("[") and text.endswith("]"):
        return None  # an address literal such as [192.0.2.1]
    if not text:
        return None
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except UnicodeError:  # idna.IDNAError is a UnicodeError
            return None
    text = text.lower()
    if "." not in text:
        return None
    if len(text) > _MAX_DOMAIN_LENGTH:
        return None
    labels = text.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    top_level = labels[-1]
    if top_level.isdigit() or len(top_level) < 2:
        return None  # an IPv4 literal, or a top-level domain that cannot exist
    return text


@lru_cache(maxsize=_CACHE_SIZE)
def registrable_domain(domain: str) -> str | None:
    """Return the registrable domain (public suffix plus one label) of a domain, or None.

    'eu.mail.harborfinch.example' gives 'harborfinch.example' and 'sales.example.co.uk' gives
    'example.co.uk'. The result is lower-case ASCII, with IDN labels in punycode. Unknown
    top-level domains (such as the reserved '.example') count as public suffixes of one
    label. Suffixes from the list's private section (such as 'github.io') count too, so
    'alice.github.io' is its own registrable domain. A domain that is itself a private-section
    suffix falls back to the ICANN rules, because mail from 'github.io' belongs to its
    operator. Returns None for invalid input, IP literals, names without a dot and bare
    ICANN public suffixes such as 'co.uk'.
    """
    ascii_domain = to_ascii_domain(domain)
    if ascii_domain is None:
        return None
    registrable = _suffix_list().privatesuffix(ascii_domain)
    if registrable is None:
        registrable = _icann_suffix_list().privatesuffix(ascii_domain)
    return registrable


@lru_cache(maxsize=_CACHE_SIZE)
def registrable_label(domain: str) -> str | None:
    """Return the label of the registrable domain left of its public suffix, or None.

    'eu.mail.harborfinch.example' gives 'harborfinch' and 'team.example.co.uk' gives 'example'.
    The label is ASCII (punycode for IDNs).
    """
    registrable = registrable_domain(domain)
    if registrable is None:
        return None
    return registrable.split(".", 1)[0]


def organisation_name_from_domain(domain: str) -> str:
    """Build a display name for the organisation that owns a domain.

    The name comes from the registrable label only, so subdomains ('eu.mail.') and suffixes
    ('co.uk') never appear in it: 'harborfinch.example' gives 'Harborfinch', 'example.co.uk'
    gives 'Example' and 'orbit-labs.example' gives 'Orbit Labs'. Punycode labels are shown
    in Unicode. Raises ValueError when the domain has no registrable part.
    """
    label = registrable_label(domain)
    if label is None:
        raise ValueError(
            f"cannot name an organisation after {domain!r}: it is not a valid domain with a "
            "registrable part; pass a domain such as 'acme.com'"
        )
    if label.startswith("xn--"):
        try:
            label = idna.decode(label)
        except UnicodeError:
            log.debug("kept punycode label %r because it does not decode", label)
    words = [word for word in label.split("-") if word]
    return " ".join(word[:1].upper() + word[1:] for word in words)


@dataclass(frozen=True)
class DomainInfo:
    """Classification of the domain of one address."""

    domain: str
    registrable: str | None
    is_freemail: bool
    is_internal: bool


@dataclass(frozen=True)
class FreemailList:
    """Free-mail domains, plus registrable labels that are free mail under any suffix.

    ``labels`` contains entries written as 'yahoo.*' in the list file: such an entry matches
    'yahoo.com', 'yahoo.co.jp' and every other registrable domain whose label is 'yahoo'.
    """

    domains: frozenset[str]
    labels: frozenset[str]


def parse_freemail_lines(lines: Iterable[str], source: str) -> FreemailList:
    """Parse free-mail list lines: one domain or 'label.*' a line, '#' starts a comment.

    Invalid lines are logged with their line number and skipped.
    """
    domains: set[str] = set()
    labels: set[str] = set()
    skipped = 0
    for number, raw_line in enumerate(lines, start=1):
        entry = raw_line.split("#", 1)[0].strip().lower()
        if not entry:
            continue
        if entry.endswith(".*"):
            label = entry[:-2]
            if _LABEL.match(label):
                labels.add(label)
                continue
        else:
            ascii_domain = to_ascii_domain(entry)
            if ascii_domain is not None:
                domains.add(ascii_domain)
                continue
        skipped += 1
        log.warning(
            "skipped invalid free-mail entry %r at %s line %d; write one domain or 'label.*' a line",
            entry,
            source,
            number,
        )
    if skipped:
        log.warning("skipped %d invalid free-mail entries in %s", skipped, source)
    return FreemailList(frozenset(domains), frozenset(labels))


@cache
def bundled_freemail() -> FreemailList:
    """Return the free-mail list shipped in bot/data/freemail.txt."""
    text = resources.files("bot").joinpath(FREEMAIL_RESOURCE).read_text(encoding="utf-8")
    return parse_freemail_lines(text.splitlines(), source=FREEMAIL_RESOURCE)


def load_freemail_file(path: Path) -> FreemailList:
    """Read a free-mail list file in the bundled list's format."""
    with path.open(encoding="utf-8") as handle:
        return parse_freemail_lines(handle, source=str(path))


class DomainPolicy:
    """Free-mail and internal-domain rules for one team, with cached lookups.

    ``freemail_extra`` adds domains (or 'label.*' entries) to the bundled free-mail list.
    ``internal`` lists the domains of the owners' own organisation. Each is reduced to its
    registrable domain, so 'sales.example.org' is internal when 'example.org' is, and so is
    'example.org' when only 'sales.example.org' is listed. A free-mail domain is never
    internal, because it cannot identify an organisation: listing 'gmail.com' (for example
    because an owner writes from it) is logged and ignored. Raises ConfigError for an entry
    that is not a valid domain.
    """

    def __init__(
        self,
        freemail_extra: Iterable[str] = (),
        internal: Iterable[str] = (),
        *,
        freemail: FreemailList | None = None,
        cache_size: int = _CACHE_SIZE,
    ) -> None:
        base = freemail if freemail is not None else bundled_freemail()
        extra = parse_freemail_lines(sorted(freemail_extra), source="the extra free-mail domains")
        self.freemail = FreemailList(base.domains | extra.domains, base.labels | extra.labels)
        self.internal_registrable = self._internal_registrable_domains(internal)
        self._classify_domain = lru_cache(maxsize=cache_size)(self._classify_domain_uncached)

    def _internal_registrable_domains(self, domains: Iterable[str]) -> frozenset[str]:
        result: set[str] = set()
        for domain in sorted(domains):
            registrable = registrable_domain(domain)
            if registrable is None:
                raise ConfigError(
                    f"internal domain {domain!r} is not a valid domain name; "
                    "list domains such as 'example.org' in INTERNAL_DOMAINS"
                )
            if self._is_freemail_registrable(registrable):
                log.warning(
                    "ignored internal domain %r because %s is a free-mail provider", domain, registrable
                )
                continue
            result.add(registrable)
        return frozenset(result)

    def _is_freemail_registrable(self, registrable: str) -> bool:
        if registrable in self.freemail.domains:
            return True
        return registrable.split(".", 1)[0] in self.freemail.labels

    def _is_freemail_ascii(self, ascii_domain: str, registrable: str | None) -> bool:
        if registrable is not None and self._is_freemail_registrable(registrable):
            return True
        # Entries below the registrable level, such as 'i.softbank.jp', cover their subdomains.
        labels = ascii_domain.split(".")
        return any(".".join(labels[start:]) in self.freemail.domains for start in range(len(labels) - 1))

    def _classify_domain_uncached(self, domain: str) -> DomainInfo:
        ascii_domain = to_ascii_domain(domain)
        if ascii_domain is None:
            return DomainInfo(domain=domain.strip().lower(), registrable=None, is_freemail=False, is_internal=False)
        registrable = registrable_domain(ascii_domain)
        is_freemail = self._is_freemail_ascii(ascii_domain, registrable)
        is_internal = not is_freemail and registrable in self.internal_registrable
        return DomainInfo(
            domain=ascii_domain, registrable=registrable, is_freemail=is_freemail, is_internal=is_internal
        )

    def classify_domain(self, domain: str) -> DomainInfo:
        """Classify a domain; an invalid domain gives registrable None and both flags False."""
        return self._classify_domain(domain)

    def is_freemail(self, domain: str) -> bool:
        """Return whether a domain, or its registrable domain, is a free-mail provider."""
        return self._classify_domain(domain).is_freemail

    def is_internal(self, domain: str) -> bool:
        """Return whether a domain is an internal domain or one of its subdomains."""
        return self._classify_domain(domain).is_internal

    def classify(self, address: str) -> DomainInfo:
        """Classify the domain of an e-mail address; raise ValueError when it has no '@'."""
        local, at, domain = address.rpartition("@")
        if not at or not local:
            raise ValueError(
                f"cannot classify {address!r}: it is not an e-mail address; "
                "normalise it with normalize_address() first"
            )
        return self._classify_domain(domain)
