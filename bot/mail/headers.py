"""Read the metadata of one RFC 5322 message from its raw bytes, as real mail writes it.

Only the header block is parsed, and it is split and unfolded here: the feed parser of
the ``email`` package alone takes about as long per message as all of this module
(Python 3.11, Enron corpus). Dates, encoded words and charsets go through the ``email``
package (``email.utils.parsedate_to_datetime``, ``email.header.decode_header``).
Address lists have a tokenizer of their own, because real mail breaks the RFC grammar
in ways that ``email.utils.getaddresses`` turns into false addresses: unquoted commas in
names, display names that are addresses, and Exchange DNs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta, timezone, tzinfo
from email.errors import HeaderParseError
from email.header import decode_header
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import ConfigError, InputError
from bot.mail.types import FolderRole, MailItem, Participant

log = logging.getLogger(__name__)

# Clocks reset to zero write 1970-01-01 or the DOS epoch 1980-01-01 in their local zone,
# which lands up to 14 hours either side of midnight UTC, so the window starts on
# 1980-01-02. Dates more than a day ahead of now are wrong clocks as well.
EARLIEST_PLAUSIBLE_DATE = datetime(1980, 1, 2, tzinfo=timezone.utc)
FUTURE_TOLERANCE = timedelta(days=1)

DEFAULT_BULK_RECIPIENT_THRESHOLD = 20


class NotAMessage(InputError):
    """The bytes have no RFC 5322 header block, so they are not a mail message."""


# ------------------------------------------------------------------------------------
# Header block
# ------------------------------------------------------------------------------------


# At least one of these must be present for the bytes to count as a message.
_MESSAGE_FIELDS = frozenset(
    (
        "from",
        "sender",
        "to",
        "cc",
        "date",
        "message-id",
        "subject",
        "received",
        "return-path",
    )
)
# Only the fields read below are collected, so the per-message work stays small.
_READ_FIELDS = _MESSAGE_FIELDS | {
    "bcc",
    "reply-to",
    "in-reply-to",
    "references",
    "list-id",
    "list-unsubscribe",
    "list-post",
    "precedence",
    "auto-submitted",
    "x-autoreply",
    "x-autorespond",
    "x-auto-response-suppress",
    "x-from",
    "x-to",
    "x-cc",
    "x-bcc",
}
# Field names as written in mail, mapped to the lower-case name or "" for fields not
# read. Names repeat across messages, so this saves a strip() and lower() per header
# line.
_FIELD_KEYS: dict[str, str] = {}
_FIELD_KEYS_LIMIT = 4096


def _split_message(raw: bytes) -> tuple[bytes, int]:
    """Return the header block and the offset where the body starts.

    An mbox envelope line ('From sender date') at the start is skipped.
    """
    start = 0
    if raw.startswith(b"From "):
        newline = raw.find(b"\n")
        start = newline + 1 if newline >= 0 else len(raw)
    if raw.startswith((b"\n", b"\r\n"), start):
        return b"", start
    # Search first for the blank line in the line-end style of the first line, so that
    # the other search stops at the end of the header block instead of scanning the
    # whole body.
    first_newline = raw.find(b"\n", start)
    if first_newline > start and raw[first_newline - 1] == 0x0D:
        crlf_end = raw.find(b"\n\r\n", start)
        lf_end = raw.find(b"\n\n", start, crlf_end + 2 if crlf_end >= 0 else len(raw))
    else:
        lf_end = raw.find(b"\n\n", start)
        crlf_end = raw.find(b"\n\r\n", start, lf_end + 2 if lf_end >= 0 else len(raw))
    if crlf_end >= 0 and (lf_end < 0 or crlf_end < lf_end):
        return raw[start : crlf_end + 1], crlf_end + 3
    if lf_end >= 0:
        return raw[start : lf_end + 1], lf_end + 2
    return raw[start:], len(raw)


_BLANK_BYTES = frozenset(b" \t\r\n")


def body_digest(raw: bytes, start: int = 0) -> str:
    """Return the SHA-1 of the body that starts at ``start``.

    CRLF counts as LF and blank space at both ends is ignored, because exports of one
    message differ in those.
    """
    end = len(raw)
    while start < end and raw[start] in _BLANK_BYTES:
        start += 1
    while end > start and raw[end - 1] in _BLANK_BYTES:
        end -= 1
    if raw.find(b"\r", start, end) >= 0:
        return hashlib.sha1(raw[start:end].replace(b"\r\n", b"\n")).hexdigest()
    # A memoryview hashes the body in place, without copying it.
    return hashlib.sha1(memoryview(raw)[start:end]).hexdigest()


def _decode_header_block(block: bytes, defects: list[str]) -> str:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        # 8-bit header bytes that are not UTF-8 carry no charset. cp1252 maps all but
        # five byte values to characters, and those five become U+FFFD.
        text = block.decode("cp1252", errors="replace")
        defects.append("header-bytes-not-utf8")
    return text.replace("\r", "")


# Field values by lower-case name: a str for a field that occurs once, a list of str in
# order for one that repeats. Most fields occur once, and skipping a list per field
# keeps the garbage collector's work per message small.
_Fields = Mapping[str, "str | list[str]"]


def _read_fields(text: str) -> dict[str, str | list[str]]:
    """Return the unfolded values of the _READ_FIELDS by lower-case name."""
    if "\n " in text or "\n\t" in text:
        # Unfolding removes the line break and keeps the white space that follows it.
        text = text.replace("\n ", " ").replace("\n\t", "\t")
    fields: dict[str, str | list[str]] = {}
    keys = _FIELD_KEYS
    for line in text.split("\n"):
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = keys.get(name)
        if key is None:
            key = name.strip().lower()
            if key not in _READ_FIELDS:
                key = ""
            if len(keys) < _FIELD_KEYS_LIMIT:
                keys[name] = key
        if not key:
            continue
        known = fields.get(key)
        if known is None:
            fields[key] = value.strip()
        elif isinstance(known, str):
            fields[key] = [known, value.strip()]
        else:
            known.append(value.strip())
    return fields


def _all(fields: _Fields, name: str) -> list[str]:
    values = fields.get(name)
    if values is None:
        return []
    return [values] if isinstance(values, str) else list(values)


def _first(fields: _Fields, name: str) -> str | None:
    values = fields.get(name)
    if values is None or isinstance(values, str):
        return values
    return values[0] if values else None


def _joined(fields: _Fields, name: str) -> str | None:
    """Return all values of an address field as one list, as RFC 5322 readers should."""
    values = fields.get(name)
    if values is None or isinstance(values, str):
        return values
    return ", ".join(values) if values else None


# ------------------------------------------------------------------------------------
# Encoded words and names
# ------------------------------------------------------------------------------------


def decode_words(text: str) -> str:
    """Decode the RFC 2047 encoded words in ``text``, keeping text it cannot decode."""
    if "=?" not in text:
        return text
    try:
        parts = decode_header(text)
    except (HeaderParseError, ValueError, LookupError):
        return text
    decoded: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            decoded.append(chunk)
        elif charset is None:
            # decode_header returns the text between encoded words in this codec.
            decoded.append(chunk.decode("raw-unicode-escape", errors="replace"))
        else:
            decoded.append(_decode_text(chunk, charset))
    return "".join(decoded)


def _decode_text(data: bytes, charset: str) -> str:
    """Decode bytes in a declared charset, falling back to UTF-8 and then cp1252."""
    for candidate in (charset, "utf-8"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("cp1252", errors="replace")


_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("`", "'"))


def _strip_quotes(text: str) -> str:
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for opening, closing in _QUOTE_PAIRS:
            if text.startswith(opening) and text.endswith(closing):
                text = text[1:-1].strip()
                changed = True
    return text


def _clean_name(text: str) -> str | None:
    """Return a display name decoded and with blanks collapsed, or None when empty."""
    name = decode_words(text)
    name = " ".join(name.split())
    name = _strip_quotes(name)
    if not name:
        return None
    if "@" in name and _bare_address(name) is not None:
        # A display name that is an address names nobody, and when it differs from the
        # real address it misleads. The caller keeps the angle-bracket address.
        return None
    return name


# ------------------------------------------------------------------------------------
# Addresses
# ------------------------------------------------------------------------------------

_LABEL = r"[0-9a-z\u00a1-\uffff](?:[0-9a-z\u00a1-\uffff-]{0,61}[0-9a-z\u00a1-\uffff])?"
_DOMAIN = re.compile(
    rf"(?:{_LABEL}\.)+(?:[a-z\u00a1-\uffff]{{2,63}}|xn--[0-9a-z-]{{1,59}})"
)
_LOCAL_FORBIDDEN = re.compile(r"[\s<>(),;:\[\]\\]")
# Exchange legacy DNs (X.500, '/o=Org/ou=.../cn=Recipients/cn=alias', optionally with
# the 'EX:' address type) and IMCEA encapsulations ('IMCEAEX-_O=ORG_OU=...@domain').
_EXCHANGE_DN = re.compile(r"^(?:ex:)?/o=|/cn=|^imcea[a-z]*-", re.IGNORECASE)


def is_exchange_dn(text: str) -> bool:
    """Return True for an Exchange legacy DN or an IMCEA encapsulated address."""
    return _EXCHANGE_DN.search(text.strip().strip("<>\"'")) is not None


@lru_cache(maxsize=65536)
def _bare_address(text: str) -> str | None:
    """Return ``text`` as a lower-case SMTP address, or None when it is not one."""
    value = text.strip().strip("<>").strip().strip("'\"").strip()
    if value[:7].lower() == "mailto:":
        value = value[7:]
    if value.startswith("@") and ":" in value:
        value = value.rsplit(":", 1)[1]  # obsolete source route '@relay:user@host'
    value = value.rstrip(".")
    local, at, domain = value.rpartition("@")
    if not at or not local or "@" in local.strip('"'):
        return None
    if _LOCAL_FORBIDDEN.search(local) and not (
        local.startswith('"') and local.endswith('"')
    ):
        return None
    domain = domain.lower()
    if not _DOMAIN.fullmatch(domain):
        return None
    if _EXCHANGE_DN.search(local):
        return None
    return f"{local.lower()}@{domain}"


_TOKEN = re.compile(
    r"""
      (?P<quoted>"(?:[^"\\]|\\.)*(?:"|$))
    | (?P<comment>\((?:[^()\\]|\\.)*(?:\)|$))
    | (?P<angle><[^<>]*(?:>|$))
    | (?P<word>=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)
    | (?P<special>[,;:])
    | (?P<text>[^",;:()<>=]+|.)
    """,
    re.VERBOSE | re.DOTALL,
)
_UNESCAPE = re.compile(r"\\(.)")
_SIMPLE_LIST = re.compile(r'["<>()\\:;=]')

_Token = tuple[str, str]


def _tokenize(value: str) -> list[list[_Token]]:
    """Split an address list into token lists at top-level commas and semicolons.

    Group syntax ('Name: member, member;') drops the group name and keeps the members.
    """
    fragments: list[list[_Token]] = []
    current: list[_Token] = []
    for match in _TOKEN.finditer(value):
        kind = match.lastgroup or "text"
        token = match.group()
        if kind == "special":
            if token == ":" and not any(k == "angle" or "@" in t for k, t in current):
                current = []  # a group name such as 'undisclosed-recipients:'
                continue
            if token in ",;":
                fragments.append(current)
                current = []
                continue
            kind = "text"
        current.append((kind, token))
    fragments.append(current)
    return [fragment for fragment in fragments if any(t.strip() for _, t in fragment)]


def _has_angle(fragment: list[_Token]) -> bool:
    return any(kind == "angle" for kind, _ in fragment)


def _has_phrase_before_angle(fragment: list[_Token]) -> bool:
    for kind, token in fragment:
        if kind == "angle":
            return False
        if kind != "comment" and token.strip():
            return True
    return False


def _join_unquoted_commas(fragments: list[list[_Token]]) -> list[list[_Token]]:
    """Join 'Okafor' + 'Nadia <n@x>' back into 'Okafor, Nadia <n@x>'.

    A fragment without '@' or angle brackets is never an address on its own. When the
    next fragment has a display name and an angle address, the comma was part of a name.
    """
    joined: list[list[_Token]] = []
    index = 0
    while index < len(fragments):
        fragment = fragments[index]
        following = fragments[index + 1] if index + 1 < len(fragments) else None
        if (
            following is not None
            and not _has_angle(fragment)
            and not any("@" in token for _, token in fragment)
            and _has_angle(following)
            and _has_phrase_before_angle(following)
        ):
            joined.append([*fragment, ("text", ","), *following])
            index += 2
            continue
        joined.append(fragment)
        index += 1
    return joined


def _phrase(tokens: list[_Token]) -> str:
    pieces: list[str] = []
    for kind, token in tokens:
        if kind == "quoted":
            inner = token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:]
            pieces.append(_UNESCAPE.sub(r"\1", inner))
        elif kind != "comment":
            pieces.append(token)
    return "".join(pieces)


def _comment_text(tokens: list[_Token]) -> str:
    return " ".join(token.strip("()") for kind, token in tokens if kind == "comment")


@lru_cache(maxsize=65536)
def _participant(address: str | None, name: str | None) -> Participant:
    """Return a Participant shared between messages, as mailboxes repeat people."""
    return Participant(address=address, name=name)


def _fragment_participant(
    fragment: list[_Token], defects: list[str]
) -> Participant | None:
    angle_positions = [i for i, (kind, _) in enumerate(fragment) if kind == "angle"]
    if angle_positions:
        position = angle_positions[-1]
        spec = fragment[position][1]
        name_text = _phrase(fragment[:position]) or _comment_text(fragment)
    else:
        spec = _phrase(fragment).strip()
        name_text = _comment_text(fragment)
        words = spec.split()
        if len(words) > 1:
            # 'Name user@host' without brackets: one word must carry the address.
            at_words = [word for word in words if "@" in word]
            if len(at_words) == 1 and not is_exchange_dn(spec):
                spec = at_words[0]
                name_text = name_text or " ".join(
                    word for word in words if word != spec
                )
    name = _clean_name(name_text) if name_text else None
    if is_exchange_dn(spec):
        defects.append("exchange-dn-address")
        return _participant(None, name) if name else None
    address = _bare_address(spec)
    if address is None:
        defects.append("address-without-valid-domain")
        return None
    return _participant(address, name)


# Address lists repeat within a mailbox (the same team, the same thread), so they are
# parsed once. Lists of thousands of recipients are rare but take about a millisecond
# each (Enron corpus), and copies of one message in several folders repeat them, so a
# few of them are cached too. Lists are cached with their archive names and without, so
# the limits bound the cached header text to about 2 * (8192 * 4 KB + 64 * 256 KB).
_CACHED_LIST_LENGTH = 4096
_CACHED_LARGE_LIST_LENGTH = 256 * 1024

_ParsedList = tuple[tuple[Participant, ...], tuple[str, ...]]


def parse_addresses(
    value: str | None,
    defects: list[str] | None = None,
    *,
    archive_value: str | None = None,
) -> list[Participant]:
    """Parse an address-list header value into participants.

    Fragments without a valid domain are dropped. An Exchange DN with a display name
    becomes a participant without an address, and one without a name is dropped. Names
    are decoded after the list is split. ``archive_value`` is the matching X-To / X-cc
    field of an exported archive, which supplies missing names. Defect codes are
    appended to ``defects`` when it is given.
    """
    return list(_participants(value, defects, archive_value))


def _participants(
    value: str | None, defects: list[str] | None, archive_value: str | None
) -> tuple[Participant, ...]:
    """Return what parse_addresses returns, as the cached tuple itself.

    Messages with the same list share one tuple, which lets the importer reuse its work
    on the list.
    """
    if not value:
        return ()
    length = len(value) + len(archive_value or "")
    if length <= _CACHED_LIST_LENGTH:
        participants, found = _address_field_cached(value, archive_value)
    elif length <= _CACHED_LARGE_LIST_LENGTH:
        participants, found = _large_address_field_cached(value, archive_value)
    else:
        participants, found = _address_field(value, archive_value)
    if defects is not None and found:
        defects.extend(found)
    return participants


def _address_field(value: str, archive_value: str | None) -> _ParsedList:
    if not archive_value:
        return _parsed_list(value)
    participants, defects = _parsed_list(value)
    if participants:
        participants = _names_from_archive_list(archive_value, participants)
    return participants, defects


def _parsed_list(value: str) -> _ParsedList:
    """Return _parse_address_list(value), cached apart from the archive names.

    Exports such as Enron's repeat the Cc list as Bcc with an empty X-bcc, which is
    another key in the caches of whole fields.
    """
    if len(value) <= _CACHED_LIST_LENGTH:
        return _parse_address_list_cached(value)
    if len(value) <= _CACHED_LARGE_LIST_LENGTH:
        return _parse_large_address_list_cached(value)
    return _parse_address_list(value)


# Keyed on the raw field values: hashing two strings is much cheaper than hashing the
# participants, whose dataclass __hash__ runs in Python.
_address_field_cached = lru_cache(maxsize=8192)(_address_field)
_large_address_field_cached = lru_cache(maxsize=64)(_address_field)


def _parse_address_list(value: str) -> _ParsedList:
    defects: list[str] = []
    participants: list[Participant] = []
    if not _SIMPLE_LIST.search(value):
        # Fast path for bare 'a@x, b@y' lists, the common form in exported archives.
        parsed = [_plain_participant(part.strip()) for part in value.split(",")]
        plain = tuple(participant for participant, _ in parsed if participant)
        return plain, tuple(defect for _, defect in parsed if defect)
    for fragment in _join_unquoted_commas(_tokenize(value)):
        participant = _fragment_participant(fragment, defects)
        if participant is not None:
            participants.append(participant)
    return tuple(participants), tuple(defects)


_parse_address_list_cached = lru_cache(maxsize=8192)(_parse_address_list)
_parse_large_address_list_cached = lru_cache(maxsize=64)(_parse_address_list)


@lru_cache(maxsize=65536)
def _plain_participant(part: str) -> tuple[Participant | None, str | None]:
    """Parse one list entry that has no quotes, brackets or comments."""
    if not part:
        return None, None
    if " " not in part:
        address = _bare_address(part)
        if address is not None:
            return _participant(address, None), None
    defects: list[str] = []
    participant = _fragment_participant([("text", part)], defects)
    return participant, (defects[0] if defects else None)


# ------------------------------------------------------------------------------------
# Names from the X-From / X-To / X-cc fields of exported Exchange and Notes archives
# ------------------------------------------------------------------------------------

_ANGLE_PART = re.compile(r"<[^>]*>?")
_MAIL_COMMENT = re.compile(r"\((?:e-?mail|internet)\)", re.IGNORECASE)
_NOTES_DOMAIN_SUFFIX = re.compile(r"\s*@[a-z][\w-]*$", re.IGNORECASE)


@lru_cache(maxsize=16384)
def clean_archive_name(text: str) -> str | None:
    """Return the person's name from an X-From style value, or None when it has none.

    Drops '<...>' parts, the '(E-mail)' marker, a Notes domain suffix ('@ECT') and the
    Notes hierarchy ('David W Delainey/HOU/ECT' gives 'David W Delainey').
    """
    name = _ANGLE_PART.sub(" ", text)
    name = _MAIL_COMMENT.sub(" ", name)
    name = _strip_quotes(" ".join(name.split()))
    if "@" in name:
        if _bare_address(name) is not None:
            return None
        name = _NOTES_DOMAIN_SUFFIX.sub("", name)
        if "@" in name:
            return None
    name = _strip_quotes(name.split("/", 1)[0].strip())
    return name or None


_ARCHIVE_FRAGMENT = re.compile(r'(?:"[^"]*"?|<[^>]*>?|[^,"<])+')


def _split_archive_list(value: str) -> list[str]:
    """Split an X-To value at top-level commas, rejoining 'Surname' + 'Given <...>'."""
    if '"' not in value and "<" not in value:
        # Notes-style lists ('Ann Lee, Bo Chan') need no tokenizer and no rejoining.
        return [part for part in (part.strip() for part in value.split(",")) if part]
    parts = [part.strip() for part in _ARCHIVE_FRAGMENT.findall(value)]
    parts = [part for part in parts if part]
    joined: list[str] = []
    index = 0
    while index < len(parts):
        part = parts[index]
        following = parts[index + 1] if index + 1 < len(parts) else None
        if (
            following is not None
            and "<" not in part
            and "@" not in part
            and "<" in following
            and following.split("<", 1)[0].strip()
        ):
            joined.append(f"{part}, {following}")
            index += 2
            continue
        joined.append(part)
        index += 1
    return joined


@lru_cache(maxsize=16384)
def _archive_fragment_address(fragment: str) -> str | None:
    inside = re.search(r"<([^>]*)>", fragment)
    if inside:
        return _bare_address(inside.group(1))
    return _bare_address(fragment)


def _names_from_archive_list(
    value: str, participants: tuple[Participant, ...]
) -> tuple[Participant, ...]:
    """Fill missing names from an X-To / X-cc value that lines up with the real list.

    Names are copied only when the fragment count equals the participant count and
    every fragment that carries an SMTP address carries the one at the same position.
    Otherwise the list is returned unchanged.
    """
    fragments = _split_archive_list(value)
    if len(fragments) != len(participants):
        return participants
    # Comprehensions over the cached helpers keep lists of thousands of names cheap.
    fragment_addresses = [_archive_fragment_address(fragment) for fragment in fragments]
    for fragment_address, participant in zip(
        fragment_addresses, participants, strict=True
    ):
        if fragment_address is not None and fragment_address != participant.address:
            return participants
    names = [clean_archive_name(fragment) for fragment in fragments]
    return tuple(
        _participant(participant.address, name)
        if participant.name is None and name is not None
        else participant
        for participant, name in zip(participants, names, strict=True)
    )


# ------------------------------------------------------------------------------------
# Dates
# ------------------------------------------------------------------------------------

_MINUS_ZERO = re.compile(r"(?:^|\s)-0000\b")


@lru_cache(maxsize=64)
def mailbox_zone(name: str | None) -> tzinfo:
    """Return the zone that a mailbox's dates without an offset are read in.

    None and 'UTC' give UTC. Raises ConfigError for a name that is not in the IANA time
    zone database.
    """
    if name is None or name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"mailbox time zone {name!r} is not a known IANA zone name ({exc}); "
            "set it to a name such as 'Europe/Berlin' or leave it unset for UTC"
        ) from exc


_MONTHS = {
    name: number
    for number, name in enumerate(
        "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1
    )
}
# The RFC 5322 date form '[Day,] 14 May 2001 16:39[:00] -0700 [(PDT)]'. Other forms,
# zone names and dates without an offset go to the email package.
_COMMON_DATE = re.compile(
    r"(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})"
    r"\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s+([+-])(\d{2})(\d{2})(?:\s|$)"
)
_OFFSET_DELTAS: dict[int, timedelta] = {}


@lru_cache(maxsize=4096)
def _parse_common_date(value: str) -> datetime | None:
    """Parse the common RFC 5322 date form into UTC quickly.

    Returns None for any other form, which then goes to the email package. Copies of a
    message repeat its Date value, so results are cached.
    """
    match = _COMMON_DATE.match(value)
    if match is None:
        return None
    day, month_name, year, hour, minute, second, sign, offset_hours, offset_minutes = (
        match.groups()
    )
    month = _MONTHS.get(month_name.lower())
    if month is None:
        return None
    # '-0000' means the zone is unknown but the time is UTC (RFC 5322 section 3.3).
    minutes = int(offset_hours) * 60 + int(offset_minutes)
    if minutes >= 24 * 60:
        return None
    if sign == "-":
        minutes = -minutes
    offset = _OFFSET_DELTAS.get(minutes)
    if offset is None:
        offset = timedelta(minutes=minutes)
        if len(_OFFSET_DELTAS) < 2048:
            _OFFSET_DELTAS[minutes] = offset
    full_year = int(year)
    if full_year < 100:
        # Years written as '0002' are two-digit years; the email package maps them the
        # same way.
        full_year += 1900 if full_year > 68 else 2000
    try:
        local = datetime(
            full_year,
            month,
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            tzinfo=timezone.utc,
        )
        return local - offset
    except (ValueError, OverflowError):
        return None


def parse_date(
    value: str, zone: tzinfo, now: datetime
) -> tuple[datetime | None, str | None]:
    """Parse an RFC 5322 date into aware UTC.

    Returns the time and None, or None and the reason the value was rejected. A date
    without an offset or with an unknown zone name is read in ``zone``. The '-0000'
    marker is read as UTC.
    """
    utc = _parse_common_date(value)
    if utc is None:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            # Python 3.11 raises TypeError for text it cannot split into date parts.
            reason = (
                str(exc) if isinstance(exc, ValueError) and str(exc) else "unparseable"
            )
            return None, f"invalid date {value!r} ({reason})"
        if parsed.tzinfo is None:
            parsed = parsed.replace(
                tzinfo=timezone.utc if _MINUS_ZERO.search(value) else zone
            )
        try:
            utc = parsed.astimezone(timezone.utc)
        except (OverflowError, ValueError) as exc:
            return None, f"invalid date {value!r} ({exc})"
    if utc < EARLIEST_PLAUSIBLE_DATE or utc > now + FUTURE_TOLERANCE:
        return None, f"implausible date {value!r} (outside 1980-01-02 .. now + 1 day)"
    return utc, None


def _newest_received_time(
    values: list[str], zone: tzinfo, now: datetime
) -> datetime | None:
    newest: datetime | None = None
    for value in values:
        if ";" not in value:
            continue
        stamp, _ = parse_date(value.rsplit(";", 1)[1].strip(), zone, now)
        if stamp is not None and (newest is None or stamp > newest):
            newest = stamp
    return newest


def _message_time(
    fields: _Fields, zone: tzinfo, now: datetime
) -> tuple[datetime | None, str | None]:
    date_value = _first(fields, "date")
    if date_value:
        sent_at, problem = parse_date(date_value, zone, now)
        if sent_at is not None:
            return sent_at, None
    else:
        problem = "missing Date header"
    fallback = _newest_received_time(_all(fields, "received"), zone, now)
    if fallback is not None:
        return fallback, f"{problem}; used the newest Received time"
    return None, f"{problem}; no valid Received time"


# ------------------------------------------------------------------------------------
# Message ids
# ------------------------------------------------------------------------------------

_ANGLE_ID = re.compile(r"<\s*([^<>\s]+)\s*>")


def _message_ids(value: str | None) -> list[str]:
    if not value:
        return []
    ids = _ANGLE_ID.findall(value)
    if ids:
        return ids
    return [word for word in value.split() if "@" in word]


def _single_id(value: str | None) -> str | None:
    if not value:
        return None
    if (
        value[0] == "<"
        and value[-1] == ">"
        and value.count("<") == 1
        and " " not in value
    ):
        return value[1:-1].strip() or None
    ids = _message_ids(value)
    if ids:
        return ids[0]
    stripped = value.strip()
    return stripped if stripped and " " not in stripped else None


# ------------------------------------------------------------------------------------
# Bulk mail, auto-replies and mailing lists
# ------------------------------------------------------------------------------------

_NO_REPLY_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|mailer[-_.]?daemon"
    r"|postmaster|notifications?|bounces?|newsletters?)[-+_.=@]",
    re.IGNORECASE,
)
# Subject prefixes of automatic replies. Phrases that people also write by hand ('Out of
# Office') count only when a colon follows, as mail software writes them.
_AUTO_REPLY_SUBJECT = re.compile(
    r"""^\s*(?:
        (?:out\ of\ (?:the\ )?office|abwesend|absence|fuera\ de\ la\ oficina|fuori\ sede
           |afwezig|poza\ biurem|ausência|nicht\ im\ büro)
           (?:\ ?auto-?reply)?\s*:
      | (?:automatic\ reply|auto-?reply|auto\ reply|autoresponse|auto-?response
           |abwesenheitsnotiz|automatische\ antwort|réponse\ automatique
           |respuesta\ automática|risposta\ automatica|automatisch\ antwoord
           |resposta\ automática|autosvar|automatisk\ svar|automaattinen\ vastaus
           |odpowiedź\ automatyczna|automatická\ odpověď|automatikus\ válasz
           |автоматический\ ответ|自动回复|自動回覆|自動応答|자동\ 회신)(?:\s*:|\s*$|\s)
      | [\[(]\s*auto-?reply\s*[\])]
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_VIA_NAME = re.compile(r"^(?P<person>.+?)\s+via\s+(?P<group>.+)$", re.IGNORECASE)
_NAME_WORD = re.compile(r"[^\W\d_]+")


def _name_key(name: str | None) -> frozenset[str]:
    """Return the words of a name, so 'Raman, Priya' and 'Priya Raman' compare equal."""
    if not name:
        return frozenset()
    return frozenset(word.casefold() for word in _NAME_WORD.findall(name))


def parse_list_id(value: str | None) -> str | None:
    """Return the identifier of a List-Id value ('Name <id>' gives 'id')."""
    if not value:
        return None
    inside = re.search(r"<([^<>]+)>", value)
    identifier = (inside.group(1) if inside else value).strip()
    return identifier or None


# Fields that mark automated mail; most personal mail has none of them.
_AUTOMATION_FIELDS = frozenset(
    (
        "list-id",
        "list-unsubscribe",
        "precedence",
        "auto-submitted",
        "x-autoreply",
        "x-autorespond",
        "x-auto-response-suppress",
    )
)


def _field_text(fields: _Fields, name: str) -> str:
    return (_first(fields, name) or "").strip().lower()


def is_auto_reply(fields: _Fields, subject: str | None, is_reply: bool) -> bool:
    """Return True when the header fields or the subject mark an automatic reply.

    ``fields`` maps lower-case field names to their values. The signals are
    'Auto-Submitted: auto-replied', X-Autoreply, X-Autorespond,
    'Precedence: auto_reply', an out-of-office subject prefix, and
    X-Auto-Response-Suppress with OOF or All on a reply.
    """
    if subject and _AUTO_REPLY_SUBJECT.match(subject):
        return True
    if fields.keys().isdisjoint(_AUTOMATION_FIELDS):
        return False
    if _field_text(fields, "auto-submitted").startswith("auto-replied"):
        return True
    for name in ("x-autoreply", "x-autorespond"):
        if name in fields and _field_text(fields, name) not in ("no", "false", "0"):
            return True
    if _field_text(fields, "precedence") == "auto_reply":
        return True
    # X-Auto-Response-Suppress requests that recipients send no automatic answer
    # (MS-OXCMAIL 2.1.3.2.20). Automatic replies carry it, but so does other automated
    # mail, so it counts only on replies.
    suppress = _field_text(fields, "x-auto-response-suppress")
    return is_reply and ("oof" in suppress or "all" in suppress)


def bulk_reason(
    fields: _Fields,
    sender: Participant | None,
    recipient_count: int,
    recipient_threshold: int = DEFAULT_BULK_RECIPIENT_THRESHOLD,
) -> str | None:
    """Return why a message counts as bulk or automated mail, or None for personal mail.

    Auto-replies are not bulk by themselves, and ``is_auto_reply`` reports them.
    """
    if not fields.keys().isdisjoint(_AUTOMATION_FIELDS):
        if "list-id" in fields:
            return "list-id"
        if "list-unsubscribe" in fields:
            return "list-unsubscribe"
        precedence = _field_text(fields, "precedence")
        if precedence in ("bulk", "list", "junk"):
            return f"precedence-{precedence}"
        auto_submitted = _field_text(fields, "auto-submitted").split(";", 1)[0].strip()
        if auto_submitted not in ("", "no") and not auto_submitted.startswith(
            "auto-replied"
        ):
            return f"auto-submitted-{auto_submitted}"
    if sender is not None and sender.address is not None:
        if _NO_REPLY_LOCAL.match(sender.address):
            return "no-reply-sender"
    if recipient_count > recipient_threshold:
        return f"recipients-over-{recipient_threshold}"
    return None


def recipient_count(*lists: Sequence[Participant]) -> int:
    """Return the number of distinct recipients in address lists.

    An address in several lists counts once. An entry without an address counts once each.
    """
    addresses: set[str] = set()
    without_address = 0
    for people in lists:
        for participant in people:
            if participant.address:
                addresses.add(participant.address)
            else:
                without_address += 1
    return len(addresses) + without_address


# The earlier private names, which bot.mail.sync imports.
_list_id = parse_list_id
_is_auto_reply = is_auto_reply
_bulk_reason = bulk_reason


def _list_author(
    sender: Participant | None,
    reply_to: Sequence[Participant],
    cc: Sequence[Participant],
    to: Sequence[Participant],
) -> Participant | None:
    """Find the real author of a list post whose From reads 'Person via List <...>'."""
    if sender is None or not sender.name:
        return None
    match = _VIA_NAME.match(sender.name)
    if match is None:
        return None
    wanted = _name_key(match.group("person"))
    if not wanted:
        return None
    for candidates in (reply_to, cc, to):
        for participant in candidates:
            if participant.address is None or participant.address == sender.address:
                continue
            if _name_key(participant.name) == wanted:
                return participant
    return None


# ------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------


def _sender(fields: _Fields, defects: list[str]) -> Participant | None:
    """Return the first From participant, named from X-From when From has no name."""
    senders = _participants(_first(fields, "from"), defects, None)
    if not senders:
        defects.append("from-missing")
        return None
    sender = senders[0]
    if sender.name is None and "x-from" in fields:
        name = clean_archive_name(_first(fields, "x-from") or "")
        if name:
            sender = _participant(sender.address, name)
    return sender


def _address_list(
    fields: _Fields,
    name: str,
    archive_name: str | None,
    defects: list[str],
) -> tuple[Participant, ...]:
    """Return the participants of an address field, named from its X- field if any."""
    if not fields.get(name):
        return ()
    value = _joined(fields, name)
    archive = _first(fields, archive_name) if archive_name else None
    return _participants(value, defects, archive)


def clear_caches() -> None:
    """Empty the parse caches, for measurements that must start cold."""
    for cached in (
        _bare_address,
        _participant,
        _plain_participant,
        _address_field_cached,
        _large_address_field_cached,
        _parse_address_list_cached,
        _parse_large_address_list_cached,
        clean_archive_name,
        _archive_fragment_address,
        _parse_common_date,
    ):
        cached.cache_clear()
    _FIELD_KEYS.clear()


def parse_message(
    raw: bytes,
    *,
    source_ref: str,
    folder: str,
    folder_role: FolderRole,
    mailbox_tz: str | None = None,
    bulk_recipient_threshold: int = DEFAULT_BULK_RECIPIENT_THRESHOLD,
    now: datetime | None = None,
) -> MailItem:
    """Read the metadata of one message from its raw bytes.

    Malformed headers become entries in ``defects`` or ``date_defect``, not exceptions.
    Raises NotAMessage when the bytes have no header block with a message field, and
    ConfigError for an unknown ``mailbox_tz``. ``now`` bounds plausible dates and
    defaults to the current time.
    """
    zone = mailbox_zone(mailbox_tz)
    current_time = now or datetime.now(timezone.utc)
    defects: list[str] = []

    block, body_start = _split_message(raw)
    fields = _read_fields(_decode_header_block(block, defects))
    if fields.keys().isdisjoint(_MESSAGE_FIELDS):
        raise NotAMessage(
            f"{source_ref}: no mail header field (From, To, Date, Message-ID, Subject) "
            "found, so it is not an RFC 5322 message; remove it or export it as .eml"
        )

    sender = _sender(fields, defects)
    to = _address_list(fields, "to", "x-to", defects)
    cc = _address_list(fields, "cc", "x-cc", defects)
    bcc = _address_list(fields, "bcc", "x-bcc", defects)
    reply_to = _address_list(fields, "reply-to", None, defects)

    sent_at, date_defect = _message_time(fields, zone, current_time)

    subject_value = _first(fields, "subject")
    subject = (
        " ".join(decode_words(subject_value).split())
        if subject_value is not None
        else None
    )
    in_reply_to = _single_id(_first(fields, "in-reply-to"))
    references = _message_ids(_joined(fields, "references"))

    list_id = parse_list_id(_first(fields, "list-id"))
    is_list_post = list_id is not None or "list-post" in fields
    author = _list_author(sender, reply_to, cc, to) if is_list_post else None

    is_reply = in_reply_to is not None or bool(references)
    count = len(to) + len(cc) + len(bcc)
    if count > bulk_recipient_threshold:
        # Only a list over the threshold can be bulk, so only then are repeats removed.
        count = recipient_count(to, cc, bcc)
    reason = bulk_reason(fields, sender, count, bulk_recipient_threshold)

    return MailItem(
        source_ref=source_ref,
        folder=folder,
        folder_role=folder_role,
        sent_at=sent_at,
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        message_id=_single_id(_first(fields, "message-id")),
        in_reply_to=in_reply_to,
        references=references,
        subject=subject,
        list_id=list_id,
        is_bulk=reason is not None,
        bulk_reason=reason,
        is_auto_reply=is_auto_reply(fields, subject, is_reply),
        author=author,
        date_defect=date_defect,
        defects=sorted(set(defects)) if defects else [],
        body_hash=body_digest(raw, body_start),
    )
