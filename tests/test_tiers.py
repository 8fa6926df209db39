"""Tier policies on hand-made calibrated probabilities: exact tiers at and around each cut-off."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import TierConfig
from pipeline.tiers import assign_tiers, describe_policy, escalation_flags

pytestmark = pytest.mark.code


def test_thresholds_put_a_probability_equal_to_a_cut_off_in_the_higher_tier() -> None:
    policy = TierConfig(policy="thresholds", red_threshold=0.5, orange_threshold=0.2)
    p = np.array([0.0, 0.1999, 0.2, 0.4999, 0.5, 1.0])
    assert list(assign_tiers(p, policy)) == ["green", "green", "orange", "orange", "red", "red"]


def test_capacity_makes_red_the_top_k_expected_losses_and_orange_the_next_m() -> None:
    policy = TierConfig(policy="capacity", capacity_red=1, capacity_orange=2)
    p = np.array([0.9, 0.1, 0.5, 0.3, 0.2])
    value = np.array([1.0, 100.0, 1.0, 1.0, 1.0])  # expected losses 0.9, 10, 0.5, 0.3, 0.2
    assert list(assign_tiers(p, policy, value)) == ["orange", "red", "orange", "green", "green"]


def test_capacity_breaks_ties_by_row_order() -> None:
    policy = TierConfig(policy="capacity", capacity_red=1, capacity_orange=1)
    tiers = assign_tiers(np.array([0.4, 0.4, 0.4]), policy, np.ones(3))
    assert list(tiers) == ["red", "orange", "green"]


def test_expected_value_contacts_only_when_the_saving_exceeds_the_contact_cost() -> None:
    policy = TierConfig(
        policy="expected_value", save_rate=0.5, contact_cost=10.0, red_value_multiple=3.0
    )
    p = np.array([0.5, 0.2, 0.5, 0.5, 0.6])
    value = np.array([10.0, 100.0, 50.0, 120.0, 200.0])
    # savings p × value × 0.5: 2.5, 10 (= cost, not above), 12.5, 30 (= 3 × cost), 60
    assert list(assign_tiers(p, policy, value)) == ["green", "green", "orange", "red", "red"]


def test_expected_value_without_a_value_per_customer_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs a value per customer"):
        assign_tiers(np.array([0.5]), TierConfig(policy="expected_value"))


def test_escalation_lifts_green_to_orange_and_never_lowers_red() -> None:
    policy = TierConfig(red_threshold=0.5, orange_threshold=0.2)
    p = np.array([0.05, 0.05, 0.3, 0.9])
    escalate = np.array([True, False, True, True])
    assert list(assign_tiers(p, policy, escalate=escalate)) == ["orange", "green", "orange", "red"]


def test_escalation_flags_read_serious_complaints_in_the_last_30_days() -> None:
    features = pd.DataFrame({"serious_complaints_30d": [0, 1, 3]})
    on = TierConfig(escalate_serious_complaints=True)
    off = TierConfig(escalate_serious_complaints=False)
    assert list(escalation_flags(features, on)) == [False, True, True]
    assert list(escalation_flags(features, off)) == [False, False, False]


def test_the_policy_description_states_cut_offs_and_escalation() -> None:
    text = describe_policy(TierConfig(red_threshold=0.6, orange_threshold=0.25))
    assert text.startswith("thresholds: red ≥ 0.6, orange ≥ 0.25")
    assert "escalation" in text
    capacity = describe_policy(
        TierConfig(policy="capacity", capacity_red=5, escalate_serious_complaints=False)
    )
    assert capacity == "capacity: red = top 5 by expected loss, orange = next 800"
