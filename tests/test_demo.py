"""Tests of the seeded demo-data simulator (pipeline.demo)."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.demo import (
    EVENT_TYPES,
    FEATURES,
    PLANS,
    SEGMENTS,
    SEVERITIES,
    DemoSummary,
    oracle_probability,
    write_demo_data,
)

pytestmark = pytest.mark.data

N = 600
START, END = date(2024, 11, 1), date(2026, 11, 1)
FILES = ("events.parquet", "customers.csv", "hazard.parquet", "README.txt")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return write_demo_data(tmp_path_factory.mktemp("demo") / "out", n_customers=N, seed=7)


@pytest.fixture(scope="module")
def events(demo: DemoSummary) -> pd.DataFrame:
    return pd.read_parquet(demo.files["events"])


@pytest.fixture(scope="module")
def customers(demo: DemoSummary) -> pd.DataFrame:
    frame = pd.read_csv(demo.files["customers"], keep_default_na=False)
    frame["signup_ts"] = pd.to_datetime(frame["signup_at"], utc=True)
    frame["churned_ts"] = pd.to_datetime(frame["churned_at"].replace("", None), utc=True)
    return frame


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def test_the_same_seed_writes_byte_identical_files_and_another_seed_different_ones(
    demo: DemoSummary, tmp_path: Path
) -> None:
    again = write_demo_data(tmp_path / "again", n_customers=N, seed=7)
    other = write_demo_data(tmp_path / "other", n_customers=N, seed=8)
    assert _bytes(again.out_dir) == _bytes(demo.out_dir)
    differing = _bytes(other.out_dir)
    for name in ("events.parquet", "customers.csv", "hazard.parquet"):
        assert differing[name] != _bytes(demo.out_dir)[name]


def test_the_summary_matches_the_files_and_no_temporary_files_are_left(
    demo: DemoSummary, events: pd.DataFrame, customers: pd.DataFrame
) -> None:
    assert sorted(p.name for p in demo.out_dir.iterdir()) == sorted(FILES)
    assert demo.n_customers == N == len(customers)
    assert demo.n_events == len(events)
    assert demo.n_churned == customers["churned_ts"].notna().sum()
    assert (demo.start, demo.end) == (START, END)


def test_progress_is_reported_per_chunk_up_to_the_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    write_demo_data(tmp_path, n_customers=20, seed=1, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 1), (1, 1)]


def test_the_event_file_has_exactly_the_contract_schema(demo: DemoSummary) -> None:
    schema = pq.read_schema(demo.files["events"])
    assert schema.names == [
        "customer_id",
        "occurred_at",
        "event_type",
        "feature",
        "amount",
        "severity",
    ]
    assert schema.field("customer_id").type == pa.string()
    assert schema.field("occurred_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("event_type").type == pa.string()
    assert schema.field("feature").type == pa.string()
    assert schema.field("amount").type == pa.float64()
    assert schema.field("severity").type == pa.string()


def test_the_hazard_file_is_small_typed_and_on_7_day_blocks(demo: DemoSummary) -> None:
    table = pq.read_table(demo.files["hazard"])
    assert table.schema.field("week_start").type == pa.date32()
    assert table.schema.field("hazard").type == pa.float32()
    weeks = pd.to_datetime(table.column("week_start").to_pandas())
    assert ((weeks - pd.Timestamp(START)).dt.days % 7 == 0).all()
    hazard = table.column("hazard").to_numpy()
    assert (hazard >= 0).all() and (hazard < 7).all()
    at_risk = table.column("at_risk_days").to_numpy()
    assert ((at_risk >= 0) & (at_risk <= 7)).all()


def test_event_values_come_from_the_documented_vocabularies(events: pd.DataFrame) -> None:
    assert set(events["event_type"]) == set(EVENT_TYPES)
    assert set(events["feature"].dropna()) <= set(FEATURES)
    assert set(events["severity"].dropna()) == set(SEVERITIES)
    assert events["customer_id"].str.fullmatch(r"C\d{6}").all()


def test_feature_is_set_only_on_feature_use_and_severity_only_on_support_events(
    events: pd.DataFrame,
) -> None:
    is_feature = events["event_type"] == "feature_used"
    assert events.loc[is_feature, "feature"].notna().all()
    assert events.loc[~is_feature, "feature"].isna().all()
    support = events["event_type"].isin(["ticket_opened", "complaint"])
    assert events.loc[support, "severity"].notna().all()
    assert events.loc[~support, "severity"].isna().all()


def test_amounts_are_positive_charges_only_on_money_events(events: pd.DataFrame) -> None:
    money = events["event_type"].isin(["invoice_paid", "payment_failed"])
    assert (events.loc[money, "amount"] > 0).all()
    assert events.loc[~money, "amount"].isna().all()


def test_complaints_are_rarer_and_more_severe_than_tickets(events: pd.DataFrame) -> None:
    rank = events["severity"].map({s: i for i, s in enumerate(SEVERITIES)})
    complaints = rank[events["event_type"] == "complaint"]
    tickets = rank[events["event_type"] == "ticket_opened"]
    assert 0 < len(complaints) < len(tickets)
    assert complaints.mean() > tickets.mean()


def test_the_log_carries_a_little_dirt_unmapped_types_and_exact_duplicates(
    events: pd.DataFrame,
) -> None:
    newsletter = (events["event_type"] == "newsletter_opened").mean()
    assert 0.003 < newsletter < 0.03
    assert 0 < events.duplicated().sum() < 0.001 * len(events)


def test_customers_file_has_the_contract_columns_and_values(customers: pd.DataFrame) -> None:
    assert list(customers.columns[:9]) == [
        "customer_id",
        "signup_at",
        "churned_at",
        "plan",
        "mrr",
        "owner",
        "segment",
        "contact_name",
        "contact_email",
    ]
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert customers["signup_at"].str.fullmatch(iso).all()
    churned = customers["churned_at"] != ""
    assert customers.loc[churned, "churned_at"].str.fullmatch(iso).all()
    assert 0 < churned.sum() < len(customers)
    assert set(customers["plan"]) <= set(PLANS)
    assert set(customers["segment"]) <= set(SEGMENTS)
    assert customers["owner"].nunique() > 3
    assert (customers["mrr"] > 0).all()
    assert customers["contact_email"].is_unique
    assert customers["customer_id"].is_unique


def test_every_event_lies_between_signup_and_cancellation(
    events: pd.DataFrame, customers: pd.DataFrame
) -> None:
    joined = events.merge(customers, on="customer_id", how="left", validate="many_to_one")
    assert joined["signup_ts"].notna().all()
    assert (joined["occurred_at"] >= joined["signup_ts"]).all()
    churned = joined["churned_ts"].notna()
    assert (joined.loc[churned, "occurred_at"] < joined.loc[churned, "churned_ts"]).all()
    assert (joined["occurred_at"] < pd.Timestamp(END, tz="UTC")).all()
    assert (customers["churned_ts"].dropna() >= customers["signup_ts"].min()).all()


def test_the_last_charge_of_each_customer_is_its_current_mrr(
    events: pd.DataFrame, customers: pd.DataFrame
) -> None:
    charges = events[events["event_type"].isin(["invoice_paid", "payment_failed"])]
    last = charges.sort_values("occurred_at").groupby("customer_id")["amount"].last()
    mrr = customers.set_index("customer_id")["mrr"].reindex(last.index)
    np.testing.assert_allclose(last.to_numpy(), mrr.to_numpy(), rtol=0, atol=0.005)


def test_invoices_are_monthly_on_a_fixed_billing_day(events: pd.DataFrame) -> None:
    paid = events[events["event_type"] == "invoice_paid"]
    per_month = paid.groupby(["customer_id", paid["occurred_at"].dt.strftime("%Y-%m")]).size()
    assert per_month.max() <= 2
    assert per_month.mean() == pytest.approx(1.0, abs=0.05)
    days = paid.groupby("customer_id")["occurred_at"].agg(lambda s: s.dt.day.mode().iloc[0])
    assert days.max() <= 28


def test_mrr_changes_over_time_for_some_customers(events: pd.DataFrame) -> None:
    paid = events[events["event_type"] == "invoice_paid"]
    distinct = paid.groupby("customer_id")["amount"].nunique()
    assert (distinct > 1).mean() > 0.02


def test_events_are_sorted_by_customer_then_time(events: pd.DataFrame) -> None:
    key = events[["customer_id", "occurred_at"]]
    assert key.equals(key.sort_values(["customer_id", "occurred_at"], kind="stable"))


def test_churners_were_less_engaged_before_cancelling_than_stayers(
    events: pd.DataFrame, customers: pd.DataFrame
) -> None:
    """Logins per day and distinct features in the 60 days before a reference date: the
    cancellation for churners, the period end for customers who stayed."""
    ref = customers.set_index("customer_id")["churned_ts"].fillna(pd.Timestamp(END, tz="UTC"))
    signup = customers.set_index("customer_id")["signup_ts"]
    mature = (ref - signup).dt.days >= 90
    frame = events.join(ref.rename("ref"), on="customer_id")
    recent = frame[(frame["occurred_at"] >= frame["ref"] - pd.Timedelta(days=60))]
    logins = recent[recent["event_type"] == "login"].groupby("customer_id").size()
    breadth = recent.groupby("customer_id")["feature"].nunique()
    stats = pd.DataFrame({"logins": logins, "breadth": breadth}).reindex(ref.index).fillna(0)
    churned = customers.set_index("customer_id")["churned_ts"].notna()
    churners, stayers = stats[churned & mature], stats[~churned & mature]
    assert len(churners) > 30 and len(stayers) > 30
    assert churners["logins"].median() < 0.7 * stayers["logins"].median()
    assert churners["breadth"].mean() < stayers["breadth"].mean()


@pytest.mark.code
def test_oracle_gives_one_minus_exp_of_the_window_hazard_for_a_constant_hazard() -> None:
    h = 0.002
    weeks = pd.date_range("2025-01-06", periods=30, freq="7D")
    hazard = pd.DataFrame({"customer_id": "C1", "week_start": weeks.date, "hazard": 7 * h})
    keys = pd.DataFrame({"customer_id": ["C1"], "as_of": [pd.Timestamp("2025-01-06", tz="UTC")]})
    got = oracle_probability(hazard, keys, 90)
    assert got[0] == pytest.approx(1 - math.exp(-h * 90), rel=1e-12)


@pytest.mark.code
def test_oracle_pro_rates_partial_weeks_and_ignores_other_customers() -> None:
    hazard = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B"],
            "week_start": pd.to_datetime(["2025-01-06", "2025-01-13", "2025-01-20", "2025-01-06"]),
            "hazard": np.array([0.07, 0.14, 0.7, 5.0], dtype=np.float32),
        }
    )
    keys = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "Z"],
            "as_of": pd.to_datetime(["2025-01-09", "2025-01-13", "2025-01-26", "2025-01-09"]),
        }
    )
    got = oracle_probability(hazard, keys, 7)
    # 4 of 7 days of week 1 (0.04) + 3 of 7 days of week 2 (0.06)
    expected_first = 1 - math.exp(-(0.04 + 0.06))
    # the whole of week 2
    expected_second = 1 - math.exp(-0.14)
    # the last day of week 3 (0.1), then nothing stored
    expected_third = 1 - math.exp(-0.1)
    np.testing.assert_allclose(
        got, [expected_first, expected_second, expected_third, 0.0], rtol=1e-6
    )


def test_oracle_is_calibrated_on_the_simulated_cancellations(
    demo: DemoSummary, customers: pd.DataFrame
) -> None:
    hazard = pd.read_parquet(demo.files["hazard"])
    rows = []
    for as_of in pd.date_range("2025-09-01", "2026-05-01", freq="MS", tz="UTC"):
        ok = (customers["signup_ts"] < as_of) & ~(customers["churned_ts"] < as_of)
        eligible = customers[ok]
        churned = eligible["churned_ts"] < as_of + pd.Timedelta(days=90)
        keys = pd.DataFrame({"customer_id": eligible["customer_id"], "as_of": as_of})
        rows.append((oracle_probability(hazard, keys, 90).sum(), churned.sum()))
    expected, observed = np.sum(rows, axis=0)
    assert observed > 50
    assert abs(observed - expected) < 4 * math.sqrt(expected)
