"""Complaints and support tickets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features.grid import Grid


def build_support(grid: Grid, serious_severity: int = 3) -> pd.DataFrame:
    """Over [as_of − N days, as_of): ``complaints_30d``, ``complaints_90d``, ``tickets_30d``,
    ``tickets_90d``,
    ``serious_complaints_30d`` (complaints and tickets of severity ≥ ``serious_severity`` in the
    last 30 days), ``max_severity_90d`` (highest severity of a complaint or ticket, 1 low to
    4 critical, 0 when none); ``days_since_last_complaint`` (float days, or days since signup
    when there was none)."""
    idx = grid.index
    by_level = {lvl: idx.window_sum(f"n_sev{lvl}", -90) for lvl in (1, 2, 3, 4)}
    max_sev = np.zeros(len(idx.q_code), dtype=np.int64)
    for lvl in (1, 2, 3, 4):
        max_sev[by_level[lvl] > 0] = lvl
    serious = sum(idx.window_sum(f"n_sev{lvl}", -30) for lvl in range(serious_severity, 5))
    tenure = grid.days_since(grid.customers["signup_at"].to_numpy("datetime64[us]").astype("int64"))
    since = grid.days_since(idx.last_before("last_complaint_us"))
    return pd.DataFrame(
        {
            "complaints_30d": idx.window_sum("n_complaint", -30).astype("int64"),
            "complaints_90d": idx.window_sum("n_complaint", -90).astype("int64"),
            "tickets_30d": idx.window_sum("n_ticket", -30).astype("int64"),
            "tickets_90d": idx.window_sum("n_ticket", -90).astype("int64"),
            "serious_complaints_30d": np.asarray(serious, dtype=np.int64),
            "max_severity_90d": max_sev,
            "days_since_last_complaint": np.where(np.isnan(since), tenure, since),
        }
    )
