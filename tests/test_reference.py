"""Cross-engine equality: the one-pass builders must equal the plain pandas reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import ALL_FAMILIES

from pipeline.config import FeatureConfig, load_config
from pipeline.events import ValidatedData, load_and_validate
from pipeline.features import build_daily_log, build_features
from pipeline.features.reference import events_frame, reference_features

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[1]
T = pd.Timestamp
US = pd.Timedelta(microseconds=1)
DAY = pd.Timedelta(days=1)
EVENT_TYPES = ALL_FAMILIES
AS_OF = [T("2025-03-01"), T("2025-04-01"), T("2025-06-01")]
OBSERVED_UNTIL = T("2025-07-01")
FEATURES = ("alerts", "api", "dashboards", "exports", "reports")
SEVERITIES = (None, "low", "medium", "high", "critical", "2", "4")
KINDS = (*EVENT_TYPES.mapping(), "newsletter_opened")
QUALIFYING = ["login", "feature_use", "purchase"]


def customers_frame() -> pd.DataFrame:
    """Six customers: active, quiet (no events), churned before, at and after an as_of, and one
    signing up exactly at an as_of (not eligible then)."""
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
            "signup_at": [T("2024-09-15 08:00"), T("2024-10-01"), T("2024-11-20 13:30"),
                          T("2024-12-01"), T("2025-03-01"), T("2024-06-30 23:59:59")],
            "churned_at": [pd.NaT, pd.NaT, T("2025-03-15"), T("2025-04-01"), pd.NaT,
                           T("2025-05-20 10:00")],
            "plan": ["pro", "basic", "pro", "enterprise", "basic", "pro"],
            "mrr": [99.0, 19.0, 99.0, 499.0, 19.0, 0.0],
        }
    )  # fmt: skip


def random_events(seed: int, n: int = 400) -> pd.DataFrame:
    """Random events for c1, c3, c4, c5, c6 (c2 has none), some after the last as_of."""
    rng = np.random.default_rng(seed)
    start, span_us = T("2024-10-01"), int((OBSERVED_UNTIL - T("2024-10-01")) / US)
    kinds = rng.choice(np.array(KINDS, dtype=object), n, p=_kind_weights())
    frame = pd.DataFrame(
        {
            "customer_id": rng.choice(np.array(["c1", "c3", "c4", "c5", "c6"], dtype=object), n),
            "occurred_at": start + pd.to_timedelta(rng.integers(0, span_us, n), unit="us"),
            "event_type": kinds,
        }
    )
    return _with_details(frame, rng)


def _kind_weights() -> np.ndarray:
    weights = np.array([4, 4, 1, 1, 1, 1, 1, 1], dtype=float)[: len(KINDS)]
    return weights / weights.sum()


def edge_events() -> pd.DataFrame:
    """Events exactly at every window edge of every as_of for c1, and one microsecond before."""
    rows = []
    for as_of in AS_OF:
        for days in (0, 7, 30, 60, 90):
            edge = as_of - days * DAY
            for kind in ("login", "feature_used", "complaint", "invoice_paid", "purchase"):
                rows += [("c1", edge, kind), ("c1", edge - US, kind)]
    return pd.DataFrame(rows, columns=["customer_id", "occurred_at", "event_type"])


def _with_details(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Feature names, severities and amounts where each kind of event carries them."""
    n, kind = len(frame), frame["event_type"]
    frame["feature"] = np.where(kind == "feature_used", rng.choice(FEATURES, n), None)
    rated = kind.isin(["complaint", "ticket_opened"])
    frame["severity"] = np.where(rated, rng.choice(np.array(SEVERITIES, dtype=object), n), None)
    paid = kind.isin(["invoice_paid", "purchase"])
    frame["amount"] = np.where(paid, np.round(rng.uniform(5, 500, n), 2), np.nan)
    return frame


def validated(events: pd.DataFrame, customers: pd.DataFrame) -> ValidatedData:
    return load_and_validate(
        events, customers, EVENT_TYPES, max_reject_share=1.0, observed_until=OBSERVED_UNTIL
    )


def both_engines(
    data: ValidatedData, dates: list, config: FeatureConfig | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fast, reference) features for ``dates`` from the same validated inputs."""
    ids = data.customers["customer_id"].to_numpy()
    daily = build_daily_log(data.con, ids, QUALIFYING)
    fast = build_features(daily, data.customers, dates, config)
    events = events_frame(data.con)
    reference = reference_features(events, data.customers, dates, config, QUALIFYING)
    return fast, reference


def assert_same_features(fast: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Exact for keys, integers and categories; floats to a relative 1e-9."""
    assert len(fast) > 0
    pd.testing.assert_frame_equal(fast, reference, rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_builders_equal_the_reference_on_a_random_log_with_window_edges(seed: int) -> None:
    events = pd.concat([random_events(seed), edge_events()], ignore_index=True)
    events = _with_details(events, np.random.default_rng(seed + 100))
    fast, reference = both_engines(validated(events, customers_frame()), AS_OF)
    assert_same_features(fast, reference)


def test_fast_builders_equal_the_reference_with_a_non_default_feature_config() -> None:
    config = FeatureConfig(onboarding_days=30, mature_after_days=120, serious_severity=2)
    fast, reference = both_engines(validated(random_events(7), customers_frame()), AS_OF, config)
    assert_same_features(fast, reference)


def test_fast_builders_equal_the_reference_when_no_customer_has_any_event_yet() -> None:
    events = random_events(3)
    events["occurred_at"] = events["occurred_at"].clip(lower=T("2025-06-02"))
    fast, reference = both_engines(validated(events, customers_frame()), AS_OF)
    assert_same_features(fast, reference)
    assert (fast["events_90d"] == 0).all()


def test_reference_counts_an_event_at_as_of_as_future_and_one_microsecond_before_as_past() -> None:
    as_of = T("2025-03-01")
    events = pd.DataFrame(
        {
            "customer_id": ["c2", "c2", "c2", "c2"],
            "occurred_at": [as_of, as_of - US, as_of - 30 * DAY, as_of - 30 * DAY - US],
            "event_type": ["login", "login", "login", "login"],
        }
    )
    data = validated(events, customers_frame())
    frame = reference_features(events_frame(data.con), data.customers, [as_of])
    row = frame.set_index("customer_id").loc["c2"]
    assert (row["logins_7d"], row["logins_30d"], row["events_90d"]) == (1, 2, 3)
    assert row["days_since_last_login"] == pytest.approx(1e-6 / 86_400, rel=1e-6)
    assert row["active_days_30d"] == 2
    assert set(frame["customer_id"]) == {"c1", "c2", "c3", "c4", "c6"}


def test_a_payment_without_amount_does_not_hide_the_last_known_payment_amount() -> None:
    events = pd.DataFrame(
        {
            "customer_id": ["c2", "c2", "c2"],
            "occurred_at": [T("2025-01-10 10:00"), T("2025-02-10 10:00"), T("2025-02-11 10:00")],
            "event_type": ["invoice_paid"] * 3,
            "amount": [10.0, 20.0, np.nan],
        }
    )
    fast, reference = both_engines(validated(events, customers_frame()), [T("2025-03-01")])
    assert_same_features(fast, reference)


def test_fast_builders_equal_the_reference_on_monthly_dates_of_a_small_demo(
    tmp_path: Path,
) -> None:
    from pipeline.demo import write_demo_data

    write_demo_data(tmp_path, n_customers=300, seed=11)
    config = load_config(ROOT / "configs" / "demo.yaml")
    data = load_and_validate(
        tmp_path / "events.parquet",
        tmp_path / "customers.csv",
        config.event_types,
        max_reject_share=config.validation.max_reject_share,
        observed_until=T(config.data.observed_until),
    )
    dates = list(pd.date_range("2025-01-01", "2026-10-01", freq="MS"))
    fast, reference = both_engines(data, dates, config.features)
    assert_same_features(fast, reference)
    assert fast["as_of"].nunique() == len(dates)


def test_the_folded_partitioned_path_equals_the_reference_on_a_three_year_log() -> None:
    """``churn features``' path (``features_for_dates``: partitions, days before the earliest
    as_of − 365 folded into one history row of totals per customer) against the reference."""
    from pipeline.features import features_for_dates

    rng = np.random.default_rng(21)
    customers = customers_frame()
    customers["signup_at"] = customers["signup_at"] - pd.Timedelta(days=730)
    start, span_us = T("2022-01-01"), int((OBSERVED_UNTIL - T("2022-01-01")) / US)
    n = 1500
    events = pd.DataFrame(
        {
            "customer_id": rng.choice(np.array(["c1", "c3", "c4", "c5", "c6"], dtype=object), n),
            "occurred_at": start + pd.to_timedelta(rng.integers(0, span_us, n), unit="us"),
            "event_type": rng.choice(np.array(KINDS, dtype=object), n, p=_kind_weights()),
        }
    )
    events = _with_details(events, rng)
    data = validated(events, customers)
    dates = [T("2025-01-01"), *AS_OF]
    fast = features_for_dates(data.con, data.customers, dates, FeatureConfig(), QUALIFYING)
    reference = reference_features(events_frame(data.con), data.customers, dates, None, QUALIFYING)
    assert_same_features(fast, reference)
    assert fast["events_lifetime"].max() > fast["events_365d"].max()  # history rows were read
