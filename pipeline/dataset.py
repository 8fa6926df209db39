"""Training sets over many as_of dates, and the out-of-time split.

Slices, oldest to newest: ``train`` → ``validation`` (early stopping) → ``calibration`` →
``test`` (untouched, for the reported metrics). Leakage rules, with h the label horizon:
- every training label window [d, d + h) ends at or before the first validation date;
- every calibration label window ends at or before the first test date;
so no label the model or its calibrator learns from overlaps a later slice's outcome period.
Validation and calibration may touch (early stopping does not learn from calibration labels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from pipeline.config import DatasetConfig, FeatureConfig, LabelConfig
from pipeline.features import KEYS, build_features_for_grid, map_partitions
from pipeline.features.daily import DailyLog
from pipeline.features.grid import Grid, build_grid, normalise_as_of
from pipeline.labels import build_labels, lookback_days

log = logging.getLogger(__name__)

SLICES = ("train", "validation", "calibration", "test")


class DatasetError(ValueError):
    """Not enough history or dates for the requested split; the message says what to change."""


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


def out_of_time_split(
    dates: pd.DatetimeIndex, horizon_days: int, config: DatasetConfig
) -> dict[str, pd.DatetimeIndex]:
    """Assign as_of dates to train / validation / calibration / test (see module docstring)."""
    dates = normalise_as_of(dates)
    h = pd.Timedelta(days=horizon_days)
    test = dates[-config.test_dates :]
    before_test = dates[dates + h <= test.min()]
    calibration = before_test[-config.calibration_dates :]
    validation = before_test[before_test < calibration.min()][-config.validation_dates :]
    train = dates[dates + h <= validation.min()] if len(validation) else validation
    split = {"train": train, "validation": validation, "calibration": calibration, "test": test}
    short = [name for name, d in split.items() if len(d) == 0]
    if (
        short
        or len(calibration) < config.calibration_dates
        or len(validation) < config.validation_dates
    ):
        raise DatasetError(
            f"{len(dates)} as_of dates ({_span(dates)}) with a {horizon_days}-day horizon leave"
            f" no dates for {short or 'the requested slice sizes'}: the split needs gaps of one"
            " horizon. Use more history, a shorter label.horizon_days, dataset.frequency: weekly,"
            " or fewer dataset.*_dates."
        )
    return split


def _span(dates: pd.DatetimeIndex) -> str:
    return f"{dates.min().date()}…{dates.max().date()}" if len(dates) else "none"


@dataclass(frozen=True)
class TrainingSet:
    """Features and labels for many as_of dates, with each row's slice."""

    frame: pd.DataFrame
    split: dict[str, pd.DatetimeIndex]

    def part(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["slice"] == name].reset_index(drop=True)


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
    source: DailyLog | duckdb.DuckDBPyConnection,
    customers: pd.DataFrame,
    dates: pd.DatetimeIndex,
    split: dict[str, pd.DatetimeIndex],
    features: FeatureConfig,
    label: LabelConfig,
    observed_until: pd.Timestamp,
) -> TrainingSet:
    """Features + ``churned`` label for every in-base (customer, as_of) with a known label.

    ``source`` is one daily log, or the DuckDB connection of validated data, whose event store
    is then read one customer partition at a time (bounded memory). Either way one feature pass
    serves all dates (the same path as ``churn features``).
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
    slice_of = {d: name for name, ds in split.items() for d in ds}
    frame["slice"] = frame["as_of"].map(slice_of).fillna("unused").astype("str")
    for name in SLICES:
        part = frame[frame["slice"] == name]
        log.info(
            "%-11s %2d dates, %7d rows, churn rate %.3f",
            name,
            len(split[name]),
            len(part),
            part["churned"].mean() if len(part) else float("nan"),
        )
    return TrainingSet(frame, split)
