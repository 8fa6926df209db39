"""The event store is the one seam between validation and everything downstream: its
manifest, the pure per-partition function, and no DuckDB relation named outside it."""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from support import STORE_CUSTOMERS as CUSTOMERS
from support import STORE_EVENTS as EVENTS

from pipeline.config import FeatureConfig
from pipeline.events import ValidatedData
from pipeline.features import (
    build_features_for_grid,
    features_for_dates,
    partition_tasks,
    run_partition,
)
from pipeline.store import MANIFEST, EventStore

pytestmark = pytest.mark.data

T = pd.Timestamp
QUALIFYING = ["login", "feature_use", "purchase", "payment"]
DATES = [T("2025-05-01"), T("2025-06-15")]
SEVEN = (
    "events_compact",
    "events_stored",
    "_partitions",
    "customer_codes",
    "_features",
    "events",
    "_event_types",
)


@pytest.fixture
def data(validate: Callable[..., ValidatedData]) -> ValidatedData:
    return validate(EVENTS, CUSTOMERS, partition_customers=2)


def test_the_manifest_lists_partitions_dictionaries_counts_and_the_bound(data):
    manifest = json.loads((data.store.directory / MANIFEST).read_text(encoding="utf-8"))
    parts = [(p["part"], p["lo"], p["hi"], p["rows"]) for p in manifest["partitions"]]
    assert parts == [(0, 0, 2, 4), (1, 2, 3, 1)]
    assert [len(p["duplicates"]) for p in manifest["partitions"]] == [1, 0]
    assert (manifest["customers"], manifest["rows"]) == (3, 5)
    assert [t["event_type"] for t in manifest["event_types"]] == [
        "feature_used",
        "login",
        "newsletter_opened",
        "purchase",
    ]
    assert [t["family"] for t in manifest["event_types"]] == [
        "feature_use",
        "login",
        None,
        "purchase",
    ]
    assert [f["feature"] for f in manifest["features"]] == ["exports", "reports"]
    assert data.store.product_features() == {"exports": 20211, "reports": 20180}
    assert manifest["observed_until"] == "2025-07-01 00:00:00"
    assert manifest["inputs"]["events"]["frame"] == [6, 4]
    assert list(data.store.customer_ids()) == ["a", "b", "c"]


def test_the_store_answers_the_range_and_unknown_type_queries(data):
    assert data.store.event_range() == (T("2025-03-01 10:00"), T("2025-06-01 12:00"))
    assert data.store.first_event() == T("2025-03-01 10:00")
    assert data.store.unknown_event_types() == {"newsletter_opened": 1}
    assert sorted(data.store.events_frame()["customer_id"]) == ["a", "a", "b", "b", "c"]


def test_the_partition_function_runs_on_the_files_alone_with_no_connection_open(data):
    expected = features_for_dates(data.store, data.customers, DATES, FeatureConfig(), QUALIFYING)
    directory, customers = data.store.directory, data.customers
    data.con.close()  # the validation connection is gone; the files stay while data lives
    gc.collect()
    store = EventStore.open(directory)  # a worker's view: the folder and its manifest
    assert store.con is None
    as_of = pd.DatetimeIndex(DATES, name="as_of").as_unit("us")
    tasks = partition_tasks(store, customers, as_of, QUALIFYING, as_of.max(), None)
    frames = [
        run_partition(t, lambda g: build_features_for_grid(g, FeatureConfig())) for t in tasks
    ]
    got = pd.concat(frames, ignore_index=True)
    got = got.sort_values(["as_of", "customer_id"], kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(got, expected)
    with pytest.raises(ValueError, match="without its validation connection"):
        store.events_frame()


PENDING: set[str] = set()
"""Modules still reading the validation connection by name, being rewritten on another branch
(switch to ``EventStore.event_range`` / ``first_event``, then empty this set)."""


def test_no_module_outside_the_store_names_a_store_relation():
    root = Path(__file__).resolve().parents[1] / "pipeline"
    words = "|".join(SEVEN[:-2] + SEVEN[-1:])
    named = re.compile(rf"\b({words})\b|(FROM|JOIN)\s+events\b")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "store.py" and path.name not in PENDING
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if named.search(line)
    ]
    assert offenders == []
