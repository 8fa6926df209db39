"""Frequency: how much the customer did in recent windows before as_of."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features.grid import Grid


def build_frequency(grid: Grid) -> pd.DataFrame:
    """Event counts over [as_of − N days, as_of): ``events_7d``, ``events_30d``, ``events_90d``,
    ``logins_7d``, ``logins_30d``, ``logins_90d``, ``feature_uses_30d``, ``feature_uses_90d``,
    and ``active_days_30d`` / ``active_days_90d`` (days with any event). Integers; 0 when nothing
    happened."""
    idx = grid.index
    active = np.ones(len(idx.daily), dtype=np.int64)
    return pd.DataFrame(
        {
            "events_7d": idx.window_sum("n_events", -7),
            "events_30d": idx.window_sum("n_events", -30),
            "events_90d": idx.window_sum("n_events", -90),
            "logins_7d": idx.window_sum("n_login", -7),
            "logins_30d": idx.window_sum("n_login", -30),
            "logins_90d": idx.window_sum("n_login", -90),
            "feature_uses_30d": idx.window_sum("n_feature_use", -30),
            "feature_uses_90d": idx.window_sum("n_feature_use", -90),
            "active_days_30d": idx.window_sum_of("active_day", active, -30),
            "active_days_90d": idx.window_sum_of("active_day", active, -90),
        }
    ).astype("int64")
