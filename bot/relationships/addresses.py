"""E-mail address and display-name normalisation used to merge identities."""

from __future__ import annotations

import logging
import re
import unicodedata

from bot.relationships.domains import to_ascii_domain

log = logging.getLogger(__name__)

_MAX_LOCAL_LENGTH = 64  # RFC 5321 section 4.5.3.1.1

# Characters allowed in an unquoted local part (RFC 5322 atext, plus '.'), and any non-ASCII
# letter for internationalised addresses (RFC 6531).
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.\-\u0080-\U0010ffff]+$")

# Local parts of machine senders: automated notifications, bounces, list software.
_NOREPLY_WORDS = frozenset(
    {
        "noreply",
        "donotreply",
        "mailerdaemon",
        "postmaster",
        "bounce",
        "bounces",
        "notification",
        "notifications",
        "notify",
        "alert",
        "alerts",
        "newsletter",
        "newsletters",
        "news",
        "mailer",
        "automailer",
        "autoreply",
        "autoresponder",
        "daemon",
        "digest",
        "updates",
        "announce",
        "announcements",
        "unsubscribe",
    }
)
# Substrings that mark a machine sender wherever they appear once separators are removed.
_NOREPLY_SUBSTRINGS = ("noreply", "donotreply", "mailerdaemon")

# Local parts of shared mailboxes that reach a function, not a person.
_ROLE_WORDS = frozenset(
    {
        "info",
        "information",
        "sales",
        "support",
        "help",
        "helpdesk",
        "servicedesk",
        "admin",
        "administrator",
        "office",
        "team",
        "contact",
        "contactus",
        "billing",
        "invoice",
        "invoices",
        "accounts",
        "accounting",
        "finance",
        "payments",
        "payroll",
        "hello",
        "hi",
        "jobs",
        "careers",
        "recruiting",
        "recruitment",
        "talent",
        "hr",
        "marketing",
        "press",
        "media",
        "pr",
        "legal",
        "compliance",
        "privacy",
        "security",
        "abuse",
        "webmaster",
        "hostmaster",
        "it",
        "ops",
        "operations",
        "orders",
        "order",
        "service",
        "customerservice",
        "customercare",
        "care",
        "enquiries",
        "enquiry",
        "inquiries",
        "inquiry",
        "feedback",
        "reception",
        "frontdesk",
        "events",
        "partners",
        "partnerships",
        "bookings",
        "reservations",
        "general",
        "mail",
        "email",
        "all",
        "staff",
        "everyone",
    }
)

_SEPARATORS = re.compile(r"[._\-+=]+")
# Exchange's encapsulated addresses: IMCEAEX- (an X.500 DN), IMCEANOTES-, IMCEASMTP- and others.
_EXCHANGE_ENCAPSULATED = re.compile(r"^imcea[a-z0-9]*[-_]")


def normalize_address(raw: str | None, *, fold_plus: bool = False) -> str | None:
    """Return an address in its comparison form, or None when it is not a usable address.

    Strips whitespace and angle brackets, lower-cases the address and writes the domain in
    ASCII (IDN labels as punycode). With ``fold_plus``, 'a+tag@x' becomes 'a@x'. Returns None
    for Exchange legacy DNs ('/o=...') and encapsulated addresses ('IMCEAEX-...'), a missing
    '@', an empty or invalid local part, and a domain that is invalid or has no dot. Two dots
    in a row are accepted because Exchange generates them ('kevin.m..presto@'), but a local
    part may not start or end with a dot. A returned value contains exactly one '@'.
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:") :]
    text = text.lower()
    if text.startswith("/o=") or text.startswith("/o ="):
        return None  # an Exchange X.500 distinguished name, not an SMTP address
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return None
    if _EXCHANGE_ENCAPSULATED.match(local):
        return None  # an X.500 DN or a foreign address wrapped by Exchange ('IMCEAEX-...')
    if len(local) > _MAX_LOCAL_LENGTH or not _LOCAL_PART.match(local):
        return None
    if local.startswith(".") or local.endswith("."):
        return None
    ascii_domain = to_ascii_domain(domain)
    if ascii_domain is None:
        return None
    if fold_plus:
        local = _fold_plus(local)
    return f"{local}@{ascii_domain}"


def _fold_plus(local: str) -> str:
    base, plus, _tag = local.partition("+")
    if plus and base:
        return base
    return local


def address_kind(address: str) -> str:
    """Classify an address as 'noreply' (machine sender), 'role' (shared mailbox) or 'person'.

    Only the local part is read. An address without '@' is read as a bare local part.
    """
    local = address.rpartition("@")[0] or address
    local = local.strip().lower()
    joined = _SEPARATORS.sub("", local)
    tokens = [token for token in _SEPARATORS.split(local) if token]
    if not tokens:
        return "person"
    if any(marker in joined for marker in _NOREPLY_SUBSTRINGS):
        return "noreply"
    if joined in _NOREPLY_WORDS or any(token in _NOREPLY_WORDS for token in tokens):
        return "noreply"
    if joined in _ROLE_WORDS or tokens[0] in _ROLE_WORDS:
        return "role"
    return "person"


# "Name via List" as rewritten by list software (Mailman, Google Groups) for DMARC.
_VIA_BRACKETED = re.compile(r"^(?P<person>.+?)\s*[(\[]\s*via\s+(?P<list>[^)\]]+?)\s*[)\]]$", re.IGNORECASE)
_VIA_PLAIN = re.compile(r"^(?P<person>.+?)\s+via\s+(?P<list>.+)$", re.IGNORECASE)
_QUOTES = "\"'\u2018\u2019\u201c\u201d`"


def split_via_name(name: str | None) -> tuple[str, str] | None:
    """Split a list-rewritten display name into (person, list), or return None.

    'Priya Raman via Growth Forum', "'Priya Raman' via Growth Forum" and
    'Priya Raman (via Growth Forum)' all give ('Priya Raman', 'Growth Forum').
    """
    if not name:
        return None
    text = name.strip().strip(_QUOTES).strip()
    match = _VIA_BRACKETED.match(text) or _VIA_PLAIN.match(text)
    if match is None:
        return None
    person = match.group("person").strip().strip(_QUOTES).strip()
    list_name = match.group("list").strip().strip(_QUOTES).strip()
    if not person or not list_name:
        return None
    return person, list_name


# Letters that NFKD does not decompose into a base letter plus a combining mark.
_LETTER_FOLDS = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "ı": "i",
        "ß": "ss",
    }
)


def fold_accents(text: str) -> str:
    """Return text without accents: NFKD decomposition, combining marks dropped, a few letters mapped."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LETTER_FOLDS))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


# Generational suffixes name a different person ('Theo Marsh Jr' is not 'Theo Marsh'), so the
# key keeps them, in one spelling, at the end.
_GENERATION_SUFFIXES = {
    "jr": "jr",
    "junior": "jr",
    "sr": "sr",
    "senior": "sr",
    "ii": "ii",
    "iii": "iii",
    "iv": "iv",
    "2nd": "ii",
    "3rd": "iii",
}
# Titles and degrees do not identify a person, so the key drops them wherever they appear.
_HONORIFICS = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "phd", "esq", "mba", "cpa", "msc", "bsc", "dds"}
)
# Short degrees that are also names ('Ma' is a surname, 'Md' abbreviates Mohammed), dropped
# only when they stand alone after a comma: 'Jane Doe, MD'.
_DEGREES_AFTER_COMMA = _HONORIFICS | {"md", "ma", "ba", "rn", "pe", "do", "jd", "llm"}
_BRACKETED = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>")
_APOSTROPHES = re.compile(r"['\u2019\u02bc`]")
_NON_WORD = re.compile(r"[^\w]+|_")


def normalize_person_name(name: str | None) -> str | None:
    """Return the key used to merge people by name, or None when the name is too weak.

    'Lindqvist, Maja' and 'Maja Lindqvist' both give 'maja lindqvist'. The key is
    accent-folded and case-folded, keeps given-then-family order, drops punctuation,
    bracketed comments, titles and degrees (Dr, PhD), single-letter initials ('Phillip K
    Allen' equals 'Phillip Allen') and the list part of 'Name via List'. Generational
    suffixes stay distinct: 'Theo Marsh, Jr' gives 'theo marsh jr'. Returns None for an
    empty name, a name containing '@' outside angle brackets, a name with no space or comma (often a local part
    such as 'maja.lindqvist') and a name with fewer than two tokens of two or more letters.
    """
    if not name:
        return None
    text = _BRACKETED.sub(" ", name).strip().strip(_QUOTES).strip()
    if "@" in text:
        return None
    via = split_via_name(text)
    if via is not None:
        text = via[0]
    if not re.search(r"[\s,]", text.strip()):
        return None
    text = fold_accents(text).casefold()
    text = _APOSTROPHES.sub("", text)

    suffix: str | None = None
    name_parts: list[str] = []
    for index, part in enumerate(part.strip() for part in text.split(",")):
        words = _NON_WORD.sub(" ", part).split()
        if not words:
            continue
        if index > 0 and all(word in _GENERATION_SUFFIXES or word in _DEGREES_AFTER_COMMA for word in words):
            for word in words:
                suffix = _GENERATION_SUFFIXES.get(word, suffix)
            continue
        name_parts.append(part)
    if len(name_parts) == 2:
        # 'Family, Given' as Outlook writes it.
        name_parts = [name_parts[1], name_parts[0]]

    words = [word for part in name_parts for word in _NON_WORD.sub(" ", part).split()]
    words = [word for word in words if word not in _HONORIFICS]
    if len(words) >= 3 and words[-1] in _GENERATION_SUFFIXES:
        # Only a trailing suffix after two name words counts, so the surname 'Senior' stays.
        suffix = _GENERATION_SUFFIXES[words.pop()]
    tokens = [word for word in words if len(word) > 1]
    if len(tokens) < 2:
        return None
    if suffix is not None:
        tokens.append(suffix)
    return " ".join(tokens)
