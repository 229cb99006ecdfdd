"""Words for dates, rhythms and strength that every builder shares."""

from __future__ import annotations

from datetime import datetime

from bot.relationships.queries import describe_cadence
from bot.relationships.strength import band
from bot.timeutil import as_utc


def strength_band(strength: float) -> str:
    """Return the band (strong, medium, weak or none) of a 0-100 strength score."""
    return band(strength)


def format_strength(strength: float) -> str:
    """Return a score with its band, for example "strong (72/100)"."""
    return f"{band(strength)} ({strength:.0f}/100)"


def recency_band(last: datetime | None, now: datetime) -> str:
    """Return how long ago the last contact was, in coarse steps safe to show to colleagues."""
    if last is None:
        return "no mail yet"
    days = (as_utc(now) - as_utc(last)).days
    if days <= 31:
        return "in the last month"
    if days <= 92:
        return "in the last 3 months"
    if days <= 366:
        return "in the last year"
    return "more than a year ago"


def format_age(when: datetime | None, now: datetime) -> str:
    """Return "today", "9 days ago", "3 months ago" and so on; "never" for no date."""
    if when is None:
        return "never"
    days = (as_utc(now) - as_utc(when)).days
    if days < 0:
        return f"on {format_date(when)}"
    if days == 0:
        return "today"
    if days == 1:
        return "yesterday"
    if days < 14:
        return f"{days} days ago"
    if days < 60:
        return f"{days // 7} weeks ago"
    if days < 730:
        return f"{days // 30} months ago"
    return f"{days // 365} years ago"


def format_date(when: datetime | None) -> str:
    if when is None:
        return "never"
    return as_utc(when).strftime("%Y-%m-%d")


def format_when(when: datetime | None, now: datetime) -> str:
    """Return a date with its age, for example "2001-05-03 (9 days ago)"."""
    if when is None:
        return "never"
    if as_utc(when) > as_utc(now):
        return format_date(when)
    return f"{format_date(when)} ({format_age(when, now)})"


def format_cadence(days: float | None) -> str:
    """Describe a usual rhythm with the same words as the relationship queries' reasons."""
    if days is None:
        return "no regular rhythm yet"
    rhythm = describe_cadence(days)
    return rhythm if rhythm.startswith("almost") else "about " + rhythm


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    word = noun if count == 1 else (nouns or noun + "s")
    return f"{count} {word}"
