"""Data tests: the contracts of the feature rows and the scores table hold on real outputs."""

from __future__ import annotations

import pandas as pd
import pytest
from support import DEMO_EVENT_TYPES

from pipeline.config import FeatureConfig, LabelConfig
from pipeline.events import load_and_validate
from pipeline.features import NAN_WHEN_UNDEFINED, features_for_dates
from pipeline.schemas import FEATURES, SCORES, ContractError, check

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from pipeline.config import EventTypes
    from pipeline.demo import write_demo_data

    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, n_customers=400, seed=3)
    data = load_and_validate(
        out / "events.parquet",
        out / "customers.csv",
        EventTypes(**DEMO_EVENT_TYPES),
        observed_until=pd.Timestamp("2026-11-01"),
    )
    dates = pd.DatetimeIndex(["2025-06-01", "2026-06-01", "2026-11-01"])
    return features_for_dates(
        data.con, data.customers, dates, FeatureConfig(), LabelConfig().qualifying_families
    )


def test_features_built_from_the_demo_log_meet_their_contract(demo_features):
    check(demo_features, FEATURES, "features")
    numbers = demo_features.select_dtypes("number")
    missing = set(numbers.columns[numbers.isna().any()])
    assert missing <= set(NAN_WHEN_UNDEFINED)
    # The demo is a subscription log: no purchases, so the purchase figures are undefined.
    assert demo_features["days_since_last_purchase"].isna().all()
    assert demo_features["mean_gap_days"].notna().any()


def test_a_negative_count_breaks_the_feature_contract_and_names_the_column(demo_features):
    broken = demo_features.copy()
    broken.loc[0, "logins_30d"] = -1
    with pytest.raises(ContractError, match="logins_30d"):
        check(broken, FEATURES, "features")


def test_a_duplicate_customer_date_breaks_the_feature_contract(demo_features):
    broken = pd.concat([demo_features, demo_features.head(1)], ignore_index=True)
    with pytest.raises(ContractError, match="customer_id"):
        check(broken, FEATURES, "features")


def scores(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "churn_probability": [0.7, 0.3, 0.05],
            "tier": ["red", "orange", "green"],
            "revenue_at_risk": [700.0, 30.0, 1.0],
            "reasons": ["no login for 40 days", None, None],
            "recommended_action": ["Send a re-engagement message", None, None],
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame


def test_a_valid_scores_table_passes_its_contract():
    check(scores(), SCORES, "scores")


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("churn_probability", [1.2, 0.3, 0.05], "churn_probability"),
        ("tier", ["red", "amber", "green"], "tier"),
        ("customer_id", ["a", "a", "c"], "customer_id"),
        ("reasons", [None, None, None], "every red customer has a reason and an action"),
    ],
)
def test_a_broken_scores_table_fails_with_the_column_named(column, values, message):
    with pytest.raises(ContractError, match=message):
        check(scores(**{column: values}), SCORES, "scores")
