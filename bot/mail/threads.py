"""Subject normalisation for threading mail that carries no In-Reply-To or References."""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Reply and forward prefixes in common mail clients and languages: English (Re, Fw, Fwd),
# German (AW, WG), Scandinavian (SV, VS, VB), Dutch (Antw, Doorst), French (TR, RE), Spanish
# and Portuguese (RV, ENC, RES), Italian (R, I, RIF), Polish (Odp, PD), Turkish (YNT, ILT),
# Finnish (VL), Chinese (回复, 答复, 转发) and a few more.
_PREFIXES = (
    "re", "fw", "fwd", "aw", "wg", "sv", "vs", "vb", "antw", "antwort", "doorst", "tr", "rv", "enc",
    "res", "r", "i", "rif", "odp", "pd", "ynt", "ilt", "vl", "vs", "ref", "rép", "réf", "trans",
    "回复", "答复", "转发", "回覆", "轉寄",
)
_PREFIX_SET = frozenset(p.casefold() for p in _PREFIXES)
# One leading "word:" (optionally "word[2]:" or "word(2):"), or one "[list tag]".
_LEAD_RE = re.compile(r"^\s*(?:([^\W\d_]{1,7})\s*(?:\[\d+\]|\(\d+\))?\s*[:：]|\[[^\]]{1,40}\])\s*")
_SPACE_RE = re.compile(r"\s+")


def _strip_one_prefix(text: str) -> str | None:
    """Remove one reply, forward or list-tag prefix, or return None when there is none."""
    match = _LEAD_RE.match(text)
    if match is None:
        return None
    word = match.group(1)
    if word is not None and word.casefold() not in _PREFIX_SET:
        return None
    return text[match.end() :]


def normalize_subject(subject: str | None) -> str:
    """Strip reply, forward and list-tag prefixes repeatedly, fold case and white space."""
    if not subject:
        return ""
    text = unicodedata.normalize("NFKC", subject) if not subject.isascii() else subject
    while True:
        stripped = _strip_one_prefix(text)
        if stripped is None:
            break
        text = stripped
    return _SPACE_RE.sub(" ", text).strip().casefold()


def subject_key(subject: str | None) -> str | None:
    """Return a short digest of the normalised subject, or None for an empty subject."""
    normalized = normalize_subject(subject)
    if not normalized:
        return None
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()[:16]


def has_reply_prefix(subject: str | None) -> bool:
    return bool(subject) and _strip_one_prefix(unicodedata.normalize("NFKC", subject)) is not None
