"""Breadth: how much of the product the customer uses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features.grid import Grid


def build_breadth(grid: Grid) -> pd.DataFrame:
    """``distinct_features_30d`` and ``distinct_features_90d``: distinct product features used
    in [as_of − N days, as_of) (not the number of uses); ``feature_breadth_90d``: that count as a
    share of the product's features known at as_of (those anyone used before as_of), 0.0 when
    there are none. Features first used at or after as_of do not count: they are the future."""
    idx = grid.index
    mask = idx.daily.columns["feature_mask"].astype(np.uint64)
    n_features = len(idx.daily.features)
    distinct = {30: np.zeros(len(idx.q_code), np.int64), 90: np.zeros(len(idx.q_code), np.int64)}
    known = np.zeros(len(idx.q_code), np.int64)
    for bit in range(n_features):
        used = ((mask >> np.uint64(bit)) & np.uint64(1)).astype(np.int64)
        for days, total in distinct.items():
            total += idx.window_sum_of(f"feature_bit_{bit}", used, -days) > 0
        known += idx.daily.feature_first_day[bit] < idx.q_day
    share = np.divide(distinct[90], known, out=np.zeros(len(known), np.float64), where=known > 0)
    return pd.DataFrame(
        {
            "distinct_features_30d": distinct[30],
            "distinct_features_90d": distinct[90],
            "feature_breadth_90d": share,
        }
    )
