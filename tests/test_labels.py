"""Labels look only at [as_of, as_of + horizon); unknown outcomes are NaN, never 0."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import LabelConfig
from pipeline.events import ValidatedData
from pipeline.features import FEATURE_WINDOW_DAYS, DailyLog, build_daily_log
from pipeline.features.grid import build_grid
from pipeline.labels import build_labels, in_base, label_known, lapsed, lookback_days

pytestmark = pytest.mark.code

T = pd.Timestamp
A = T("2025-03-01")
OBSERVED_UNTIL = T("2025-07-01")
CANCELLATION_30D = LabelConfig(definition="cancellation", horizon_days=30)
INACTIVITY_30D = LabelConfig(
    definition="inactivity",
    horizon_days=30,
    qualifying_families=["login", "purchase"],
    active_window_days=60,
)

LoadDaily = Callable[..., tuple[ValidatedData, DailyLog]]


def customers(rows: list[tuple]) -> pd.DataFrame:
    """Customers from (customer_id, signup_at[, churned_at]) tuples."""
    return pd.DataFrame(
        [(*r, None)[:3] for r in rows], columns=["customer_id", "signup_at", "churned_at"]
    )


def log(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "occurred_at", "event_type"])


def labels(
    load_daily: LoadDaily,
    events: pd.DataFrame,
    table: pd.DataFrame,
    config: LabelConfig,
    as_of: list[pd.Timestamp],
    observed_until: pd.Timestamp = OBSERVED_UNTIL,
) -> pd.DataFrame:
    data, daily = load_daily(events, table, qualifying=config.qualifying_families)
    grid = build_grid(daily, data.customers, pd.DatetimeIndex(as_of))
    return build_labels(grid, config, observed_until)


def expected(ids: list[str], churned: list[float], as_of: list | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(ids, dtype="str"),
            "as_of": pd.to_datetime(as_of or [A] * len(ids)).as_unit("us"),
            "churned": np.asarray(churned, dtype=np.float64),
        }
    )


ONE_LOGIN = log([("c1", "2025-01-01", "login")])


def test_cancellation_window_is_half_open_from_as_of_to_as_of_plus_horizon(
    load_daily: LoadDaily,
) -> None:
    table = customers(
        [
            ("c1", "2024-01-01", "2025-03-01 00:00:00"),  # exactly at as_of: inside
            ("c2", "2024-01-01", "2025-03-30 23:59:59.999999"),  # a microsecond before the end
            ("c3", "2024-01-01", "2025-03-31 00:00:00"),  # exactly at as_of + horizon: outside
            ("c4", "2024-01-01"),  # never churns
            ("c5", "2024-01-01", "2025-04-15"),  # churns after the window
        ]
    )
    got = labels(load_daily, ONE_LOGIN, table, CANCELLATION_30D, [A])
    want = expected(["c1", "c2", "c3", "c4", "c5"], [1.0, 1.0, 0.0, 0.0, 0.0])
    pd.testing.assert_frame_equal(got, want)


def test_customers_churned_before_or_signing_up_at_or_after_as_of_are_absent(
    load_daily: LoadDaily,
) -> None:
    table = customers(
        [
            ("c1", "2024-01-01"),
            ("c2", "2024-01-01", "2025-02-28 23:59:59.999999"),  # churned before as_of
            ("c3", "2024-01-01", "2024-06-01"),  # churned long before
            ("c4", "2025-03-01 00:00:00"),  # signs up exactly at as_of
            ("c5", "2025-03-10"),  # signs up after as_of
            ("c6", "2025-02-28 23:59:59.999999", "2025-03-02"),  # signs up just before, churns
        ]
    )
    got = labels(load_daily, ONE_LOGIN, table, CANCELLATION_30D, [A])
    pd.testing.assert_frame_equal(got, expected(["c1", "c6"], [0.0, 1.0]))


def test_a_label_whose_window_runs_past_observed_until_is_unknown_never_zero(
    load_daily: LoadDaily,
) -> None:
    table = customers([("c1", "2024-01-01"), ("c2", "2024-01-01", "2025-06-20")])
    as_of = [T("2025-05-01"), T("2025-06-01"), T("2025-06-02")]
    got = labels(load_daily, ONE_LOGIN, table, CANCELLATION_30D, as_of)
    want = expected(
        ["c1", "c2", "c1", "c2", "c1", "c2"],
        [0.0, 0.0, 0.0, 1.0, np.nan, np.nan],
        [as_of[0], as_of[0], as_of[1], as_of[1], as_of[2], as_of[2]],
    )
    pd.testing.assert_frame_equal(got, want)


def test_a_window_ending_exactly_at_observed_until_is_known() -> None:
    as_of = pd.Series(pd.to_datetime(["2025-06-01", "2025-06-02"]))
    assert label_known(as_of, 30, T("2025-07-01")).tolist() == [True, False]


def test_inactivity_is_churn_when_no_qualifying_event_falls_in_the_window(
    load_daily: LoadDaily,
) -> None:
    table = customers([(f"c{i}", "2024-01-01") for i in range(1, 9)])
    events = log(
        [
            ("c1", "2025-02-20", "login"),
            ("c1", "2025-03-30 23:59:59.999999", "purchase"),  # last instant of the window
            ("c2", "2025-02-20", "login"),  # nothing after as_of
            ("c3", "2025-02-20", "login"),
            ("c3", "2025-03-31 00:00:00", "purchase"),  # exactly at as_of + horizon: outside
            ("c4", "2025-02-01", "login"),
            ("c4", "2025-03-01 00:00:00", "purchase"),  # exactly at as_of: inside
            ("c5", "2025-02-10", "login"),
            ("c5", "2025-03-05", "complaint"),  # not a qualifying family
            ("c5", "2025-03-06", "newsletter_opened"),  # unmapped: not qualifying either
            ("c6", "2024-12-30 23:59:59.999999", "login"),  # before the active window: lapsed
            ("c6", "2025-02-15", "complaint"),  # not qualifying, so still lapsed
            ("c6", "2025-03-05", "login"),
            ("c7", "2024-12-31 00:00:00", "login"),  # first instant of the active window
        ]
    )
    got = labels(load_daily, events, table, INACTIVITY_30D, [A])
    want = expected(["c1", "c2", "c3", "c4", "c5", "c7"], [0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    pd.testing.assert_frame_equal(got, want)


def test_an_inactivity_label_past_observed_until_is_unknown(load_daily: LoadDaily) -> None:
    table = customers([("c1", "2024-01-01"), ("c2", "2024-01-01")])
    events = log(
        [
            ("c1", "2025-02-20", "login"),
            ("c2", "2025-02-20", "login"),
            ("c2", "2025-03-02", "login"),
        ]
    )
    got = labels(load_daily, events, table, INACTIVITY_30D, [A], observed_until=T("2025-03-15"))
    pd.testing.assert_frame_equal(got, expected(["c1", "c2"], [np.nan, np.nan]))


def test_the_inactivity_base_also_excludes_customers_churned_or_not_yet_signed_up(
    load_daily: LoadDaily,
) -> None:
    table = customers(
        [("c1", "2024-01-01"), ("c2", "2024-01-01", "2025-02-25"), ("c3", "2025-03-01")]
    )
    events = log(
        [
            ("c1", "2025-02-20", "login"),
            ("c2", "2025-02-20", "login"),
            ("c3", "2025-02-20", "login"),
        ]
    )
    got = labels(load_daily, events, table, INACTIVITY_30D, [A])
    pd.testing.assert_frame_equal(got, expected(["c1"], [1.0]))


def test_labels_for_several_as_of_dates_come_ordered_by_as_of_then_customer(
    load_daily: LoadDaily,
) -> None:
    table = customers([("c2", "2024-01-01", "2025-02-10"), ("c1", "2024-01-01")])
    dates = [T("2025-02-01"), T("2025-01-01")]
    got = labels(load_daily, ONE_LOGIN, table, CANCELLATION_30D, dates)
    want = expected(
        ["c1", "c2", "c1", "c2"],
        [0.0, 0.0, 0.0, 1.0],
        [T("2025-01-01"), T("2025-01-01"), T("2025-02-01"), T("2025-02-01")],
    )
    pd.testing.assert_frame_equal(got, want)


INACTIVITY_ALL = INACTIVITY_30D.model_copy(update={"active_window_days": None})
LAPSING = log(
    [
        ("c1", "2025-02-20", "login"),  # active recently
        ("c2", "2024-03-01", "purchase"),  # active once, a year ago: lapsed under a 60-day window
        ("c2", "2025-02-15", "complaint"),  # not qualifying
        ("c3", "2025-02-15", "complaint"),  # never a qualifying event: never in the base
        ("c4", "2025-03-01", "login"),  # first qualifying event exactly at as_of: the future
    ]
)
LAPSING_CUSTOMERS = customers([(f"c{i}", "2024-01-01") for i in range(1, 5)])


def test_by_default_the_inactivity_base_is_everyone_with_a_qualifying_event_before_as_of(
    load_daily: LoadDaily,
) -> None:
    assert LabelConfig(definition="inactivity").active_window_days is None
    got = labels(load_daily, LAPSING, LAPSING_CUSTOMERS, INACTIVITY_ALL, [A])
    pd.testing.assert_frame_equal(got, expected(["c1", "c2"], [1.0, 1.0]))


def test_an_active_window_narrows_the_base_and_the_rest_are_lapsed(
    load_daily: LoadDaily,
) -> None:
    got = labels(load_daily, LAPSING, LAPSING_CUSTOMERS, INACTIVITY_30D, [A])
    pd.testing.assert_frame_equal(got, expected(["c1"], [1.0]))
    data, daily = load_daily(LAPSING, LAPSING_CUSTOMERS, qualifying=["login", "purchase"])
    grid = build_grid(daily, data.customers, pd.DatetimeIndex([A]))
    assert grid.keys["customer_id"].tolist() == ["c1", "c2", "c3", "c4"]
    assert lapsed(grid, INACTIVITY_30D).tolist() == [False, True, False, False]
    assert lapsed(grid, INACTIVITY_ALL).tolist() == [False, False, False, False]
    assert lapsed(grid, CANCELLATION_30D).tolist() == [False, False, False, False]


def test_the_inactivity_base_counts_activity_folded_into_the_history_row(validate) -> None:
    data = validate(LAPSING, LAPSING_CUSTOMERS)
    ids = data.customers["customer_id"].to_numpy()
    since = A - pd.Timedelta(days=lookback_days(INACTIVITY_ALL))
    assert since == T("2024-03-01")  # c2's purchase is the first instant of the day rows
    for start in (since, since + pd.Timedelta(days=1)):  # a day row, then the history row
        daily = build_daily_log(data.con, ids, ["login", "purchase"], since=start)
        grid = build_grid(daily, data.customers, pd.DatetimeIndex([A]))
        assert in_base(grid, INACTIVITY_ALL).tolist() == [True, True, False, False]


def test_lookback_covers_the_longest_feature_window_and_a_longer_active_window() -> None:
    assert lookback_days(CANCELLATION_30D) == FEATURE_WINDOW_DAYS == 365
    assert lookback_days(INACTIVITY_ALL) == FEATURE_WINDOW_DAYS
    assert lookback_days(INACTIVITY_30D) == FEATURE_WINDOW_DAYS
    longer = INACTIVITY_30D.model_copy(update={"active_window_days": 500})
    assert lookback_days(longer) == 500


def test_scoring_lists_lapsed_customers_as_rejects_and_counts_them(validate) -> None:
    from test_score import config, tiny_bundle

    from pipeline.config import FeatureConfig, TierConfig
    from pipeline.score import LAPSED, build_base, score_base

    table = LAPSING_CUSTOMERS.assign(mrr=10.0, owner="ann")
    data = validate(LAPSING, table)
    window = INACTIVITY_30D.model_copy(update={"qualifying_families": ["login", "purchase"]})
    counts = {}
    for label in (INACTIVITY_ALL, window):
        base = build_base(data, A, FeatureConfig(), label)
        result = score_base(
            base, tiny_bundle(), config(Path(".")), FeatureConfig(), TierConfig(), 30
        )
        counts[label.active_window_days] = result.summary["customers"]
        rejects = result.rejects[["customer_id", "reason"]].to_dict("records")
        scored = result.scores["customer_id"].tolist()
        if label.active_window_days is None:
            assert (scored, rejects) == (["c1", "c2"], [])
        else:
            assert (scored, rejects) == (["c1"], [{"customer_id": "c2", "reason": LAPSED}])
    common = {"customers_valid": 4, "not_yet_signed_up": 0, "churned_before_as_of": 0}
    assert counts[None] == common | {
        "lapsed_not_in_base": 2,  # c3 (no qualifying event), c4 (only at as_of)
        "base": 2,
        "lapsed": 0,
        "scored": 2,
        "rejected": 0,
        "reconciled": True,
    }
    assert counts[60] == common | {
        "lapsed_not_in_base": 2,
        "base": 2,
        "lapsed": 1,
        "scored": 1,
        "rejected": 1,  # of which lapsed: 1
        "reconciled": True,
    }
