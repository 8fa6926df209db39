"""Trend: the last 30 days against the 30 days before them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features.grid import Grid


def build_trend(grid: Grid) -> pd.DataFrame:
    """``events_30d_vs_prev_30d`` = (events in [−30, 0) + 1) / (events in [−60, −30) + 1), a
    smoothed ratio that is 1.0 when both windows are empty (explicit fill, never NaN);
    ``logins_30d_vs_prev_30d`` likewise; ``active_days_30d_change`` = active days in [−30, 0)
    minus active days in [−60, −30) (integer)."""
    idx = grid.index
    active = np.ones(len(idx.daily), dtype=np.int64)
    ev_now, ev_prev = idx.window_sum("n_events", -30), idx.window_sum("n_events", -60, -30)
    lg_now, lg_prev = idx.window_sum("n_login", -30), idx.window_sum("n_login", -60, -30)
    ad_now = idx.window_sum_of("active_day", active, -30)
    ad_prev = idx.window_sum_of("active_day", active, -60, -30)
    return pd.DataFrame(
        {
            "events_30d_vs_prev_30d": (ev_now + 1) / (ev_prev + 1),
            "logins_30d_vs_prev_30d": (lg_now + 1) / (lg_prev + 1),
            "active_days_30d_change": (ad_now - ad_prev).astype("int64"),
        }
    )
