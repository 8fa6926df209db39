"""Code tests for the bench's own measurements (the timings themselves run in ``make bench``)."""

from __future__ import annotations

import json

import pandas as pd

from pipeline.bench import ensure_time_ordered, worker_validation_floor
from pipeline.io import write_frame
from tests.support import bench_config


def test_validation_floor_counts_failed_checks_and_same_microsecond_repeats(tmp_path):
    at = pd.Timestamp("2026-01-01 10:00", tz="UTC")
    micro = pd.Timedelta(microseconds=1)
    events = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c2", "c9", "c2", "c2"],
            "occurred_at": [at, at, at + micro, at, at, pd.Timestamp("2026-12-01", tz="UTC"), at],
            "event_type": ["login"] * 3 + ["invoice_paid", "login", "login", "complaint"],
            "feature": [None] * 7,
            "amount": [None, None, None, -5.0, None, None, None],
            "severity": [None] * 6 + ["bogus"],
        }
    )
    result = tmp_path / "floor.json"

    worker_validation_floor(bench_config(tmp_path, events), result)

    got = json.loads(result.read_text())
    # negative amount, unknown customer c9, future event, unknown severity
    assert got["rows_failing_a_check"] == 4
    # the second c1 row at the same microsecond; one microsecond later is no candidate
    assert got["duplicate_candidates"] == 1


def test_the_time_ordered_copy_holds_the_same_rows_in_time_order_and_is_written_once(tmp_path):
    events = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c2"],
            "occurred_at": pd.to_datetime(
                ["2026-01-03", "2026-01-05", "2026-01-01", "2026-01-04"], utc=True
            ),
            "event_type": ["login"] * 4,
            "feature": [None] * 4,
            "amount": [None] * 4,
            "severity": [None] * 4,
        }
    )
    write_frame(events, tmp_path / "events.parquet")

    name = ensure_time_ordered(tmp_path)
    written = (tmp_path / name).stat().st_mtime_ns
    again = ensure_time_ordered(tmp_path)

    ordered = pd.read_parquet(tmp_path / name)
    assert ordered["customer_id"].tolist() == ["c2", "c1", "c2", "c1"]
    assert ordered["occurred_at"].is_monotonic_increasing
    assert again == name and (tmp_path / name).stat().st_mtime_ns == written
