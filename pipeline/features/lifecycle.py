"""Lifecycle: tenure, stage and the next contract anniversary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features.grid import Grid

STAGES = ("onboarding", "renewal", "mature")


def build_lifecycle(
    grid: Grid, onboarding_days: int = 90, mature_after_days: int = 365
) -> pd.DataFrame:
    """``tenure_days``: float days from signup to as_of. ``lifecycle_stage``: onboarding
    (tenure < ``onboarding_days``), renewal (< ``mature_after_days``) or mature.
    ``days_to_anniversary``: days from as_of to the next yearly signup anniversary (0–365,
    by 365-day years). ``plan``: the customer's plan (a static attribute)."""
    tenure = grid.days_since(grid.customers["signup_at"].to_numpy("datetime64[us]").astype("int64"))
    stage = np.where(
        tenure < onboarding_days,
        STAGES[0],
        np.where(tenure < mature_after_days, STAGES[1], STAGES[2]),
    )
    return pd.DataFrame(
        {
            "tenure_days": tenure,
            "lifecycle_stage": pd.Categorical(stage, categories=STAGES),
            "days_to_anniversary": (365.0 - np.mod(tenure, 365.0)) % 365.0,
            "plan": pd.array(grid.customers["plan"].astype("str").to_numpy(), dtype="str"),
        }
    )
