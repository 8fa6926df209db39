"""Runners: the same partition function in this process, in joblib worker processes and on a
Dask LocalCluster gives the same features, labels and base rows, to the byte."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import pandas as pd
import pytest
from support import DEMO_EVENT_TYPES

from pipeline.config import (
    ComputeConfig,
    ConfigError,
    EventTypes,
    FeatureConfig,
    LabelConfig,
    parse_config,
)
from pipeline.events import load_and_validate
from pipeline.features import features_for_dates, map_partitions
from pipeline.labels import build_labels, lookback_days
from pipeline.runner import AUTO_PARALLEL_ROWS, for_log, run_tasks, threads_per_task, workers
from pipeline.score import build_base

pytestmark = pytest.mark.data

DATES = pd.DatetimeIndex(["2025-09-01", "2026-01-01", "2026-05-01"])
OBSERVED_UNTIL = pd.Timestamp("2026-11-01")
SERIAL = ComputeConfig(n_jobs=1)
TWO = ComputeConfig(n_jobs=2)
DASK = ComputeConfig(engine="dask", dask={"n_workers": 2, "processes": False})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    from pipeline.demo import write_demo_data

    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, n_customers=400, seed=11)
    return validated(out, ComputeConfig())


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def features(data, compute: ComputeConfig) -> pd.DataFrame:
    qualifying = LabelConfig().qualifying_families
    return features_for_dates(
        data.store, data.customers, DATES, FeatureConfig(), qualifying, compute
    )


def labels(data, compute: ComputeConfig) -> pd.DataFrame:
    label = LabelConfig(definition="inactivity", horizon_days=60)
    return map_partitions(
        data.store,
        data.customers,
        DATES,
        label.qualifying_families,
        lambda grid: build_labels(grid, label, OBSERVED_UNTIL),
        lookback_days=lookback_days(label),
        compute=compute,
    )


def validated(folder: Path, compute: ComputeConfig):
    return load_and_validate(
        folder / "events.parquet",
        folder / "customers.csv",
        EventTypes(**DEMO_EVENT_TYPES),
        observed_until=OBSERVED_UNTIL,
        partition_customers=90,
        compute=compute,
    )


def test_the_duplicate_search_runs_per_partition_on_every_runner_with_the_same_result(
    tmp_path: Path,
):
    """Validation searches each partition for exact repeats alone (a customer's rows all lie in
    one partition): in this process, on joblib processes and on Dask, the same rows are set
    aside, with the same rejects, counts and manifest."""
    from pipeline.demo import write_demo_data

    write_demo_data(tmp_path, n_customers=400, seed=11)
    runs = [validated(tmp_path, compute) for compute in (SERIAL, TWO, DASK)]
    serial = runs[0]
    assert any("duplicate event" in reason for reason in serial.report.event_rejects)
    for other in runs[1:]:
        pd.testing.assert_frame_equal(other.event_rejects, serial.event_rejects)
        assert other.report.as_dict() == serial.report.as_dict()
        manifest, expected = other.store.manifest, serial.store.manifest
        assert manifest["partitions"] == expected["partitions"]
        assert manifest["unknown_event_types"] == expected["unknown_event_types"]


def test_the_demo_store_has_several_partitions(data):
    assert len(data.store.partitions()) == 5


def test_joblib_processes_give_the_serial_features_to_the_byte(data):
    serial = features(data, SERIAL)
    assert len(serial) > 300 and serial["as_of"].nunique() == 3
    assert parquet_bytes(features(data, TWO)) == parquet_bytes(serial)


def test_a_dask_local_cluster_gives_the_serial_features_and_labels(data):
    pd.testing.assert_frame_equal(features(data, DASK), features(data, SERIAL))
    serial = labels(data, SERIAL)
    assert serial["churned"].notna().any()
    pd.testing.assert_frame_equal(labels(data, DASK), serial)
    pd.testing.assert_frame_equal(labels(data, TWO), serial)


def test_the_scoring_base_is_the_same_on_every_runner(data):
    label = LabelConfig(definition="inactivity")
    bases = []
    for compute in (SERIAL, TWO, DASK):
        data.store.compute = compute
        bases.append(build_base(data, DATES[-1], FeatureConfig(), label))
    data.store.compute = ComputeConfig()
    for base in bases[1:]:
        pd.testing.assert_frame_equal(base.features, bases[0].features)
        assert base.counts == bases[0].counts


def test_the_runner_keeps_task_order_and_shares_the_cores():
    tasks = list(range(7))
    assert run_tasks(pow, tasks, TWO, 2) == [t**2 for t in tasks]
    assert run_tasks(pow, tasks, SERIAL, 3) == [t**3 for t in tasks]
    assert workers(TWO, 1) == 1 and workers(TWO, 7) == 2
    assert threads_per_task(SERIAL, 7) is None
    assert threads_per_task(DASK, 7) == 1


def test_the_compute_section_names_the_allowed_engines_and_rejects_zero_jobs(tmp_path: Path):
    raw = {"data": {"events": "e.csv", "customers": "c.csv"}, "event_types": DEMO_EVENT_TYPES}
    assert parse_config(raw).compute == ComputeConfig()
    with pytest.raises(ConfigError, match=r"compute\.engine") as error:
        parse_config({**raw, "compute": {"engine": "spark"}})
    assert "'local' or 'dask'" in str(error.value)
    with pytest.raises(ConfigError, match="n_jobs must be -1"):
        parse_config({**raw, "compute": {"n_jobs": 0}})
    config = parse_config({**raw, "compute": {"dask": {"scheduler": "tcp://10.0.0.5:8786"}}})
    assert config.compute.dask.scheduler == "tcp://10.0.0.5:8786"


def test_the_store_is_written_under_the_configured_folder_and_removed_with_the_data(tmp_path):
    events = pd.DataFrame(
        {"customer_id": ["a"], "occurred_at": ["2025-03-01 10:00"], "event_type": ["login"]}
    )
    customers = pd.DataFrame({"customer_id": ["a"], "signup_at": ["2025-01-01"]})
    data = load_and_validate(
        events,
        customers,
        EventTypes(login=["login"]),
        observed_until=pd.Timestamp("2025-07-01"),
        compute=ComputeConfig(store_dir=tmp_path / "shared"),
    )
    folder = data.store.directory
    assert folder.parent == tmp_path / "shared" and (folder / "manifest.json").exists()
    del data
    gc.collect()
    assert not folder.exists()


def test_every_core_means_this_process_for_a_small_log_and_explicit_settings_stay():
    auto = ComputeConfig()
    assert for_log(auto, AUTO_PARALLEL_ROWS - 1).n_jobs == 1
    assert for_log(auto, AUTO_PARALLEL_ROWS).n_jobs == -1
    assert for_log(TWO, 10) == TWO and for_log(DASK, 10) == DASK
