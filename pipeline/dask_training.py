"""LightGBM on a Dask cluster: the production refit of ``churn train`` when
``compute.dask.distributed_training`` is on.

The default path gathers the training set on the driver (millions of rows fit) and fits there;
``fit_on_cluster`` fits the same ``ChurnModel`` parameters with ``lightgbm.dask`` instead, and
``fit_distributed`` does so on the cluster the config names (``runner.dask_client``: the
scheduler at ``compute.dask.scheduler``, or a LocalCluster). Pitfalls handled (DESIGN §11):

- LightGBM chooses its own ports (no ``local_listen_port``, which clashes when several workers
  share a host, and no ``machines``);
- the training set is scattered to the workers in one chunk per worker and persisted there
  before ``fit`` (no frame embedded in the task graph, no recomputation during training);
- one distributed fit at a time in this process (two would fight over the workers' network
  set-up);
- no early stopping: the model grows ``n_estimators`` trees (take the number the local backtest
  chose). Distributed histograms are built per worker, so the trees differ slightly from a
  local fit: compare within a tolerance, never to the byte.
"""

from __future__ import annotations

import logging
import threading
import warnings
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import ComputeConfig
from pipeline.model import ChurnModel

log = logging.getLogger(__name__)

_ONE_FIT = threading.Lock()
"""Distributed fits run one at a time."""
_LABEL = "_label"


def fit_distributed(
    model: ChurnModel, X: pd.DataFrame, y: np.ndarray, compute: ComputeConfig
) -> tuple[ChurnModel, int]:
    """Fit ``model`` on (X, y) across the workers of the cluster ``compute`` names; returns the
    fitted model and the number of workers that trained it."""
    from pipeline.runner import dask_client

    with dask_client(compute) as client:
        n_workers = min(cluster_size(client, compute), len(X))
        log.info(
            "fitting %d trees on %d rows across %d Dask workers (lightgbm.dask)",
            model.n_estimators,
            len(X),
            n_workers,
        )
        return fit_on_cluster(model, X, y, client, n_workers), n_workers


def cluster_size(client: Any, compute: ComputeConfig) -> int:
    """Workers connected to ``client``; raise when there are none (a scheduler without
    workers would leave the fit waiting forever)."""
    n = len(client.scheduler_info()["workers"])
    if n == 0:
        raise RuntimeError(
            f"the Dask scheduler {compute.dask.scheduler or 'LocalCluster'} has no workers;"
            " start workers (dask worker ADDRESS) or set compute.dask.distributed_training: false"
        )
    return n


def fit_on_cluster(
    model: ChurnModel,
    X: pd.DataFrame,
    y: np.ndarray,
    client: Any,
    n_partitions: int | None = None,
) -> ChurnModel:
    """Fit ``model`` on (X, y) across the workers of ``client`` (a ``dask.distributed.Client``);
    returns ``model`` fitted, with the state ``ChurnModel.fit`` leaves (``booster_``,
    ``best_iteration_``, ``categories_``, ``feature_names_in_``), so scoring, explaining and
    saving work unchanged. ``n_partitions``: chunks of the training set (default: one per
    worker)."""
    from lightgbm.dask import DaskLGBMClassifier

    model.learn_columns(X)
    params = model._lgbm().get_params()
    params.pop("n_jobs", None)  # lightgbm.dask sets each worker's threads to its nthreads
    parts = n_partitions or max(1, len(client.scheduler_info()["workers"]))
    data = persist_training_set(client, model.encode(X), y, parts)
    categorical = list(model.categories_) or "auto"
    with _ONE_FIT, warnings.catch_warnings():
        # DaskLGBMClassifier always passes its own n_jobs=None and then warns that it drops it
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        fitted = DaskLGBMClassifier(client=client, **params).fit(
            data.drop(columns=_LABEL), data[_LABEL], categorical_feature=categorical
        )
    model.booster_ = fitted.to_local().booster_
    model.best_iteration_ = int(model.n_estimators)
    model.classes_ = np.array([0, 1])
    return model


def persist_training_set(client: Any, frame: pd.DataFrame, y: np.ndarray, parts: int) -> Any:
    """The encoded training rows and their label as a Dask DataFrame of ``parts`` chunks,
    scattered from here to the workers (round robin: one chunk per worker when ``parts`` is
    the number of workers) and held in their memory."""
    import dask.dataframe as dd
    from dask.distributed import wait

    frame = frame.reset_index(drop=True)
    frame[_LABEL] = np.asarray(y, dtype=np.int64)
    parts = max(1, min(parts, len(frame)))  # an empty chunk would leave a worker without rows
    bounds = np.linspace(0, len(frame), parts + 1).astype(int)
    chunks = [frame.iloc[a:b] for a, b in pairwise(bounds)]
    data = dd.from_delayed(client.scatter(chunks), meta=frame.iloc[:0], verify_meta=False)
    data = data.persist()
    wait(data)
    return data
