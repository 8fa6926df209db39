"""Tier policies on literal arrays: cut-offs, capacity per owner, k × base rate, escalation
marking, hysteresis, and a purchase-log base rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import (
    CapacityPolicy,
    ExpectedValuePolicy,
    RelativeCapacityPolicy,
    ThresholdsPolicy,
    TierConfig,
)
from pipeline.tiers import (
    ESCALATED_BY,
    describe_policy,
    escalation_flags,
    risk_floor,
    tier_policy,
)

pytestmark = pytest.mark.code

THRESHOLDS = TierConfig(policy="thresholds", thresholds=ThresholdsPolicy(), hysteresis_margin=0.1)


def tiers(config: TierConfig, p, value=None, flags=None, previous=None, owner=None, base=None):
    result = tier_policy(config, base).assign(np.array(p), value, flags, previous, owner)
    return list(result.tier)


def relative(
    red: int, orange: int, k_red: float = 3.0, k_orange: float = 1.5, **extra
) -> TierConfig:
    section = RelativeCapacityPolicy(
        red_per_owner=red, orange_per_owner=orange, red_risk_ratio=k_red, orange_risk_ratio=k_orange
    )
    return TierConfig(relative_capacity=section, **extra)


def test_the_default_policy_is_relative_capacity_of_10_red_and_30_orange_per_owner() -> None:
    c = TierConfig()
    assert c.policy == "relative_capacity"
    assert (c.relative_capacity.red_per_owner, c.relative_capacity.orange_per_owner) == (10, 30)


def test_thresholds_put_a_probability_equal_to_a_cut_off_in_the_higher_tier() -> None:
    p = [0.0, 0.1999, 0.2, 0.4999, 0.5, 1.0]
    assert tiers(THRESHOLDS, p) == ["green", "green", "orange", "orange", "red", "red"]


def test_capacity_makes_red_the_top_k_expected_losses_and_orange_the_next_m() -> None:
    config = TierConfig(policy="capacity", capacity=CapacityPolicy(red=1, orange=2))
    value = np.array([1.0, 100.0, 1.0, 1.0, 1.0])  # expected losses 0.9, 10, 0.5, 0.3, 0.2
    got = tiers(config, [0.9, 0.1, 0.5, 0.3, 0.2], value)
    assert got == ["orange", "red", "orange", "green", "green"]


def test_expected_value_contacts_only_when_the_saving_exceeds_the_contact_cost() -> None:
    section = ExpectedValuePolicy(save_rate=0.5, contact_cost=10.0, red_value_multiple=3.0)
    config = TierConfig(policy="expected_value", expected_value=section)
    value = np.array([10.0, 100.0, 50.0, 120.0, 200.0])
    # savings p × value × 0.5: 2.5, 10 (= cost, not above), 12.5, 30 (= 3 × cost), 60
    assert tiers(config, [0.5, 0.2, 0.5, 0.5, 0.6], value) == [
        "green",
        "green",
        "orange",
        "red",
        "red",
    ]


def test_relative_capacity_fills_each_owners_places_by_expected_loss_above_k_times_the_base() -> (
    None
):
    # base rate 0.1: red floor 0.3, orange floor 0.15; one red and one orange place per owner
    p = [0.5, 0.4, 0.35, 0.2, 0.12, 0.6, 0.16]
    value = np.array([1.0, 10.0, 1.0, 1.0, 100.0, 1.0, 1.0])
    owner = np.array(["ann", "ann", "ann", "ann", "ann", "bob", "bob"], dtype=object)
    got = tiers(relative(1, 1), p, value, owner=owner, base=0.1)
    # ann: losses 0.5, 4, 0.35, 0.2, 12 (p 0.12 < floor 0.15: never listed); bob: 0.6, 0.16
    assert got == ["orange", "red", "green", "green", "green", "red", "orange"]


def test_the_risk_floor_stays_below_one_for_a_high_base_rate() -> None:
    assert risk_floor(0.05, 3.0) == pytest.approx(0.15)
    assert risk_floor(0.75, 3.0) == pytest.approx(1 - 0.25 / 3)


def test_without_a_card_base_rate_the_mean_probability_is_the_base_rate() -> None:
    # mean p = 0.2: red floor 0.6, orange floor 0.3
    got = tiers(relative(10, 10), [0.05, 0.0, 0.2, 0.1, 0.65], np.ones(5))
    assert got == ["green", "green", "green", "green", "red"]


def test_escalation_lifts_only_at_or_above_the_base_rate_and_is_marked() -> None:
    config = relative(0, 0)  # no places: only escalation lists anyone
    flags = np.array([True, True, True, False])
    result = tier_policy(config, 0.1).assign(np.array([0.05, 0.1, 0.5, 0.9]), None, flags)
    assert list(result.tier) == ["green", "orange", "red", "green"]
    assert list(result.escalated_by) == [None, ESCALATED_BY, ESCALATED_BY, None]


def test_escalations_per_owner_are_capped_highest_expected_loss_first() -> None:
    config = relative(0, 0, escalations_per_owner=1)
    flags = np.ones(3, dtype=bool)
    owner = np.array(["a", "a", "b"], dtype=object)
    got = tiers(config, [0.2, 0.3, 0.2], np.ones(3), flags, owner=owner, base=0.1)
    assert got == ["green", "orange", "orange"]


def test_escalation_never_lowers_a_tier() -> None:
    got = tiers(THRESHOLDS, [0.9, 0.3], None, np.array([True, True]), base=0.5)
    assert got == ["red", "orange"]


def test_hysteresis_keeps_the_tier_until_the_cut_off_is_cleared_by_the_margin() -> None:
    # red at 0.5 (clear up from 0.55, clear down below 0.45); orange at 0.2
    p = [0.52, 0.56, 0.48, 0.44, 0.52]
    before = np.array(["orange", "orange", "red", "red", None], dtype=object)
    previous = (before, before)
    assert tiers(THRESHOLDS, p, previous=previous) == ["orange", "red", "red", "orange", "red"]


def test_hysteresis_accepts_a_tier_the_policy_proposed_two_runs_in_a_row() -> None:
    tier_before = np.array(["orange", "red"], dtype=object)
    proposed_before = np.array(["red", "orange"], dtype=object)
    got = tiers(THRESHOLDS, [0.52, 0.48], previous=(tier_before, proposed_before))
    assert got == ["red", "orange"]


def test_the_proposal_is_kept_apart_from_hysteresis() -> None:
    before = np.array(["orange"], dtype=object)
    result = tier_policy(THRESHOLDS).assign(np.array([0.52]), previous=(before, before))
    assert (result.tier[0], result.proposed[0]) == ("orange", "red")


def test_escalation_flags_read_serious_complaints_in_the_last_30_days() -> None:
    features = pd.DataFrame({"serious_complaints_30d": [0, 1, 3]})
    assert list(escalation_flags(features, TierConfig())) == [False, True, True]
    off = TierConfig(escalate_serious_complaints=False)
    assert list(escalation_flags(features, off)) == [False, False, False]
    assert list(escalation_flags(pd.DataFrame({"x": [1]}), TierConfig())) == [False]


def test_the_policy_description_states_capacities_ratios_and_base_rate() -> None:
    text = describe_policy(TierConfig(), base_rate=0.058)
    assert text.startswith(
        "relative capacity: per owner, red = the 10 highest expected losses (p × value) among"
        " customers at ≥ 3× the base rate, orange = the next 30 at ≥ 1.5× the base rate;"
        " base rate 5.8%"
    )
    assert "at most 15 per owner" in text and "by 10%" in text


def test_on_a_purchase_log_base_rate_red_is_small_and_holds_the_most_churn() -> None:
    """A 75 % base rate: 2,000 customers of 4 owners with probabilities that are right on
    average; red stays ≤ 25 % of the base, red churns most and green least."""
    rng = np.random.default_rng(7)
    p = np.clip(rng.beta(6, 2, 2000), 0.01, 0.999)
    churned = rng.random(2000) < p
    owner = np.array(["a", "b", "c", "d"], dtype=object)[rng.integers(0, 4, 2000)]
    value = rng.gamma(2.0, 50.0, 2000)
    got = np.array(tiers(TierConfig(), p, value, owner=owner, base=float(churned.mean())))
    rate = {t: churned[got == t].mean() for t in ("red", "orange", "green")}
    assert (got == "red").mean() <= 0.25
    assert rate["red"] > rate["orange"] > rate["green"]


def test_value_comes_from_spend_history_when_there_is_no_mrr() -> None:
    from pipeline.config import ValueConfig
    from pipeline.score import customer_value, monthly_value

    frame = pd.DataFrame(
        {
            "mrr": [50.0, 0.0, 0.0, np.nan],
            "spend_365d": [999.0, 1200.0, 300.0, 0.0],
            "tenure_days": [800.0, 400.0, 73.0, 10.0],
        }
    )
    # a year of spend ÷ 12; 300 over 73 days annualised (×5); nothing spent: 0
    monthly = monthly_value(frame, ValueConfig())
    np.testing.assert_allclose(monthly, [50.0, 100.0, 125.0, 0.0])
    np.testing.assert_allclose(monthly_value(frame, ValueConfig(monthly="mrr")), [50, 0, 0, 0])
    value = customer_value(monthly, np.full(4, 0.5), ValueConfig(), 90)
    np.testing.assert_allclose(value, [600.0, 1200.0, 1500.0, 0.0])


def test_list_outcomes_report_length_churn_and_coverage_of_the_list() -> None:
    from pipeline.report import list_outcomes

    backtest = pd.DataFrame(
        {
            "as_of": pd.Timestamp("2025-01-01"),
            "owner": ["a", "a", "b", "b", "b"],
            "tier": ["red", "green", "orange", "green", "green"],
            "churned": [1, 0, 1, 1, 0],
            "churn_probability": [0.8, 0.1, 0.5, 0.3, 0.1],
            "customer_value": [100.0, 100.0, 200.0, 100.0, 100.0],
            "escalated_by": [None, None, "serious complaint in the last 30 days", None, None],
        }
    )
    out = list_outcomes(backtest)
    assert out["listed_per_owner_max"] == 1
    assert out["listed_churn_over_base"] == pytest.approx(1.0 / 0.6)
    assert out["churners_covered"] == pytest.approx(2 / 3)
    assert out["revenue_at_risk_covered"] == pytest.approx(180 / 230)
    assert out["listed_below_base_rate_unescalated"] == 0
