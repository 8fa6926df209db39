"""The event store on an fsspec path: a ``memory://`` store (fsspec's in-memory filesystem,
shared within this process) gives the local store's features to the byte, in this process and
on a Dask LocalCluster of threads, and is removed after the run like a local one."""

from __future__ import annotations

import gc
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import DEMO_EVENT_TYPES, STORE_CUSTOMERS, STORE_EVENTS
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ComputeConfig, ConfigError, FeatureConfig, parse_config
from pipeline.events import ValidatedData
from pipeline.features import features_for_dates
from pipeline.store import MANIFEST, PARTITION_VIEW, EventStore, open_partition
from pipeline.storepath import RemotePath, location, remove_tree

pytestmark = pytest.mark.data

T = pd.Timestamp
QUALIFYING = ["login", "feature_use", "purchase", "payment"]
DATES = [T("2025-05-01"), T("2025-06-15")]
CUSTOMERS, EVENTS = STORE_CUSTOMERS, STORE_EVENTS
SERIAL = {"n_jobs": 1}
DASK_THREADS = {"engine": "dask", "dask": {"n_workers": 2, "processes": False}}


@pytest.fixture
def memory_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``memory://`` folder of this test's own, emptied afterwards."""
    url = f"memory://churn-tests/{request.node.name}"
    yield url
    remove_tree(RemotePath(url))


def stored(validate: Callable[..., ValidatedData], store_dir: str | Path | None) -> ValidatedData:
    compute = ComputeConfig(store_dir=store_dir, **SERIAL)
    return validate(EVENTS, CUSTOMERS, partition_customers=2, compute=compute)


def feature_bytes(data: ValidatedData, compute: dict) -> bytes:
    frame = features_for_dates(
        data.store, data.customers, DATES, FeatureConfig(), QUALIFYING, ComputeConfig(**compute)
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_a_memory_store_gives_the_local_stores_features_to_the_byte(validate, memory_url):
    local = stored(validate, None)
    remote = stored(validate, memory_url)
    assert isinstance(local.store.directory, Path)
    assert str(remote.store.directory).startswith(memory_url + "/churn-events-")
    assert remote.store.manifest["partitions"] == local.store.manifest["partitions"]
    assert list(remote.store.customer_ids()) == ["a", "b", "c"]
    assert remote.store.unknown_event_types() == {"newsletter_opened": 1}
    assert feature_bytes(remote, SERIAL) == feature_bytes(local, SERIAL)


def test_open_partition_reads_a_partition_of_the_memory_store_on_its_own_connection(
    validate, memory_url
):
    data = stored(validate, memory_url)
    store = EventStore.open(str(data.store.directory))  # a worker's view: the URL alone
    assert store.directory == data.store.directory and store.con is None
    with open_partition(store.partition(0), store.layout) as con:
        rows = con.execute(f"SELECT code, ts FROM {PARTITION_VIEW} ORDER BY ts").fetchall()
    assert [code for code, _ in rows] == [0, 0, 1, 1]  # a's duplicate set aside
    assert rows[0][1] == T("2025-03-01 10:00").value // 1000


def test_a_dask_cluster_of_threads_reads_the_memory_store_and_gives_the_same_features(
    validate, memory_url
):
    pytest.importorskip("distributed")
    local = stored(validate, None)
    remote = stored(validate, memory_url)
    assert feature_bytes(remote, DASK_THREADS) == feature_bytes(local, SERIAL)


def test_the_validation_connection_finds_the_memory_store_and_its_settings_again(
    validate, memory_url
):
    data = stored(validate, memory_url)
    again = EventStore.of(data.con)
    assert again.directory == data.store.directory
    assert again.compute.store_dir == memory_url
    assert again.partitions() == data.store.partitions()


def test_the_memory_store_is_removed_with_the_data(validate, memory_url):
    data = stored(validate, memory_url)
    folder = data.store.directory
    assert isinstance(folder, RemotePath) and (folder / MANIFEST).exists()
    del data
    gc.collect()
    assert not folder.exists()


def test_file_urls_are_local_folders_and_unknown_protocols_a_config_error(tmp_path):
    assert location(f"file://{tmp_path}") == tmp_path
    assert ComputeConfig(store_dir=f"file://{tmp_path}").store_dir == tmp_path
    assert ComputeConfig(store_dir="memory://x/").store_dir == "memory://x"
    assert str(RemotePath("MEMORY://x//") / "y") == "memory://x/y"
    raw = {"data": {"events": "e.csv", "customers": "c.csv"}, "event_types": DEMO_EVENT_TYPES}
    with pytest.raises(ConfigError, match=r"compute\.store_dir") as error:
        parse_config({**raw, "compute": {"store_dir": "nosuchfs://bucket/churn"}})
    assert "'nosuchfs://bucket/churn'" in str(error.value)
    assert "fsspec knows no filesystem 'nosuchfs'" in str(error.value)
    assert "s3://bucket/prefix" in str(error.value)  # the fix: a URL fsspec knows


def test_store_sql_never_splices_a_url_raw(validate):
    url = "memory://churn-tests/it's"
    try:
        data = stored(validate, url)
        assert list(data.store.customer_ids()) == ["a", "b", "c"]
        assert str(data.store.directory).startswith(url)
    finally:
        remove_tree(RemotePath(url))


def test_churn_features_with_a_memory_store_dir_writes_the_local_files_bytes(tmp_path, memory_url):
    EVENTS.to_csv(tmp_path / "events.csv", index=False)
    CUSTOMERS.to_csv(tmp_path / "customers.csv", index=False)
    written = {}
    for name, compute in (("local", {}), ("memory", {"store_dir": memory_url})):
        raw = {
            "data": {
                "events": str(tmp_path / "events.csv"),
                "customers": str(tmp_path / "customers.csv"),
                "output_dir": str(tmp_path / "outputs"),
                "observed_until": "2025-07-01",
            },
            "event_types": {"login": ["login"], "feature_use": ["feature_used"]},
            "validation": {"max_reject_share": 1.0},
            "compute": {"n_jobs": 1, **compute},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        out = tmp_path / f"{name}.parquet"
        args = ["features", "--config", str(tmp_path / f"{name}.yaml"), "--out", str(out)]
        result = CliRunner().invoke(app, [*args, "--as-of", "2025-06-15"])
        assert result.exit_code == 0, result.output
        written[name] = out.read_bytes()
    assert written["memory"] == written["local"]
    gc.collect()
    assert RemotePath(memory_url).glob("churn-events-*") == []  # removed after the run
