"""Distributed LightGBM on a 2-worker LocalCluster: the same model, within a tolerance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.dask_training import fit_on_cluster
from pipeline.model import ChurnModel

pytestmark = pytest.mark.model


def training_set(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "days_since_last_activity": rng.exponential(20, n),
            "logins_30d": rng.poisson(6, n).astype(np.int64),
            "plan": rng.choice(["basic", "pro"], n),
        }
    )
    logit = 0.08 * X["days_since_last_activity"] - 0.3 * X["logins_30d"] + (X["plan"] == "basic")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return X, y


def test_a_two_worker_cluster_fits_a_model_as_good_as_the_local_one():
    from dask.distributed import Client, LocalCluster

    X, y = training_set(3000, seed=1)
    test_X, test_y = training_set(2000, seed=2)
    settings = {"n_estimators": 60, "min_child_samples": 20, "n_jobs": 1}
    local = ChurnModel(**settings).fit(X, y)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        spread = fit_on_cluster(ChurnModel(**settings), X, y, client)
    assert spread.size()["trees"] == 60 and spread.categories_ == {"plan": ["basic", "pro"]}
    p_local, p_spread = local.raw_proba(test_X), spread.raw_proba(test_X)
    auc_local, auc_spread = roc_auc_score(test_y, p_local), roc_auc_score(test_y, p_spread)
    assert auc_spread > 0.75 and abs(auc_spread - auc_local) < 0.03
    assert np.corrcoef(p_local, p_spread)[0, 1] > 0.95


def test_the_training_set_is_scattered_one_chunk_per_worker_and_persisted():
    from dask.distributed import Client, LocalCluster, futures_of

    from pipeline.dask_training import persist_training_set

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        data = persist_training_set(client, frame, np.array([0, 1, 0, 1, 1]), parts=2)
        holders = client.who_has(futures_of(data))
        assert len({w for ws in holders.values() for w in ws}) == 2
        assert data.compute()["_label"].tolist() == [0, 1, 0, 1, 1]
        three = persist_training_set(client, frame.head(3), np.array([0, 1, 0]), parts=5)
        assert three.npartitions == 3  # never an empty chunk


def test_fit_distributed_uses_the_configured_cluster_and_says_on_how_many_workers():
    from pipeline.config import ComputeConfig, DaskConfig
    from pipeline.dask_training import fit_distributed

    X, y = training_set(600, seed=3)
    compute = ComputeConfig(
        engine="dask", dask=DaskConfig(n_workers=2, processes=False, distributed_training=True)
    )
    model, workers = fit_distributed(ChurnModel(n_estimators=10, n_jobs=1), X, y, compute)
    assert workers == 2 and model.size()["trees"] == 10
    assert model.raw_proba(X).shape == (600,)


def test_a_cluster_without_workers_is_an_error_not_a_wait():
    from dask.distributed import Client, LocalCluster

    from pipeline.config import ComputeConfig
    from pipeline.dask_training import cluster_size

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
        pytest.raises(RuntimeError, match="has no workers; start workers"),
    ):
        cluster_size(client, ComputeConfig(engine="dask"))
