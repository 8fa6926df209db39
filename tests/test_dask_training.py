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
