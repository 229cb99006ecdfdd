"""The relationship strength score, from 0 to 100.

The score follows two published ideas:

* Gmail's interactions rank (Roth et al., "Suggesting Friends Using the Implicit Social
  Graph", KDD 2010): a sum over messages of a direction weight times ``1/2^(age/half_life)``,
  with mail the owner sent weighted above mail the owner received.
* DotAlign's rule that one-way mail counts for almost nothing, so that two-way exchange
  dominates the score.

For one owner and one person::

    out = sum over messages the owner sent them   of w_out * role * 2^(-age/half_life) / sqrt(n)
    in  = sum over messages they sent the owner   of w_in  * role * 2^(-age/half_life) / sqrt(n)
    raw = 2 * min(out, in) + one_way_factor * (max(out, in) - min(out, in))
    strength = 100 * (1 - exp(-raw / scale))

The balanced part of the exchange counts in full. What one side sends beyond what the other
replies counts at ``one_way_factor``.

``role`` is 1 for To and ``w_cc`` for Cc (or for the owner copied on inbound mail), and ``n``
is the number of recipients, so one-to-one mail weighs more than a message to a crowd.
Defaults (settings ``STRENGTH_*``) are these. The half-life is 180 days, so a relationship
that stopped six months ago keeps half its weight and one silent for two years keeps about
6%. Outbound mail weighs twice inbound mail, because writing to someone is a deliberate act
while anyone can write to the owner. One-way mail keeps 5% of its weight. With scale 6 (computed with these defaults): one
one-to-one exchange today scores 29, three in the last three weeks 63, six 86, and monthly
exchanges over the past year 90; the same monthly year, ended a year ago, scores 44.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class StrengthParams:
    half_life_days: float = 180.0
    weight_outbound: float = 2.0
    weight_inbound: float = 1.0
    weight_cc: float = 0.5
    one_way_factor: float = 0.05
    scale: float = 6.0

    @classmethod
    def from_settings(cls, settings) -> "StrengthParams":  # type: ignore[no-untyped-def]
        return cls(
            half_life_days=settings.strength_half_life_days,
            weight_outbound=settings.strength_weight_outbound,
            weight_inbound=settings.strength_weight_inbound,
            weight_cc=settings.strength_weight_cc,
            one_way_factor=settings.strength_one_way_factor,
            scale=settings.strength_scale,
        )


def decay(sent_at: datetime, now: datetime, half_life_days: float) -> float:
    """Return ``1/2^(age/half_life)``; mail dated after ``now`` counts as new."""
    age_days = max(0.0, (now - sent_at).total_seconds() / SECONDS_PER_DAY)
    return 0.5 ** (age_days / half_life_days)


def message_weight(direction: str, is_cc: bool, recipients: int, params: StrengthParams) -> float:
    base = params.weight_outbound if direction == "out" else params.weight_inbound
    role = params.weight_cc if is_cc else 1.0
    return base * role / math.sqrt(max(1, recipients))


def combine(outbound: float, inbound: float, params: StrengthParams) -> float:
    """Turn decayed outbound and inbound sums into the 0-100 score."""
    low, high = sorted((outbound, inbound))
    if high <= 0:
        return 0.0
    raw = 2.0 * low + params.one_way_factor * (high - low)
    return 100.0 * (1.0 - math.exp(-raw / params.scale))


def band(strength: float) -> str:
    """Name the strength band shown to colleagues instead of the number."""
    if strength >= 60:
        return "strong"
    if strength >= 25:
        return "medium"
    if strength > 0:
        return "weak"
    return "none"
