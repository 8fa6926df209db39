"""Recency: days since the last event of a kind, before as_of."""

from __future__ import annotations

import pandas as pd

from pipeline.features.grid import Grid


def build_recency(grid: Grid) -> pd.DataFrame:
    """``days_since_last_event``, ``days_since_last_activity`` (an event of a qualifying family,
    ``label.qualifying_families``: real use, not invoices or newsletters),
    ``days_since_last_login``, ``days_since_last_feature_use``.

    Float days from the last such event (strictly before as_of) to as_of; a customer with none
    gets the days since signup (``tenure_days``), so the value is always defined.
    """
    idx = grid.index
    tenure = grid.days_since(grid.customers["signup_at"].to_numpy("datetime64[us]").astype("int64"))
    out = {}
    for name, column in (
        ("days_since_last_event", "last_event_us"),
        ("days_since_last_activity", "last_active_us"),
        ("days_since_last_login", "last_login_us"),
        ("days_since_last_feature_use", "last_feature_us"),
    ):
        days = grid.days_since(idx.last_before(column))
        out[name] = pd.Series(days).fillna(pd.Series(tenure)).to_numpy()
    return pd.DataFrame(out)
