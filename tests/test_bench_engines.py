"""Code test for the bench's runner measurement (the timings themselves run in ``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from pipeline.bench import worker_engines
from pipeline.io import write_frame
from tests.support import DEMO_EVENT_TYPES


def test_the_engines_worker_times_each_runner_and_finds_the_same_bytes(tmp_path: Path):
    at = pd.Timestamp("2026-01-05 10:00", tz="UTC")
    write_frame(
        pd.DataFrame(
            {
                "customer_id": ["c1", "c1", "c2"],
                "occurred_at": [at, at + pd.Timedelta(days=3), at],
                "event_type": ["login", "login", "invoice_paid"],
                "amount": [None, None, 20.0],
            }
        ),
        tmp_path / "events.parquet",
    )
    write_frame(
        pd.DataFrame({"customer_id": ["c1", "c2"], "signup_at": ["2025-01-01", "2025-01-01"]}),
        tmp_path / "customers.csv",
    )
    raw = {
        "data": {
            "events": str(tmp_path / "events.parquet"),
            "customers": str(tmp_path / "customers.csv"),
            "output_dir": str(tmp_path / "outputs"),
            "observed_until": "2026-11-01",
        },
        "event_types": DEMO_EVENT_TYPES,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    worker_engines(tmp_path / "config.yaml", ["2026-02-01"], tmp_path / "engines.json")
    got = json.loads((tmp_path / "engines.json").read_text())
    assert set(got["runs"]) == {"local_n_jobs_1", "local_n_jobs_2", "dask_local_cluster_2"}
    assert got["identical"] is True and got["rows"] == 2 and got["partitions"] == 1
    assert all(r["features_s"] > 0 and r["cpu_s"] >= 0 for r in got["runs"].values())
