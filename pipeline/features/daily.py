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

from pipeline.config import FAMILY_CODES
from pipeline.events import KindLayout, time_order

DAY_BITS = 21  # days since 1970 fit in 21 bits until the year 7711
US_PER_DAY = 86_400_000_000
MAX_FEATURES = 64
FEATURE_WINDOW_DAYS = 365
"""The longest backward window any feature family sums over (``spend_365d``). Older events feed
only the history row (cumulative counts, sums, first and last values), so a log built for as_of
dates ≥ T needs day rows from T − 365 days on plus one history row per customer (see
``build_daily_log``'s ``since``)."""


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
    code_range: tuple[int, int] = (0, -1)
    """The customer codes [lo, hi) this log covers (one partition); hi = -1 means all."""
    feature_first_day: np.ndarray | None = None
    """Per product feature, the first day anyone (in any partition) used it."""
    history_day: int | None = None
    """When set, days before it are folded into one row per customer on ``history_day − 1``
    (see ``HISTORY_FOLDS``): window sums must start on or after it; sums since the first
    event (``WindowIndex.total_before``) include it."""

    @property
    def codes(self) -> np.ndarray:
        """Every customer code covered, with or without events."""
        lo, hi = self.code_range
        return np.arange(lo, len(self.customer_ids) if hi < 0 else hi, dtype=np.int64)

    @property
    def key(self) -> np.ndarray:
        return _key(self.code, self.day)

    def __len__(self) -> int:
        return len(self.day)


def _key(code: np.ndarray, day: np.ndarray) -> np.ndarray:
    return (np.asarray(code, dtype=np.int64) << DAY_BITS) | np.asarray(day, dtype=np.int64)


def product_features(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The product features used in the valid log, sorted by name, each with the UTC day
    (days since 1970) anyone first used it (exact duplicates change no first day)."""
    rows = con.execute(
        f"SELECT f.feature, min(e.ts) // {US_PER_DAY} FROM events_stored e"
        " JOIN _features f USING (ftc) WHERE e.fc = $fc GROUP BY 1 ORDER BY 1",
        {"fc": FAMILY_CODES["feature_use"]},
    ).fetchall()
    names = {str(r[0]): int(r[1]) for r in rows}
    if len(names) > MAX_FEATURES:
        raise ValueError(
            f"the log names {len(names)} distinct product features; at most {MAX_FEATURES} are"
            " supported. Map fine-grained feature names to feature groups before loading."
        )
    return names


def partitions(con: duckdb.DuckDBPyConnection) -> list[tuple[int, int, int]]:
    """(partition, first code, end code) of every customer partition of the event store."""
    return [tuple(r) for r in con.execute("SELECT * FROM _partitions ORDER BY 1").fetchall()]


def check_customer_order(con: duckdb.DuckDBPyConnection, customer_ids: np.ndarray) -> None:
    stored = con.execute("SELECT customer_id FROM customer_codes ORDER BY code").fetchnumpy()
    if not np.array_equal(
        np.asarray(stored["customer_id"], dtype=object), np.asarray(customer_ids, dtype=object)
    ):
        raise ValueError(
            "customer_ids must be the validated customers in their stored order"
            " (ValidatedData.customers['customer_id'])"
        )


def build_daily_log(
    con: duckdb.DuckDBPyConnection,
    customer_ids: np.ndarray,
    qualifying_families: list[str],
    until: pd.Timestamp | None = None,
    part: int | None = None,
    features: dict[str, int] | None = None,
    check_order: bool = True,
    since: pd.Timestamp | None = None,
) -> DailyLog:
    """Per-(customer, UTC day) counts and values from the compact event store.

    DuckDB streams one partition's valid events (or all, when ``part`` is None) as narrow
    integer columns ordered by (customer, time); numpy then reduces each run of equal
    (customer, day) keys — one pass, no per-customer loop (a SQL GROUP BY with twenty FILTER
    aggregates measured 3× slower). ``customer_ids`` must be the validated customers in order
    (their position is the customer code). ``until`` (exclusive) drops later events.
    Qualifying events (use of the product) are those whose family is in ``qualifying_families``.
    ``check_order=False`` skips the customer-order check for a caller that made it once for
    many partitions.

    ``since`` (a UTC midnight) keeps day rows only from that day on and folds each customer's
    older events into one history row (the day before), computed in DuckDB without bringing
    the old events into memory: the counts and the spend summed over them, the number of
    distinct (active, qualifying, purchase) days among them, the first and last times, the
    latest payment amount and the last two qualifying days (``HISTORY_FOLDS``). Window sums
    that start before ``since`` raise instead of reading the folded totals; "first/last
    before" queries and sums since the first event stay exact. A single as_of needs
    ``FEATURE_WINDOW_DAYS`` of day rows instead of the whole log.
    """
    if check_order:
        check_customer_order(con, customer_ids)
    features = product_features(con) if features is None else features
    where, params = ["TRUE"], {}
    code_range = (0, -1)
    if part is not None:
        ((lo, hi),) = con.execute(
            "SELECT lo, hi FROM _partitions WHERE part = $p", {"p": part}
        ).fetchall()
        code_range = (int(lo), int(hi))
        where.append("e.part = $part")
        params["part"] = int(part)
    if until is not None:
        where.append("e.ts < $until")
        params["until"] = int(pd.Timestamp(until).value // 1000)
    history_day = None
    if since is not None:
        history_day = _utc_day(since)
        history = _history_rows(con, where, params, history_day * US_PER_DAY, qualifying_families)
        where.append("e.ts >= $since")
        params["since"] = history_day * US_PER_DAY
    rows = con.execute(
        f"SELECT e.code, e.ts, e.kind, e.amount FROM events_compact e WHERE {' AND '.join(where)}",
        params,
    ).fetchnumpy()
    code, ts = np.asarray(rows["code"], np.int32), np.asarray(rows["ts"], np.int64)
    if len(ts) and ts.min() < 0:
        raise ValueError("events before 1970-01-01 are not supported; check occurred_at values")
    order = time_order(code, ts)
    code, ts = code[order], ts[order]
    codes = KindLayout.for_dictionaries(con).unpack(np.asarray(rows["kind"])[order])
    fc = codes["fc"]
    bit = _feature_bits(con, features, fc, codes["ftc"])
    day = (ts // US_PER_DAY).astype(np.int32)
    key = _key(code, day)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
    columns = _reduce_days(
        starts,
        ts,
        fc,
        codes["severity"],
        _dense(rows["amount"])[order],
        bit,
        [FAMILY_CODES[f] for f in qualifying_families],
    )
    code, day = code[starts], day[starts]
    if history_day is not None:
        code, day, columns = _prepend_history(code, day, columns, history, history_day - 1)
    _link_active_days(code, columns)
    first_day = np.array(list(features.values()), dtype=np.int64)
    return DailyLog(
        np.asarray(customer_ids),
        code,
        day,
        columns,
        tuple(features),
        code_range,
        first_day,
        history_day,
    )


def _feature_bits(
    con: duckdb.DuckDBPyConnection, features: dict[str, int], fc: np.ndarray, ftc: np.ndarray
) -> np.ndarray:
    """Per event, the bit of its product feature (position in ``features``) for feature use,
    −1 for other events and for features not in ``features``."""
    codes = dict(con.execute("SELECT feature, ftc FROM _features").fetchall())
    # One slot more than the largest code: events without a feature index it as -1 (the last).
    lookup = np.full(max(codes.values(), default=-1) + 2, -1, dtype=np.int8)
    for position, name in enumerate(features):
        if name in codes:
            lookup[codes[name]] = position
    used = (fc == FAMILY_CODES["feature_use"]) & (ftc >= 0)
    return np.where(used, lookup[np.where(used, ftc, -1)], -1).astype(np.int8)


def _utc_day(stamp: pd.Timestamp) -> int:
    """Days since 1970 of a UTC midnight; a time of day is an error."""
    stamp = pd.Timestamp(stamp)
    if stamp.tz is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if stamp != stamp.normalize():
        raise ValueError(f"since must be a UTC midnight, got {stamp}")
    return int(stamp.value // (US_PER_DAY * 1000))


COUNT_FILTERS = {
    "n_events": "TRUE",
    "n_login": "e.fc = $login",
    "n_feature_use": "e.fc = $feature_use",
    "n_complaint": "e.fc = $complaint",
    "n_ticket": "e.fc = $support_ticket",
    "n_payment_failed": "e.fc = $payment_failed",
    "n_purchase": "e.fc = $purchase",
    "n_payment": "e.fc = $payment",
    **{
        f"n_sev{lvl}": f"e.fc IN ($complaint, $support_ticket) AND e.severity = {lvl}"
        for lvl in (1, 2, 3, 4)
    },
    "n_qualifying": "list_contains($qualifying, e.fc)",
}
"""Which events each count column of ``_reduce_days`` counts, as SQL over ``events_compact``."""

EXTREME_TIMES = {
    "last_event_us": ("max", "TRUE"),
    "last_login_us": ("max", "e.fc = $login"),
    "last_feature_us": ("max", "e.fc = $feature_use"),
    "last_complaint_us": ("max", "e.fc = $complaint"),
    "last_active_us": ("max", "list_contains($qualifying, e.fc)"),
    "last_purchase_us": ("max", "e.fc = $purchase"),
    "first_purchase_us": ("min", "e.fc = $purchase"),
    "first_active_us": ("min", "list_contains($qualifying, e.fc)"),
}
"""First/last event times of a kind: per day in ``_reduce_days``, over the folded days here."""

SPEND_SQL = (
    "sum(CAST(e.amount AS DECIMAL(38, 8)))"
    " FILTER (e.fc IN ($purchase, $payment) AND NOT isnan(e.amount))"
)
"""Money of purchases and payments, summed exactly (a float sum in parallel threads would
depend on their scheduling, and the run would not give the same bytes twice)."""

HISTORY_FOLDS = {
    **{name: f"sum({name})::BIGINT" for name in COUNT_FILTERS},
    "spend": "coalesce(sum(spend), 0)::DOUBLE",
    "n_active_days": "count(*)",
    "n_qualifying_days": "count(*) FILTER (n_qualifying > 0)",
    "n_purchase_days": "count(*) FILTER (n_purchase > 0)",
    **{name: f"{how}({name})::DOUBLE" for name, (how, _) in EXTREME_TIMES.items()},
    "payment_amount": "max(payment).amount",
    "prev_active_day": "(max(day, 2) FILTER (n_qualifying > 0))[2]::DOUBLE",
}
"""How the history row folds the per-day aggregates of all events before ``since`` into one
row per customer: the same events and the same choices as ``_reduce_days`` (the latest
payment; of two at the same microsecond the larger amount, so that ties never depend on
thread scheduling), plus ``prev_active_day``: the qualifying day before the last one."""


def _history_sql(where: list[str]) -> str:
    """Two GROUP BYs over the events before ``$since``: per (customer, day), then per customer."""
    per_day = [f"count(*) FILTER ({sql}) AS {name}" for name, sql in COUNT_FILTERS.items()]
    per_day += [f"{how}(e.ts) FILTER ({sql}) AS {n}" for n, (how, sql) in EXTREME_TIMES.items()]
    per_day += [
        f"{SPEND_SQL} AS spend",
        "max({'ts': e.ts, 'amount': e.amount})"
        " FILTER (e.fc = $payment AND e.amount IS NOT NULL) AS payment",
    ]
    folds = ", ".join(f"{sql} AS {name}" for name, sql in HISTORY_FOLDS.items())
    return (
        f"WITH days AS (SELECT e.code, e.ts // {US_PER_DAY} AS day, {', '.join(per_day)}"
        f" FROM events_compact e WHERE {' AND '.join(where)} AND e.ts < $since GROUP BY 1, 2)"
        f" SELECT code, {folds} FROM days GROUP BY code ORDER BY code"
    )


def _history_rows(
    con: duckdb.DuckDBPyConnection,
    where: list[str],
    params: dict,
    since_us: int,
    qualifying_families: list[str],
) -> dict[str, np.ndarray]:
    """Per customer with events before ``since_us``: the ``HISTORY_FOLDS`` over them."""
    sql = _history_sql(where)
    params = {
        **params,
        "since": since_us,
        "qualifying": [FAMILY_CODES[f] for f in qualifying_families],
        **FAMILY_CODES,
    }
    used = {k: v for k, v in params.items() if f"${k}" in sql}
    rows = con.execute(sql, used).fetchnumpy()
    return {name: _dense(values) for name, values in rows.items()}


def _prepend_history(
    code: np.ndarray,
    day: np.ndarray,
    columns: dict[str, np.ndarray],
    history: dict[str, np.ndarray],
    history_day: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Insert one row per customer of ``history`` on ``history_day`` (before all its day rows),
    keeping (code, day) order: counts 0, "last" columns from ``history``."""
    h_code = np.asarray(history["code"], dtype=code.dtype)
    h_day = np.full(len(h_code), history_day, dtype=day.dtype)
    order = np.argsort(_key(np.r_[h_code, code], np.r_[h_day, day]), kind="stable")
    merged = {}
    for name, values in columns.items():
        if name in history:
            extra = np.asarray(history[name], dtype=np.float64)
        else:
            extra = np.zeros(len(h_code), dtype=values.dtype)
        merged[name] = np.r_[extra.astype(values.dtype), values][order]
    return np.r_[h_code, code][order], np.r_[h_day, day][order], merged


def _link_active_days(code: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Fill ``prev_active_day`` on each day row with qualifying events: the customer's previous
    qualifying day (from the row before, or the history row's last one). In place."""
    active = np.flatnonzero(~np.isnan(columns["last_active_us"]))
    day = columns["last_active_us"][active].astype(np.int64) // US_PER_DAY
    follows = code[active[1:]] == code[active[:-1]]
    columns["prev_active_day"][active[1:][follows]] = day[:-1][follows]


def _reduce_days(
    starts: np.ndarray,
    ts: np.ndarray,
    fc: np.ndarray,
    severity: np.ndarray,
    amount: np.ndarray,
    bit: np.ndarray,
    qualifying: list[int],
) -> dict[str, np.ndarray]:
    """Per-day columns from event arrays sorted by (customer, time); ``starts`` opens each day.

    Counts are ``bincount`` over each event's day index; "last" values take the last event of
    each day among the matching events (the arrays are in time order within a day; of two
    payments at the same microsecond the larger amount counts as the later, whatever the order
    the sort left them in).
    """
    n_days = len(starts)
    if n_days == 0:
        return {name: np.zeros(0) for name in DAILY_COLUMNS}
    opens = np.zeros(len(ts), dtype=np.int32)
    opens[starts[1:]] = 1
    group = np.cumsum(opens, dtype=np.int32)

    def count(mask: np.ndarray | None = None) -> np.ndarray:
        rows = group if mask is None else group[mask]
        return np.bincount(rows, minlength=n_days).astype(np.int32)

    def last(mask: np.ndarray | None, values: np.ndarray, by_value: bool = False) -> np.ndarray:
        where = np.flatnonzero(mask) if mask is not None else np.arange(len(ts))
        if by_value:  # equal times: the larger value last (the sort left ties in any order)
            where = where[np.lexsort((values[where], ts[where], group[where]))]
        days = group[where]
        final = np.r_[days[1:] != days[:-1], True] if len(days) else np.zeros(0, bool)
        out = np.full(n_days, np.nan, dtype=np.float64)
        out[days[final]] = values[where[final]]
        return out

    def first(mask: np.ndarray) -> np.ndarray:
        where = np.flatnonzero(mask)
        days = group[where]
        opening = np.r_[True, days[1:] != days[:-1]] if len(days) else np.zeros(0, bool)
        out = np.full(n_days, np.nan, dtype=np.float64)
        out[days[opening]] = ts[where[opening]]
        return out

    fam = {name: fc == code for name, code in FAMILY_CODES.items()}
    support = fam["complaint"] | fam["support_ticket"]
    qualifies = np.isin(fc, qualifying)
    money = np.where(fam["purchase"] | fam["payment"], np.nan_to_num(amount), 0.0)
    feature_mask = np.zeros(n_days, dtype=np.uint64)
    for b in np.unique(bit[bit >= 0]):
        used = count(bit == b) > 0
        feature_mask |= used.astype(np.uint64) << np.uint64(b)
    n_qualifying, n_purchase = count(qualifies), count(fam["purchase"])
    return {
        "n_events": count(),
        "n_login": count(fam["login"]),
        "n_feature_use": count(fam["feature_use"]),
        "n_complaint": count(fam["complaint"]),
        "n_ticket": count(fam["support_ticket"]),
        "n_payment_failed": count(fam["payment_failed"]),
        "n_purchase": n_purchase,
        "n_payment": count(fam["payment"]),
        **{f"n_sev{lvl}": count(support & (severity == lvl)) for lvl in (1, 2, 3, 4)},
        "n_qualifying": n_qualifying,
        "n_active_days": np.ones(n_days, dtype=np.int32),
        "n_qualifying_days": (n_qualifying > 0).astype(np.int32),
        "n_purchase_days": (n_purchase > 0).astype(np.int32),
        "last_event_us": last(None, ts),
        "last_login_us": last(fam["login"], ts),
        "last_feature_us": last(fam["feature_use"], ts),
        "last_complaint_us": last(fam["complaint"], ts),
        "last_active_us": last(qualifies, ts),
        "last_purchase_us": last(fam["purchase"], ts),
        "first_purchase_us": first(fam["purchase"]),
        "first_active_us": first(qualifies),
        "prev_active_day": np.full(n_days, np.nan),
        "spend": np.bincount(group, weights=money, minlength=n_days),
        "payment_amount": last(fam["payment"] & ~np.isnan(amount), amount, by_value=True),
        "feature_mask": feature_mask,
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
    "n_active_days",
    "n_qualifying_days",
    "n_purchase_days",
    "last_event_us",
    "last_login_us",
    "last_feature_us",
    "last_complaint_us",
    "last_active_us",
    "last_purchase_us",
    "first_purchase_us",
    "first_active_us",
    "prev_active_day",
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
        self._starts: np.ndarray | None = None

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
            # Money sums run in extended precision: a running total over many customers would
            # otherwise lose digits when two large totals are subtracted for one window.
            kind = np.longdouble if np.issubdtype(values.dtype, np.floating) else np.int64
            out = np.zeros(len(values) + 1, dtype=kind)
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
        first = self.daily.history_day
        if first is not None and len(self.q_day) and int(self.q_day.min()) + start < first:
            raise ValueError(
                f"a {-start}-day window before as_of reaches before day {first} (days since"
                " 1970), where this daily log folds older events into history rows; build it"
                f" with since ≤ the earliest as_of − {-start} days"
            )
        cs = self._cumsum(name, values)
        total = cs[self._position(end)] - cs[self._position(start)]
        return total.astype(np.float64) if total.dtype == np.longdouble else total

    def total_before(self, column: str, values: np.ndarray | None = None) -> np.ndarray:
        """Sum of ``column`` (or of the per-row ``values`` cached under that name) over every
        row of the customer before as_of: since the first event, history row included."""
        values = self.daily.columns[column] if values is None else values
        if self._starts is None:
            self._starts = np.searchsorted(self._key, _key(self.q_code, 0), side="left")
        cs = self._cumsum(column, values)
        total = cs[self._position(0)] - cs[self._starts]
        return total.astype(np.float64) if total.dtype == np.longdouble else total

    def first_before(self, column: str, present: str | None = None) -> np.ndarray:
        """Value of ``column`` on the customer's earliest row before as_of where it is present
        (``present > 0`` when given, else not NaN); NaN where none."""
        values = self.daily.columns[column]
        rows = np.flatnonzero(self.daily.columns[present] > 0 if present else ~np.isnan(values))
        out = np.full(len(self.q_code), np.nan)
        if not len(rows):
            return out
        keys = self._key[rows]
        pos = np.minimum(np.searchsorted(keys, _key(self.q_code, 0), side="left"), len(rows) - 1)
        # A key in [(customer, day 0), (customer, as_of day)) is this customer's, before as_of.
        found = (keys[pos] >= _key(self.q_code, 0)) & (keys[pos] < _key(self.q_code, self.q_day))
        out[found] = values[rows[pos[found]]]
        return out

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
