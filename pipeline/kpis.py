"""Retention KPIs per calendar period: CRR, churn rate, NDR, GRR, ARPA, CLV, lifetime, cohorts.

Periods are calendar months or quarters, half-open [period_start, period_end) in UTC (naive
timestamps are UTC). Only complete periods are reported: a period is complete when
``period_end <= observed_until`` (the exclusive end of the log), so a partial last period is
left out rather than reported with too few events. The first period is the one that contains
the earliest ``signup_at``.

Who is *active* at an instant t (a period boundary, always a UTC midnight):

- ``cancellation`` (contractual): ``signup_at < t`` and not ``churned_at < t``.
- ``inactivity`` (non-contractual): a qualifying event (families in
  ``LabelConfig.qualifying_families``) in [t − ``KpiConfig.active_days`` days, t).

Counts per period (columns ``S``, ``N``, ``lost``, ``E``):

- ``S``: active at period_start; ``E``: active at period_end; always ``E = S + N − lost``.
- contractual: ``N`` = signed up in [start, end); ``lost`` = churned in [start, end). A customer
  acquired *and* lost in the same period counts in both ``N`` and ``lost`` (and not in ``S`` or
  ``E``), so it lowers CRR and raises the churn rate of that period.
- non-contractual: ``lost`` = active at start but not at end; ``N`` = active at end but not at
  start (new *or reactivated*). A customer whose whole activity window opens and closes inside
  one period (only possible when the period is longer than ``active_days``) is in neither.

Rates: ``crr_pct = (E − N) / S × 100`` (percent); ``churn_rate = lost / S`` (a fraction per
period: per month for months, per quarter for quarters). Both are NaN when ``S = 0``.

Revenue (MRR is monthly recurring revenue, money per month, whatever the period length):

- ``ndr_basis = 'payment_history'`` when the log has events of family ``payment`` with an
  amount: a customer's MRR at t is the amount of their last payment strictly before t (a payment
  exactly at t belongs to the next period); customers with no payment before t fall back to the
  customers table's ``mrr``.
- ``ndr_basis = 'current_mrr_only'`` otherwise: every active customer carries the customers
  table's current ``mrr`` at every date, so expansion and contraction are 0 and NDR = GRR. This
  is an approximation: past MRR is unknown, and churned customers' ``mrr`` may be stale or 0.
- Over the customers active at start: ``mrr_start`` = their MRR at start; for those still active
  at end ``expansion`` / ``contraction`` = sum of their MRR increases / decreases from start to
  end; ``churned_mrr`` = start MRR of those not active at end.
  ``ndr = (mrr_start + expansion − contraction − churned_mrr) / mrr_start`` and
  ``grr = (mrr_start − contraction − churned_mrr) / mrr_start`` (fractions, 1.0 = 100 %; NaN when
  ``mrr_start = 0``). Customers acquired during the period add nothing to NDR or GRR.

Value: ``arpa = mrr_start / S`` (money per account per month); ``clv = arpa × gross_margin ×
months_per_period / churn_rate`` (money; equivalently ARPA × margin / monthly churn with the
simple conversion monthly churn = churn_rate / months_per_period, 3 for quarters);
``lifetime_periods = 1 / churn_rate`` (in periods: months or quarters). Both NaN when
``churn_rate = 0`` (no churn observed: undefined, not infinite). ``retention_cost_per_customer
= KpiConfig.retention_cost / S`` (retention_cost is the spend per period; NaN when not set).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.events import ValidatedData
from pipeline.store import EventStore

log = logging.getLogger(__name__)

Period = Literal["month", "quarter"]
Definition = Literal["cancellation", "inactivity"]
Basis = Literal["payment_history", "current_mrr_only"]

MONTHS_PER_PERIOD: dict[str, int] = {"month": 1, "quarter": 3}
_FREQ: dict[str, str] = {"month": "MS", "quarter": "QS"}
_PERIOD_CODE: dict[str, str] = {"month": "M", "quarter": "Q"}
TS = "datetime64[us]"

KPI_COLUMNS: tuple[str, ...] = (
    "period_start",
    "period_end",
    "S",
    "N",
    "lost",
    "E",
    "crr_pct",
    "churn_rate",
    "mrr_start",
    "expansion",
    "contraction",
    "churned_mrr",
    "ndr",
    "grr",
    "arpa",
    "clv",
    "lifetime_periods",
    "retention_cost_per_customer",
    "ndr_basis",
)
_MRR_COLUMNS = ("mrr_start", "expansion", "contraction", "churned_mrr")


# --- periods ------------------------------------------------------------------------------------


def period_floor(when: pd.Timestamp, period: Period) -> pd.Timestamp:
    """Start (UTC midnight) of the calendar month or quarter that contains ``when``."""
    return pd.Timestamp(when).to_period(_PERIOD_CODE[period]).start_time.as_unit("us")


def period_boundaries(
    first: pd.Timestamp, observed_until: pd.Timestamp, period: Period
) -> pd.DatetimeIndex:
    """Period starts from the one containing ``first`` up to the last one ``<= observed_until``.

    Consecutive pairs are the complete periods; the partial period that starts at the last
    boundary (its end lies after ``observed_until``) is not a pair and so is never reported.
    """
    start = period_floor(first, period)
    return pd.date_range(start, pd.Timestamp(observed_until), freq=_FREQ[period]).as_unit("us")


def periods_from(boundaries: pd.DatetimeIndex) -> pd.DataFrame:
    """Complete periods [period_start, period_end) from consecutive boundaries."""
    bounds = pd.DatetimeIndex(boundaries).as_unit("us")
    return pd.DataFrame({"period_start": bounds[:-1], "period_end": bounds[1:]})


# --- who is active, with what MRR ---------------------------------------------------------------


def contractual_snapshots(customers: pd.DataFrame, at: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """Customers active at each instant t in ``at``: ``signup_at < t`` and not
    ``churned_at < t`` (a customer churning exactly at t is still active at t).

    Returns one row per (at, customer_id), sorted.
    """
    frames = [
        pd.DataFrame({"at": pd.Timestamp(t), "customer_id": _active_ids(customers, t)}) for t in at
    ]
    return _snapshot_frame(frames)


def _active_ids(customers: pd.DataFrame, t: pd.Timestamp) -> pd.Series:
    active = (customers["signup_at"] < t) & ~(customers["churned_at"] < t)
    return customers.loc[active, "customer_id"]


def inactivity_snapshots(
    source: EventStore | duckdb.DuckDBPyConnection,
    at: Sequence[pd.Timestamp],
    families: Sequence[str],
    active_days: int,
) -> pd.DataFrame:
    """Customers active at each instant t in ``at`` under the non-contractual definition: at
    least one event of ``families`` in [t − active_days days, t).

    Runs on the event store (``EventStore.active_customers_at``). Each t must be a month start
    (UTC midnight on day 1; period starts are): the log is first reduced to each customer's last
    qualifying event per calendar month, which is exact for such instants because a month
    before t has an event in the window iff its last event is at or after t − active_days.
    Returns one row per (at, customer_id), sorted.
    """
    instants = [pd.Timestamp(t) for t in at]
    if any(t != period_floor(t, "month") for t in instants):
        raise ValueError("inactivity_snapshots: every instant must be a month start (UTC)")
    if not instants or not families:
        return _snapshot_frame([])
    frame = EventStore.of(source).active_customers_at(instants, list(families), active_days)
    return _snapshot_frame([frame])


def payment_history(source: EventStore | duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Recurring payments from the event store: (customer_id, occurred_at, amount) of events
    of family ``payment`` with an amount (that month's MRR), sorted by time."""
    frame = EventStore.of(source).payments()
    return frame.astype({"occurred_at": TS, "amount": "float64"})


def attach_mrr(
    snapshots: pd.DataFrame, customers: pd.DataFrame, payments: pd.DataFrame | None
) -> tuple[pd.DataFrame, Basis]:
    """Add ``mrr`` (money per month) to each (at, customer_id) snapshot row.

    With payments: the amount of the customer's last payment strictly before ``at``, else the
    customers table's ``mrr``; basis ``'payment_history'``. Without (None or empty): the
    customers table's current ``mrr`` at every date; basis ``'current_mrr_only'``.
    """
    current = customers[["customer_id", "mrr"]].astype({"mrr": "float64"})
    out = snapshots.merge(current, on="customer_id", how="left")
    if payments is None or payments.empty:
        return out.assign(mrr=out["mrr"].fillna(0.0)), "current_mrr_only"
    last = pd.merge_asof(
        out.sort_values("at"),
        payments.astype({"occurred_at": TS}).sort_values("occurred_at"),
        left_on="at",
        right_on="occurred_at",
        by="customer_id",
        allow_exact_matches=False,
        direction="backward",
    )
    last["mrr"] = last["amount"].fillna(last["mrr"]).fillna(0.0)
    return _sorted(last[["at", "customer_id", "mrr"]]), "payment_history"


def _snapshot_frame(frames: list[pd.DataFrame]) -> pd.DataFrame:
    empty = pd.DataFrame({"at": pd.Series(dtype=TS), "customer_id": pd.Series(dtype="str")})
    out = pd.concat([empty, *frames], ignore_index=True) if frames else empty
    return _sorted(out.astype({"at": TS, "customer_id": "str"}))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["at", "customer_id"]).reset_index(drop=True)


# --- flows per period ---------------------------------------------------------------------------


def transitions(snapshots: pd.DataFrame, periods: pd.DataFrame) -> pd.DataFrame:
    """One row per (period, customer) active at its start or end: ``in_start``, ``in_end`` and
    ``mrr_start`` / ``mrr_end`` (0.0 where not active). ``snapshots`` needs ``mrr``."""
    keys = ["period_start", "period_end", "customer_id"]
    start = periods.merge(
        snapshots.rename(columns={"at": "period_start", "mrr": "mrr_start"}), on="period_start"
    )
    end = periods.merge(
        snapshots.rename(columns={"at": "period_end", "mrr": "mrr_end"}), on="period_end"
    )
    both = start.merge(end, on=keys, how="outer", indicator=True)
    return both.assign(
        in_start=both["_merge"] != "right_only",
        in_end=both["_merge"] != "left_only",
        mrr_start=both["mrr_start"].fillna(0.0),
        mrr_end=both["mrr_end"].fillna(0.0),
    ).drop(columns="_merge")


def contractual_counts(customers: pd.DataFrame, periods: pd.DataFrame) -> pd.DataFrame:
    """S, N, lost, E per period from signup and churn dates (see the module docstring).

    S = #(signup < start) − #(churned < start); N = #(start <= signup < end);
    lost = #(start <= churned < end), including customers acquired in the same period;
    E = S + N − lost (= active at end, because churned_at >= signup_at).
    """
    signup = np.sort(customers["signup_at"].to_numpy(TS))
    churned = np.sort(customers["churned_at"].dropna().to_numpy(TS))
    start, end = periods["period_start"].to_numpy(TS), periods["period_end"].to_numpy(TS)

    def before(times: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(times, t, side="left").astype("int64")

    s = before(signup, start) - before(churned, start)
    n = before(signup, end) - before(signup, start)
    lost = before(churned, end) - before(churned, start)
    return periods.assign(S=s, N=n, lost=lost, E=s + n - lost)


def inactivity_counts(moves: pd.DataFrame, periods: pd.DataFrame) -> pd.DataFrame:
    """S, N, lost, E per period from ``transitions`` under the non-contractual definition:
    S = active at start, E = active at end, lost = active at start not at end, N = active at end
    not at start (new or reactivated)."""
    flags = moves.assign(
        S=moves["in_start"],
        E=moves["in_end"],
        lost=moves["in_start"] & ~moves["in_end"],
        N=~moves["in_start"] & moves["in_end"],
    )
    return _per_period(flags, periods, ["S", "N", "lost", "E"]).astype(
        {c: "int64" for c in ("S", "N", "lost", "E")}
    )


def mrr_bridge(moves: pd.DataFrame, periods: pd.DataFrame) -> pd.DataFrame:
    """mrr_start, expansion, contraction, churned_mrr per period over customers active at start
    (money per month; see the module docstring)."""
    kept = moves["in_start"] & moves["in_end"]
    delta = (moves["mrr_end"] - moves["mrr_start"]).where(kept, 0.0)
    parts = moves.assign(
        mrr_start=moves["mrr_start"].where(moves["in_start"], 0.0),
        expansion=delta.clip(lower=0.0),
        contraction=(-delta).clip(lower=0.0),
        churned_mrr=moves["mrr_start"].where(moves["in_start"] & ~moves["in_end"], 0.0),
    )
    return _per_period(parts, periods, list(_MRR_COLUMNS)).astype(
        {c: "float64" for c in _MRR_COLUMNS}
    )


def _per_period(frame: pd.DataFrame, periods: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Sums of ``columns`` per period, with 0 for periods that have no rows."""
    keys = ["period_start", "period_end"]
    sums = frame.groupby(keys, as_index=False)[columns].sum()
    return periods.merge(sums, on=keys, how="left").fillna(dict.fromkeys(columns, 0))


# --- ratios -------------------------------------------------------------------------------------


def retention_ratios(
    flows: pd.DataFrame,
    basis: Basis,
    gross_margin: float = 1.0,
    months_per_period: int = 1,
    retention_cost: float | None = None,
) -> pd.DataFrame:
    """Add crr_pct, churn_rate, ndr, grr, arpa, clv, lifetime_periods,
    retention_cost_per_customer and ndr_basis to per-period counts and MRR flows (definitions
    and units in the module docstring); returns the columns of ``KPI_COLUMNS``."""
    s = flows["S"].where(flows["S"] > 0).astype("float64")
    mrr0 = flows["mrr_start"].where(flows["mrr_start"] > 0)
    churn = flows["lost"] / s
    arpa = flows["mrr_start"] / s
    lost_mrr = flows["contraction"] + flows["churned_mrr"]
    out = flows.assign(
        crr_pct=(flows["E"] - flows["N"]) / s * 100.0,
        churn_rate=churn,
        ndr=(flows["mrr_start"] + flows["expansion"] - lost_mrr) / mrr0,
        grr=(flows["mrr_start"] - lost_mrr) / mrr0,
        arpa=arpa,
        clv=arpa * gross_margin * months_per_period / churn.where(churn > 0),
        lifetime_periods=1.0 / churn.where(churn > 0),
        retention_cost_per_customer=(np.nan if retention_cost is None else retention_cost) / s,
        ndr_basis=basis,
    )
    return out[list(KPI_COLUMNS)]


# --- cohorts ------------------------------------------------------------------------------------


def cohort_retention(
    customers: pd.DataFrame, snapshots: pd.DataFrame, month_starts: Sequence[pd.Timestamp]
) -> pd.DataFrame:
    """Tidy cohort table: signup month × months since signup → share of the cohort active.

    ``cohort_month`` = the calendar month of ``signup_at``; the cell ``months_since_signup = m``
    (m >= 1) is evaluated at the instant ``at = cohort_month + m months`` (a month start), so
    m = 1 is the first month start after the signup month. ``active`` counts the cohort's
    customers in ``snapshots`` at ``at`` (active under the label definition that built them);
    ``retention = active / cohort_size``. Cells exist for every ``at`` in ``month_starts`` after
    the cohort month: pass the month starts up to observed_until so that only observed cells
    appear; ``snapshots`` must hold every one of them.
    """
    cohort = customers["signup_at"].dt.to_period("M").dt.start_time.astype(TS)
    sizes = (
        pd.DataFrame({"cohort_month": cohort})
        .groupby("cohort_month", as_index=False)
        .size()
        .rename(columns={"size": "cohort_size"})
    )
    instants = pd.DataFrame({"at": pd.DatetimeIndex(month_starts).as_unit("us")})
    grid = sizes.merge(instants, how="cross")
    grid = grid[grid["at"] > grid["cohort_month"]]
    members = snapshots[["at", "customer_id"]].merge(
        pd.DataFrame({"customer_id": customers["customer_id"], "cohort_month": cohort}),
        on="customer_id",
    )
    active = members.groupby(["cohort_month", "at"], as_index=False).size()
    cells = grid.merge(active.rename(columns={"size": "active"}), how="left")
    cells["active"] = cells["active"].fillna(0).astype("int64")
    cells["months_since_signup"] = _months_between(cells["cohort_month"], cells["at"])
    cells["retention"] = cells["active"] / cells["cohort_size"]
    columns = ["cohort_month", "months_since_signup", "at", "cohort_size", "active", "retention"]
    return cells[columns].sort_values(["cohort_month", "months_since_signup"], ignore_index=True)


def cohort_matrix(cohorts: pd.DataFrame, value: str = "retention") -> pd.DataFrame:
    """Pivot the tidy cohort table: one row per cohort_month, one column per months_since_signup
    (NaN where not yet observed)."""
    return cohorts.pivot(index="cohort_month", columns="months_since_signup", values=value)


def _months_between(first: pd.Series, later: pd.Series) -> pd.Series:
    return (later.dt.year - first.dt.year) * 12 + (later.dt.month - first.dt.month)


# --- putting it together ------------------------------------------------------------------------


def retention_kpis(
    customers: pd.DataFrame,
    snapshots: pd.DataFrame,
    periods: pd.DataFrame,
    definition: Definition,
    basis: Basis,
    gross_margin: float = 1.0,
    months_per_period: int = 1,
    retention_cost: float | None = None,
) -> pd.DataFrame:
    """The KPI table (``KPI_COLUMNS``, one row per period) from snapshots with ``mrr`` at every
    period boundary (see ``attach_mrr``)."""
    moves = transitions(snapshots, periods)
    if definition == "cancellation":
        counts = contractual_counts(customers, periods)
    else:
        counts = inactivity_counts(moves, periods)
    flows = counts.merge(mrr_bridge(moves, periods), on=["period_start", "period_end"])
    return retention_ratios(flows, basis, gross_margin, months_per_period, retention_cost)


def latest_metrics(table: pd.DataFrame, prefix: str = "kpi_") -> dict[str, float]:
    """Numeric KPIs of the last complete period as ``{prefix + column: float}``, for a tracker.

    Non-finite values (NaN: undefined, e.g. no churn) are left out; dates and ``ndr_basis`` too.
    """
    if table.empty:
        return {}
    last = table.iloc[-1]
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    return {f"{prefix}{c}": float(last[c]) for c in numeric if np.isfinite(float(last[c]))}


def snapshot_instants(
    customers: pd.DataFrame, observed_until: pd.Timestamp, period: Period
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """(month starts, period starts) from the first signup's month / period up to
    observed_until: the instants at which ``kpi_tables`` needs activity snapshots (their union).
    """
    until = pd.Timestamp(observed_until)
    first = customers["signup_at"].min() if not customers.empty else until
    return period_boundaries(first, until, "month"), period_boundaries(first, until, period)


def kpi_tables(
    customers: pd.DataFrame,
    snapshots: pd.DataFrame,
    payments: pd.DataFrame | None,
    observed_until: pd.Timestamp,
    period: Period = "month",
    definition: Definition = "cancellation",
    gross_margin: float = 1.0,
    retention_cost: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(KPI table, tidy cohort table) from activity snapshots (at, customer_id) taken at every
    instant of ``snapshot_instants``; ``payments`` as from ``payment_history`` (or None)."""
    months, bounds = snapshot_instants(customers, observed_until, period)
    with_mrr, basis = attach_mrr(snapshots, customers, payments)
    table = retention_kpis(
        customers,
        with_mrr[with_mrr["at"].isin(bounds)],
        periods_from(bounds),
        definition,
        basis,
        gross_margin,
        MONTHS_PER_PERIOD[period],
        retention_cost,
    )
    return table, cohort_retention(customers, with_mrr, months)


def contractual_kpis(
    customers: pd.DataFrame,
    observed_until: pd.Timestamp,
    period: Period = "month",
    payments: pd.DataFrame | None = None,
    gross_margin: float = 1.0,
    retention_cost: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(KPI table, tidy cohort table) for a contractual business from frames alone."""
    months, bounds = snapshot_instants(customers, observed_until, period)
    snapshots = contractual_snapshots(customers, months.union(bounds))
    return kpi_tables(
        customers,
        snapshots,
        payments,
        observed_until,
        period,
        "cancellation",
        gross_margin,
        retention_cost,
    )


def run_kpis(
    config: Config,
    data: ValidatedData,
    out: Path | None = None,
    period: Period | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Edge function: (KPI table, tidy cohort table, latest-period metrics) for validated inputs.

    ``period`` overrides ``config.kpis.period``; the label definition, qualifying families,
    ``kpis.active_days``, ``gross_margin`` and ``retention_cost`` come from ``config``. With
    ``out`` (``.csv`` or ``.parquet``) the KPI table is written there and the cohort table beside
    it as ``<stem>_cohorts<suffix>``, both atomically. Nothing is logged to MLflow: the caller
    may log the returned metrics dict.
    """
    from pipeline.io import write_frame

    period = period or config.kpis.period
    until = pd.Timestamp(data.observed_until)
    months, bounds = snapshot_instants(data.customers, until, period)
    payments = payment_history(data.store)
    table, cohorts = kpi_tables(
        data.customers,
        _snapshots(config, data, months.union(bounds)),
        payments,
        until,
        period,
        config.label.definition,
        config.kpis.gross_margin,
        config.kpis.retention_cost,
    )
    _log_summary(table, period, until)
    if out is not None:
        out = Path(out)
        write_frame(table, out)
        write_frame(cohorts, out.with_name(f"{out.stem}_cohorts{out.suffix}"))
        log.info("KPIs written to %s (cohorts beside it)", out)
    return table, cohorts, latest_metrics(table)


def _snapshots(config: Config, data: ValidatedData, at: pd.DatetimeIndex) -> pd.DataFrame:
    if config.label.definition == "cancellation":
        return contractual_snapshots(data.customers, at)
    return inactivity_snapshots(
        data.store, at, config.label.qualifying_families, config.kpis.active_days
    )


def _log_summary(table: pd.DataFrame, period: Period, until: pd.Timestamp) -> None:
    if table.empty:
        log.warning("no complete %s before observed_until %s: no KPIs", period, until.date())
        return
    last = table.iloc[-1]
    log.info(
        "%d complete %ss up to %s (a partial last %s is left out); NDR basis: %s",
        len(table),
        period,
        last["period_end"].date(),
        period,
        last["ndr_basis"],
    )
    log.info(
        "latest %s from %s: S=%d N=%d lost=%d E=%d CRR=%.2f %% churn=%.4f NDR=%.4f",
        period,
        last["period_start"].date(),
        last["S"],
        last["N"],
        last["lost"],
        last["E"],
        last["crr_pct"],
        last["churn_rate"],
        last["ndr"],
    )
