"""Reasons and actions: top positive TreeSHAP contributions → sentences → an action."""

from __future__ import annotations

import time

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline.config import ExplainConfig
from pipeline.explain import (
    PHRASES,
    explain,
    put_first,
    reference_values,
    sentences,
    top_positive,
    upsell_candidates,
    written,
)

pytestmark = pytest.mark.code
ACTIONS = ExplainConfig().actions


def test_sentences_write_the_customers_own_value_and_skip_what_means_nothing() -> None:
    text = sentences(PHRASES["days_since_last_login"], np.array([34.4, 1.0, np.nan, 0.0]))
    assert list(text) == ["no login for 34 days", "no login for 1 day", "never logged in", None]


def test_money_is_written_with_thousands_separators() -> None:
    values = np.array([0.4, 999.0, 1000.0, 123456.0, 1234567.0])
    assert list(written(values, "money")) == ["0", "999", "1,000", "123,456", "1,234,567"]


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


def test_references_are_medians_of_low_risk_customers_per_stage_and_overall() -> None:
    frame = pd.DataFrame(
        {
            "days_since_last_login": [1.0, 3.0, 5.0, 90.0],
            "plan": list("abcd"),
            "lifecycle_stage": pd.Categorical(["mature", "mature", "renewal", "renewal"]),
        }
    )
    low_risk = np.array([True, True, True, False])
    refs = reference_values(frame, low_risk, ["days_since_last_login", "plan"])
    expected = pd.DataFrame(
        {"days_since_last_login": [2.0, 5.0, 3.0]}, index=["mature", "renewal", "all"]
    )
    pd.testing.assert_frame_equal(refs, expected)


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
        n_estimators=30, num_leaves=4, learning_rate=0.2, verbose=-1, random_state=seed, n_jobs=1
    )
    return model.fit(X, y).booster_, X


def test_the_dominant_feature_of_a_tiny_model_is_reason_one_with_its_action() -> None:
    booster, X = _tiny_model()
    names = list(X.columns)
    customers = pd.DataFrame({"days_since_last_login": [45.0], "events_30d": [20], "mrr": [100.0]})
    contributions = booster.predict(customers, pred_contrib=True)
    refs = pd.DataFrame({"days_since_last_login": [3.0]}, index=["all"])
    out = explain(customers, contributions, names, refs, ACTIONS)
    assert out.loc[0, "reason_1_feature"] == "days_since_last_login"
    assert out.loc[0, "reason_1_value"] == 45.0
    assert out.loc[0, "reason_1_contribution"] > 1.0
    assert (
        out.loc[0, "reason_1_sentence"] == "no login for 45 days (median of low-risk customers: 3)"
    )
    assert out.loc[0, "reason_family"] == "inactivity"
    assert out.loc[0, "recommended_action"] == ACTIONS["inactivity"]
    assert out.loc[0, "reasons"].startswith("no login for 45 days")


def test_a_recent_login_is_never_a_reason() -> None:
    booster, X = _tiny_model()
    customers = pd.DataFrame({"days_since_last_login": [2.0], "events_30d": [20], "mrr": [100.0]})
    out = explain(
        customers, booster.predict(customers, pred_contrib=True), list(X.columns), None, ACTIONS
    )
    assert "days_since_last_login" not in set(
        out.loc[0, ["reason_1_feature", "reason_2_feature", "reason_3_feature"]].dropna()
    )


def test_a_required_row_without_positive_contributions_still_gets_a_reason() -> None:
    frame = pd.DataFrame({"tickets_90d": [4], "mrr": [50.0]})
    contributions = np.array([[-0.1, -0.3, -2.0]])
    out = explain(frame, contributions, ["tickets_90d", "mrr"], None, ACTIONS, required=[True])
    assert out.loc[0, "reason_1_feature"] == "tickets_90d"
    assert out.loc[0, "recommended_action"] == ACTIONS["support"]
    empty = explain(frame, contributions, ["tickets_90d", "mrr"], None, ACTIONS)
    assert pd.isna(empty.loc[0, "reason_1_sentence"]) and pd.isna(empty.loc[0, "reasons"])


def test_lifecycle_reasons_map_to_onboarding_only_for_new_customers() -> None:
    frame = pd.DataFrame(
        {
            "tenure_days": [20.0, 500.0],
            "lifecycle_stage": pd.Categorical(["onboarding", "mature"]),
        }
    )
    contributions = np.array([[0.8, 0.1, -2.0], [0.8, 0.1, -2.0]])
    out = explain(frame, contributions, ["tenure_days", "lifecycle_stage"], None, ACTIONS)
    assert list(out["reason_family"]) == ["onboarding", "other"]
    assert list(out["recommended_action"]) == [ACTIONS["onboarding"], ACTIONS["other"]]
    assert list(out["reasons"]) == [
        "1st month as a customer | new customer, still onboarding",
        "17th month as a customer | long-standing customer",
    ]


def test_explaining_stays_within_a_tenth_of_a_millisecond_per_customer() -> None:
    n, names = 20_000, ["days_since_last_login", "logins_30d", "complaints_90d", "tenure_days"]
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "days_since_last_login": rng.uniform(0, 90, n),
            "logins_30d": rng.integers(0, 9, n),
            "complaints_90d": rng.integers(0, 3, n),
            "tenure_days": rng.uniform(0, 900, n),
        }
    )
    contributions = np.column_stack([rng.normal(size=(n, 4)), np.zeros(n)])
    refs = reference_values(frame, rng.random(n) < 0.5, names)
    start = time.perf_counter()
    out = explain(frame, contributions, names, refs, ACTIONS)
    per_customer_ms = (time.perf_counter() - start) * 1000 / n
    assert out["reason_1_sentence"].notna().sum() > n / 2
    assert per_customer_ms <= 0.1, per_customer_ms


def test_upsell_candidates_are_green_valuable_and_engaged() -> None:
    frame = pd.DataFrame({"active_days_30d": [20, 20, 2, 25], "distinct_features_90d": [5] * 4})
    tier = np.array(["green", "red", "green", "green"])
    value = np.array([1000.0, 1000.0, 1000.0, 10.0])
    refs = pd.DataFrame({"active_days_30d": [10.0], "distinct_features_90d": [5.0]}, index=["all"])
    assert list(upsell_candidates(frame, tier, value, refs)) == [True, False, False, False]
