"""Point-in-time features on hand-written logs: exact expected frames for every family.

The as_of date is 2025-03-01 (UTC midnight) unless a test says otherwise, so its windows are
7 days: [02-22, 03-01), 30 days: [01-30, 03-01), 60 days: [12-31, 03-01), 90 days: [12-01, 03-01).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ALL_FAMILIES

from pipeline.config import FeatureConfig
from pipeline.events import load_and_validate
from pipeline.features import (
    KEYS,
    NAN_WHEN_UNDEFINED,
    build_daily_log,
    build_features,
    feature_columns,
)
from pipeline.features.grid import build_grid
from pipeline.features.lifecycle import STAGES

pytestmark = pytest.mark.code

T = pd.Timestamp
US = pd.Timedelta(microseconds=1)
A = T("2025-03-01")
DAY_US = 86_400_000_000
OBSERVED_UNTIL = T("2025-07-01")

FeaturesOf = Callable[..., pd.DataFrame]


def customers(rows: list[tuple]) -> pd.DataFrame:
    """Customers from (customer_id, signup_at, mrr) or (…, churned_at) tuples."""
    frame = pd.DataFrame(
        [(*r, None)[:4] for r in rows], columns=["customer_id", "signup_at", "mrr", "churned_at"]
    )
    frame["plan"] = "basic"
    return frame


def log(rows: list[tuple]) -> pd.DataFrame:
    """Events from (customer_id, occurred_at, event_type[, feature, amount, severity]) tuples."""
    full = [(*r, None, None, None)[:6] for r in rows]
    return pd.DataFrame(
        full,
        columns=["customer_id", "occurred_at", "event_type", "feature", "amount", "severity"],
    ).astype({"occurred_at": "str", "amount": "float64"})


def expected(columns: dict[str, list], ids: list[str], as_of: list | None = None) -> pd.DataFrame:
    """Keys (customer_id, as_of) then ``columns``, with the dtypes ``build_features`` returns."""
    keys = {
        "customer_id": pd.Series(ids, dtype="str"),
        "as_of": pd.to_datetime(as_of or [A] * len(ids)).as_unit("us"),
    }
    frame = pd.DataFrame({**keys, **columns})
    for name, values in columns.items():
        if all(isinstance(v, int | np.integer) for v in values):
            frame[name] = frame[name].astype("int64")
        elif all(isinstance(v, float) for v in values):
            frame[name] = frame[name].astype("float64")
    return frame


def pick(frame: pd.DataFrame, want: pd.DataFrame) -> pd.DataFrame:
    return frame[list(want.columns)]


# Two customers: c1 (signed up 2024-01-01, 425 days before A) with the log below, and
# c2 (signed up 2025-01-15 12:00, 44.5 days before A) with no events at all.
CUSTOMERS = customers([("c1", "2024-01-01", 50.0), ("c2", "2025-01-15 12:00", 20.0)])
ACTIVITY = log(
    [
        ("c1", "2025-03-01 00:00:00", "login"),  # exactly at as_of: the future
        ("c1", "2025-03-05 09:00:00", "complaint"),  # the future
        ("c1", "2025-02-28 23:59:59.999999", "login"),  # one microsecond before as_of
        ("c1", "2025-02-28 10:00:00", "login"),  # same day as the previous one
        ("c1", "2025-02-27 18:00:00", "newsletter_opened"),  # unknown type: generic activity
        ("c1", "2025-02-22 00:00:00", "feature_used", "reports"),  # first instant of 7d window
        ("c1", "2025-02-21 23:59:59.999999", "login"),  # just outside the 7d window
        ("c1", "2025-01-30 00:00:00", "login"),  # first instant of the 30d window
        ("c1", "2025-01-29 23:59:59", "login"),  # just outside 30d, inside [-60, -30)
        ("c1", "2024-12-01 00:00:00", "feature_used", "api"),  # first instant of the 90d window
        ("c1", "2024-11-30 23:00:00", "login"),  # outside 90d
    ]
)
TENURE_C2 = 44.5


def test_recency_is_days_since_the_last_past_event_and_tenure_when_there_is_none(
    features_of: FeaturesOf,
) -> None:
    frame = features_of(ACTIVITY, CUSTOMERS, [A])
    want = expected(
        {
            "days_since_last_event": [1 / DAY_US, TENURE_C2],
            "days_since_last_login": [1 / DAY_US, TENURE_C2],
            "days_since_last_feature_use": [7.0, TENURE_C2],
        },
        ["c1", "c2"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_frequency_counts_events_in_half_open_windows_before_as_of(
    features_of: FeaturesOf,
) -> None:
    frame = features_of(ACTIVITY, CUSTOMERS, [A])
    want = expected(
        {
            "events_7d": [4, 0],
            "events_30d": [6, 0],
            "events_90d": [8, 0],
            "logins_7d": [2, 0],
            "logins_30d": [4, 0],
            "logins_90d": [5, 0],
            "feature_uses_30d": [1, 0],
            "feature_uses_90d": [2, 0],
            "active_days_30d": [5, 0],
            "active_days_90d": [7, 0],
        },
        ["c1", "c2"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_trend_compares_the_last_30_days_with_the_30_before_with_an_explicit_fill(
    features_of: FeaturesOf,
) -> None:
    frame = features_of(ACTIVITY, CUSTOMERS, [A])
    want = expected(
        {
            "events_30d_vs_prev_30d": [(6 + 1) / (1 + 1), 1.0],
            "logins_30d_vs_prev_30d": [(4 + 1) / (1 + 1), 1.0],
            "active_days_30d_change": [5 - 1, 0],
        },
        ["c1", "c2"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_an_event_exactly_at_as_of_is_excluded(features_of: FeaturesOf) -> None:
    events = log(
        [("c1", "2025-03-01 00:00:00", "login"), ("c1", "2025-03-01", "purchase", None, 9)]
    )
    frame = features_of(events, CUSTOMERS[:1], [A])
    want = expected(
        {
            "days_since_last_event": [425.0],
            "days_since_last_login": [425.0],
            "events_7d": [0],
            "logins_7d": [0],
            "active_days_30d": [0],
            "spend_90d": [0.0],
        },
        ["c1"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_an_event_one_microsecond_before_as_of_is_included(features_of: FeaturesOf) -> None:
    events = log(
        [
            ("c1", "2025-02-28 23:59:59.999999", "login"),
            ("c1", "2025-02-28 23:59:59.999999", "purchase", None, 9.0),
        ]
    )
    frame = features_of(events, CUSTOMERS[:1], [A])
    want = expected(
        {
            "days_since_last_event": [1 / DAY_US],
            "days_since_last_login": [1 / DAY_US],
            "events_7d": [2],
            "logins_7d": [1],
            "active_days_30d": [1],
            "spend_90d": [9.0],
        },
        ["c1"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_a_customer_with_no_events_gets_defined_values_for_every_feature(
    features_of: FeaturesOf,
) -> None:
    frame = features_of(ACTIVITY, CUSTOMERS, [A])
    row = frame[frame["customer_id"] == "c2"].reset_index(drop=True)
    zero_counts = [
        "events_7d",
        "events_30d",
        "events_90d",
        "logins_7d",
        "logins_30d",
        "logins_90d",
        "feature_uses_30d",
        "feature_uses_90d",
        "active_days_30d",
        "active_days_90d",
        "active_days_30d_change",
        "distinct_features_30d",
        "distinct_features_90d",
        "complaints_30d",
        "complaints_90d",
        "tickets_30d",
        "tickets_90d",
        "serious_complaints_30d",
        "max_severity_90d",
        "payment_failures_30d",
        "payment_failures_90d",
    ]
    columns: dict[str, list] = {name: [0] for name in zero_counts}
    columns |= {
        "days_since_last_event": [TENURE_C2],
        "days_since_last_login": [TENURE_C2],
        "days_since_last_feature_use": [TENURE_C2],
        "days_since_last_complaint": [TENURE_C2],
        "events_30d_vs_prev_30d": [1.0],
        "logins_30d_vs_prev_30d": [1.0],
        "feature_breadth_90d": [0.0],
        "spend_90d": [0.0],
        "mrr": [20.0],
        "mrr_change_90d": [0.0],
        "tenure_days": [TENURE_C2],
        "days_to_anniversary": [365.0 - TENURE_C2],
    }
    want = expected(columns, ["c2"])
    pd.testing.assert_frame_equal(pick(row, want), want)
    assert row.loc[0, "lifecycle_stage"] == "onboarding"
    defined = [c for c in feature_columns(row) if c not in NAN_WHEN_UNDEFINED]
    assert not row[defined].isna().any().any()
    undefined = [c for c in NAN_WHEN_UNDEFINED if c in row]  # BG/NBD's come with the base
    assert row[undefined].isna().all().all()  # no purchase, no active day


def test_breadth_counts_distinct_features_not_uses_and_shares_the_known_features(
    features_of: FeaturesOf,
) -> None:
    events = log(
        [
            ("c1", "2025-02-27 10:00", "feature_used", "reports"),
            ("c1", "2025-02-26 10:00", "feature_used", "reports"),
            ("c1", "2025-02-25 10:00", "feature_used", "reports"),
            ("c1", "2025-02-24 10:00", "feature_used"),  # a use without a feature name
            ("c1", "2025-02-20 10:00", "login", "dashboards"),  # not a feature use
            ("c1", "2025-01-15 10:00", "feature_used", "exports"),  # 90d, not 30d
            ("c1", "2024-11-15 10:00", "feature_used", "api"),  # before 90d: known, not used
            ("c2", "2025-02-01 10:00", "feature_used", "reports"),
            ("c2", "2025-02-02 10:00", "feature_used", "reports"),
        ]
    )
    frame = features_of(events, CUSTOMERS, [A])
    want = expected(
        {
            "feature_uses_30d": [4, 2],
            "distinct_features_30d": [1, 1],
            "distinct_features_90d": [2, 1],
            "feature_breadth_90d": [2 / 3, 1 / 3],
        },
        ["c1", "c2"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_feature_breadth_does_not_count_features_first_used_at_or_after_as_of(
    features_of: FeaturesOf,
) -> None:
    events = log(
        [
            ("c1", "2025-02-27 10:00", "feature_used", "reports"),
            ("c1", "2025-03-01 00:00", "feature_used", "alerts"),  # launched at as_of
            ("c2", "2025-04-01 10:00", "feature_used", "exports"),  # launched after as_of
        ]
    )
    frame = features_of(events, CUSTOMERS, [A, T("2025-05-01")])
    want = expected(
        {"distinct_features_90d": [1, 0, 2, 1], "feature_breadth_90d": [1.0, 0.0, 2 / 3, 1 / 3]},
        ["c1", "c2", "c1", "c2"],
        [A, A, T("2025-05-01"), T("2025-05-01")],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


SUPPORT = log(
    [
        ("c1", "2025-03-01 00:00", "complaint", None, None, "critical"),  # at as_of: excluded
        ("c1", "2025-02-27 00:00", "complaint"),  # no severity
        ("c1", "2025-02-25 08:00", "ticket_opened", None, None, "low"),
        ("c1", "2025-02-20 12:00", "complaint", None, None, "high"),
        ("c1", "2025-01-10 09:00", "ticket_opened", None, None, "critical"),  # 90d, not 30d
        ("c1", "2024-11-20 09:00", "complaint", None, None, "4"),  # before 90d
        ("c2", "2025-02-28 12:00", "complaint", None, None, "2"),
    ]
)


def test_support_counts_complaints_and_tickets_and_takes_the_max_severity(
    features_of: FeaturesOf,
) -> None:
    frame = features_of(SUPPORT, CUSTOMERS, [A])
    want = expected(
        {
            "complaints_30d": [2, 1],
            "complaints_90d": [2, 1],
            "tickets_30d": [1, 0],
            "tickets_90d": [2, 0],
            "serious_complaints_30d": [1, 0],
            "max_severity_90d": [4, 2],
            "days_since_last_complaint": [2.0, 0.5],
        },
        ["c1", "c2"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_serious_complaints_follow_the_configured_severity(features_of: FeaturesOf) -> None:
    frame = features_of(SUPPORT, CUSTOMERS, [A], FeatureConfig(serious_severity=1))
    want = expected({"serious_complaints_30d": [2, 1]}, ["c1", "c2"])
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_billing_takes_mrr_from_the_last_invoice_and_falls_back_to_the_static_mrr(
    features_of: FeaturesOf,
) -> None:
    table = customers(
        [("c1", "2024-01-01", 50.0), ("c2", "2025-01-15 12:00", 20.0), ("c3", "2024-06-01", 80.0)]
    )
    events = log(
        [
            ("c1", "2025-03-01 00:00", "invoice_paid", None, 999.0),  # at as_of: excluded
            ("c1", "2025-02-20 10:00", "purchase", None, 30.0),
            ("c1", "2025-02-15 10:00", "invoice_paid", None, 150.0),
            ("c1", "2025-02-10 10:00", "payment_failed"),
            ("c1", "2025-01-15 10:00", "invoice_paid", None, 120.0),
            ("c1", "2024-12-15 10:00", "payment_failed"),
            ("c1", "2024-11-15 10:00", "invoice_paid", None, 100.0),  # before as_of − 90 d
            ("c1", "2024-10-15 10:00", "invoice_paid", None, 90.0),
            ("c2", "2025-02-01 10:00", "purchase", None, 5.5),
            ("c3", "2025-01-20 10:00", "invoice_paid", None, 70.0),
        ]
    )
    frame = features_of(events, table, [A])
    want = expected(
        {
            "payment_failures_30d": [1, 0, 0],
            "payment_failures_90d": [2, 0, 0],
            "spend_90d": [300.0, 5.5, 70.0],
            "mrr": [150.0, 20.0, 70.0],
            "mrr_change_90d": [50.0, 0.0, 0.0],
        },
        ["c1", "c2", "c3"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_a_payment_exactly_at_as_of_minus_90_days_is_recent_for_mrr_change(
    features_of: FeaturesOf,
) -> None:
    events = log(
        [
            ("c1", "2024-12-01 00:00", "invoice_paid", None, 60.0),
            ("c1", "2024-11-30 23:59:59.999999", "invoice_paid", None, 40.0),
        ]
    )
    frame = features_of(events, CUSTOMERS[:1], [A])
    want = expected({"spend_90d": [60.0], "mrr": [60.0], "mrr_change_90d": [20.0]}, ["c1"])
    pd.testing.assert_frame_equal(pick(frame, want), want)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]], ids=["small_first", "large_first"])
def test_of_two_payments_at_the_same_instant_mrr_takes_the_larger_whatever_the_row_order(
    features_of: FeaturesOf, order: list[int]
) -> None:
    rows = [
        ("c1", "2025-02-15 10:00", "invoice_paid", None, 40.0),
        ("c1", "2025-02-15 10:00", "invoice_paid", None, 70.0),
        ("c1", "2024-10-01 10:00", "invoice_paid", None, 30.0),  # folded into history
        ("c1", "2024-10-01 10:00", "invoice_paid", None, 35.0),
    ]
    events = log([rows[i] for i in order] + [rows[2 + i] for i in order])
    frame = features_of(events, CUSTOMERS[:1], [A])
    want = expected({"mrr": [70.0], "mrr_change_90d": [35.0]}, ["c1"])
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_lifecycle_stage_changes_exactly_at_its_tenure_thresholds(
    features_of: FeaturesOf,
) -> None:
    table = customers(
        [
            ("c1", "2024-01-01", 1.0),  # 425 days
            ("c2", "2024-12-01 00:00:00", 1.0),  # exactly 90 days
            ("c3", "2024-12-01 00:00:00.000001", 1.0),  # 90 days less a microsecond
            ("c4", "2024-03-01", 1.0),  # exactly 365 days
            ("c5", "2024-03-01 00:00:00.000001", 1.0),  # 365 days less a microsecond
        ]
    )
    table["plan"] = ["pro", "basic", "basic", "enterprise", "pro"]
    frame = features_of(log([("c1", "2025-02-01", "login")]), table, [A])
    eps = 1 / DAY_US
    want = expected(
        {
            "tenure_days": [425.0, 90.0, 90.0 - eps, 365.0, 365.0 - eps],
            "lifecycle_stage": pd.Categorical(
                ["mature", "renewal", "onboarding", "mature", "renewal"], categories=STAGES
            ),
            "days_to_anniversary": [305.0, 275.0, 275.0 + eps, 0.0, eps],
            "plan": pd.Series(["pro", "basic", "basic", "enterprise", "pro"], dtype="str"),
        },
        ["c1", "c2", "c3", "c4", "c5"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want, rtol=1e-12, atol=1e-9)


def test_only_customers_signed_up_before_and_not_churned_before_as_of_get_rows(
    features_of: FeaturesOf,
) -> None:
    table = customers(
        [
            ("c1", "2024-01-01", 1.0),
            ("c2", "2025-03-01", 1.0),  # signs up exactly at as_of
            ("c3", "2025-02-28 23:59:59.999999", 1.0),  # signs up a microsecond before
            ("c4", "2024-01-01", 1.0, "2025-02-28 23:59:59.999999"),  # churned just before
            ("c5", "2024-01-01", 1.0, "2025-03-01"),  # churns exactly at as_of: still here
            ("c6", "2025-04-01", 1.0),
        ]
    )
    frame = features_of(log([("c1", "2025-02-01", "login")]), table, [A])
    assert frame["customer_id"].tolist() == ["c1", "c3", "c5"]


def test_timestamps_with_offsets_and_as_of_with_a_time_zone_are_handled_in_utc(
    features_of: FeaturesOf,
) -> None:
    table = customers([("c1", "2024-12-31T23:00:00-02:00", 1.0)])  # 2025-01-01 01:00 UTC
    events = log(
        [
            ("c1", "2025-03-01T00:30:00+01:00", "login"),  # 2025-02-28 23:30 UTC: past
            ("c1", "2025-02-28T23:30:00-01:00", "login"),  # 2025-03-01 00:30 UTC: future
            ("c1", "2025-02-21T23:30:00-01:00", "login"),  # 2025-02-22 00:30 UTC: in 7d
        ]
    )
    as_of = [T("2025-03-01T01:00:00+01:00")]  # UTC midnight, written in another zone
    frame = features_of(events, table, as_of)
    want = expected(
        {
            "days_since_last_login": [0.5 / 24],
            "logins_7d": [2],
            "active_days_30d": [2],
            "tenure_days": [58.0 + 23 / 24],
        },
        ["c1"],
    )
    pd.testing.assert_frame_equal(pick(frame, want), want)


def test_an_as_of_with_a_time_of_day_is_an_error(features_of: FeaturesOf) -> None:
    with pytest.raises(ValueError, match=r"as_of dates must be dates \(UTC midnight\)"):
        features_of(ACTIVITY, CUSTOMERS, [T("2025-03-01 12:00")])


def test_several_as_of_dates_in_one_call_equal_separate_single_date_calls(
    features_of: FeaturesOf,
) -> None:
    events = pd.concat([ACTIVITY, SUPPORT], ignore_index=True)
    dates = [T("2025-01-01"), T("2025-02-01"), A, T("2025-04-01")]
    together = features_of(events, CUSTOMERS, list(reversed(dates)))
    apart = pd.concat([features_of(events, CUSTOMERS, [d]) for d in dates], ignore_index=True)
    pd.testing.assert_frame_equal(together, apart)
    assert together["customer_id"].tolist() == ["c1", "c1", "c2", "c1", "c2", "c1", "c2"]
    assert together["as_of"].tolist() == [dates[0], *[d for d in dates[1:] for _ in "12"]]


def test_a_daily_log_built_since_a_day_folds_older_events_into_one_history_row_of_totals(
    validate,
) -> None:
    events = log(
        [
            ("c1", "2024-10-01 08:00", "invoice_paid", None, 90.0),
            ("c1", "2024-11-15 10:00", "invoice_paid", None, 100.0),  # latest payment before
            ("c1", "2024-11-20 12:00", "login"),  # latest login before since
            ("c1", "2024-11-30 23:59:59.999999", "complaint"),  # last instant before since
            ("c1", "2024-12-01 00:00", "feature_used", "api"),  # first instant of since: a day row
            ("c1", "2025-02-01 09:00", "login"),
        ]
    )
    data = validate(events, CUSTOMERS)
    ids = data.customers["customer_id"].to_numpy()
    daily = build_daily_log(data.con, ids, ["login", "feature_use"], since=T("2024-12-01"))
    since_day = (T("2024-12-01") - T("1970-01-01")).days
    assert daily.history_day == since_day
    assert daily.code.tolist() == [0, 0, 0]
    assert daily.day.tolist() == [since_day - 1, since_day, since_day + 62]
    cols = daily.columns
    assert cols["n_events"].tolist() == [4, 1, 1]  # the history row folds the older counts
    assert cols["n_complaint"].tolist() == [1, 0, 0]
    assert cols["n_payment"].tolist() == [2, 0, 0]
    assert cols["spend"].tolist() == [190.0, 0.0, 0.0]
    assert cols["n_active_days"].tolist() == [4, 1, 1]
    assert cols["n_qualifying_days"].tolist() == [1, 1, 1]
    assert cols["prev_active_day"][1:].tolist() == [since_day - 11, since_day]
    assert cols["payment_amount"][0] == 100.0
    assert np.isnan(cols["payment_amount"][1:]).all()
    us = lambda s: T(s).value // 1000  # noqa: E731
    assert cols["last_complaint_us"][0] == us("2024-11-30 23:59:59.999999")
    assert cols["last_login_us"][0] == us("2024-11-20 12:00")
    assert cols["last_active_us"][0] == us("2024-11-20 12:00")
    assert cols["last_event_us"][0] == us("2024-11-30 23:59:59.999999")


def test_a_window_reaching_before_the_folded_history_is_an_error(validate) -> None:
    data = validate(ACTIVITY, CUSTOMERS)
    ids = data.customers["customer_id"].to_numpy()
    daily = build_daily_log(data.con, ids, ["login"], since=A - pd.Timedelta(days=30))
    grid = build_grid(daily, data.customers, [A])
    assert grid.index.window_sum("n_login", -30).tolist() == [4, 0]
    with pytest.raises(ValueError, match=r"a 31-day window before as_of reaches before day"):
        grid.index.window_sum("n_login", -31)
    with pytest.raises(ValueError, match="since must be a UTC midnight"):
        build_daily_log(data.con, ids, ["login"], since=T("2025-01-01 06:00"))


# --- property: the future never changes the past --------------------------------------------

PROPERTY_TYPES = ALL_FAMILIES
PROPERTY_CUSTOMERS = customers(
    [("c1", "2024-06-01", 10.0), ("c2", "2024-12-31 18:00", 0.0, "2025-05-10")]
)
KINDS = [*PROPERTY_TYPES.mapping(), "newsletter_opened"]
PROPERTY_DATES = [T("2025-01-01"), T("2025-02-01"), A]


def _event(offset_us: st.SearchStrategy[int]) -> st.SearchStrategy[tuple]:
    return st.tuples(
        st.sampled_from(["c1", "c2"]),
        offset_us,
        st.sampled_from(KINDS),
        st.sampled_from([None, "api", "reports", "exports", "alerts"]),
        st.sampled_from([None, 0.0, 12.5, 99.0]),
        st.sampled_from([None, "low", "medium", "high", "critical"]),
    )


def _offsets(days: int) -> st.SearchStrategy[int]:
    """Microsecond offsets within ``days`` days, biased to midnights and a microsecond off."""
    day = st.integers(0, days - 1)
    return st.one_of(
        st.integers(0, days * DAY_US - 1),
        day.map(lambda d: d * DAY_US),
        day.map(lambda d: (d + 1) * DAY_US - 1),
    )


def _frame(rows: list[tuple], origin: pd.Timestamp) -> pd.DataFrame:
    return log(
        [
            (c, str(origin + pd.Timedelta(microseconds=off)), kind, feat, amount, sev)
            for c, off, kind, feat, amount, sev in rows
        ]
    )


def _features(events: pd.DataFrame) -> pd.DataFrame:
    data = load_and_validate(
        events,
        PROPERTY_CUSTOMERS,
        PROPERTY_TYPES,
        max_reject_share=1.0,
        observed_until=OBSERVED_UNTIL,
    )
    daily = build_daily_log(data.con, data.customers["customer_id"].to_numpy(), ["login"])
    return build_features(daily, data.customers, PROPERTY_DATES)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    past=st.lists(_event(_offsets(150)), min_size=0, max_size=12),
    future=st.lists(_event(_offsets(60)), min_size=1, max_size=8),
    as_of=st.sampled_from(PROPERTY_DATES),
)
def test_adding_events_at_or_after_as_of_never_changes_the_features_for_that_as_of(
    past: list[tuple], future: list[tuple], as_of: pd.Timestamp
) -> None:
    before = _frame(past, as_of - pd.Timedelta(days=150))
    after = pd.concat([before, _frame(future, as_of)], ignore_index=True)
    keep_old, keep_new = _features(before), _features(after)
    old = keep_old[keep_old["as_of"] <= as_of].reset_index(drop=True)
    new = keep_new[keep_new["as_of"] <= as_of].reset_index(drop=True)
    pd.testing.assert_frame_equal(new, old)


def test_keys_come_first_and_every_feature_is_numeric_or_categorical(
    features_of: FeaturesOf,
) -> None:
    frame = features_of(ACTIVITY, CUSTOMERS, [A])
    assert frame.columns[:2].tolist() == KEYS
    kinds = {name: frame[name].dtype.kind for name in feature_columns(frame)}
    odd = {n: k for n, k in kinds.items() if k not in "if" and n not in {"lifecycle_stage", "plan"}}
    assert odd == {}
