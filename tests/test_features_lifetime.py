"""Lifetime, rhythm and long-window features on hand-written logs, with exact expected values.

as_of is 2025-03-01 (UTC midnight): the 180-day window is [2024-09-02, 2025-03-01), the 365-day
window [2024-03-01, 2025-03-01). Every test runs on a daily log of the whole history and on the
path ``churn features`` takes (``features_for_dates``: days before as_of − 365 folded into one
history row per customer), which must give the same values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.config import FeatureConfig
from pipeline.events import ValidatedData
from pipeline.features import (
    FEATURE_WINDOW_DAYS,
    build_daily_log,
    build_features,
    features_for_dates,
)
from pipeline.features.lifetime import LONG_WINDOWS, NAN_WHEN_UNDEFINED

pytestmark = pytest.mark.code

T = pd.Timestamp
A = T("2025-03-01")
NAN = float("nan")
QUALIFYING = ["login", "feature_use", "purchase"]  # the label's default: payments are not use

LIFETIME = [
    "events_lifetime",
    "purchases_lifetime",
    "spend_lifetime",
    "active_days_lifetime",
    "repeat_purchases_lifetime",
    "spend_per_purchase_lifetime",
    "days_since_first_purchase",
    "days_since_last_purchase",
    "mean_gap_days",
    "last_gap_days",
    "overdue_ratio",
    "active_days_180d",
    "active_days_365d",
    "events_180d",
    "events_365d",
    "spend_180d",
    "spend_365d",
]


def customers(rows: list[tuple]) -> pd.DataFrame:
    """Customers from (customer_id, signup_at) tuples."""
    frame = pd.DataFrame(rows, columns=["customer_id", "signup_at"])
    return frame.assign(churned_at=None, mrr=10.0, plan="basic")


def log(rows: list[tuple]) -> pd.DataFrame:
    """Events from (customer_id, occurred_at, event_type[, amount]) tuples."""
    full = [(*r, None)[:4] for r in rows]
    frame = pd.DataFrame(full, columns=["customer_id", "occurred_at", "event_type", "amount"])
    return frame.astype({"occurred_at": "str", "amount": "float64"})


FLOATS = ("mean_gap_days", "last_gap_days", "overdue_ratio")
Paths = Callable[..., list[pd.DataFrame]]


@pytest.fixture
def both_paths(validate: Callable[..., ValidatedData]) -> Paths:
    """``both_paths(events, customers, dates)`` → [whole-log features, folded features]."""

    def _run(events: pd.DataFrame, table: pd.DataFrame, dates: list) -> list[pd.DataFrame]:
        data = validate(events, table)
        ids = data.customers["customer_id"].to_numpy()
        whole = build_features(build_daily_log(data.con, ids, QUALIFYING), data.customers, dates)
        folded = features_for_dates(data.con, data.customers, dates, FeatureConfig(), QUALIFYING)
        return [whole, folded]

    return _run


def expected(rows: dict[str, list]) -> pd.DataFrame:
    """One row per customer: ``rows[customer] = values in LIFETIME order``, with the dtypes
    the builders give (counts int64, the rest float64)."""
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=LIFETIME)
    frame.index = frame.index.astype("str")
    floats = [c for c in LIFETIME if c.startswith(("spend", "days")) or c in FLOATS]
    counts = [c for c in LIFETIME if c not in floats]
    return frame.astype(dict.fromkeys(counts, "int64") | dict.fromkeys(floats, "float64"))


def lifetime_of(frame: pd.DataFrame, as_of: pd.Timestamp = A) -> pd.DataFrame:
    rows = frame[frame["as_of"] == as_of].set_index("customer_id")
    return rows[LIFETIME]


CUSTOMERS = customers(
    [
        ("c1", "2023-01-01"),
        ("c2", "2025-01-15 12:00"),  # no events at all
        ("c3", "2024-01-01"),  # one active day
        ("c4", "2023-01-01"),  # its last two active days both older than the fold point
        ("c5", "2023-01-01"),  # last active day recent, the one before it folded
    ]
)
EVENTS = log(
    [
        ("c1", "2023-06-10 09:00", "purchase", 20.0),  # first purchase (folded)
        ("c1", "2023-06-10 15:00", "purchase", 30.0),  # same day: one purchase day
        ("c1", "2023-09-01 10:00", "login"),
        ("c1", "2024-02-29 23:59:59.999999", "invoice_paid", 50.0),  # spend, not use; before 365d
        ("c1", "2024-03-01 00:00", "purchase", 40.0),  # first instant of the 365-day window
        ("c1", "2024-09-02 00:00", "complaint"),  # first instant of the 180-day window, not use
        ("c1", "2025-02-20 08:00", "login"),
        ("c1", "2025-02-28 18:00", "purchase", 10.0),  # last purchase, 0.25 days before as_of
        ("c1", "2025-03-01 00:00", "purchase", 999.0),  # exactly at as_of: the future
        ("c3", "2025-01-01", "login"),
        ("c4", "2023-01-10", "login"),
        ("c4", "2023-02-01", "feature_used"),
        ("c5", "2023-12-01", "login"),
        ("c5", "2024-12-01", "login"),
    ]
)


def test_lifetime_rhythm_and_long_windows_on_a_literal_log(both_paths: Paths) -> None:
    want = expected(
        {
            # events, purchases, spend, active days, repeat, spend/purchase, since first/last
            # purchase, mean gap, last gap, overdue, active 180/365, events 180/365, spend 180/365
            "c1": [8, 4, 150.0, 7, 2, 37.5, 629.625, 0.25, 157.25, 8.0, 0.25 / 157.25,
                   3, 4, 3, 4, 10.0, 50.0],
            "c2": [0, 0, 0.0, 0, 0, NAN, NAN, NAN, NAN, NAN, 1.0, 0, 0, 0, 0, 0.0, 0.0],
            "c3": [1, 0, 0.0, 1, 0, NAN, NAN, NAN, NAN, NAN, 59.0 / 425.0, 1, 1, 1, 1, 0.0, 0.0],
            "c4": [2, 0, 0.0, 2, 0, NAN, NAN, NAN, 22.0, 22.0, 759.0 / 22.0, 0, 0, 0, 0, 0.0, 0.0],
            "c5": [2, 0, 0.0, 2, 0, NAN, NAN, NAN, 366.0, 366.0, 90.0 / 366.0,
                   1, 1, 1, 1, 0.0, 0.0],
        }
    )  # fmt: skip
    for frame in both_paths(EVENTS, CUSTOMERS, [A]):
        pd.testing.assert_frame_equal(lifetime_of(frame), want, check_names=False)


def test_an_event_exactly_at_as_of_is_the_future_for_every_lifetime_figure(
    both_paths: Paths,
) -> None:
    table = customers([("c1", "2025-01-01")])
    events = log([("c1", "2025-03-01 00:00", "purchase", 5.0)])
    just_before = log([("c1", "2025-02-28 23:59:59.999999", "purchase", 5.0)])
    for frame in both_paths(events, table, [A]):
        row = lifetime_of(frame).loc["c1"]
        assert (row["events_lifetime"], row["purchases_lifetime"], row["spend_lifetime"]) == (
            0,
            0,
            0.0,
        )
        assert np.isnan(row[list(NAN_WHEN_UNDEFINED)].to_numpy(dtype=float)).all()
    for frame in both_paths(just_before, table, [A]):
        row = lifetime_of(frame).loc["c1"]
        assert (row["events_lifetime"], row["purchases_lifetime"], row["spend_365d"]) == (1, 1, 5.0)
        assert row["days_since_first_purchase"] == row["days_since_last_purchase"] == 1e-6 / 86_400


def test_figures_at_an_earlier_as_of_ignore_later_events(both_paths: Paths) -> None:
    early = T("2023-06-11")  # the day after c1's first purchases
    for frame in both_paths(EVENTS, CUSTOMERS, [early, A]):
        row = lifetime_of(frame, early).loc["c1"]
        assert (row["events_lifetime"], row["purchases_lifetime"]) == (2, 2)
        assert (row["spend_lifetime"], row["repeat_purchases_lifetime"]) == (50.0, 0)
        assert row["days_since_first_purchase"] == 15 / 24
        # one active day: the tenure (161 days) stands in for the gap; last activity at 15:00
        assert np.isnan(row["mean_gap_days"]) and row["overdue_ratio"] == (9 / 24) / 161.0
        assert lifetime_of(frame).loc["c1", "events_lifetime"] == 8


@pytest.mark.parametrize(
    "since", ["2023-01-01", "2023-06-10", "2023-06-11", "2023-09-02", "2024-03-01"]
)
def test_folding_older_days_into_the_history_row_changes_no_value(
    validate: Callable[..., ValidatedData], since: str
) -> None:
    data = validate(EVENTS, CUSTOMERS)
    ids = data.customers["customer_id"].to_numpy()
    whole = build_daily_log(data.con, ids, QUALIFYING)
    folded = build_daily_log(data.con, ids, QUALIFYING, since=T(since))
    dates = [A, T("2025-06-01")]
    pd.testing.assert_frame_equal(
        build_features(folded, data.customers, dates), build_features(whole, data.customers, dates)
    )


@pytest.mark.parametrize("long_since", ["2024-02-29", "2024-03-01", "2023-06-10"])
@pytest.mark.parametrize("since", ["2024-12-01", "2024-09-02"])
def test_long_rows_before_the_day_rows_change_no_value(
    validate: Callable[..., ValidatedData], since: str, long_since: str
) -> None:
    """Full day rows from ``since`` on, the four long columns per day from ``long_since``: the
    365-day windows (which start on 2024-03-01 for as_of A, with events on both edges) and the
    lifetime totals equal the unfolded log's."""
    data = validate(EVENTS, CUSTOMERS)
    ids = data.customers["customer_id"].to_numpy()
    whole = build_daily_log(data.con, ids, QUALIFYING)
    narrow = build_daily_log(data.con, ids, QUALIFYING, since=T(since), long_since=T(long_since))
    assert narrow.long is not None and len(narrow.long.code) > 0
    dates = [A, T("2025-06-01")]
    pd.testing.assert_frame_equal(
        build_features(narrow, data.customers, dates), build_features(whole, data.customers, dates)
    )


def test_a_window_reaching_past_the_day_rows_needs_a_long_column(
    validate: Callable[..., ValidatedData],
) -> None:
    """Long rows hold the long columns only: a 120-day login window over them is refused, a
    120-day qualifying window (a long ``label.active_window_days``) is exact."""
    from pipeline.features.grid import build_grid

    data = validate(EVENTS, CUSTOMERS)
    ids = data.customers["customer_id"].to_numpy()
    narrow = build_daily_log(
        data.con, ids, QUALIFYING, since=T("2024-12-01"), long_since=T("2024-03-01")
    )
    whole = build_daily_log(data.con, ids, QUALIFYING)
    index = build_grid(narrow, data.customers, pd.DatetimeIndex([A])).index
    with pytest.raises(ValueError, match="120-day window"):
        index.window_sum("n_login", -120)
    with pytest.raises(ValueError, match="long rows start"):
        index.window_sum("n_events", -400)
    full = build_grid(whole, data.customers, pd.DatetimeIndex([A])).index
    np.testing.assert_array_equal(
        index.window_sum("n_qualifying", -120), full.window_sum("n_qualifying", -120)
    )


def test_the_longest_window_is_the_lookback_every_family_relies_on() -> None:
    assert max(LONG_WINDOWS) == FEATURE_WINDOW_DAYS == 365
