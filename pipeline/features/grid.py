"""The query grid: which (customer_id, as_of) rows exist, with the customer attributes they need."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.features.daily import US_PER_DAY, DailyLog, WindowIndex


@dataclass(frozen=True)
class Grid:
    """Eligible (customer, as_of) pairs and the window index over them.

    Eligible: signed up strictly before as_of and not churned before as_of
    (``churned_at >= as_of`` or never). ``keys`` holds ``customer_id`` and ``as_of``
    (UTC midnight), ``customers`` the matching customer rows, ``index`` the window queries.
    """

    keys: pd.DataFrame
    customers: pd.DataFrame
    index: WindowIndex

    @property
    def as_of_us(self) -> np.ndarray:
        return self.index.q_day * US_PER_DAY

    def days_since(self, timestamp_us: np.ndarray) -> np.ndarray:
        """Days (float) from ``timestamp_us`` to as_of."""
        return (self.as_of_us - timestamp_us) / US_PER_DAY


def normalise_as_of(dates: list | pd.Series | pd.DatetimeIndex) -> pd.DatetimeIndex:
    """as_of dates as sorted, unique UTC midnights (naive); time of day is an error."""
    stamps = pd.DatetimeIndex(pd.to_datetime(list(dates)))
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    if (stamps != stamps.normalize()).any():
        raise ValueError(f"as_of dates must be dates (UTC midnight), got {list(stamps)}")
    return pd.DatetimeIndex(sorted(set(stamps)), name="as_of").as_unit("us")


def build_grid(daily: DailyLog, customers: pd.DataFrame, as_of: pd.DatetimeIndex) -> Grid:
    """All eligible (customer, as_of) pairs of the customers ``daily`` covers, ordered by as_of
    then customer_id."""
    as_of = normalise_as_of(as_of)
    by_id = customers.set_index("customer_id").reindex(daily.customer_ids)
    signup = by_id["signup_at"].to_numpy(dtype="datetime64[us]")
    churned = by_id["churned_at"].to_numpy(dtype="datetime64[us]")
    codes = daily.codes
    code = np.tile(codes, len(as_of))
    stamp = np.repeat(as_of.to_numpy(dtype="datetime64[us]"), len(codes))
    eligible = (signup[code] < stamp) & ~(churned[code] < stamp)
    code, stamp = code[eligible], stamp[eligible]
    day = stamp.astype("datetime64[D]").astype(np.int64)
    keys = pd.DataFrame({"customer_id": daily.customer_ids[code], "as_of": stamp})
    keys["customer_id"] = keys["customer_id"].astype("str")
    rows = by_id.iloc[code].reset_index()
    return Grid(keys, rows, WindowIndex(daily, code, day))
