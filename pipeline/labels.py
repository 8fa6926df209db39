"""Churn labels for (customer_id, as_of): what happens in [as_of, as_of + horizon).

Two definitions (``label.definition``):
- ``cancellation`` (contractual): churned when ``churned_at`` falls in [as_of, as_of + horizon).
- ``inactivity`` (non-contractual): churned when no qualifying event falls in that window.

A label is known only when its whole window lies before ``observed_until``; unknown labels are
NaN and never become 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import LabelConfig
from pipeline.features.daily import FEATURE_WINDOW_DAYS, US_PER_DAY
from pipeline.features.grid import Grid


def label_known(as_of: pd.Series, horizon_days: int, observed_until: pd.Timestamp) -> np.ndarray:
    """True where [as_of, as_of + horizon) ends at or before ``observed_until``."""
    end = pd.to_datetime(as_of) + pd.Timedelta(days=horizon_days)
    return (end <= pd.Timestamp(observed_until)).to_numpy()


def cancellation_labels(grid: Grid, horizon_days: int) -> np.ndarray:
    """1.0 where ``churned_at`` ∈ [as_of, as_of + horizon), else 0.0."""
    churned = grid.customers["churned_at"].to_numpy("datetime64[us]").astype("int64")
    has_churn = grid.customers["churned_at"].notna().to_numpy()
    start = grid.as_of_us
    end = start + horizon_days * US_PER_DAY
    return (has_churn & (churned >= start) & (churned < end)).astype(np.float64)


def inactivity_labels(grid: Grid, horizon_days: int) -> np.ndarray:
    """1.0 where no qualifying event falls on the days [as_of, as_of + horizon), else 0.0."""
    future = grid.index.window_sum("n_qualifying", 0, horizon_days)
    return (future == 0).astype(np.float64)


def ever_active(grid: Grid) -> np.ndarray:
    """A qualifying event at any time before as_of (history row included)."""
    return grid.index.total_before("n_qualifying") > 0


def recently_active(grid: Grid, config: LabelConfig) -> np.ndarray:
    """A qualifying event in [as_of − active_window_days, as_of); everyone when it is None."""
    if config.active_window_days is None:
        return np.ones(len(grid.keys), dtype=bool)
    return grid.index.window_sum("n_qualifying", -config.active_window_days) > 0


def in_base(grid: Grid, config: LabelConfig) -> np.ndarray:
    """Which grid rows are trained on and scored under the label definition.

    ``cancellation``: every grid row (signed up before as_of, not churned before it).
    ``inactivity``: a qualifying event before as_of and, when ``active_window_days`` is set,
    one within it (see ``lapsed``).
    """
    if config.definition == "cancellation":
        return np.ones(len(grid.keys), dtype=bool)
    return ever_active(grid) & recently_active(grid, config)


def lapsed(grid: Grid, config: LabelConfig) -> np.ndarray:
    """``inactivity`` rows active before as_of but not within ``active_window_days``: the
    customers the optional window drops from the base (none when it is not set)."""
    if config.definition == "cancellation":
        return np.zeros(len(grid.keys), dtype=bool)
    return ever_active(grid) & ~recently_active(grid, config)


def lookback_days(config: LabelConfig) -> int:
    """Days before as_of that features plus ``in_base`` read (for ``map_partitions``): the
    longest feature window, or the active window when it is longer (activity before as_of at
    all comes from the history row's totals)."""
    if config.definition == "cancellation" or config.active_window_days is None:
        return FEATURE_WINDOW_DAYS
    return max(FEATURE_WINDOW_DAYS, config.active_window_days)


def build_labels(grid: Grid, config: LabelConfig, observed_until: pd.Timestamp) -> pd.DataFrame:
    """Keys plus ``churned`` (1.0 / 0.0, NaN when the window is not fully observed) for the
    grid rows in the base (see ``in_base``)."""
    if config.definition == "cancellation":
        label = cancellation_labels(grid, config.horizon_days)
    else:
        label = inactivity_labels(grid, config.horizon_days)
    known = label_known(grid.keys["as_of"], config.horizon_days, observed_until)
    frame = grid.keys.copy()
    frame["churned"] = np.where(known, label, np.nan)
    return frame[in_base(grid, config)].reset_index(drop=True)
