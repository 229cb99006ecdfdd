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
_PREFIX_RE = re.compile(
    r"^\s*(?:(?:" + "|".join(re.escape(p) for p in sorted(set(_PREFIXES), key=len, reverse=True))
    + r")\s*(?:\[\d+\]|\(\d+\))?\s*[:：]|\[[^\]]{1,40}\])\s*",
    re.IGNORECASE,
)
_SPACE_RE = re.compile(r"\s+")


def normalize_subject(subject: str | None) -> str:
    """Strip reply, forward and list-tag prefixes repeatedly, fold case and white space."""
    if not subject:
        return ""
    text = unicodedata.normalize("NFKC", subject)
    previous = None
    while previous != text:
        previous = text
        text = _PREFIX_RE.sub("", text, count=1)
    return _SPACE_RE.sub(" ", text).strip().casefold()


def subject_key(subject: str | None) -> str | None:
    """Return a short digest of the normalised subject, or None for an empty subject."""
    normalized = normalize_subject(subject)
    if not normalized:
        return None
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()[:16]


def has_reply_prefix(subject: str | None) -> bool:
    return bool(subject) and _PREFIX_RE.match(unicodedata.normalize("NFKC", subject)) is not None
