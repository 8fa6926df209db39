"""Reasons and actions: top positive TreeSHAP contributions → sentences → an action."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline.config import ExplainConfig
from pipeline.explain import (
    explain,
    format_values,
    put_first,
    reference_values,
    sentences,
    top_positive,
    upsell_candidates,
)

pytestmark = pytest.mark.code
ACTIONS = ExplainConfig().actions


def test_sentences_use_the_customers_own_value_and_the_reference() -> None:
    text = sentences("days_since_last_login", np.array([34.4, 1.0, np.nan]), 3.0)
    assert list(text) == [
        "no login for 34 days; typical healthy customer: 3",
        "no login for 1 day; typical healthy customer: 3",
        "no login for n/a days; typical healthy customer: 3",
    ]


def test_sentences_for_counts_shares_and_unknown_features() -> None:
    assert list(sentences("complaints_90d", np.array([2, 1]), 0.0)) == [
        "2 complaints in the last 90 days; typical healthy customer: 0",
        "1 complaint in the last 90 days; typical healthy customer: 0",
    ]
    assert list(sentences("feature_breadth_90d", np.array([0.125]), 0.5)) == [
        "uses 12% of the product's features (90 days); typical healthy customer: 50%"
    ]
    assert list(sentences("max_severity_90d", np.array([4]), 0.0)) == [
        "worst complaint or ticket in 90 days: critical"
    ]
    assert list(sentences("lifecycle_stage", np.array(["onboarding"], dtype=object), None)) == [
        "onboarding stage"
    ]
    assert list(sentences("widgets", np.array([7.0]), None)) == ["widgets = 7"]


def test_format_values_writes_signed_changes_and_ratios() -> None:
    assert list(format_values(np.array([-3.2, 0.0, 4.6]), "signed")) == ["-3", "0", "+5"]
    assert list(format_values(np.array([0.5, 1.25]), "ratio")) == ["50%", "125%"]


def test_top_positive_keeps_only_positive_contributions_largest_first() -> None:
    contributions = np.array([[0.1, -0.2, 0.5, 0.0], [-0.1, -0.2, -0.3, -0.4]])
    index, value = top_positive(contributions, 3)
    assert index.tolist() == [[2, 0, -1], [-1, -1, -1]]
    np.testing.assert_array_equal(value[0, :2], [0.5, 0.1])
    assert np.isnan(value[1]).all()


def test_put_first_moves_the_escalating_complaint_to_reason_one() -> None:
    contributions = np.array([[0.5, 0.3, 0.01], [0.5, 0.3, 0.01]])
    index, value = top_positive(contributions, 2)
    index, value = put_first(index, value, contributions, 2, np.array([True, False]))
    assert index.tolist() == [[2, 0], [0, 1]]
    np.testing.assert_array_equal(value, [[0.01, 0.5], [0.5, 0.3]])


def test_reference_is_the_median_among_healthy_customers() -> None:
    frame = pd.DataFrame({"days_since_last_login": [1.0, 3.0, 5.0, 90.0], "plan": list("abcd")})
    healthy = np.array([True, True, True, False])
    refs = reference_values(frame, healthy, ["days_since_last_login", "plan"])
    assert refs == {"days_since_last_login": 3.0}


def _tiny_model(n: int = 4000, seed: int = 0) -> tuple[lgb.Booster, pd.DataFrame]:
    """Churn is driven by days since the last login (> 30 days); the other features are noise."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "days_since_last_login": rng.uniform(0, 60, n),
            "events_30d": rng.integers(0, 40, n).astype("int64"),
            "mrr": rng.uniform(10, 200, n),
        }
    )
    y = (X["days_since_last_login"] > 30).to_numpy() ^ (rng.random(n) < 0.05)
    model = lgb.LGBMClassifier(
        n_estimators=30, num_leaves=4, learning_rate=0.2, verbose=-1, random_state=seed
    )
    return model.fit(X, y).booster_, X


def test_the_dominant_feature_of_a_tiny_model_is_reason_one_with_its_action() -> None:
    booster, X = _tiny_model()
    names = list(X.columns)
    customers = pd.DataFrame({"days_since_last_login": [45.0], "events_30d": [20], "mrr": [100.0]})
    contributions = booster.predict(customers, pred_contrib=True)
    out = explain(customers, contributions, names, {"days_since_last_login": 3.0}, ACTIONS)
    assert out.loc[0, "reason_1_feature"] == "days_since_last_login"
    assert out.loc[0, "reason_1_value"] == 45.0
    assert out.loc[0, "reason_1_contribution"] > 1.0
    assert out.loc[0, "reason_1_sentence"] == "no login for 45 days; typical healthy customer: 3"
    assert out.loc[0, "reason_family"] == "inactivity"
    assert out.loc[0, "recommended_action"] == ACTIONS["inactivity"]
    assert out.loc[0, "reasons"].startswith("no login for 45 days")


def test_a_recent_login_is_never_a_reason() -> None:
    booster, X = _tiny_model()
    customers = pd.DataFrame({"days_since_last_login": [2.0], "events_30d": [20], "mrr": [100.0]})
    out = explain(
        customers, booster.predict(customers, pred_contrib=True), list(X.columns), {}, ACTIONS
    )
    assert "days_since_last_login" not in set(
        out.loc[0, ["reason_1_feature", "reason_2_feature", "reason_3_feature"]].dropna()
    )


def test_a_required_row_without_positive_contributions_still_gets_a_reason() -> None:
    frame = pd.DataFrame({"tickets_90d": [4], "mrr": [50.0]})
    contributions = np.array([[-0.1, -0.3, -2.0]])
    out = explain(frame, contributions, ["tickets_90d", "mrr"], {}, ACTIONS, required=[True])
    assert out.loc[0, "reason_1_feature"] == "tickets_90d"
    assert out.loc[0, "recommended_action"] == ACTIONS["support"]
    empty = explain(frame, contributions, ["tickets_90d", "mrr"], {}, ACTIONS)
    assert pd.isna(empty.loc[0, "reason_1_sentence"]) and pd.isna(empty.loc[0, "reasons"])


def test_lifecycle_reasons_map_to_onboarding_only_for_new_customers() -> None:
    frame = pd.DataFrame(
        {
            "tenure_days": [20.0, 500.0],
            "lifecycle_stage": pd.Categorical(["onboarding", "mature"]),
        }
    )
    contributions = np.array([[0.8, 0.1, -2.0], [0.8, 0.1, -2.0]])
    out = explain(frame, contributions, ["tenure_days", "lifecycle_stage"], {}, ACTIONS)
    assert list(out["reason_family"]) == ["onboarding", "other"]
    assert list(out["recommended_action"]) == [ACTIONS["onboarding"], ACTIONS["other"]]
    assert list(out["reason_1_sentence"]) == ["customer for 20 days", "customer for 500 days"]
    assert list(out["reasons"]) == [
        "customer for 20 days | onboarding stage",
        "customer for 500 days | mature stage",
    ]


def test_upsell_candidates_are_green_valuable_and_engaged() -> None:
    frame = pd.DataFrame({"active_days_30d": [20, 20, 2, 25], "distinct_features_90d": [5] * 4})
    tier = np.array(["green", "red", "green", "green"])
    value = np.array([1000.0, 1000.0, 1000.0, 10.0])
    refs = {"active_days_30d": 10.0, "distinct_features_90d": 5.0}
    assert list(upsell_candidates(frame, tier, value, refs)) == [True, False, False, False]
