"""Shared fixtures: one event-type mapping, and loaders from tiny literal frames to features.

Fixtures return small callables so that each test still reads its own literal inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
from support import ALL_FAMILIES

from pipeline.config import EventTypes, FeatureConfig
from pipeline.events import ValidatedData, load_and_validate
from pipeline.features import DailyLog, build_daily_log, build_features, features_for_dates

OBSERVED_UNTIL = pd.Timestamp("2025-07-01")
QUALIFYING = ["login", "feature_use", "purchase", "payment"]


@pytest.fixture
def event_types() -> EventTypes:
    """Raw event types as a user's log names them, mapped to every signal family."""
    return ALL_FAMILIES


@pytest.fixture
def validate(event_types: EventTypes) -> Callable[..., ValidatedData]:
    """``validate(events, customers, observed_until=..., max_reject_share=1.0, **kwargs)``."""

    def _validate(
        events: pd.DataFrame,
        customers: pd.DataFrame,
        observed_until: pd.Timestamp = OBSERVED_UNTIL,
        max_reject_share: float = 1.0,
        **kwargs,
    ) -> ValidatedData:
        return load_and_validate(
            events,
            customers,
            event_types,
            max_reject_share=max_reject_share,
            observed_until=observed_until,
            **kwargs,
        )

    return _validate


@pytest.fixture
def load_daily(
    validate: Callable[..., ValidatedData],
) -> Callable[..., tuple[ValidatedData, DailyLog]]:
    """``load_daily(events, customers, qualifying=QUALIFYING)`` → (validated data, daily log)."""

    def _load(
        events: pd.DataFrame, customers: pd.DataFrame, qualifying: list[str] | None = None
    ) -> tuple[ValidatedData, DailyLog]:
        data = validate(events, customers)
        ids = data.customers["customer_id"].to_numpy()
        daily = build_daily_log(data.con, ids, QUALIFYING if qualifying is None else qualifying)
        return data, daily

    return _load


@pytest.fixture(params=["whole_log", "since_lookback"])
def features_of(
    request: pytest.FixtureRequest,
    load_daily: Callable[..., tuple[ValidatedData, DailyLog]],
) -> Callable[..., pd.DataFrame]:
    """``features_of(events, customers, as_of_dates, config=None)`` → the features frame.

    Every test runs twice: on a daily log of the whole history, and on the path ``churn
    features`` takes (``features_for_dates``: partitions, days older than the 90-day lookback
    folded into history rows).
    """

    def _features(
        events: pd.DataFrame,
        customers: pd.DataFrame,
        as_of: list,
        config: FeatureConfig | None = None,
    ) -> pd.DataFrame:
        data, daily = load_daily(events, customers)
        config = config or FeatureConfig()
        if request.param == "whole_log":
            return build_features(daily, data.customers, as_of, config)
        return features_for_dates(data.con, data.customers, as_of, config, QUALIFYING)

    return _features
