"""Code test for the bench's runner measurement (the timings themselves run in ``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.bench import worker_engines
from tests.support import bench_config


def test_the_engines_worker_times_each_runner_and_finds_the_same_bytes(tmp_path: Path):
    at = pd.Timestamp("2026-01-05 10:00", tz="UTC")
    events = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2"],
            "occurred_at": [at, at + pd.Timedelta(days=3), at],
            "event_type": ["login", "login", "invoice_paid"],
            "amount": [None, None, 20.0],
        }
    )
    config = bench_config(tmp_path, events)
    worker_engines(config, ["2026-02-01"], tmp_path / "engines.json")
    got = json.loads((tmp_path / "engines.json").read_text())
    assert set(got["runs"]) == {"local_n_jobs_1", "local_n_jobs_2", "dask_local_cluster_2"}
    assert got["identical"] is True and got["rows"] == 2 and got["partitions"] == 1
    assert all(r["features_s"] > 0 and r["cpu_s"] >= 0 for r in got["runs"].values())
