"""Data contracts (pandera) for what the pipeline hands on: feature rows and the scores table.

The inputs are checked row by row in SQL (``events``); these schemas guard the outputs, so a
bug upstream fails loudly with the column and the failing values instead of reaching a model
or a CS list.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from pipeline.features.catalog import BASE_FEATURES, CATALOG, FeatureSpec
from pipeline.features.lifecycle import STAGES
from pipeline.tiers import TIERS

CATEGORIES = {"lifecycle_stage": STAGES}
"""The fixed categories of the declared categorical features."""


class ContractError(ValueError):
    """Pipeline output that breaks its contract; the message names columns and values."""


def _features_schema() -> pa.DataFrameSchema:
    """Dtype and range per feature, from its declaration (``features.catalog``). Floats may be
    NaN here: scoring rejects such rows with a reason instead of failing the run
    (``score.reject_reasons``), except the features that are NaN by design when undefined
    (``features.NAN_WHEN_UNDEFINED``)."""
    columns = {
        "customer_id": pa.Column(str, nullable=False),
        "as_of": pa.Column("datetime64[us]", nullable=False),
        **{spec.name: _column(spec) for spec in CATALOG},
        **{  # added over the whole base (``with_bgnbd``), not by the per-partition builders
            spec.name: _column(spec, required=False) for spec in BASE_FEATURES
        },
    }
    return pa.DataFrameSchema(columns, unique=["customer_id", "as_of"], strict=False)


DTYPES = {"int64": "int64", "float64": float, "str": str}


def _column(spec: FeatureSpec, required: bool = True) -> pa.Column:
    if spec.dtype == "category":
        dtype = pd.CategoricalDtype(CATEGORIES[spec.name])
        return pa.Column(dtype, nullable=spec.nullable, required=required)
    return pa.Column(DTYPES[spec.dtype], _checks(spec), nullable=spec.nullable, required=required)


def _checks(spec: FeatureSpec) -> list[pa.Check]:
    if spec.low is not None and spec.high is not None:
        return [pa.Check.in_range(spec.low, spec.high)]
    if spec.low is not None:
        return [pa.Check.gt(spec.low) if spec.low_open else pa.Check.ge(spec.low)]
    return []


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
