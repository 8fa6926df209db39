"""Tests of the retail purchase-log simulator and its oracle (pipeline.demo_retail)."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import EventTypes
from pipeline.demo import DemoSummary, _rng, oracle_probability
from pipeline.demo_retail import (
    PLANS,
    Latent,
    draw_latent,
    oracle_table,
    posterior_no_purchase_probability,
    purchase_history,
    simulate_after,
    write_retail_data,
)
from pipeline.events import load_and_validate

pytestmark = pytest.mark.data

N = 3000
START, END = date(2024, 5, 1), date(2026, 11, 1)
FILES = ("events.parquet", "customers.csv", "oracle.parquet", "README.txt")
UTC_END = pd.Timestamp(END, tz="UTC")


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return write_retail_data(tmp_path_factory.mktemp("retail") / "out", n_customers=N, seed=7)


@pytest.fixture(scope="module")
def events(retail: DemoSummary) -> pd.DataFrame:
    return pd.read_parquet(retail.files["events"])


@pytest.fixture(scope="module")
def customers(retail: DemoSummary) -> pd.DataFrame:
    frame = pd.read_csv(retail.files["customers"], keep_default_na=False)
    frame["signup_ts"] = pd.to_datetime(frame["signup_at"], utc=True)
    return frame


@pytest.fixture(scope="module")
def oracle(retail: DemoSummary) -> pd.DataFrame:
    return pd.read_parquet(retail.files["oracle"])


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def _keys(ids: pd.Series | list[str], as_of: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(ids), "as_of": as_of})


def _no_purchase(events: pd.DataFrame, ids: pd.Series, as_of: pd.Timestamp) -> np.ndarray:
    """Observed label: no purchase in [as_of, as_of + 90 days)."""
    window = events["occurred_at"].between(as_of, as_of + pd.Timedelta(days=90), inclusive="left")
    return ~ids.isin(events.loc[window, "customer_id"]).to_numpy()


def test_the_same_seed_writes_byte_identical_files_and_another_seed_different_ones(
    retail: DemoSummary, tmp_path: Path
) -> None:
    again = write_retail_data(tmp_path / "again", n_customers=N, seed=7)
    other = write_retail_data(tmp_path / "other", n_customers=N, seed=8)
    assert sorted(p.name for p in retail.out_dir.iterdir()) == sorted(FILES)
    assert _bytes(again.out_dir) == _bytes(retail.out_dir)
    for name in FILES[:3]:
        assert _bytes(other.out_dir)[name] != _bytes(retail.out_dir)[name]


def test_the_projects_validation_accepts_the_whole_log_without_a_reject(
    retail: DemoSummary,
) -> None:
    data = load_and_validate(
        retail.files["events"],
        retail.files["customers"],
        EventTypes(purchase=["purchase"]),
        max_reject_share=0.0,
        observed_until=pd.Timestamp(END),
    )
    report = data.report
    assert (report.events_in, report.events_valid) == (retail.n_events, retail.n_events)
    assert (report.customers_in, report.customers_valid) == (N, N)
    assert report.event_rejects == {} and report.customer_rejects == {}
    assert report.unknown_event_types == {} and report.customers_without_events == 0
    assert data.customers["churned_at"].isna().all()
    assert (data.customers["mrr"] == 0).all()


def test_customers_sign_up_at_their_first_purchase_without_churn_or_mrr_columns(
    events: pd.DataFrame, customers: pd.DataFrame
) -> None:
    assert list(customers.columns[:7]) == [
        "customer_id",
        "signup_at",
        "plan",
        "owner",
        "segment",
        "contact_name",
        "contact_email",
    ]
    first = events.groupby("customer_id")["occurred_at"].min()
    signup = customers.set_index("customer_id")["signup_ts"]
    pd.testing.assert_series_equal(first, signup.reindex(first.index), check_names=False)
    assert len(first) == N
    assert set(customers["plan"]) == set(PLANS)
    assert signup.max() < pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=181)


def test_events_are_sorted_purchases_with_positive_amounts_in_the_period(
    events: pd.DataFrame,
) -> None:
    assert set(events["event_type"]) == {"purchase"}
    assert (events["amount"] > 0).all()
    assert events["feature"].isna().all() and events["severity"].isna().all()
    assert (events["occurred_at"] < UTC_END).all()
    key = events[["customer_id", "occurred_at"]]
    assert key.equals(key.sort_values(["customer_id", "occurred_at"], kind="stable"))


def test_spend_and_rates_are_heterogeneous_and_a_few_customers_change_rate(
    events: pd.DataFrame, oracle: pd.DataFrame
) -> None:
    mean_spend = events.groupby("customer_id")["amount"].mean()
    assert mean_spend.quantile(0.9) > 2.5 * mean_spend.quantile(0.1)
    purchases = events.groupby("customer_id").size()
    assert 0.25 < (purchases == 1).mean() < 0.5
    assert purchases.max() > 20
    assert 0.05 <= oracle["rate_change_at"].notna().mean() <= 0.11


def test_70_to_85_percent_make_no_purchase_in_90_days_at_a_typical_as_of(
    events: pd.DataFrame, customers: pd.DataFrame
) -> None:
    as_of = pd.Timestamp("2025-08-01", tz="UTC")
    ids = customers.loc[customers["signup_ts"] < as_of, "customer_id"]
    assert len(ids) == N
    assert 0.70 <= _no_purchase(events, ids, as_of).mean() <= 0.85


def test_the_oracle_is_one_for_customers_dropped_out_and_they_buy_no_more(
    events: pd.DataFrame, oracle: pd.DataFrame
) -> None:
    as_of = pd.Timestamp("2025-06-01", tz="UTC")
    dead = oracle.loc[oracle["dropout_at"] < as_of, ["customer_id", "dropout_at"]]
    assert len(dead) > 200
    np.testing.assert_array_equal(
        oracle_probability(oracle, _keys(dead["customer_id"], as_of), 90), 1.0
    )
    last = events.groupby("customer_id")["occurred_at"].max()
    pd.testing.assert_series_equal(
        last.reindex(dead["customer_id"]),
        dead.set_index("customer_id")["dropout_at"],
        check_names=False,
    )


def test_the_oracle_is_calibrated_on_the_simulated_purchases(
    events: pd.DataFrame, customers: pd.DataFrame, oracle: pd.DataFrame
) -> None:
    expected = variance = observed = 0.0
    for as_of in pd.date_range("2024-09-01", "2026-07-01", freq="2MS", tz="UTC"):
        ids = customers.loc[customers["signup_ts"] < as_of, "customer_id"]
        p = oracle_probability(oracle, _keys(ids, as_of), 90)
        expected, variance = expected + p.sum(), variance + (p * (1 - p)).sum()
        observed += _no_purchase(events, ids, as_of).sum()
    assert abs(observed - expected) < 4 * math.sqrt(variance)


def _literal_oracle() -> pd.DataFrame:
    columns = ["customer_id", "first_purchase_at", "purchase_rate_per_day", "rate_change_at"]
    columns += ["purchase_rate_after_per_day", "dropout_at"]
    rows = [
        ("A", "2025-01-01", 0.01, None, 0.01, None),
        ("B", "2025-01-01", 0.02, "2025-04-01", 0.005, None),
        ("C", "2025-01-01", 0.05, None, 0.05, "2025-02-15"),
        ("D", "2025-01-01", 0.01, None, 0.01, "2025-03-20"),
        ("E", "2025-03-11", 0.03, None, 0.03, None),
        ("F", "2025-09-01", 0.03, None, 0.03, None),
        ("G", "2025-01-01", 0.04, "2025-02-01", 0.002, None),
    ]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("first_purchase_at", "rate_change_at", "dropout_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


@pytest.mark.code
def test_the_oracle_has_exact_values_on_hand_made_latent_states() -> None:
    """as_of 2025-03-02, 90 days: A constant rate; B slows down 30 days into the window; C
    dropped out before as_of; D drops out inside the window (alive at as_of: the dropout is not
    foreseen); E's first purchase is in the window; F's after it; G changed before as_of; Z
    unknown."""
    keys = _keys([*"ABCDEFG", "Z"], pd.Timestamp("2025-03-02"))
    got = oracle_probability(_literal_oracle(), keys, 90)
    expected = [
        math.exp(-0.9),
        math.exp(-(30 * 0.02 + 60 * 0.005)),
        1.0,
        math.exp(-0.9),
        0.0,
        1.0,
        math.exp(-90 * 0.002),
        1.0,
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.code
def test_the_oracle_of_a_negative_horizon_is_an_error_naming_the_value() -> None:
    with pytest.raises(ValueError, match="horizon_days must be non-negative, got -1"):
        oracle_probability(_literal_oracle(), _keys(["A"], pd.Timestamp("2025-03-02")), -1)


@pytest.mark.code
def test_the_oracle_equals_a_monte_carlo_re_simulation_of_literal_latent_states() -> None:
    """Three states alive at as_of (day 100, window 90 days): a constant rate, one that slows
    to a fifth 40 days into the window (with a higher dropout), one that triples 60 days in."""
    reps, t0, h = 40_000, 100.0, 90.0
    one = np.ones(3)
    lat = Latent(
        first=np.zeros(3),
        rate=np.array([0.01, 0.02, 0.006]),
        change_at=np.array([np.inf, t0 + 40, t0 + 60]),
        rate_after=np.array([0.01, 0.004, 0.018]),
        dropout=0.2 * one,
        dropout_after=np.array([0.2, 0.5, 0.2]),
    )
    start_us = int(pd.Timestamp("2025-01-01", tz="UTC").value // 1000)
    frame = oracle_table(np.array(["A", "B", "C"]), lat, np.full(3, np.inf), start_us).to_pandas()
    as_of = pd.Timestamp("2025-01-01") + pd.Timedelta(days=t0)
    exact = oracle_probability(frame, _keys(["A", "B", "C"], as_of), int(h))
    state = np.repeat(np.arange(3), reps)
    bought = simulate_after(_rng(5, 0), np.full(len(state), t0), lat.take(state), t0 + h)
    none = np.bincount(state, minlength=3) - np.bincount(state[np.unique(bought.cust)], minlength=3)
    mc = none / reps
    assert np.all(np.abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / reps))
    assert exact[1] > math.exp(-0.02 * h) and exact[2] < math.exp(-0.006 * h)


@pytest.mark.code
def test_drawn_latent_states_follow_the_documented_shapes() -> None:
    lat = draw_latent(_rng(3, 1), 20_000)
    assert lat.first.min() >= 0.0 and lat.first.max() < 180.0
    assert np.mean(lat.rate) == pytest.approx(0.45 * 0.02, rel=0.05)
    assert np.mean(lat.dropout) == pytest.approx(0.6 / 4.1, rel=0.05)
    changed = np.isfinite(lat.change_at)
    assert changed.mean() == pytest.approx(0.08, abs=0.01)
    faded = lat.rate_after < lat.rate
    assert np.all(lat.dropout_after[faded] >= 0.5)
    np.testing.assert_array_equal(lat.rate_after[~changed], lat.rate[~changed])


def test_the_cli_writes_a_retail_log_and_rejects_an_unknown_business(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "shop"
    args = ["demo-data", "--out", str(out), "--customers", "50", "--seed", "3"]
    result = runner.invoke(app, [*args, "--business", "retail"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert len(pd.read_csv(out / "customers.csv")) == 50
    bad = runner.invoke(app, [*args, "--business", "bakery"])
    assert bad.exit_code == 2
    assert "bakery" in bad.output


@pytest.mark.code
def test_purchase_history_counts_only_purchases_before_as_of() -> None:
    ts = pd.Timestamp
    events = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B"],
            "occurred_at": [ts("2025-01-01"), ts("2025-01-11"), ts("2025-02-10"), ts("2025-01-31")],
        }
    )
    keys = _keys(["A", "A", "B", "Z"], ts("2025-02-01"))
    keys.loc[1, "as_of"] = ts("2025-03-01")
    got = purchase_history(events, keys)
    expected = pd.DataFrame(
        {
            "frequency": [1.0, 2.0, 0.0, np.nan],
            "recency_days": [10.0, 40.0, 0.0, np.nan],
            "age_days": [31.0, 59.0, 1.0, np.nan],
        }
    )
    pd.testing.assert_frame_equal(got, expected)


def test_the_history_posterior_is_calibrated_per_frequency_on_customers_without_a_change(
    events: pd.DataFrame, oracle: pd.DataFrame
) -> None:
    """Exact Bayes for the customers without a rate change: for one-timers, a few repeats and
    many, the mean posterior matches the observed share with no purchase in 90 days."""
    steady = oracle.loc[oracle["rate_change_at"].isna(), "customer_id"]
    dates = pd.date_range("2024-11-01", "2026-07-01", freq="4MS", tz="UTC")
    keys = pd.concat([_keys(steady, as_of) for as_of in dates], ignore_index=True)
    history = purchase_history(events, keys)
    p = posterior_no_purchase_probability(history, 90)
    y = np.concatenate([_no_purchase(events, steady, as_of) for as_of in dates])
    groups = np.digitize(history["frequency"].to_numpy(), [1, 4])
    for group in range(3):
        mine = groups == group
        assert mine.sum() > 1000
        gap = y[mine].sum() - p[mine].sum()
        assert abs(gap) < 4 * math.sqrt((p[mine] * (1 - p[mine])).sum())
    assert np.all(posterior_no_purchase_probability(history, 0) == 1.0)


def test_without_out_the_retail_log_goes_to_data_retail_not_over_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["demo-data", "--business", "retail", "--customers", "20", "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "data" / "retail").iterdir()) == sorted(FILES)
    assert not (tmp_path / "data" / "demo").exists()
