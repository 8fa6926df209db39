"""Every feature is declared once (``features.catalog``): a built column without a declaration,
or a declaration no builder returns, fails here; the pandera contract follows the declarations."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import FeatureConfig
from pipeline.features import FAMILIES, KEYS
from pipeline.features.catalog import BASE_FEATURES, BY_NAME, CATALOG, declared, markdown_table
from pipeline.features.grid import build_grid, normalise_as_of
from pipeline.schemas import FEATURES

pytestmark = pytest.mark.code

T = pd.Timestamp
CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["a", "b"],
        "signup_at": ["2024-01-01", "2024-06-01"],
        "plan": ["pro", "basic"],
        "mrr": [50.0, 20.0],
    }
)
EVENTS = pd.DataFrame(
    [
        ("a", "2025-01-10 09:00", "login", None, None, None),
        ("a", "2025-02-11 09:00", "feature_used", "reports", None, None),
        ("a", "2025-02-20 09:00", "purchase", None, 30.0, None),
        ("a", "2025-02-21 09:00", "complaint", None, None, "high"),
        ("b", "2025-02-25 09:00", "invoice_paid", None, 20.0, None),
        ("b", "2025-02-26 09:00", "payment_failed", None, None, None),
    ],
    columns=["customer_id", "occurred_at", "event_type", "feature", "amount", "severity"],
)


@pytest.fixture
def grid(load_daily):
    data, daily = load_daily(EVENTS, CUSTOMERS)
    return build_grid(daily, data.customers, normalise_as_of([T("2025-03-01")]))


def test_each_family_returns_exactly_its_declared_features_in_order(grid):
    for family, builder in FAMILIES.items():
        built = builder(grid, FeatureConfig())
        assert list(built.columns) == declared(family), family


def test_every_built_column_has_the_declared_dtype(grid):
    for builder in FAMILIES.values():
        built = builder(grid, FeatureConfig())
        for name in built.columns:
            kind = "str" if built[name].dtype == "str" else str(built[name].dtype)
            assert kind == BY_NAME[name].dtype, name


def test_the_feature_contract_has_one_column_per_declaration_and_no_other():
    base_level = [spec.name for spec in BASE_FEATURES]  # fitted over the base, after builders
    assert list(FEATURES.columns) == KEYS + declared() + base_level
    assert not any(FEATURES.columns[name].required for name in base_level)
    assert len(BY_NAME) == len(CATALOG)


def test_every_declaration_names_its_window_in_its_name_and_has_a_documentation_line():
    for spec in CATALOG:
        assert spec.doc and spec.family in FAMILIES, spec.name
        if spec.window in (7, 30, 90, 180, 365):
            assert f"_{spec.window}d" in spec.name, spec.name
        if spec.name.endswith("_lifetime"):
            assert spec.window is None and spec.family == "lifetime", spec.name
    assert markdown_table().count("\n") == len(CATALOG) + 1
