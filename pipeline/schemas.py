"""Data contracts (pandera) for what the pipeline hands on: feature rows and the scores table.

The inputs are checked row by row in SQL (``events``); these schemas guard the outputs, so a
bug upstream fails loudly with the column and the failing values instead of reaching a model
or a CS list.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from pipeline.features.btyd import BGNBD_FEATURES
from pipeline.features.lifecycle import STAGES
from pipeline.tiers import TIERS

COUNTS = (
    "events_7d", "events_30d", "events_90d", "logins_7d", "logins_30d", "logins_90d",
    "feature_uses_30d", "feature_uses_90d", "active_days_30d", "active_days_90d",
    "distinct_features_30d", "distinct_features_90d", "complaints_30d", "complaints_90d",
    "tickets_30d", "tickets_90d", "serious_complaints_30d", "payment_failures_30d",
    "payment_failures_90d", "events_lifetime", "purchases_lifetime", "active_days_lifetime",
    "repeat_purchases_lifetime", "active_days_180d", "active_days_365d", "events_180d",
    "events_365d",
)  # fmt: skip
DAYS = (
    "days_since_last_event", "days_since_last_activity", "days_since_last_login",
    "days_since_last_feature_use", "days_since_last_complaint", "tenure_days",
    "days_since_first_purchase", "days_since_last_purchase",
)  # fmt: skip
MONEY = ("spend_90d", "spend_180d", "spend_365d", "spend_lifetime", "spend_per_purchase_lifetime")
GAPS = ("mean_gap_days", "last_gap_days")
"""Days between distinct active days: at least 1 when defined."""


class ContractError(ValueError):
    """Pipeline output that breaks its contract; the message names columns and values."""


def _features_schema() -> pa.DataFrameSchema:
    """Ranges per feature. Floats may be NaN here: scoring rejects such rows with a reason
    instead of failing the run (``score.reject_reasons``), except the features that are NaN by
    design when undefined (``features.NAN_WHEN_UNDEFINED``)."""
    non_negative = pa.Check.ge(0)
    columns = {
        "customer_id": pa.Column(str, nullable=False),
        "as_of": pa.Column("datetime64[us]", nullable=False),
        **{c: pa.Column("int64", non_negative) for c in COUNTS},
        **{c: pa.Column(float, non_negative, nullable=True) for c in DAYS},
        "events_30d_vs_prev_30d": pa.Column(float, pa.Check.gt(0), nullable=True),
        "logins_30d_vs_prev_30d": pa.Column(float, pa.Check.gt(0), nullable=True),
        "active_days_30d_change": pa.Column("int64", pa.Check.in_range(-30, 30)),
        "feature_breadth_90d": pa.Column(float, pa.Check.in_range(0, 1), nullable=True),
        "max_severity_90d": pa.Column("int64", pa.Check.in_range(0, 4)),
        **{c: pa.Column(float, non_negative, nullable=True) for c in MONEY},
        **{c: pa.Column(float, pa.Check.ge(1), nullable=True) for c in GAPS},
        "overdue_ratio": pa.Column(float, non_negative, nullable=True),
        **{  # added over the whole base (``with_bgnbd``), not by the per-partition builders
            c: pa.Column(float, pa.Check.in_range(0, 1), nullable=True, required=False)
            for c in BGNBD_FEATURES
        },
        "mrr": pa.Column(float, non_negative, nullable=True),
        "mrr_change_90d": pa.Column(float, nullable=True),
        "lifecycle_stage": pa.Column(pd.CategoricalDtype(STAGES)),
        "days_to_anniversary": pa.Column(float, pa.Check.in_range(0, 365), nullable=True),
        "plan": pa.Column(str),
    }
    return pa.DataFrameSchema(columns, unique=["customer_id", "as_of"], strict=False)


def _scores_schema() -> pa.DataFrameSchema:
    explained = pa.Check(
        lambda f: ~f["tier"].eq("red") | (f["reasons"].notna() & f["recommended_action"].notna()),
        name="every red customer has a reason and an action",
    )
    return pa.DataFrameSchema(
        {
            "customer_id": pa.Column(str, nullable=False, unique=True),
            "churn_probability": pa.Column(float, pa.Check.in_range(0, 1)),
            "tier": pa.Column(str, pa.Check.isin(TIERS)),
            "revenue_at_risk": pa.Column(float, pa.Check.ge(0)),
        },
        checks=[explained],
        strict=False,
    )


FEATURES = _features_schema()
SCORES = _scores_schema()


def check(frame: pd.DataFrame, schema: pa.DataFrameSchema, what: str) -> pd.DataFrame:
    """Validate ``frame`` against ``schema``; raise ``ContractError`` listing every failure."""
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases[["column", "check", "failure_case"]].head(20)
        raise ContractError(
            f"{what} break their contract (pipeline bug, please report):\n{cases.to_string()}"
        ) from None
