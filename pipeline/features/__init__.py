"""Point-in-time features keyed by (customer_id, as_of).

Every value for as_of T uses only events strictly before T (see ``daily`` for how).
``build_features`` runs each family's builder over one shared daily log and joins the results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from pipeline.config import ComputeConfig, FeatureConfig
from pipeline.features.billing import build_billing
from pipeline.features.breadth import build_breadth
from pipeline.features.btyd import BGNBD_FEATURES, with_bgnbd
from pipeline.features.daily import (
    DAY_ROW_WINDOW_DAYS,
    FEATURE_WINDOW_DAYS,
    DailyLog,
    PartitionReader,
    Source,
    build_daily_log,
    check_customer_order,
    daily_log,
    partitions,
    product_features,
)
from pipeline.features.frequency import build_frequency
from pipeline.features.grid import Grid, build_grid, normalise_as_of
from pipeline.features.lifecycle import STAGES, build_lifecycle
from pipeline.features.lifetime import NAN_WHEN_UNDEFINED as _NAN_LIFETIME
from pipeline.features.lifetime import build_lifetime
from pipeline.features.recency import build_recency
from pipeline.features.support import build_support
from pipeline.features.trend import build_trend
from pipeline.runner import for_log, run_tasks, threads_per_task
from pipeline.store import EventStore

log = logging.getLogger(__name__)

KEYS = ["customer_id", "as_of"]
NAN_WHEN_UNDEFINED = (*_NAN_LIFETIME, *BGNBD_FEATURES)
"""Features that are NaN by design when undefined (no purchase, fewer than two active days, no
BG/NBD fit): the model reads NaN as missing, so scoring must not reject these rows for it."""
CATEGORICAL = {"lifecycle_stage": STAGES}
"""Categorical features and their fixed categories; ``plan`` categories are learned at fit."""

Builder = Callable[[Grid, FeatureConfig], pd.DataFrame]

FAMILIES: dict[str, Builder] = {
    "recency": lambda grid, cfg: build_recency(grid),
    "frequency": lambda grid, cfg: build_frequency(grid),
    "trend": lambda grid, cfg: build_trend(grid),
    "breadth": lambda grid, cfg: build_breadth(grid),
    "support": lambda grid, cfg: build_support(grid, cfg.serious_severity),
    "billing": lambda grid, cfg: build_billing(grid),
    "lifecycle": lambda grid, cfg: build_lifecycle(
        grid, cfg.onboarding_days, cfg.mature_after_days
    ),
    "lifetime": lambda grid, cfg: build_lifetime(grid),
}


def build_features_for_grid(grid: Grid, config: FeatureConfig) -> pd.DataFrame:
    """Run every family on one grid and join them column-wise (all share the grid's row order)."""
    parts = [grid.keys.reset_index(drop=True)]
    for name, builder in FAMILIES.items():
        part = builder(grid, config).reset_index(drop=True)
        if len(part) != len(grid.keys):
            raise RuntimeError(
                f"feature family '{name}' returned {len(part)} rows, expected {len(grid.keys)}"
            )
        parts.append(part)
    return pd.concat(parts, axis=1)


def build_features(
    daily: DailyLog,
    customers: pd.DataFrame,
    as_of: list | pd.DatetimeIndex,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """Features for every eligible customer at each as_of date, in one pass over ``daily``.

    Eligible: signed up before as_of and not churned before it. Rows are ordered by as_of,
    then customer_id.
    """
    config = config or FeatureConfig()
    grid = build_grid(daily, customers, normalise_as_of(as_of))
    frame = build_features_for_grid(grid, config)
    log.info(
        "features: %d rows × %d columns for %d as_of date(s)",
        len(frame),
        frame.shape[1] - 2,
        len(set(grid.index.q_day)),
    )
    return frame


@dataclass(frozen=True)
class PartitionTask:
    """Everything one partition's work needs, and nothing shared: its files (``reader``), its
    customers (in code order), the as_of dates and the read bounds."""

    reader: PartitionReader
    customers: pd.DataFrame
    as_of: pd.DatetimeIndex
    qualifying_families: tuple[str, ...]
    until: pd.Timestamp | None
    since: pd.Timestamp | None
    products: dict[str, int]
    long_since: pd.Timestamp | None = None


def run_partition(task: PartitionTask, fn: Callable[[Grid], pd.DataFrame]) -> pd.DataFrame:
    """The pure per-partition function: its events → daily log → grid → ``fn``. It opens its
    own connection on the partition's files, so it runs the same in this process, a joblib
    worker or a Dask task."""
    ids = task.customers["customer_id"].to_numpy()
    daily = daily_log(
        task.reader,
        ids,
        list(task.qualifying_families),
        task.until,
        task.products,
        task.since,
        task.long_since,
    )
    return fn(build_grid(daily, task.customers, task.as_of))


def partition_tasks(
    store: EventStore,
    customers: pd.DataFrame,
    as_of: pd.DatetimeIndex,
    qualifying_families: list[str],
    until: pd.Timestamp | None,
    since: pd.Timestamp | None,
    threads: int | None = None,
    long_since: pd.Timestamp | None = None,
) -> list[PartitionTask]:
    """One task per partition of ``store``; ``customers`` are the validated customers in the
    store's order (checked)."""
    check_customer_order(store, customers["customer_id"].to_numpy())
    products, layout, codes = product_features(store), store.layout, store.feature_codes()
    return [
        PartitionTask(
            PartitionReader(store.partition(part), layout, codes, threads),
            customers.iloc[lo:hi],
            as_of,
            tuple(qualifying_families),
            until,
            since,
            products,
            long_since,
        )
        for part, lo, hi in store.partitions()
    ]


def map_partitions(
    source: Source,
    customers: pd.DataFrame,
    as_of: list | pd.DatetimeIndex,
    qualifying_families: list[str],
    fn: Callable[[Grid], pd.DataFrame],
    until: pd.Timestamp | None = None,
    lookback_days: int | None = FEATURE_WINDOW_DAYS,
    compute: ComputeConfig | None = None,
) -> pd.DataFrame:
    """Run ``fn`` on the grid of each customer partition of the event store and stack results.

    Features are per customer, so partitions are independent: memory is bounded by one
    partition per worker, whatever the size of the log, and the partitions run on the
    configured runner (``compute``, default the store's: joblib processes or Dask; see
    ``pipeline.runner``). Rows come back ordered by as_of, then customer_id, exactly as one
    unpartitioned grid would give them, whatever the runner.

    ``lookback_days``: the longest window before as_of that ``fn`` sums over. Full day rows
    start ``DAY_ROW_WINDOW_DAYS`` (or ``lookback_days``, when shorter) before the earliest as_of;
    older events are folded into one history row per customer (see ``build_daily_log``, with
    the cumulative totals), and the days up to ``lookback_days`` back are kept as narrow
    ``LongRows`` for the long windows. So one as_of reduces 90 days of events to full day rows,
    not the whole log. None keeps every day.
    """
    store = EventStore.of(source)
    compute = for_log(compute or store.compute, store.manifest["rows"])
    as_of = normalise_as_of(as_of)
    since, long_since = read_bounds(as_of, lookback_days)
    n_parts = len(store.partitions())
    threads = threads_per_task(compute, n_parts)
    tasks = partition_tasks(
        store, customers, as_of, qualifying_families, until, since, threads, long_since
    )
    frames = run_tasks(run_partition, tasks, compute, fn)
    frames = [f for f in frames if len(f)] or frames[:1]
    several = len(frames) > 1
    frame = pd.concat(frames, ignore_index=True)
    del frames  # the parts are copied: holding them through the sort costs a third copy
    if several:
        frame = frame.sort_values(["as_of", "customer_id"], kind="stable", ignore_index=True)
    return frame


def read_bounds(
    as_of: pd.DatetimeIndex, lookback_days: int | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """(``since``, ``long_since``) for ``daily_log``: full day rows from ``DAY_ROW_WINDOW_DAYS``
    before the earliest as_of, narrow long rows from ``lookback_days`` before it (None when
    the lookback is no longer than the day rows, or unbounded)."""
    if lookback_days is None or not len(as_of):
        return None, None
    start = as_of.min()
    since = start - pd.Timedelta(days=min(lookback_days, DAY_ROW_WINDOW_DAYS))
    if lookback_days <= DAY_ROW_WINDOW_DAYS:
        return since, None
    return since, start - pd.Timedelta(days=lookback_days)


def features_for_dates(
    source: Source,
    customers: pd.DataFrame,
    as_of: list | pd.DatetimeIndex,
    config: FeatureConfig,
    qualifying_families: list[str],
    compute: ComputeConfig | None = None,
) -> pd.DataFrame:
    """Features for every eligible customer at each as_of, partition by partition, reading
    only events before the last as_of (``compute``: the runner, default the store's)."""
    as_of = normalise_as_of(as_of)
    return map_partitions(
        source,
        customers,
        as_of,
        qualifying_families,
        _FeatureRows(config),
        until=as_of.max(),
        compute=compute,
    )


@dataclass(frozen=True)
class _FeatureRows:
    """``build_features_for_grid`` with its config: a picklable task function."""

    config: FeatureConfig

    def __call__(self, grid: Grid) -> pd.DataFrame:
        return build_features_for_grid(grid, self.config)


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The model-input columns of a features frame (everything but the keys)."""
    return [c for c in frame.columns if c not in KEYS]


__all__ = [
    "BGNBD_FEATURES",
    "CATEGORICAL",
    "FAMILIES",
    "KEYS",
    "NAN_WHEN_UNDEFINED",
    "DailyLog",
    "build_daily_log",
    "build_features",
    "feature_columns",
    "features_for_dates",
    "map_partitions",
    "normalise_as_of",
    "partitions",
    "read_bounds",
    "run_partition",
    "with_bgnbd",
]
