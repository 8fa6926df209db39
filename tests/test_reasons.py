"""Reason sentences per family from literal values (exact text) and the action that follows them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ACTIONS
from pipeline.explain import CONTEXT, PHRASES, explain, reference_values, signals_present

pytestmark = pytest.mark.code


def first_reason(feature: str, value, stage: str | None = None, refs=None):
    """(reason 1 sentence, action) when ``feature`` holds ``value`` and pushes the risk up."""
    frame = pd.DataFrame({feature: [value]})
    names = [feature]
    contributions = [[1.0, 0.0]]
    if stage is not None:
        frame["lifecycle_stage"] = pd.Categorical([stage], ["onboarding", "renewal", "mature"])
        names, contributions = [feature, "lifecycle_stage"], [[1.0, -1.0, 0.0]]
    out = explain(frame, np.array(contributions), names, refs, ACTIONS, present=set(names))
    sentence = out.loc[0, "reason_1_sentence"]
    return (None if pd.isna(sentence) else sentence), out.loc[0, "recommended_action"]


@pytest.mark.parametrize(
    ("feature", "value", "sentence", "family"),
    [
        ("days_since_last_login", 34.0, "no login for 34 days", "inactivity"),
        ("days_since_last_login", float("nan"), "never logged in", "inactivity"),
        ("days_since_last_activity", 1.0, "no use for 1 day", "inactivity"),
        ("logins_30d", 0, "no login in the last 30 days", "inactivity"),
        ("logins_30d", 1, "1 login in the last 30 days", "inactivity"),
        ("events_7d", 4, "4 events of any kind in the last 7 days", "inactivity"),
        ("active_days_30d", 3, "active on 3 of the last 30 days", "inactivity"),
        ("logins_30d_vs_prev_30d", 0.4, "logins down to 40% of the previous 30 days", "inactivity"),
        (
            "active_days_30d_change",
            -5,
            "5 fewer active days than in the previous 30 days",
            "inactivity",
        ),
        ("distinct_features_90d", 1, "used 1 distinct feature in the last 90 days", "narrow_use"),
        (
            "feature_breadth_90d",
            0.125,
            "uses 12% of the product's features (last 90 days)",
            "narrow_use",
        ),
        ("complaints_90d", 2, "2 complaints in the last 90 days", "complaint"),
        (
            "serious_complaints_30d",
            1,
            "1 serious complaint or ticket in the last 30 days",
            "complaint",
        ),
        ("max_severity_90d", 3, "worst complaint or ticket in the last 90 days: high", "complaint"),
        ("days_since_last_complaint", 12.0, "last complaint 12 days ago", "complaint"),
        ("days_since_last_purchase", 47.6, "no purchase for 48 days", "inactivity"),
        ("days_since_last_purchase", float("nan"), "no purchase yet", "inactivity"),
        (
            "repeat_purchases_lifetime",
            0,
            "never bought again after the first purchase",
            "inactivity",
        ),
        (
            "repeat_purchases_lifetime",
            1,
            "bought again on 1 day after the first purchase",
            "inactivity",
        ),
        ("overdue_ratio", 2.44, "quiet for 2.4× their usual gap between active days", "inactivity"),
        ("active_days_365d", 0, "not active in the last 365 days", "inactivity"),
        ("events_180d", 3, "3 events of any kind in the last 180 days", "inactivity"),
        ("spend_per_purchase_lifetime", 1234.4, "spends 1,234 per purchase", "value"),
        ("tickets_30d", 3, "3 support tickets in the last 30 days", "support"),
        ("payment_failures_90d", 3, "3 failed payments in the last 90 days", "payment"),
        ("days_to_anniversary", 49.0, "renewal in 49 days", "renewal"),
        ("days_to_anniversary", 0.0, "renewal due today", "renewal"),
        ("mrr_change_90d", -1500.0, "MRR down by 1,500 in the last 90 days", "value"),
        ("spend_365d", 1234567.0, "spent 1,234,567 in the last 365 days", "value"),
        ("plan", "Pro", "on the Pro plan", "value"),
        ("mystery_score_30d", 7.0, "mystery_score_30d: 7", "other"),
    ],
)
def test_each_family_reads_its_sentence_and_takes_its_action(
    feature: str, value, sentence: str, family: str
) -> None:
    assert first_reason(feature, value) == (sentence, ACTIONS[family])


def test_a_new_customers_tenure_is_context_with_the_onboarding_action() -> None:
    assert first_reason("tenure_days", 70.0, stage="onboarding") == (
        "3rd month as a customer",
        ACTIONS["onboarding"],
    )
    assert first_reason("tenure_days", 800.0, stage="mature") == (
        "year 3 as a customer",
        ACTIONS["other"],
    )
    assert first_reason("lifecycle_stage", "onboarding")[0] == "new customer, still onboarding"


@pytest.mark.parametrize(
    ("feature", "value"),
    [
        ("days_since_last_login", 0.0),
        ("days_since_last_login", 0.3),
        ("complaints_30d", 0),
        ("days_since_last_complaint", float("nan")),
        ("logins_30d_vs_prev_30d", 1.5),
        ("active_days_30d_change", 3),
        ("mrr_change_90d", 20.0),
        ("mrr", 0.0),
        ("payment_failures_30d", 0),
    ],
)
def test_values_that_mean_nothing_are_no_reason(feature: str, value) -> None:
    assert first_reason(feature, value)[0] is None


def test_usage_is_compared_with_low_risk_peers_of_the_same_stage_named_as_such() -> None:
    peers = pd.DataFrame(
        {
            "days_since_last_activity": [3.0, 5.0, 60.0],
            "lifecycle_stage": pd.Categorical(["mature", "renewal", "mature"]),
        }
    )
    refs = reference_values(peers, np.array([True, True, False]), ["days_since_last_activity"])
    sentence, action = first_reason("days_since_last_activity", 34.0, "mature", refs)
    assert sentence == "no use for 34 days (median of low-risk long-standing customers: 3)"
    assert action == ACTIONS["inactivity"]
    assert first_reason("days_since_last_activity", 3.0, "mature", refs)[0] == "no use for 3 days"


def test_usage_on_the_healthy_side_of_the_peers_is_no_reason() -> None:
    peers = pd.DataFrame(
        {
            "active_days_30d": [10.0, 10.0],
            "days_since_last_login": [5.0, 5.0],
            "lifecycle_stage": pd.Categorical(["mature", "mature"]),
        }
    )
    names = ["active_days_30d", "days_since_last_login"]
    refs = reference_values(peers, np.array([True, True]), names)
    assert first_reason("active_days_30d", 25, "mature", refs)[0] is None
    assert first_reason("days_since_last_login", 2.0, "mature", refs)[0] is None
    assert first_reason("active_days_30d", 4, "mature", refs)[0] == (
        "active on 4 of the last 30 days (median of low-risk long-standing customers: 10)"
    )


def test_context_features_are_never_compared() -> None:
    peers = pd.DataFrame({name: [10.0] for name in ("tenure_days", "days_to_anniversary")})
    refs = reference_values(peers, np.array([True]), ["tenure_days", "days_to_anniversary"])
    assert refs.columns.empty
    assert {
        "tenure_days",
        "days_to_anniversary",
        "plan",
        "lifecycle_stage",
        "mean_gap_days",
        "days_since_first_purchase",
    } == set(CONTEXT)
    assert not any(PHRASES[name].compare for name in CONTEXT)


def test_no_sentence_reads_nan_or_zero_days_whatever_the_value() -> None:
    for feature, phrase in PHRASES.items():
        values = ["Pro", None] if phrase.fmt in ("text", "stage") else [0, 0.2, np.nan, 1, 34.6]
        for value in values:
            sentence = first_reason(feature, value)[0] or ""
            assert "nan" not in sentence.lower() and "n/a" not in sentence, (feature, value)
            assert " 0 day" not in sentence and not sentence.startswith("0 "), (feature, value)


def test_a_signal_family_the_log_lacks_gives_no_reason_and_the_next_reason_leads() -> None:
    frame = pd.DataFrame(
        {
            "days_since_last_complaint": [np.nan, np.nan],
            "complaints_90d": [0, 0],
            "logins_30d": [0, 2],
        }
    )
    names = list(frame.columns)
    present = signals_present(frame, names)
    assert present == {"logins_30d"}
    contributions = np.array([[2.0, 1.5, 0.5, 0.0], [2.0, 1.5, 0.5, 0.0]])
    out = explain(frame, contributions, names, None, ACTIONS, present=present)
    assert list(out["reason_1_sentence"]) == [
        "no login in the last 30 days",
        "2 logins in the last 30 days",
    ]
    assert list(out["recommended_action"]) == [ACTIONS["inactivity"]] * 2
    assert out["reason_2_sentence"].isna().all()


def test_the_action_follows_the_first_reason_shown_not_a_skipped_one() -> None:
    frame = pd.DataFrame({"payment_failures_90d": [0], "days_to_anniversary": [20.0]})
    names = list(frame.columns)
    out = explain(frame, np.array([[3.0, 1.0, 0.0]]), names, None, ACTIONS, present=set(names))
    assert out.loc[0, "reason_1_sentence"] == "renewal in 20 days"
    assert out.loc[0, "recommended_action"] == ACTIONS["renewal"]


def test_the_catalogue_holds_an_action_per_family_of_the_seeds() -> None:
    for family in (
        "inactivity",
        "narrow_use",
        "complaint",
        "payment",
        "onboarding",
        "renewal",
        "upsell",
    ):
        assert ACTIONS[family]


def test_an_overdue_ratio_near_or_below_one_is_no_reason() -> None:
    assert first_reason("overdue_ratio", 0.8)[0] is None
    assert first_reason("overdue_ratio", 1.02)[0] is None


def test_fills_of_an_absent_family_are_no_evidence_that_it_occurs() -> None:
    # A purchase log: no login ever, so recency falls back to tenure and the ratio to 1.0.
    frame = pd.DataFrame(
        {
            "days_since_last_login": [400.0, 35.0],
            "logins_30d_vs_prev_30d": [1.0, 1.0],
            "logins_30d": [0, 0],
            "days_since_last_purchase": [40.0, 3.0],
            "purchases_lifetime": [2, 5],
        }
    )
    present = signals_present(frame, list(frame.columns))
    assert present == {"days_since_last_purchase", "purchases_lifetime"}
