"""Traffic-light tiers from calibrated probabilities: one policy object per kind, in one place.

- green: satisfied, very unlikely to leave; orange: probably has a problem, not yet critical;
  red: serious risk of loss.

A policy (``tier_policy(config, base_rate)``) has one method, ``assign(probability, value,
flags, previous, owner)`` → ``TierResult`` (tier, the policy's own proposal, ``escalated_by``).
Training, scoring, the backtest and the report call it; nothing else assigns tiers.

Kinds (``TierConfig.policy``; settings in the section of the same name):

- ``relative_capacity`` (default): red = each owner's ``red_per_owner`` highest expected losses
  (p × value) among customers at least ``red_risk_ratio`` × the base rate at risk; orange = the
  next ``orange_per_owner`` at least ``orange_risk_ratio`` × the base rate. Lists a team can work
  whatever the base rate (a SaaS log at 5 %, a retail log at 75 %).
- ``thresholds``: red when p ≥ red_threshold, orange when p ≥ orange_threshold.
- ``capacity``: red = the ``red`` highest expected losses of the base, orange = the next
  ``orange``.
- ``expected_value``: orange when p × value × save_rate > contact_cost; red when that saving is at
  least ``red_value_multiple`` × contact_cost.

Escalation: a serious complaint or ticket in the last 30 days lifts a customer to orange only
when p ≥ the base rate, and to red when p also clears the red floor; ``escalated_by`` says so.

Hysteresis: each policy also says how far each customer is from its cut-offs (``headroom``: the
customer's score ÷ the cut-off, 1 = on it). A customer leaves the previous run's tier only when
the headroom clears the cut-off by ``hysteresis_margin`` (up: ≥ 1 + m, down: < 1 − m), or when
the policy proposed the new tier at the previous run too (it held two runs in a row).

The base rate: the model card's ``base_rate`` (training churn rate) when given, else the mean
calibrated probability of the scored base.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import TierConfig

TIERS = ("green", "orange", "red")
TIER_RANK = {t: i for i, t in enumerate(TIERS)}
ESCALATION_FEATURE = "serious_complaints_30d"
ESCALATED_BY = "serious complaint in the last 30 days"
EVERYONE = "all"


@dataclass(frozen=True)
class TierResult:
    """Per customer: ``tier`` (final), ``proposed`` (the policy's tier before hysteresis and
    escalation; kept so the next run can tell a tier that held two runs) and ``escalated_by``
    (why escalation lifted the tier, None where it did not)."""

    tier: np.ndarray
    proposed: np.ndarray
    escalated_by: np.ndarray


def risk_floor(base_rate: float, ratio: float) -> float:
    """``ratio`` × the base rate, capped so that the chance of staying is at most the base's ÷
    ratio (1 − (1 − b) / ratio): a floor below 1 whatever the base rate."""
    return float(min(ratio * base_rate, 1.0 - (1.0 - base_rate) / ratio))


def rank_within(groups: np.ndarray, score: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """0-based rank of each eligible row in its group by ``score`` (highest first, ties by row
    order); ineligible rows get the largest int64 (never within a capacity)."""
    n = len(score)
    codes = pd.factorize(np.asarray(groups, dtype=object), sort=True)[0]
    order = np.lexsort((np.arange(n), -score, ~eligible, codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if n else []
    first = np.repeat(starts, np.diff(np.r_[starts, n])) if n else np.zeros(0, np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.where(eligible[order], np.arange(n) - first, np.iinfo(np.int64).max)
    return rank


def cut_ratio(score: np.ndarray, chosen: np.ndarray, groups: np.ndarray, full: int) -> np.ndarray:
    """Score ÷ the lowest chosen score of the row's group when that group filled its ``full``
    places (the binding cut-off), +inf where the group had room."""
    if full <= 0:
        return np.zeros(len(score))
    frame = pd.DataFrame({"g": np.asarray(groups, dtype=object), "s": score})
    kept = frame[chosen].groupby("g", sort=False)["s"].agg(["min", "size"])
    cut = kept["min"].where(kept["size"] >= full, 0.0)
    cut_row = frame["g"].map(cut).fillna(0.0).to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cut_row > 0, score / cut_row, np.inf)


class TierPolicy:
    """Shared machinery: hysteresis, escalation and the call every stage makes (``assign``).

    Subclasses implement ``propose(p, value, owner)`` → (rank 0/1/2, headroom (n, 2): score ÷
    the orange and red cut-offs) and ``words()``.
    """

    def __init__(self, config: TierConfig, base_rate: float | None = None) -> None:
        self.config = config
        self.base_rate = base_rate

    def rate(self, probability: np.ndarray) -> float:
        """The base rate: the card's when given, else the mean probability of the base."""
        if self.base_rate is not None:
            return float(self.base_rate)
        return float(np.mean(probability)) if len(probability) else 0.0

    def red_floor(self, base_rate: float) -> float:
        """The risk from which an escalated customer is red."""
        return risk_floor(base_rate, self.config.relative_capacity.red_risk_ratio)

    def propose(self, p, value, owner) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def words(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def assign(
        self,
        probability: np.ndarray,
        value: np.ndarray | None = None,
        flags: np.ndarray | None = None,
        previous: tuple[np.ndarray, np.ndarray] | None = None,
        owner: np.ndarray | None = None,
    ) -> TierResult:
        """Tiers for one run. ``value``: money at stake per customer; ``flags``: escalation rule
        fired; ``previous``: (tier, proposed) of the previous run per row (None = not scored
        then); ``owner``: capacity groups (one group when None)."""
        p = np.asarray(probability, dtype=np.float64)
        money = np.ones(len(p)) if value is None else np.asarray(value, dtype=np.float64)
        groups = np.full(len(p), EVERYONE, dtype=object) if owner is None else np.asarray(owner)
        proposed, headroom = self.propose(p, money, groups)
        rank = proposed
        if previous is not None:
            rank = settle(proposed, headroom, *previous, self.config.hysteresis_margin)
        rank, lifted = self.escalate(p, rank, flags, p * money, groups)
        by = np.where(lifted, ESCALATED_BY, None).astype(object)
        return TierResult(as_tiers(rank), as_tiers(proposed), by)

    def escalate(
        self,
        p: np.ndarray,
        rank: np.ndarray,
        flags: np.ndarray | None,
        loss: np.ndarray,
        owner: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lift flagged customers at least at the base rate to orange, red above the red floor;
        at most ``escalations_per_owner`` lifts per owner, highest expected loss first."""
        if flags is None or not self.config.escalate_serious_complaints:
            return rank, np.zeros(len(p), dtype=bool)
        flags = np.asarray(flags, dtype=bool)
        base = self.rate(p)
        lift = np.where(flags & (p >= base), 1, 0)
        lift = np.where(flags & (p >= self.red_floor(base)), 2, lift)
        wanted = lift > rank
        cap = self.config.escalations_per_owner
        allowed = wanted if cap is None else rank_within(owner, loss, wanted) < cap
        out = np.where(allowed, np.maximum(rank, lift), rank)
        return out, out > rank

    def describe(self, base_rate: float | None = None) -> str:
        """The policy in words (exports, the model card, the run summary)."""
        text = self.words()
        if base_rate is not None:
            text += f"; base rate {base_rate:.1%}"
        if self.config.escalate_serious_complaints:
            text += (
                "; escalation: a serious complaint or ticket in the last 30 days lifts a customer"
                " at or above the base rate to orange (red above the red floor), marked"
                + (
                    f", at most {self.config.escalations_per_owner} per owner"
                    if self.config.escalations_per_owner is not None
                    else ""
                )
            )
        m = self.config.hysteresis_margin
        return text + (
            f"; a customer changes tier when the score clears the cut-off by {m:.0%}"
            " or the new tier holds two runs in a row"
        )


class ThresholdsTiers(TierPolicy):
    def propose(self, p, value, owner):
        c = self.config.thresholds
        head = np.column_stack([p / c.orange_threshold, p / c.red_threshold])
        return ranks_from(head), head

    def red_floor(self, base_rate: float) -> float:
        return self.config.thresholds.red_threshold

    def words(self) -> str:
        c = self.config.thresholds
        return f"thresholds: red ≥ {c.red_threshold:g}, orange ≥ {c.orange_threshold:g}"


class CapacityTiers(TierPolicy):
    def propose(self, p, value, owner):
        c = self.config.capacity
        loss = p * value
        one = np.full(len(p), EVERYONE, dtype=object)
        order = rank_within(one, loss, np.ones(len(p), dtype=bool))
        rank = np.where(order < c.red, 2, np.where(order < c.red + c.orange, 1, 0))
        head = np.column_stack(
            [
                cut_ratio(loss, rank >= 1, one, c.red + c.orange),
                cut_ratio(loss, rank == 2, one, c.red),
            ]
        )
        return rank, head

    def words(self) -> str:
        c = self.config.capacity
        return f"capacity: red = top {c.red} by expected loss, orange = next {c.orange}"


class ExpectedValueTiers(TierPolicy):
    def propose(self, p, value, owner):
        c = self.config.expected_value
        saving = p * value * c.save_rate
        cost = max(c.contact_cost, 1e-12)
        head = np.column_stack([saving / cost, saving / (c.red_value_multiple * cost)])
        rank = np.where(head[:, 1] >= 1, 2, np.where(saving > c.contact_cost, 1, 0))
        return rank, head

    def words(self) -> str:
        c = self.config.expected_value
        return (
            f"expected value: contact when p × value × {c.save_rate:g} > {c.contact_cost:g};"
            f" red at ≥ {c.red_value_multiple:g}× the contact cost"
        )


class RelativeCapacityTiers(TierPolicy):
    def propose(self, p, value, owner):
        c, base = self.config.relative_capacity, self.rate(p)
        loss = p * value
        red_floor = self.red_floor(base)
        orange_floor = risk_floor(base, c.orange_risk_ratio)
        red = rank_within(owner, loss, p >= red_floor) < c.red_per_owner
        orange = rank_within(owner, loss, (p >= orange_floor) & ~red) < c.orange_per_owner
        rank = np.where(red, 2, np.where(orange, 1, 0))
        with np.errstate(divide="ignore"):
            head = np.column_stack(
                [
                    np.minimum(
                        p / orange_floor,
                        cut_ratio(loss, rank >= 1, owner, c.red_per_owner + c.orange_per_owner),
                    ),
                    np.minimum(p / red_floor, cut_ratio(loss, red, owner, c.red_per_owner)),
                ]
            )
        return rank, head

    def words(self) -> str:
        c = self.config.relative_capacity
        return (
            f"relative capacity: per owner, red = the {c.red_per_owner} highest expected losses"
            f" (p × value) among customers at ≥ {c.red_risk_ratio:g}× the base rate, orange ="
            f" the next {c.orange_per_owner} at ≥ {c.orange_risk_ratio:g}× the base rate"
        )


POLICIES: dict[str, type[TierPolicy]] = {
    "relative_capacity": RelativeCapacityTiers,
    "thresholds": ThresholdsTiers,
    "capacity": CapacityTiers,
    "expected_value": ExpectedValueTiers,
}


def tier_policy(config: TierConfig, base_rate: float | None = None) -> TierPolicy:
    """The policy object ``config.policy`` names, with its settings."""
    return POLICIES[config.policy](config, base_rate)


def ranks_from(headroom: np.ndarray) -> np.ndarray:
    """0/1/2 from headroom over the orange and red cut-offs (≥ 1 = at or past the cut-off)."""
    return np.where(headroom[:, 1] >= 1, 2, np.where(headroom[:, 0] >= 1, 1, 0))


def settle(
    proposed: np.ndarray,
    headroom: np.ndarray,
    previous_tier: np.ndarray,
    previous_proposed: np.ndarray,
    margin: float,
) -> np.ndarray:
    """Hysteresis: keep the previous tier unless the move clears the cut-off by ``margin`` or
    the policy proposed the same tier at the previous run (see the module docstring)."""
    prev = as_ranks(previous_tier)
    held = as_ranks(previous_proposed) == proposed
    clear = ranks_from(headroom / (1.0 + margin))
    keep = ranks_from(headroom / (1.0 - margin))
    up = np.minimum(proposed, np.maximum(prev, clear))
    down = np.maximum(proposed, np.minimum(prev, keep))
    moved = np.where(proposed > prev, up, np.where(proposed < prev, down, proposed))
    return np.where((prev < 0) | held, proposed, moved)


def as_tiers(rank: np.ndarray) -> np.ndarray:
    return np.asarray(TIERS, dtype=object)[np.asarray(rank, dtype=np.int64)]


def as_ranks(tiers: np.ndarray) -> np.ndarray:
    """Tier names → 0/1/2; −1 for None / NaN / unknown."""
    return pd.Series(np.asarray(tiers, dtype=object)).map(TIER_RANK).fillna(-1).to_numpy(np.int64)


def escalation_flags(features: pd.DataFrame, policy: TierConfig) -> np.ndarray:
    """True where a serious complaint or ticket happened in the last 30 days
    (``serious_complaints_30d`` > 0); all False when the rule is off or the log has none."""
    if not policy.escalate_serious_complaints or ESCALATION_FEATURE not in features:
        return np.zeros(len(features), dtype=bool)
    return features[ESCALATION_FEATURE].to_numpy() > 0


def assign_tiers(
    probability: np.ndarray,
    policy: TierConfig,
    value: np.ndarray | None = None,
    escalate: np.ndarray | None = None,
    owner: np.ndarray | None = None,
    base_rate: float | None = None,
) -> np.ndarray:
    """Tier names of ``tier_policy(policy, base_rate).assign(...)`` (no previous run)."""
    return tier_policy(policy, base_rate).assign(probability, value, escalate, None, owner).tier


def describe_policy(policy: TierConfig, base_rate: float | None = None) -> str:
    """One line that says which policy made the tiers (exports, the model card)."""
    return tier_policy(policy).describe(base_rate)
