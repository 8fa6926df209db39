"""Retention KPIs on tiny hand-written customers and logs, with exact expected values."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import Config, DataConfig, EventTypes, KpiConfig, LabelConfig
from pipeline.events import ValidatedData, load_and_validate
from pipeline.kpis import (
    KPI_COLUMNS,
    cohort_matrix,
    contractual_kpis,
    inactivity_snapshots,
    latest_metrics,
    run_kpis,
)

pytestmark = pytest.mark.code

T = pd.Timestamp
NaT = pd.NaT
EVENT_TYPES = EventTypes(login=["login"], complaint=["complaint"], payment=["invoice_paid"])


def customers(rows: list[tuple]) -> pd.DataFrame:
    """Customers from (customer_id, signup_at, churned_at or None, mrr) tuples."""
    ids, signups, churns, mrrs = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "signup_at": pd.to_datetime(list(signups), format="ISO8601").as_unit("us"),
            "churned_at": pd.to_datetime(list(churns), format="ISO8601").as_unit("us"),
            "mrr": [float(m) for m in mrrs],
        }
    )


def events(rows: list[tuple]) -> pd.DataFrame:
    """Events from (customer_id, occurred_at, event_type, amount or None) tuples."""
    ids, times, kinds, amounts = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "occurred_at": pd.to_datetime(list(times), format="ISO8601"),
            "event_type": list(kinds),
            "amount": pd.array(list(amounts), dtype="Float64"),
        }
    )


def payments(rows: list[tuple]) -> pd.DataFrame:
    """Payments from (customer_id, occurred_at, amount) tuples."""
    ids, times, amounts = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "occurred_at": pd.to_datetime(list(times), format="ISO8601"),
            "amount": amounts,
        }
    )


def validated(cust: pd.DataFrame, log: pd.DataFrame, until: str) -> ValidatedData:
    return load_and_validate(log, cust, EVENT_TYPES, observed_until=T(until))


def config(**kwargs) -> Config:
    return Config(
        data=DataConfig(events=Path("events.csv"), customers=Path("customers.csv")),
        event_types=EVENT_TYPES,
        **kwargs,
    )


def row(table: pd.DataFrame, start: str) -> pd.Series:
    """The KPI row of the period starting at ``start``."""
    return table.set_index("period_start").loc[T(start)]


def textbook_customers() -> pd.DataFrame:
    """130 customers before January 2025, 9 of them cancel in January, 23 sign up in January."""
    before = [(f"s{i:03}", "2024-12-10", None, 100) for i in range(130)]
    lost = [(f"s{i:03}", "2024-12-10", "2025-01-20", 100) for i in range(9)]
    new = [(f"n{i:02}", "2025-01-15", None, 100) for i in range(23)]
    return customers(lost + before[9:] + new)


def test_textbook_month_with_130_at_start_9_lost_and_23_acquired_ends_with_144_and_crr_93_08():
    table, _ = contractual_kpis(textbook_customers(), T("2025-02-01"))

    jan = row(table, "2025-01-01")

    assert (jan["S"], jan["N"], jan["lost"], jan["E"]) == (130, 23, 9, 144)
    assert jan["crr_pct"] == pytest.approx((144 - 23) / 130 * 100)
    assert round(jan["crr_pct"], 2) == 93.08


def test_table_has_one_row_per_complete_period_and_the_promised_columns():
    table, _ = contractual_kpis(textbook_customers(), T("2025-02-01"))

    assert tuple(table.columns) == KPI_COLUMNS
    assert list(table["period_start"]) == [T("2024-12-01"), T("2025-01-01")]
    assert list(table["period_end"]) == [T("2025-01-01"), T("2025-02-01")]


def test_a_partial_last_period_is_left_out():
    table, _ = contractual_kpis(textbook_customers(), T("2025-02-28"))

    assert table["period_start"].max() == T("2025-01-01")


def test_churn_rate_is_customers_lost_over_customers_active_at_period_start():
    cust = customers(
        [
            ("a", "2024-12-01", None, 100),
            ("b", "2024-12-01", None, 100),
            ("c", "2024-12-01", None, 100),
            ("d", "2024-12-01", "2025-01-01", 100),  # churns exactly at the start: lost in Jan
        ]
    )
    table, _ = contractual_kpis(cust, T("2025-02-01"))

    jan = row(table, "2025-01-01")

    assert (jan["S"], jan["lost"]) == (4, 1)
    assert jan["churn_rate"] == 0.25
    assert jan["crr_pct"] == 75.0


def test_a_customer_acquired_and_lost_in_the_same_period_counts_in_n_and_in_lost():
    cust = customers(
        [
            ("a", "2024-12-01", None, 100),
            ("b", "2024-12-01", None, 100),
            ("flash", "2025-01-10", "2025-01-20", 100),
        ]
    )
    table, _ = contractual_kpis(cust, T("2025-02-01"))

    jan = row(table, "2025-01-01")

    assert (jan["S"], jan["N"], jan["lost"], jan["E"]) == (2, 1, 1, 2)
    assert jan["crr_pct"] == 50.0
    assert jan["churn_rate"] == 0.5


def ndr_customers() -> pd.DataFrame:
    """a expands 100 → 150, b contracts 100 → 80, c (100) churns, d joins in February at 500.
    The customers table's current mrr (999) must be ignored when payments exist."""
    return customers(
        [
            ("a", "2025-01-05", None, 999),
            ("b", "2025-01-05", None, 999),
            ("c", "2025-01-05", "2025-02-20", 999),
            ("d", "2025-02-10", None, 999),
        ]
    )


NDR_PAYMENTS = [
    ("a", "2025-01-05", 100.0),
    ("b", "2025-01-05", 100.0),
    ("c", "2025-01-05", 100.0),
    ("a", "2025-02-05", 150.0),
    ("b", "2025-02-05", 80.0),
    ("c", "2025-02-05", 100.0),
    ("d", "2025-02-10", 500.0),
]


def test_ndr_and_grr_come_from_payments_with_expansion_contraction_and_churned_mrr():
    table, _ = contractual_kpis(ndr_customers(), T("2025-03-01"), payments=payments(NDR_PAYMENTS))

    feb = row(table, "2025-02-01")

    assert (feb["S"], feb["N"], feb["lost"], feb["E"]) == (3, 1, 1, 3)
    assert (feb["mrr_start"], feb["expansion"], feb["contraction"], feb["churned_mrr"]) == (
        300.0,
        50.0,
        20.0,
        100.0,
    )
    assert feb["ndr"] == pytest.approx((300 + 50 - 20 - 100) / 300)
    assert feb["grr"] == pytest.approx((300 - 20 - 100) / 300)
    assert feb["ndr_basis"] == "payment_history"


def test_a_payment_exactly_at_the_period_start_counts_from_the_next_period_on():
    cust = customers([("a", "2024-12-15", None, 0)])
    pays = payments([("a", "2024-12-15", 100.0), ("a", "2025-01-01", 130.0)])
    table, _ = contractual_kpis(cust, T("2025-02-01"), payments=pays)

    jan = row(table, "2025-01-01")

    assert (jan["mrr_start"], jan["expansion"]) == (100.0, 30.0)


def test_without_payments_ndr_uses_current_mrr_and_says_so():
    cust = customers(
        [
            ("a", "2025-01-05", None, 150),
            ("b", "2025-01-05", None, 80),
            ("c", "2025-01-05", "2025-02-20", 100),
        ]
    )
    table, _ = contractual_kpis(cust, T("2025-03-01"))

    feb = row(table, "2025-02-01")

    assert feb["ndr_basis"] == "current_mrr_only"
    assert (feb["mrr_start"], feb["expansion"], feb["contraction"]) == (330.0, 0.0, 0.0)
    assert feb["ndr"] == pytest.approx(230 / 330)
    assert feb["grr"] == feb["ndr"]


def test_clv_is_arpa_times_gross_margin_over_monthly_churn_and_lifetime_is_its_inverse():
    cust = customers(
        [
            ("a", "2024-12-01", None, 100),
            ("b", "2024-12-01", None, 100),
            ("c", "2024-12-01", None, 200),
            ("d", "2024-12-01", "2025-01-15", 200),
        ]
    )
    table, _ = contractual_kpis(cust, T("2025-02-01"), gross_margin=0.8, retention_cost=1000.0)

    jan = row(table, "2025-01-01")

    assert jan["arpa"] == 150.0
    assert jan["churn_rate"] == 0.25
    assert jan["clv"] == pytest.approx(150 * 0.8 / 0.25)
    assert jan["lifetime_periods"] == 4.0
    assert jan["retention_cost_per_customer"] == 250.0


def test_clv_and_lifetime_are_undefined_when_nobody_churned():
    cust = customers([("a", "2024-12-01", None, 100)])
    table, _ = contractual_kpis(cust, T("2025-02-01"))

    jan = row(table, "2025-01-01")

    assert jan["churn_rate"] == 0.0
    assert pd.isna(jan["clv"])
    assert pd.isna(jan["lifetime_periods"])
    assert pd.isna(jan["retention_cost_per_customer"])


def test_quarter_periods_count_three_months_of_flows_and_clv_uses_three_months_of_mrr():
    cust = customers(
        [
            ("a", "2024-11-15", None, 100),
            ("b", "2024-11-15", None, 100),
            ("c", "2024-11-15", None, 100),
            ("d", "2024-11-15", "2025-02-10", 100),
            ("e", "2025-03-31", None, 100),
        ]
    )
    table, _ = contractual_kpis(cust, T("2025-05-15"), period="quarter")

    q1 = row(table, "2025-01-01")

    assert list(table["period_start"]) == [T("2024-10-01"), T("2025-01-01")]
    assert q1["period_end"] == T("2025-04-01")
    assert (q1["S"], q1["N"], q1["lost"], q1["E"]) == (4, 1, 1, 4)
    assert q1["churn_rate"] == 0.25
    assert q1["arpa"] == 100.0
    assert q1["clv"] == pytest.approx(100 * 3 / 0.25)
    assert q1["lifetime_periods"] == 4.0


def cohort_customers() -> pd.DataFrame:
    return customers(
        [
            ("j1", "2025-01-03", "2025-01-25", 10),  # lost in its signup month
            ("j2", "2025-01-10", "2025-02-01", 10),  # churns exactly at Feb 1: still active then
            ("j3", "2025-01-20", "2025-03-10", 10),
            ("j4", "2025-01-31 23:00", None, 10),
            ("f1", "2025-02-14", "2025-03-01", 10),
            ("f2", "2025-02-14", None, 10),
        ]
    )


def test_cohort_table_gives_the_share_of_each_signup_month_still_active_per_month_since():
    _, cohorts = contractual_kpis(cohort_customers(), T("2025-04-01"))

    cells = cohorts.set_index(["cohort_month", "months_since_signup"])

    assert list(cohorts["cohort_month"].unique()) == [T("2025-01-01"), T("2025-02-01")]
    assert cells.loc[(T("2025-01-01"), 1), "at"] == T("2025-02-01")
    assert list(cells.loc[T("2025-01-01"), "active"]) == [3, 2, 1]
    assert list(cells.loc[T("2025-01-01"), "retention"]) == [0.75, 0.5, 0.25]
    assert list(cells.loc[T("2025-02-01"), "retention"]) == [1.0, 0.5]
    assert set(cells["cohort_size"]) == {4, 2}


def test_cohort_matrix_pivots_cohorts_into_rows_and_months_into_columns():
    _, cohorts = contractual_kpis(cohort_customers(), T("2025-04-01"))

    matrix = cohort_matrix(cohorts)

    assert list(matrix.index) == [T("2025-01-01"), T("2025-02-01")]
    assert list(matrix.columns) == [1, 2, 3]
    assert list(matrix.loc[T("2025-01-01")]) == [0.75, 0.5, 0.25]
    assert matrix.loc[T("2025-02-01"), 1] == 1.0
    assert pd.isna(matrix.loc[T("2025-02-01"), 3])


def inactivity_log() -> pd.DataFrame:
    """Active = a login in the last 30 days. a: always; b: lapses in Feb; c: new in Feb, lapses
    in Mar; d: complaints only (never active); e: lapses in Feb, comes back in Mar."""
    return events(
        [
            ("a", "2025-01-20", "login", None),
            ("a", "2025-02-20", "login", None),
            ("a", "2025-03-20", "login", None),
            ("b", "2025-01-10", "login", None),
            ("c", "2025-02-25", "login", None),
            ("d", "2025-02-10", "complaint", None),
            ("e", "2025-01-05", "login", None),
            ("e", "2025-03-15", "login", None),
        ]
    )


def inactivity_config() -> Config:
    return config(
        label=LabelConfig(definition="inactivity", qualifying_families=["login"]),
        kpis=KpiConfig(active_days=30),
    )


def test_inactivity_counts_lapsed_customers_as_lost_and_newly_active_ones_as_acquired():
    cust = customers([(c, "2025-01-01", None, 0) for c in "abcde"])
    data = validated(cust, inactivity_log(), "2025-04-01")

    table, _, _ = run_kpis(inactivity_config(), data)

    counts = table.set_index("period_start")[["S", "N", "lost", "E"]]
    assert counts.loc[T("2025-01-01")].tolist() == [0, 3, 0, 3]
    assert counts.loc[T("2025-02-01")].tolist() == [3, 1, 2, 2]
    assert counts.loc[T("2025-03-01")].tolist() == [2, 1, 1, 2]
    feb = row(table, "2025-02-01")
    assert feb["crr_pct"] == pytest.approx(100 / 3)
    assert feb["churn_rate"] == pytest.approx(2 / 3)


def test_inactivity_window_includes_its_first_day_and_excludes_the_instant_itself():
    cust = customers([(c, "2025-01-01", None, 0) for c in ("edge", "now", "early")])
    log = events(
        [
            ("edge", "2025-01-30", "login", None),  # exactly Mar 1 − 30 days: inside
            ("now", "2025-03-01", "login", None),  # exactly at Mar 1: the future
            ("early", "2025-01-29 23:59:59", "login", None),  # one second too early
        ]
    )
    data = validated(cust, log, "2025-04-01")

    active = inactivity_snapshots(data.con, [T("2025-03-01")], ["login"], 30)

    assert active["customer_id"].tolist() == ["edge"]


def test_run_kpis_writes_the_table_and_cohorts_and_returns_latest_metrics(tmp_path: Path):
    pay_events = [(c, t, "invoice_paid", a) for c, t, a in NDR_PAYMENTS]
    data = validated(ndr_customers(), events(pay_events), "2025-03-15")
    out = tmp_path / "kpis.csv"

    table, cohorts, metrics = run_kpis(config(), data, out=out)

    assert pd.read_csv(out).shape == (2, len(KPI_COLUMNS))
    assert len(pd.read_csv(tmp_path / "kpis_cohorts.csv")) == len(cohorts)
    assert metrics["kpi_ndr"] == pytest.approx(230 / 300)
    assert metrics["kpi_E"] == 3.0
    assert "kpi_ndr_basis" not in metrics
    assert table["ndr_basis"].eq("payment_history").all()


def test_latest_metrics_are_the_last_rows_finite_numbers():
    table, _ = contractual_kpis(customers([("a", "2024-12-01", None, 100)]), T("2025-02-01"))

    metrics = latest_metrics(table)

    assert metrics["kpi_S"] == 1.0
    assert metrics["kpi_churn_rate"] == 0.0
    assert "kpi_clv" not in metrics


def test_a_customer_without_payments_before_a_date_falls_back_to_the_customers_table_mrr():
    cust = customers([("a", "2024-12-15", None, 100), ("b", "2024-12-15", None, 40)])
    pays = payments([("a", "2024-12-15", 100.0), ("a", "2025-01-15", 100.0)])
    table, _ = contractual_kpis(cust, T("2025-02-01"), payments=pays)

    jan = row(table, "2025-01-01")

    assert jan["ndr_basis"] == "payment_history"
    assert (jan["mrr_start"], jan["expansion"], jan["contraction"]) == (140.0, 0.0, 0.0)


def test_inactivity_snapshots_refuse_instants_that_are_not_month_starts():
    data = validated(customers([("a", "2025-01-01", None, 0)]), inactivity_log()[:1], "2025-04-01")

    with pytest.raises(ValueError, match="month start"):
        inactivity_snapshots(data.con, [T("2025-03-15")], ["login"], 30)


def test_no_complete_period_gives_empty_tables_not_an_error():
    table, cohorts = contractual_kpis(customers([("a", "2025-01-10", None, 5)]), T("2025-01-20"))

    assert table.empty
    assert tuple(table.columns) == KPI_COLUMNS
    assert cohorts.empty
    assert latest_metrics(table) == {}
