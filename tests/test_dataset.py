"""The as_of schedule and the out-of-time split: no label window reaches into a later slice."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DatasetConfig, FeatureConfig, LabelConfig
from pipeline.dataset import (
    SLICES,
    DatasetError,
    as_of_schedule,
    build_training_set,
    out_of_time_split,
)
from pipeline.events import ValidatedData
from pipeline.features import DailyLog, build_features

pytestmark = pytest.mark.code

T = pd.Timestamp
FIRST_EVENT = T("2023-01-15 09:30")
OBSERVED_UNTIL = T("2025-11-01")

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


def test_the_split_of_a_year_of_months_with_a_60_day_horizon() -> None:
    months = pd.date_range("2024-01-01", "2024-12-01", freq="MS")
    split = out_of_time_split(months, 60, DatasetConfig())
    pd.testing.assert_index_equal(split["test"], dates("2024-12-01"))
    pd.testing.assert_index_equal(split["calibration"], dates("2024-10-01"))
    pd.testing.assert_index_equal(split["validation"], dates("2024-09-01"))
    pd.testing.assert_index_equal(
        split["train"],
        dates(*[f"2024-{m:02d}-01" for m in range(1, 8)]),
    )


@pytest.mark.parametrize("horizon", [7, 30, 60, 90, 120, 180])
@pytest.mark.parametrize(
    "config",
    [
        DatasetConfig(),
        DatasetConfig(validation_dates=2, calibration_dates=2, test_dates=2),
        DatasetConfig(validation_dates=3, calibration_dates=1, test_dates=3, min_history_days=0),
        DatasetConfig(frequency="weekly", validation_dates=4, calibration_dates=4, test_dates=4),
        DatasetConfig(frequency="weekly", min_history_days=365),
    ],
    ids=["monthly", "monthly-2-2-2", "monthly-3-1-3", "weekly-4-4-4", "weekly-long-history"],
)
def test_no_training_or_calibration_label_window_reaches_into_a_later_slice(
    horizon: int, config: DatasetConfig
) -> None:
    schedule = as_of_schedule(FIRST_EVENT, OBSERVED_UNTIL, config, horizon)
    split = out_of_time_split(schedule, horizon, config)
    h = pd.Timedelta(days=horizon)
    assert (schedule + h <= OBSERVED_UNTIL).all()
    assert schedule.min() >= FIRST_EVENT.normalize() + pd.Timedelta(days=config.min_history_days)
    train, validation = split["train"], split["validation"]
    calibration, test = split["calibration"], split["test"]
    assert (train + h <= validation.min()).all()
    assert (calibration + h <= test.min()).all()
    assert (len(validation), len(calibration), len(test)) == (
        config.validation_dates,
        config.calibration_dates,
        config.test_dates,
    )
    assert len(train) > 0
    for name in SLICES:
        assert split[name].is_monotonic_increasing and split[name].is_unique
    assert train.max() < validation.min()
    assert validation.max() < calibration.min()
    assert calibration.max() < test.min()
    every = [d for name in SLICES for d in split[name]]
    assert len(every) == len(set(every))
    assert set(every) <= set(schedule)
    pd.testing.assert_index_equal(split["test"], schedule[-config.test_dates :])


def test_the_split_accepts_unsorted_dates_with_repeats() -> None:
    months = pd.date_range("2024-01-01", "2024-12-01", freq="MS")
    shuffled = pd.DatetimeIndex([*reversed(months), months[3]])
    assert {k: list(v) for k, v in out_of_time_split(shuffled, 60, DatasetConfig()).items()} == {
        k: list(v) for k, v in out_of_time_split(months, 60, DatasetConfig()).items()
    }


@pytest.mark.parametrize(
    ("months", "horizon"),
    [(4, 90), (5, 60), (1, 30), (3, 1)],
)
def test_too_few_as_of_dates_for_the_split_raise_a_helpful_dataset_error(
    months: int, horizon: int
) -> None:
    schedule = pd.date_range("2024-01-01", periods=months, freq="MS")
    with pytest.raises(DatasetError) as error:
        out_of_time_split(schedule, horizon, DatasetConfig())
    message = str(error.value)
    assert f"{months} as_of dates" in message
    assert f"with a {horizon}-day horizon" in message
    assert "Use more history, a shorter label.horizon_days" in message


def test_a_history_shorter_than_one_horizon_raises_a_dataset_error() -> None:
    config = DatasetConfig()
    schedule = as_of_schedule(T("2025-01-01"), T("2025-05-01"), config, 90)
    assert len(schedule) == 0
    with pytest.raises(DatasetError, match=r"0 as_of dates \(none\) with a 90-day horizon"):
        out_of_time_split(schedule, 90, config)


def test_asking_for_more_slice_dates_than_fit_raises_a_dataset_error_naming_the_empty_slice() -> (
    None
):
    months = pd.date_range("2024-01-01", "2024-06-01", freq="MS")
    config = DatasetConfig(calibration_dates=4)
    with pytest.raises(
        DatasetError, match=r"leave no dates for \['train'\].*fewer dataset\.\*_dates"
    ):
        out_of_time_split(months, 30, config)


def test_a_log_without_events_raises_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match=r"no valid events"):
        as_of_schedule(None, T("2025-01-01"), DatasetConfig(), 30)


# --- the training set ----------------------------------------------------------------------


def test_the_training_set_excludes_unknown_labels_and_marks_each_row_with_its_slice(
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
    split = {
        "train": used[:1],
        "validation": used[1:2],
        "calibration": used[2:3],
        "test": used[3:4],
    }
    label = LabelConfig(horizon_days=30)
    got = build_training_set(
        daily, data.customers, used, split, FeatureConfig(), label, T("2025-07-01")
    )
    want = pd.DataFrame(
        {
            "customer_id": pd.Series(["c1", "c2", "c1", "c2", "c1", "c2", "c2"], dtype="str"),
            "as_of": pd.to_datetime(
                ["2025-03-01"] * 2 + ["2025-04-01"] * 2 + ["2025-05-01"] * 2 + ["2025-06-01"]
            ).as_unit("us"),
            "churned": np.array([0, 0, 0, 0, 1, 0, 0], dtype=np.int8),
            "slice": pd.Series(
                ["train"] * 2 + ["validation"] * 2 + ["calibration"] * 2 + ["test"], dtype="str"
            ),
        }
    )
    pd.testing.assert_frame_equal(got.frame[list(want.columns)], want)
    features = build_features(daily, data.customers, used[:4])
    pd.testing.assert_frame_equal(got.frame[list(features.columns)], features)
    pd.testing.assert_frame_equal(
        got.part("validation")[list(want.columns)], want[2:4].reset_index(drop=True)
    )
