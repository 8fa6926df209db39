"""Runners: where the per-partition work of a map over the event store runs.

``compute.engine: local`` runs the tasks in this process (``n_jobs: 1``) or in joblib worker
processes (loky; ``n_jobs: -1`` = every core); ``compute.engine: dask`` submits them to
dask.distributed (``compute.dask.scheduler``, or a LocalCluster started for the map). The task
function is pure (it reads its partition's files on a connection of its own), so every runner
returns the same results in the same order. ``dask_client`` is the one place a Dask client is
made, for feature maps and for distributed training (``pipeline.dask_training``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pipeline.config import ComputeConfig

log = logging.getLogger(__name__)


AUTO_PARALLEL_ROWS = 1_000_000
"""With ``n_jobs: -1`` (every core), a log with fewer valid events runs in this process:
starting worker processes (~1–2 s) costs more than they save on it."""


def for_log(compute: ComputeConfig, rows: int) -> ComputeConfig:
    """``compute`` for a log of ``rows`` events: ``n_jobs: -1`` becomes 1 below
    ``AUTO_PARALLEL_ROWS``; an explicit ``n_jobs`` or the Dask engine is kept as configured."""
    if compute.engine == "local" and compute.n_jobs == -1 and rows < AUTO_PARALLEL_ROWS:
        return compute.model_copy(update={"n_jobs": 1})
    return compute


def workers(compute: ComputeConfig, n_tasks: int) -> int:
    """How many tasks run at once: at most one per task."""
    wanted = cluster_workers(compute) if compute.engine == "dask" else _cores(compute.n_jobs)
    return max(1, min(wanted, n_tasks))


def cluster_workers(compute: ComputeConfig) -> int:
    """Workers of a LocalCluster started for ``compute``: ``compute.dask.n_workers``, else
    ``compute.n_jobs`` (-1: every usable core)."""
    return compute.dask.n_workers or _cores(compute.n_jobs)


def _cores(n_jobs: int) -> int:
    return usable_cores() if n_jobs == -1 else n_jobs


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity and cgroup quota, as joblib
    counts them), not every core of the machine."""
    from joblib import cpu_count

    return max(1, int(cpu_count()))


def threads_per_task(compute: ComputeConfig, n_tasks: int) -> int | None:
    """DuckDB threads for each task: the machine's cores shared among the tasks that run at
    once (None: DuckDB's default, when one task runs at a time in this process)."""
    n = workers(compute, n_tasks)
    if compute.engine == "local" and n == 1:
        return None
    return max(1, usable_cores() // n) if compute.engine == "local" else 1


def run_tasks(
    fn: Callable[..., Any], tasks: Sequence[Any], compute: ComputeConfig, *args: Any
) -> list[Any]:
    """``[fn(task, *args) for task in tasks]`` on the configured runner, in task order."""
    if not tasks:
        return []
    if compute.engine == "dask":
        return _run_dask(fn, tasks, compute, args)
    n = workers(compute, len(tasks))
    if n == 1:
        return [fn(task, *args) for task in tasks]
    from joblib import Parallel, delayed

    log.debug("running %d partitions on %d joblib processes", len(tasks), n)
    return Parallel(n_jobs=n, backend="loky")(delayed(fn)(task, *args) for task in tasks)


def _run_dask(
    fn: Callable[..., Any], tasks: Sequence[Any], compute: ComputeConfig, args: tuple
) -> list[Any]:
    with dask_client(compute, workers(compute, len(tasks))) as client:
        return _submit(client, fn, tasks, args)


def _dask() -> Any:
    try:
        import dask.distributed
    except ImportError as error:
        raise RuntimeError(
            "compute.engine: dask needs the dask extra: pip install '.[dask]' (make setup"
            " installs it), or set compute.engine: local"
        ) from error
    return dask.distributed


@contextmanager
def shared_cluster(compute: ComputeConfig, n_workers: int | None = None) -> Iterator[ComputeConfig]:
    """``compute`` for several maps on one cluster: as it is, unless it is the Dask engine
    without a scheduler; then a LocalCluster of ``n_workers`` single-threaded workers (default
    ``cluster_workers(compute)``) is started here, closed on exit, and the yielded config points
    at it (each map alone would start its own)."""
    if compute.engine != "dask" or compute.dask.scheduler:
        yield compute
        return
    with _dask().LocalCluster(
        n_workers=n_workers or cluster_workers(compute),
        threads_per_worker=1,
        processes=compute.dask.processes,
        dashboard_address=None,
    ) as cluster:
        dask = compute.dask.model_copy(update={"scheduler": cluster.scheduler_address})
        yield compute.model_copy(update={"dask": dask})


@contextmanager
def dask_client(compute: ComputeConfig, n_workers: int | None = None) -> Iterator[Any]:
    """A ``dask.distributed.Client`` on ``compute.dask.scheduler``, or on a LocalCluster
    (``shared_cluster``) started here and closed on exit. The one place where feature maps,
    scoring and distributed training get their cluster."""
    dask = compute.model_copy(update={"engine": "dask"})
    with shared_cluster(dask, n_workers) as shared, _dask().Client(shared.dask.scheduler) as client:
        yield client


def _submit(client: Any, fn: Callable[..., Any], tasks: Sequence[Any], args: tuple) -> list:
    """Each task as one future (``pure=False``: no hashing of the task's frames)."""
    futures = [client.submit(fn, task, *args, pure=False) for task in tasks]
    return client.gather(futures)
