"""The as_of schedule and the training set over many dates (the backtest folds: test_backtest)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DatasetConfig, FeatureConfig, LabelConfig
from pipeline.dataset import DatasetError, UnusableLogError, as_of_schedule, build_training_set
from pipeline.events import ValidatedData
from pipeline.features import DailyLog, build_features

pytestmark = pytest.mark.code

T = pd.Timestamp

LoadDaily = Callable[..., tuple[ValidatedData, DailyLog]]


def dates(*values: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(values)), name="as_of").as_unit("us")


def test_the_schedule_runs_from_min_history_to_the_last_fully_observed_month() -> None:
    got = as_of_schedule(T("2024-01-10 15:00"), T("2025-01-01"), DatasetConfig(), 90)
    # 2024-01-10 + 90 days = 2024-04-09 → first month start 05-01; 2025-01-01 − 90 d = 10-03.
    want = dates("2024-05-01", "2024-06-01", "2024-07-01", "2024-08-01", "2024-09-01", "2024-10-01")
    pd.testing.assert_index_equal(got, want)


def test_the_last_as_of_may_end_its_window_exactly_at_observed_until() -> None:
    got = as_of_schedule(T("2024-01-01"), T("2024-07-01"), DatasetConfig(min_history_days=0), 30)
    assert got[-1] == T("2024-06-01")
    assert got[-1] + pd.Timedelta(days=30) <= T("2024-07-01")


def test_a_weekly_schedule_uses_mondays() -> None:
    config = DatasetConfig(frequency="weekly", min_history_days=7)
    got = as_of_schedule(T("2025-01-01"), T("2025-02-15"), config, 14)
    want = dates("2025-01-13", "2025-01-20", "2025-01-27")
    pd.testing.assert_index_equal(got, want)
    assert set(got.day_of_week) == {0}


def test_configured_first_and_last_as_of_bound_the_schedule() -> None:
    config = DatasetConfig(first_as_of="2024-03-01", last_as_of="2024-06-01")
    got = as_of_schedule(T("2024-01-01"), T("2025-01-01"), config, 30)
    pd.testing.assert_index_equal(
        got, dates("2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01")
    )


def test_a_configured_last_as_of_never_admits_a_window_past_observed_until() -> None:
    config = DatasetConfig(first_as_of="2024-09-01", last_as_of="2025-06-01")
    got = as_of_schedule(T("2024-01-01"), T("2025-01-01"), config, 90)
    pd.testing.assert_index_equal(got, dates("2024-09-01", "2024-10-01"))


def test_a_log_without_events_raises_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match=r"no valid events"):
        as_of_schedule(None, T("2025-01-01"), DatasetConfig(), 30)


# --- the training set ----------------------------------------------------------------------


def test_the_training_set_excludes_unknown_labels_and_keeps_every_labelled_date(
    load_daily: LoadDaily,
) -> None:
    table = pd.DataFrame(
        {
            "customer_id": ["c2", "c1"],
            "signup_at": ["2024-01-01", "2024-01-01"],
            "churned_at": [None, "2025-05-20"],
        }
    )
    events = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c2"],
            "occurred_at": ["2025-02-01", "2025-02-02", "2025-05-02"],
            "event_type": ["login", "login", "login"],
        }
    )
    data, daily = load_daily(events, table)
    # observed_until 2025-07-01: 06-01 + 30 days is known, 06-15 + 30 days is not.
    used = dates("2025-03-01", "2025-04-01", "2025-05-01", "2025-06-01", "2025-06-15")
    label = LabelConfig(horizon_days=30)
    got = build_training_set(daily, data.customers, used, FeatureConfig(), label, T("2025-07-01"))
    want = pd.DataFrame(
        {
            "customer_id": pd.Series(["c1", "c2", "c1", "c2", "c1", "c2", "c2"], dtype="str"),
            "as_of": pd.to_datetime(
                ["2025-03-01"] * 2 + ["2025-04-01"] * 2 + ["2025-05-01"] * 2 + ["2025-06-01"]
            ).as_unit("us"),
            "churned": np.array([0, 0, 0, 0, 1, 0, 0], dtype=np.int8),
        }
    )
    pd.testing.assert_frame_equal(got.frame[list(want.columns)], want)
    features = build_features(daily, data.customers, used[:4])
    pd.testing.assert_frame_equal(got.frame[list(features.columns)], features)
    pd.testing.assert_frame_equal(
        got.rows(used[1:2])[list(want.columns)], want[2:4].reset_index(drop=True)
    )


def test_a_training_set_without_churners_raises_an_unusable_log_error(
    load_daily: LoadDaily,
) -> None:
    table = pd.DataFrame({"customer_id": ["c1"], "signup_at": ["2024-01-01"], "churned_at": [None]})
    events = pd.DataFrame(
        {"customer_id": ["c1"], "occurred_at": ["2025-02-01"], "event_type": ["login"]}
    )
    data, daily = load_daily(events, table)
    with pytest.raises(UnusableLogError, match=r"no churner \(positive label\) among 2 rows"):
        build_training_set(
            daily,
            data.customers,
            dates("2025-03-01", "2025-04-01"),
            FeatureConfig(),
            LabelConfig(horizon_days=30),
            T("2025-07-01"),
        )
