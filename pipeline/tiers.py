"""Traffic-light tiers from calibrated probabilities, under a policy stated in config.

- green: satisfied, very unlikely to leave; orange: probably has a problem, not yet critical;
  red: serious risk of loss.
- ``thresholds``: red when p ≥ red_threshold, orange when p ≥ orange_threshold.
- ``capacity``: red = the ``capacity_red`` highest expected losses the team can call, orange = the
  next ``capacity_orange``.
- ``expected_value``: contact when p × value × save_rate > contact_cost (orange); red when that
  expected saving is at least ``red_value_multiple`` × contact_cost.
Escalation (``escalate_serious_complaints``): a complaint or ticket of severity ≥
``features.serious_severity`` within the last 30 days lifts a green customer to orange.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import TierConfig

TIERS = ("green", "orange", "red")
TIER_RANK = {t: i for i, t in enumerate(TIERS)}


def assign_tiers(
    probability: np.ndarray,
    policy: TierConfig,
    value: np.ndarray | None = None,
    escalate: np.ndarray | None = None,
) -> np.ndarray:
    """Tier per customer ('green' / 'orange' / 'red').

    ``value``: money at stake per customer (needed by ``capacity`` for ranking by expected loss
    and by ``expected_value``). ``escalate``: True where an escalation rule fired.
    """
    p = np.asarray(probability, dtype=np.float64)
    rank = np.zeros(len(p), dtype=np.int8)
    if policy.policy == "thresholds":
        rank[p >= policy.orange_threshold] = 1
        rank[p >= policy.red_threshold] = 2
    elif policy.policy == "capacity":
        loss = p * (np.asarray(value, dtype=np.float64) if value is not None else 1.0)
        order = np.lexsort((np.arange(len(p)), -loss))  # highest loss first, ties by row
        rank[order[: policy.capacity_red + policy.capacity_orange]] = 1
        rank[order[: policy.capacity_red]] = 2
    elif policy.policy == "expected_value":
        if value is None:
            raise ValueError("the expected_value tier policy needs a value per customer")
        saving = p * np.asarray(value, dtype=np.float64) * policy.save_rate
        rank[saving > policy.contact_cost] = 1
        rank[saving >= policy.red_value_multiple * policy.contact_cost] = 2
    else:  # pragma: no cover - pydantic restricts the literal
        raise ValueError(f"unknown tier policy '{policy.policy}'")
    if escalate is not None:
        rank = np.where(np.asarray(escalate, dtype=bool), np.maximum(rank, 1), rank)
    return np.asarray(TIERS, dtype=object)[rank]


def escalation_flags(features: pd.DataFrame, policy: TierConfig) -> np.ndarray:
    """True where a serious complaint or ticket happened within the policy's window.

    Uses ``serious_complaints_30d`` (complaints and tickets of severity ≥ the features'
    ``serious_severity`` in the last 30 days); the rule is off when the policy sets no severity.
    """
    if not policy.escalate_serious_complaints or "serious_complaints_30d" not in features:
        return np.zeros(len(features), dtype=bool)
    return features["serious_complaints_30d"].to_numpy() > 0


def describe_policy(policy: TierConfig) -> str:
    """One line that says which policy made the tiers (for exports and the model card)."""
    if policy.policy == "thresholds":
        text = f"thresholds: red ≥ {policy.red_threshold:g}, orange ≥ {policy.orange_threshold:g}"
    elif policy.policy == "capacity":
        text = (
            f"capacity: red = top {policy.capacity_red} by expected loss,"
            f" orange = next {policy.capacity_orange}"
        )
    else:
        text = (
            f"expected value: contact when p × value × {policy.save_rate:g} >"
            f" {policy.contact_cost:g}; red at ≥ {policy.red_value_multiple:g}× the contact cost"
        )
    if policy.escalate_serious_complaints:
        text += "; escalation: a serious complaint in the last 30 days ⇒ at least orange"
    return text
