"""Lifetime, rhythm and long windows: what purchase logs (and BTYD models) live on.

Lifetime figures run from the customer's first event to as_of (events strictly before as_of);
they read one history row plus at most ``FEATURE_WINDOW_DAYS`` of day rows (see
``daily.build_daily_log``'s ``since``), never the whole log again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features.daily import FEATURE_WINDOW_DAYS, US_PER_DAY
from pipeline.features.grid import Grid

LONG_WINDOWS = (180, FEATURE_WINDOW_DAYS)
"""Backward windows in days beyond the 90 days of the other families."""

NAN_WHEN_UNDEFINED = (
    "spend_per_purchase_lifetime",
    "days_since_first_purchase",
    "days_since_last_purchase",
    "mean_gap_days",
    "last_gap_days",
)
"""Features that are NaN by design when undefined (no purchase, fewer than two active days):
the model reads NaN as "missing", so scoring must not reject these rows for it."""


def build_lifetime(grid: Grid) -> pd.DataFrame:
    """Lifetime totals, purchase recency, rhythm and the 180/365-day windows (see the helpers)."""
    parts = (_totals(grid), _purchase_recency(grid), _rhythm(grid), _long_windows(grid))
    return pd.DataFrame({name: values for part in parts for name, values in part.items()})


def _totals(grid: Grid) -> dict[str, np.ndarray]:
    """Since the first event: ``events_lifetime``, ``purchases_lifetime``, ``spend_lifetime``
    (purchase and payment amounts, as ``spend_90d``), ``active_days_lifetime`` (days with any
    event), ``repeat_purchases_lifetime`` (distinct purchase days − 1, 0 when none) and
    ``spend_per_purchase_lifetime`` (spend ÷ purchases, NaN without a purchase)."""
    idx = grid.index
    purchases = idx.total_before("n_purchase").astype(np.int64)
    spend = idx.total_before("spend").astype(np.float64)
    repeat = np.maximum(idx.total_before("n_purchase_days").astype(np.int64) - 1, 0)
    per_purchase = np.divide(spend, purchases, out=np.full(len(spend), np.nan), where=purchases > 0)
    return {
        "events_lifetime": idx.total_before("n_events").astype(np.int64),
        "purchases_lifetime": purchases,
        "spend_lifetime": spend,
        "active_days_lifetime": idx.total_before("n_active_days").astype(np.int64),
        "repeat_purchases_lifetime": repeat,
        "spend_per_purchase_lifetime": per_purchase,
    }


def _purchase_recency(grid: Grid) -> dict[str, np.ndarray]:
    """``days_since_first_purchase`` and ``days_since_last_purchase``: float days from the
    first / last purchase event to as_of, like the other ``days_since_*``; NaN without one."""
    idx = grid.index
    return {
        "days_since_first_purchase": grid.days_since(idx.first_before("first_purchase_us")),
        "days_since_last_purchase": grid.days_since(idx.last_before("last_purchase_us")),
    }


def _rhythm(grid: Grid) -> dict[str, np.ndarray]:
    """Over active days (UTC days with a qualifying event, ``label.qualifying_families``):
    ``mean_gap_days`` = (last − first active day) ÷ (active days − 1), NaN with fewer than two;
    ``last_gap_days`` = days between the last two active days, NaN with fewer than two;
    ``overdue_ratio`` = ``days_since_last_activity`` ÷ ``mean_gap_days`` (how overdue the next
    visit is; 1 = one usual gap). Explicit fill with fewer than two active days: the tenure
    (days since signup) stands in for the gap, so the ratio is always defined (1.0 for a
    customer never active, who then has ``days_since_last_activity`` = tenure)."""
    idx = grid.index
    n_active = idx.total_before("n_qualifying_days").astype(np.float64)
    last_us = idx.last_before("last_active_us")
    last_day = np.floor(last_us / US_PER_DAY)
    first_day = np.floor(idx.first_before("first_active_us") / US_PER_DAY)
    prev_day = idx.last_before("prev_active_day", present="n_qualifying_days")
    several = n_active >= 2
    mean_gap = np.full(len(n_active), np.nan)
    mean_gap[several] = (last_day - first_day)[several] / (n_active[several] - 1)
    tenure = grid.days_since(grid.customers["signup_at"].to_numpy("datetime64[us]").astype("int64"))
    since_active = np.where(np.isnan(last_us), tenure, grid.days_since(last_us))
    return {
        "mean_gap_days": mean_gap,
        "last_gap_days": np.where(several, last_day - prev_day, np.nan),
        "overdue_ratio": since_active / np.where(several, mean_gap, tenure),
    }


def _long_windows(grid: Grid) -> dict[str, np.ndarray]:
    """``active_days_Nd`` (days with any event), ``events_Nd`` and ``spend_Nd`` (purchase and
    payment amounts) over [as_of − N days, as_of) for N in ``LONG_WINDOWS``."""
    idx = grid.index
    out: dict[str, np.ndarray] = {}
    for days in LONG_WINDOWS:
        out[f"active_days_{days}d"] = idx.window_sum("n_active_days", -days).astype(np.int64)
    for days in LONG_WINDOWS:
        out[f"events_{days}d"] = idx.window_sum("n_events", -days).astype(np.int64)
    for days in LONG_WINDOWS:
        out[f"spend_{days}d"] = idx.window_sum("spend", -days).astype(np.float64)
    return out
