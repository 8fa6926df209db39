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

from pipeline.config import FAMILIES

DAY_BITS = 21  # days since 1970 fit in 21 bits until the year 7711
US_PER_DAY = 86_400_000_000
MAX_FEATURES = 64

FAMILY_CODES = {family: code for code, family in enumerate(FAMILIES, start=1)}
"""Small integer per signal family (0 = an event type the config does not map)."""


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
    """Per-(customer, UTC day) counts and values from the DuckDB relation ``events``.

    DuckDB streams the valid events as narrow integer columns ordered by (customer, time);
    numpy then reduces each run of equal (customer, day) keys with ``reduceat`` — one pass, no
    per-customer loop (a SQL GROUP BY with twenty FILTER aggregates measured 3× slower).
    ``customer_ids`` fixes the customer codes (position in that array); events of other
    customers are ignored. ``until`` (exclusive) drops later events. Qualifying events (use of
    the product) are those whose family is in ``qualifying_families``.
    """
    features = product_features(con)
    ids = pd.DataFrame({"customer_id": np.asarray(customer_ids, dtype=object)})
    ids["code"] = np.arange(len(ids), dtype=np.int32)
    frames = {
        "_customer_codes": ids,
        "_feature_codes": pd.DataFrame(
            {"feature": list(features), "bit": np.arange(len(features), dtype=np.int8)}
        ),
        "_family_codes": pd.DataFrame(
            {"family": list(FAMILY_CODES), "fc": np.array(list(FAMILY_CODES.values()), np.int8)}
        ),
    }
    for name, frame in frames.items():
        con.register(name, frame)
    where = "WHERE e.occurred_at < $until" if until is not None else ""
    params = {"until": pd.Timestamp(until).to_pydatetime()} if until is not None else {}
    rows = con.execute(
        f"""
        SELECT c.code, epoch_us(e.occurred_at) AS ts, coalesce(f.fc, 0)::TINYINT AS fc,
               coalesce(e.severity, 0)::TINYINT AS severity, e.amount,
               coalesce(b.bit, -1)::TINYINT AS bit
        FROM events e
        JOIN _customer_codes c USING (customer_id)
        LEFT JOIN _family_codes f USING (family)
        LEFT JOIN _feature_codes b ON e.family = 'feature_use' AND e.feature = b.feature
        {where}
        ORDER BY c.code, ts
        """,
        params,
    ).fetchnumpy()
    for name in frames:
        con.unregister(name)
    code, ts = np.asarray(rows["code"], np.int32), np.asarray(rows["ts"], np.int64)
    if len(ts) and ts.min() < 0:
        raise ValueError("events before 1970-01-01 are not supported; check occurred_at values")
    day = (ts // US_PER_DAY).astype(np.int32)
    key = _key(code, day)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
    columns = _reduce_days(
        starts,
        ts,
        np.asarray(rows["fc"], np.int8),
        np.asarray(rows["severity"], np.int8),
        _dense(rows["amount"]),
        np.asarray(rows["bit"], np.int8),
        [FAMILY_CODES[f] for f in qualifying_families],
    )
    return DailyLog(np.asarray(customer_ids), code[starts], day[starts], columns, features)


def _reduce_days(
    starts: np.ndarray,
    ts: np.ndarray,
    fc: np.ndarray,
    severity: np.ndarray,
    amount: np.ndarray,
    bit: np.ndarray,
    qualifying: list[int],
) -> dict[str, np.ndarray]:
    """Per-day columns from event arrays sorted by (customer, time); ``starts`` opens each day."""
    if len(starts) == 0:
        return {name: np.zeros(0) for name in DAILY_COLUMNS}

    def count(mask: np.ndarray) -> np.ndarray:
        return np.add.reduceat(mask.astype(np.int32), starts)

    def last_ts(mask: np.ndarray | None = None) -> np.ndarray:
        stamps = ts if mask is None else np.where(mask, ts, -1)
        out = np.maximum.reduceat(stamps, starts).astype(np.float64)
        out[out < 0] = np.nan
        return out

    fam = {name: fc == code for name, code in FAMILY_CODES.items()}
    support = fam["complaint"] | fam["support_ticket"]
    money = fam["purchase"] | fam["payment"]
    qualifies = np.isin(fc, qualifying)
    position = np.where(fam["payment"], np.arange(len(ts)), -1)
    last_payment = np.maximum.reduceat(position, starts)
    payment_amount = np.where(last_payment >= 0, amount[np.maximum(last_payment, 0)], np.nan)
    mask_bits = np.where(bit >= 0, np.left_shift(np.uint64(1), bit.astype(np.uint64)), 0)
    return {
        "n_events": count(np.ones(len(ts), bool)),
        "n_login": count(fam["login"]),
        "n_feature_use": count(fam["feature_use"]),
        "n_complaint": count(fam["complaint"]),
        "n_ticket": count(fam["support_ticket"]),
        "n_payment_failed": count(fam["payment_failed"]),
        "n_purchase": count(fam["purchase"]),
        "n_payment": count(fam["payment"]),
        **{f"n_sev{lvl}": count(support & (severity == lvl)) for lvl in (1, 2, 3, 4)},
        "n_qualifying": count(qualifies),
        "last_event_us": last_ts(),
        "last_login_us": last_ts(fam["login"]),
        "last_feature_us": last_ts(fam["feature_use"]),
        "last_complaint_us": last_ts(fam["complaint"]),
        "last_active_us": last_ts(qualifies),
        "spend": np.add.reduceat(np.where(money, np.nan_to_num(amount), 0.0), starts),
        "payment_amount": payment_amount,
        "feature_mask": np.bitwise_or.reduceat(mask_bits.astype(np.uint64), starts),
    }


DAILY_COLUMNS = (
    "n_events",
    "n_login",
    "n_feature_use",
    "n_complaint",
    "n_ticket",
    "n_payment_failed",
    "n_purchase",
    "n_payment",
    "n_sev1",
    "n_sev2",
    "n_sev3",
    "n_sev4",
    "n_qualifying",
    "last_event_us",
    "last_login_us",
    "last_feature_us",
    "last_complaint_us",
    "last_active_us",
    "spend",
    "payment_amount",
    "feature_mask",
)


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
