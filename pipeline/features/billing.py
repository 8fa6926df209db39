"""Billing and value: failed payments, spend and MRR as they stood before as_of."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features.grid import Grid


def build_billing(grid: Grid) -> pd.DataFrame:
    """``payment_failures_30d`` and ``payment_failures_90d`` (counts in [as_of − N d, as_of));
    ``spend_90d`` (sum of purchase
    and payment amounts in that window); ``mrr``: the amount of the last recurring payment
    before as_of, or the customers table's MRR when the log has none (a static attribute);
    ``mrr_change_90d``: ``mrr`` minus the last payment before as_of − 90 days (0.0 when either
    is unknown)."""
    idx = grid.index
    last = idx.last_before("payment_amount")
    before = idx.last_before("payment_amount", end=-90)
    static = grid.customers["mrr"].to_numpy(dtype=np.float64)
    mrr = np.where(np.isnan(last), static, last)
    change = np.where(np.isnan(last) | np.isnan(before), 0.0, last - before)
    return pd.DataFrame(
        {
            "payment_failures_30d": idx.window_sum("n_payment_failed", -30).astype("int64"),
            "payment_failures_90d": idx.window_sum("n_payment_failed", -90).astype("int64"),
            "spend_90d": idx.window_sum("spend", -90).astype("float64"),
            "mrr": mrr,
            "mrr_change_90d": change,
        }
    )
