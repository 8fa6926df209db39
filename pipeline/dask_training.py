"""LightGBM on a Dask cluster, for a training set that does not fit the driver.

The default path gathers the training set on the driver (millions of rows fit) and fits there;
``fit_on_cluster`` fits the same ``ChurnModel`` parameters with ``lightgbm.dask`` instead.
Pitfalls handled (DESIGN §11): LightGBM chooses its own ports (no ``local_listen_port``, which
clashes when several workers share a host); the data are persisted on the workers before
``fit``; one distributed fit at a time in this process (two would fight over the workers'
network set-up). No early stopping: the model grows ``n_estimators`` trees (take the number the
local backtest chose). Distributed histograms are built per worker, so the trees differ slightly
from a local fit: compare within a tolerance, never to the byte.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd

from pipeline.model import ChurnModel

_ONE_FIT = threading.Lock()
"""Distributed fits run one at a time."""


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
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMClassifier

    model.learn_columns(X)
    params = model._lgbm().get_params()
    params.pop("n_jobs", None)
    parts = n_partitions or max(1, len(client.scheduler_info()["workers"]))
    frame = model.encode(X).reset_index(drop=True)
    frame["_label"] = np.asarray(y, dtype=np.int64)
    data = dd.from_pandas(frame, npartitions=parts).persist()
    categorical = list(model.categories_) or "auto"
    with _ONE_FIT:
        fitted = DaskLGBMClassifier(client=client, **params).fit(
            data.drop(columns="_label"), data["_label"], categorical_feature=categorical
        )
    model.booster_ = fitted.to_local().booster_
    model.best_iteration_ = int(model.n_estimators)
    model.classes_ = np.array([0, 1])
    return model
