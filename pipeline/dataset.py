"""Training sets over many as_of dates, and the rolling-origin backtest over them.

Backtest (``backtest_folds``), with h the label horizon: each of the last N labelled as_of dates
is a fold's ``test`` date. Its model is fitted on ``train`` dates and early-stopped (and, in the
backtest, calibrated) on ``validation`` dates, with a gap of one horizon at each step:
- every validation label window [v, v + h) ends at or before the test date;
- every training label window [d, d + h) ends at or before the first validation date;
so no label a fold learns from overlaps the outcome period it is scored on. The production
model is then refit on every labelled date (``BacktestPlan.dates``).

Short histories (``plan_backtest``): when the configured schedule cannot give N folds, weekly
dates are tried, then a 30-day ``min_history_days``, then fewer folds; what changed is recorded
in ``BacktestPlan.fallbacks``. No fold at all is a ``DatasetError`` naming what to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from pipeline.config import DatasetConfig, FeatureConfig, LabelConfig
from pipeline.features import KEYS, build_features_for_grid, map_partitions, with_bgnbd
from pipeline.features.daily import DailyLog
from pipeline.features.grid import Grid, build_grid, normalise_as_of
from pipeline.labels import build_labels, lookback_days
from pipeline.store import EventStore

log = logging.getLogger(__name__)

LABEL = "churned"
SHORT_MIN_HISTORY_DAYS = 30
"""The fallback's ``min_history_days``: the shortest feature window (``events_30d``) is whole."""


class DatasetError(ValueError):
    """Not enough history or dates for the backtest; the message says what to change."""


class UnusableLogError(DatasetError):
    """The log cannot train a model (no mapped events, or labels of one class only)."""


def as_of_schedule(
    first_event: pd.Timestamp,
    observed_until: pd.Timestamp,
    config: DatasetConfig,
    horizon_days: int,
) -> pd.DatetimeIndex:
    """as_of dates (month or week starts, UTC midnight) whose label window is fully observed.

    Starts at ``config.first_as_of`` or the first period start ``min_history_days`` after the
    first event; ends at ``config.last_as_of`` or the last start with as_of + h ≤ observed_until,
    whichever is earlier (a label window past observed_until is never scheduled).
    """
    if not config.first_as_of and (first_event is None or pd.isna(first_event)):
        raise DatasetError(
            "the log has no valid events, so there is no history to schedule as_of dates from;"
            " check the events input and its rejects file"
        )
    start = (
        pd.Timestamp(config.first_as_of)
        if config.first_as_of
        else (pd.Timestamp(first_event).normalize() + pd.Timedelta(days=config.min_history_days))
    )
    last_known = pd.Timestamp(observed_until) - pd.Timedelta(days=horizon_days)
    end = min(pd.Timestamp(config.last_as_of), last_known) if config.last_as_of else last_known
    freq = "MS" if config.frequency == "monthly" else "W-MON"
    dates = pd.date_range(start, end, freq=freq)
    return normalise_as_of(dates)


@dataclass(frozen=True)
class Fold:
    """One backtest origin: fit on ``train``, early-stop and calibrate on ``validation``,
    score ``test``."""

    test: pd.Timestamp
    validation: pd.DatetimeIndex
    train: pd.DatetimeIndex

    def as_dict(self) -> dict[str, object]:
        return {
            "test": str(self.test.date()),
            "validation": [str(d.date()) for d in self.validation],
            "train": [str(d.date()) for d in self.train],
        }


def backtest_folds(
    dates: pd.DatetimeIndex, horizon_days: int, n_folds: int, validation_dates: int = 1
) -> list[Fold]:
    """Folds for the last ``n_folds`` dates, oldest first; origins that leave no training date
    (or too few validation dates) after the one-horizon gaps are dropped."""
    dates = normalise_as_of(dates).unique().sort_values()
    h = pd.Timedelta(days=horizon_days)
    folds = []
    for test in dates[-n_folds:]:
        validation = dates[dates + h <= test][-validation_dates:]
        if len(validation) < validation_dates:
            continue
        train = dates[dates + h <= validation.min()]
        if len(train):
            folds.append(Fold(test, validation, train))
    return folds


@dataclass(frozen=True)
class BacktestPlan:
    """The labelled as_of dates (all of them train the production model) and the folds."""

    dates: pd.DatetimeIndex
    folds: tuple[Fold, ...]
    frequency: str
    min_history_days: int
    fallbacks: tuple[str, ...] = ()


def plan_backtest(
    first_event: pd.Timestamp,
    observed_until: pd.Timestamp,
    config: DatasetConfig,
    horizon_days: int,
) -> BacktestPlan:
    """The configured schedule and folds; on a short history the first fallback that gives
    ``config.backtest_folds`` folds, else the one with most folds (see module docstring)."""
    plans = [_plan(first_event, observed_until, config, horizon_days)]
    if config.short_history_fallback:
        for change in _fallback_changes(config):
            if len(plans[-1].folds) >= config.backtest_folds:
                break
            relaxed = config.model_copy(update=change)
            plans.append(_plan(first_event, observed_until, relaxed, horizon_days))
    best = max(plans, key=lambda p: len(p.folds))  # first of the longest, in ladder order
    if not best.folds:
        raise DatasetError(_no_fold_message(plans[0], horizon_days, config))
    return _with_notes(best, plans[0], config.backtest_folds)


def _fallback_changes(config: DatasetConfig) -> list[dict]:
    short = min(config.min_history_days, SHORT_MIN_HISTORY_DAYS)
    changes = [{"frequency": "weekly"}, {"frequency": "weekly", "min_history_days": short}]
    return [c for c in changes if any(getattr(config, k) != v for k, v in c.items())]


def _plan(first_event, observed_until, config: DatasetConfig, horizon_days: int) -> BacktestPlan:
    dates = as_of_schedule(first_event, observed_until, config, horizon_days)
    folds = backtest_folds(dates, horizon_days, config.backtest_folds, config.validation_dates)
    return BacktestPlan(dates, tuple(folds), config.frequency, config.min_history_days)


def _with_notes(plan: BacktestPlan, configured: BacktestPlan, wanted: int) -> BacktestPlan:
    notes = []
    if plan is not configured:
        notes.append(
            f"{configured.frequency} as_of dates with min_history_days"
            f" {configured.min_history_days} give {len(configured.folds)} of {wanted} backtest"
            f" folds; using {plan.frequency} dates with min_history_days {plan.min_history_days}"
            f" ({len(plan.dates)} dates, {_span(plan.dates)})"
        )
    if len(plan.folds) < wanted:
        notes.append(f"backtest with {len(plan.folds)} fold(s) instead of {wanted}")
    for note in notes:
        log.warning("short history: %s", note)
    return BacktestPlan(plan.dates, plan.folds, plan.frequency, plan.min_history_days, tuple(notes))


def _no_fold_message(plan: BacktestPlan, horizon_days: int, config: DatasetConfig) -> str:
    return (
        f"{len(plan.dates)} as_of dates ({_span(plan.dates)}) with a {horizon_days}-day horizon"
        " leave no backtest fold: a fold needs a training date, a validation date one horizon"
        f" later and a test date one more horizon later (about {3 * horizon_days} days of"
        f" labelled history after min_history_days {config.min_history_days}). Use more"
        " history, a shorter label.horizon_days, dataset.frequency: weekly or a smaller"
        " dataset.min_history_days."
    )


def _span(dates: pd.DatetimeIndex) -> str:
    return f"{dates.min().date()}…{dates.max().date()}" if len(dates) else "none"


@dataclass(frozen=True)
class TrainingSet:
    """Features and the ``churned`` label for every labelled (customer, as_of)."""

    frame: pd.DataFrame

    def rows(self, dates: pd.DatetimeIndex | list[pd.Timestamp]) -> pd.DataFrame:
        """The rows whose as_of is one of ``dates``, in frame order."""
        wanted = normalise_as_of(pd.DatetimeIndex(dates))
        return self.frame[self.frame["as_of"].isin(wanted)].reset_index(drop=True)


def labelled_rows(
    grid: Grid, features: FeatureConfig, label: LabelConfig, observed_until: pd.Timestamp
) -> pd.DataFrame:
    """Features + ``churned`` (int8) for the grid's in-base rows whose label is known."""
    feats = build_features_for_grid(grid, features)
    labels = build_labels(grid, label, observed_until)
    frame = feats.merge(labels, on=KEYS, how="inner", validate="one_to_one")
    frame = frame[frame["churned"].notna()].reset_index(drop=True)
    frame["churned"] = frame["churned"].astype(np.int8)
    return frame


def build_training_set(
    source: DailyLog | EventStore | duckdb.DuckDBPyConnection,
    customers: pd.DataFrame,
    dates: pd.DatetimeIndex,
    features: FeatureConfig,
    label: LabelConfig,
    observed_until: pd.Timestamp,
) -> TrainingSet:
    """Features + ``churned`` label for every in-base (customer, as_of) with a known label.

    ``source`` is one daily log, or the DuckDB connection of validated data, whose event store
    is then read one customer partition at a time (bounded memory). Either way one feature pass
    serves all dates (the same path as ``churn features``). Raises ``UnusableLogError`` when
    the labels hold one class only.
    """
    dates = normalise_as_of(dates)
    if isinstance(source, DailyLog):
        frame = labelled_rows(build_grid(source, customers, dates), features, label, observed_until)
    else:
        frame = map_partitions(
            source,
            customers,
            dates,
            label.qualifying_families,
            lambda grid: labelled_rows(grid, features, label, observed_until),
            until=observed_until,
            lookback_days=lookback_days(label),
        )
    frame = with_bgnbd(frame, label.horizon_days)
    log.info(
        "training set: %d as_of dates (%s), %d rows, churn rate %.3f",
        len(dates),
        _span(dates),
        len(frame),
        frame[LABEL].mean() if len(frame) else float("nan"),
    )
    check_both_classes(frame[LABEL], label, f"{len(dates)} as_of dates ({_span(dates)})")
    return TrainingSet(frame)


def check_both_classes(y: pd.Series, label: LabelConfig, where: str) -> None:
    """Raise ``UnusableLogError`` unless ``y`` holds churners and non-churners."""
    churners, rows = int(y.sum()), len(y)
    if 0 < churners < rows:
        return
    kind = "no churner (positive label)" if churners == 0 else "no non-churner (negative label)"
    raise UnusableLogError(
        f"the labels on {where} have {kind} among {rows} rows (label.definition"
        f" {label.definition}, horizon {label.horizon_days} days), so there is nothing to"
        " learn. Check label.definition, label.qualifying_families and the event_types"
        " mapping (an inactivity label needs qualifying events), or use more history."
    )


def check_mapped_events(store: EventStore, label: LabelConfig) -> None:
    """Raise ``UnusableLogError`` when no valid event maps to a signal family, or (for the
    ``inactivity`` label) none to a qualifying family."""
    mapped, qualifying = store.mapped_counts(label.qualifying_families)
    if mapped == 0:
        raise UnusableLogError(
            "no valid event maps to a signal family (every event type is unmapped), so there"
            " are no features or labels to learn from. List the log's raw event types under"
            " event_types in the config (login, feature_use, purchase, ...); the validation"
            " report names the unmapped types."
        )
    if qualifying == 0 and label.definition == "inactivity":
        raise UnusableLogError(
            "no valid event is in label.qualifying_families"
            f" {label.qualifying_families}, so every customer would count as churned. Map the"
            " log's activity or purchase event types under event_types, or change"
            " label.qualifying_families."
        )
