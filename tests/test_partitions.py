"""Data tests: partitioning the event store by customer changes memory, never results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import DEMO_EVENT_TYPES

from pipeline.config import EventTypes, FeatureConfig, LabelConfig
from pipeline.dataset import build_training_set
from pipeline.events import load_and_validate
from pipeline.features import features_for_dates, partitions
from pipeline.features.daily import time_order

pytestmark = pytest.mark.data

DATES = pd.DatetimeIndex(["2025-09-01", "2026-01-01", "2026-05-01"])
MAPPING = EventTypes(**DEMO_EVENT_TYPES)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.demo import write_demo_data

    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, n_customers=600, seed=5)
    return out


def validated(demo: Path, partition_customers: int):
    return load_and_validate(
        demo / "events.parquet",
        demo / "customers.csv",
        MAPPING,
        observed_until=pd.Timestamp("2026-11-01"),
        partition_customers=partition_customers,
    )


def test_features_built_partition_by_partition_equal_one_pass(demo):
    one = validated(demo, 100_000)
    many = validated(demo, 70)
    assert len(partitions(one.con)) == 1
    assert len(partitions(many.con)) == 9
    qualifying = LabelConfig().qualifying_families
    whole = features_for_dates(one.con, one.customers, DATES, FeatureConfig(), qualifying)
    parts = features_for_dates(many.con, many.customers, DATES, FeatureConfig(), qualifying)
    pd.testing.assert_frame_equal(parts, whole)
    assert len(whole) > 500


def test_features_do_not_depend_on_how_events_are_sorted_or_duplicates_found(demo, monkeypatch):
    """One int64 sort key or two sort keys (the fallback for logs too long for one key): the
    same duplicates, the same feature values."""
    qualifying = LabelConfig().qualifying_families
    one_key = validated(demo, 70)
    config = FeatureConfig()
    expected = features_for_dates(one_key.con, one_key.customers, DATES, config, qualifying)
    monkeypatch.setattr("pipeline.events.KEY_BITS", 4)
    two_keys = validated(demo, 70)
    got = features_for_dates(two_keys.con, two_keys.customers, DATES, config, qualifying)
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(two_keys.event_rejects, one_key.event_rejects)
    assert len(one_key.event_rejects) > 0


def test_time_order_sorts_by_customer_then_time_with_one_key_or_two(monkeypatch):
    code = np.array([2, 0, 2, 1, 0], dtype=np.int32)
    ts = np.array([5, 9, 1, 7, 3], dtype=np.int64)
    assert time_order(code, ts).tolist() == [4, 1, 3, 2, 0]
    monkeypatch.setattr("pipeline.events.KEY_BITS", 2)
    assert time_order(code, ts).tolist() == [4, 1, 3, 2, 0]
    assert time_order(code[:0], ts[:0]).tolist() == []


def test_training_sets_built_partition_by_partition_equal_one_pass(demo):
    one, many = validated(demo, 100_000), validated(demo, 70)
    sets = [
        build_training_set(
            d.con,
            d.customers,
            DATES,
            FeatureConfig(),
            LabelConfig(),
            pd.Timestamp("2026-11-01"),
        ).frame
        for d in (one, many)
    ]
    pd.testing.assert_frame_equal(sets[1], sets[0])


def test_validation_counts_do_not_depend_on_partitioning(demo):
    one, many = validated(demo, 100_000), validated(demo, 70)
    assert one.report.as_dict() | {"rejects_files": []} == many.report.as_dict() | {
        "rejects_files": []
    }
    pd.testing.assert_frame_equal(one.event_rejects, many.event_rejects)
    assert one.report.event_rejects  # the demo carries a few duplicate rows on purpose
