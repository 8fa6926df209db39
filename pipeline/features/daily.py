"""Reduce the validated log to one row per (customer, UTC day), then answer window queries.

This is the one pass over the events that every as_of date shares. Rows are sorted by
(customer code, day), so a running sum per column turns any half-open window of days
[start, end) into two binary searches and a subtraction, for any number of as_of dates.

Time semantics: as_of dates are UTC midnights, so "events strictly before as_of" is exactly
"days < as_of's day": an event at as_of belongs to the as_of day (the future), one a microsecond
before belongs to the day before (the past).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

DAY_BITS = 21  # days since 1970 fit in 21 bits until the year 7711
US_PER_DAY = 86_400_000_000
MAX_FEATURES = 64

COUNT_COLUMNS = {
    "n_events": "count(*)",
    "n_login": "count(*) FILTER (family = 'login')",
    "n_feature_use": "count(*) FILTER (family = 'feature_use')",
    "n_complaint": "count(*) FILTER (family = 'complaint')",
    "n_ticket": "count(*) FILTER (family = 'support_ticket')",
    "n_payment_failed": "count(*) FILTER (family = 'payment_failed')",
    "n_purchase": "count(*) FILTER (family = 'purchase')",
    "n_payment": "count(*) FILTER (family = 'payment')",
    "n_sev1": "count(*) FILTER (family IN ('complaint', 'support_ticket') AND severity = 1)",
    "n_sev2": "count(*) FILTER (family IN ('complaint', 'support_ticket') AND severity = 2)",
    "n_sev3": "count(*) FILTER (family IN ('complaint', 'support_ticket') AND severity = 3)",
    "n_sev4": "count(*) FILTER (family IN ('complaint', 'support_ticket') AND severity = 4)",
}
TS_COLUMNS = {
    "last_event_us": "max(epoch_us(occurred_at))",
    "last_login_us": "max(epoch_us(occurred_at)) FILTER (family = 'login')",
    "last_feature_us": "max(epoch_us(occurred_at)) FILTER (family = 'feature_use')",
    "last_complaint_us": "max(epoch_us(occurred_at)) FILTER (family = 'complaint')",
}
VALUE_COLUMNS = {
    "spend": "coalesce(sum(amount) FILTER (family IN ('purchase', 'payment')), 0)",
    "payment_amount": "arg_max(amount, occurred_at) FILTER (family = 'payment')",
}


@dataclass(frozen=True)
class DailyLog:
    """Per-(customer, day) aggregates, sorted by (customer code, day).

    ``customer_ids[code]`` names a customer; ``day`` counts UTC days since 1970-01-01.
    ``features`` lists the product features; bit i of ``feature_mask`` marks use of feature i.
    """

    customer_ids: np.ndarray
    code: np.ndarray
    day: np.ndarray
    columns: dict[str, np.ndarray]
    features: tuple[str, ...]

    @property
    def key(self) -> np.ndarray:
        return _key(self.code, self.day)

    def __len__(self) -> int:
        return len(self.day)


def _key(code: np.ndarray, day: np.ndarray) -> np.ndarray:
    return (np.asarray(code, dtype=np.int64) << DAY_BITS) | np.asarray(day, dtype=np.int64)


def product_features(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """The distinct product features used in the valid log, sorted by name."""
    rows = con.execute(
        "SELECT DISTINCT feature FROM events WHERE family = 'feature_use' AND feature IS NOT NULL"
        " ORDER BY 1"
    ).fetchall()
    names = tuple(r[0] for r in rows)
    if len(names) > MAX_FEATURES:
        raise ValueError(
            f"the log names {len(names)} distinct product features; at most {MAX_FEATURES} are"
            " supported. Map fine-grained feature names to feature groups before loading."
        )
    return names


def build_daily_log(
    con: duckdb.DuckDBPyConnection,
    customer_ids: np.ndarray,
    qualifying_families: list[str],
    until: pd.Timestamp | None = None,
) -> DailyLog:
    """One GROUP BY over the DuckDB table ``events``: per-(customer, day) counts and values.

    ``customer_ids`` fixes the customer codes (position in that array). ``until`` (exclusive)
    drops later events, e.g. for a run that needs nothing after its last as_of. Qualifying
    events (for the inactivity label) are those whose family is in ``qualifying_families``.
    """
    features = product_features(con)
    ids = pd.DataFrame({"customer_id": np.asarray(customer_ids, dtype=object)})
    ids["code"] = np.arange(len(ids), dtype=np.int32)
    con.register("_customer_codes", ids)
    con.register(
        "_feature_codes",
        pd.DataFrame({"feature": list(features), "bit": np.arange(len(features), dtype=np.int64)}),
    )
    con.register("_qualifying", pd.DataFrame({"family": list(qualifying_families) or [""]}))
    aggregates = {**COUNT_COLUMNS, **TS_COLUMNS, **VALUE_COLUMNS}
    aggregates["n_qualifying"] = "count(*) FILTER (family IN (SELECT family FROM _qualifying))"
    aggregates["last_active_us"] = (
        "max(epoch_us(occurred_at)) FILTER (family IN (SELECT family FROM _qualifying))"
    )
    aggregates["feature_mask"] = "coalesce(bit_or(CAST(1 AS UBIGINT) << f.bit), 0)"
    select = ",\n".join(f"{expr} AS {name}" for name, expr in aggregates.items())
    where = "WHERE e.occurred_at < $until" if until is not None else ""
    params = {"until": pd.Timestamp(until).to_pydatetime()} if until is not None else {}
    frame = con.execute(
        f"""
        SELECT c.code, d.* EXCLUDE (customer_id) FROM (
            SELECT e.customer_id, CAST(epoch_us(date_trunc('day', e.occurred_at))
                   // {US_PER_DAY} AS INTEGER) AS day,
                   {select}
            FROM events e LEFT JOIN _feature_codes f
              ON e.family = 'feature_use' AND e.feature = f.feature
            {where}
            GROUP BY ALL
        ) d JOIN _customer_codes c USING (customer_id)
        ORDER BY c.code, d.day
        """,
        params,
    ).fetchnumpy()
    for name in ("_customer_codes", "_feature_codes", "_qualifying"):
        con.unregister(name)
    code = np.asarray(frame.pop("code"), dtype=np.int32)
    day = np.asarray(frame.pop("day"), dtype=np.int32)
    if len(day) and day.min() < 0:
        raise ValueError("events before 1970-01-01 are not supported; check occurred_at values")
    columns = {name: _dense(values) for name, values in frame.items()}
    return DailyLog(np.asarray(customer_ids), code, day, columns, features)


def _dense(values: np.ndarray) -> np.ndarray:
    """Masked arrays (SQL NULL) become float arrays with NaN; others stay as they are."""
    if isinstance(values, np.ma.MaskedArray):
        return values.astype(np.float64).filled(np.nan)
    return np.asarray(values)


class WindowIndex:
    """Window sums and last-values over a ``DailyLog`` for a grid of (customer code, as_of day).

    Every method takes half-open day windows [end − length, end) relative to each query's as_of
    day, so no method can see the as_of day itself or later unless asked for a future window.
    """

    def __init__(self, daily: DailyLog, q_code: np.ndarray, q_day: np.ndarray) -> None:
        self.daily = daily
        self.q_code = np.asarray(q_code, dtype=np.int64)
        self.q_day = np.asarray(q_day, dtype=np.int64)
        self._key = daily.key
        self._cumsums: dict[str, np.ndarray] = {}
        self._positions: dict[int, np.ndarray] = {}

    def _position(self, offset_days: int) -> np.ndarray:
        """Index of the first daily row at or after (customer, as_of day + offset)."""
        if offset_days not in self._positions:
            day = np.maximum(self.q_day + offset_days, 0)
            self._positions[offset_days] = np.searchsorted(
                self._key, _key(self.q_code, day), side="left"
            )
        return self._positions[offset_days]

    def _cumsum(self, name: str, values: np.ndarray) -> np.ndarray:
        if name not in self._cumsums:
            out = np.zeros(len(values) + 1, dtype=np.result_type(values.dtype, np.int64))
            np.cumsum(values, out=out[1:])
            self._cumsums[name] = out
        return self._cumsums[name]

    def window_sum(self, column: str, start: int, end: int = 0) -> np.ndarray:
        """Sum of ``column`` over days [as_of + start, as_of + end) (start < end, in days)."""
        values = self.daily.columns[column]
        return self._sum(column, values, start, end)

    def window_sum_of(self, name: str, values: np.ndarray, start: int, end: int = 0) -> np.ndarray:
        """Like ``window_sum`` for a derived per-day array ``values`` cached under ``name``."""
        return self._sum(name, values, start, end)

    def _sum(self, name: str, values: np.ndarray, start: int, end: int) -> np.ndarray:
        if start >= end:
            raise ValueError(f"window start ({start}) must be before its end ({end})")
        cs = self._cumsum(name, values)
        return cs[self._position(end)] - cs[self._position(start)]

    def last_before(self, column: str, end: int = 0, present: str | None = None) -> np.ndarray:
        """Value of ``column`` on the latest day before as_of + end where it is present.

        Presence is ``present > 0`` when given, else ``column`` not NaN. NaN where none.
        """
        values = self.daily.columns[column]
        mask = self.daily.columns[present] > 0 if present else ~np.isnan(values)
        rows = np.flatnonzero(mask)
        keys = self._key[rows]
        q_key = _key(self.q_code, np.maximum(self.q_day + end, 0))
        pos = np.searchsorted(keys, q_key, side="left") - 1
        ok = pos >= 0
        pos_ok = np.where(ok, pos, 0)
        same = ok & (self.daily.code[rows[pos_ok]] == self.q_code) if len(rows) else ok & False
        out = np.full(len(self.q_code), np.nan)
        if len(rows):
            out[same] = values[rows[pos_ok[same]]]
        return out
