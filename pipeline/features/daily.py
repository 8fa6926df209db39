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
from pipeline.events import time_order
from pipeline.store import (
    DUPLICATES_VIEW,
    RAW_VIEW,
    EventStore,
    KindLayout,
    Partition,
    open_partition,
)

Source = EventStore | duckdb.DuckDBPyConnection
"""The event store, or (for callers not yet moved) the validation connection holding it."""

DAY_BITS = 21  # days since 1970 fit in 21 bits until the year 7711
US_PER_DAY = 86_400_000_000
MAX_FEATURES = 64
FEATURE_WINDOW_DAYS = 365
"""The longest backward window any feature family sums over (``spend_365d``). Older events feed
only the history row (cumulative counts, sums, first and last values), so a log built for as_of
dates ≥ T needs events from T − 365 days on plus one history row per customer (see
``build_daily_log``'s ``since``)."""
DAY_ROW_WINDOW_DAYS = 90
"""The longest backward window over a column other than ``LONG_COLUMNS`` (``*_90d``): full day
rows start this many days before the earliest as_of; the older part of a longer window reads
the narrow ``LongRows`` instead (``daily_log``'s ``long_since``)."""
LONG_COLUMNS = ("n_events", "n_active_days", "n_qualifying", "spend")
"""The day-row columns that windows longer than ``DAY_ROW_WINDOW_DAYS`` sum (``events_365d``,
``active_days_365d``, ``spend_365d``, a long ``label.active_window_days``)."""


@dataclass(frozen=True)
class LongRows:
    """Per-(customer, UTC day) sums of ``LONG_COLUMNS`` over the days [``first_day``, the daily
    log's ``history_day``), sorted by (code, day): the part of a long window that lies before
    the full day rows. A fifth of the work of full day rows (four columns, no first/last times),
    and exact: the same counts and the same spend sums as full day rows would hold."""

    code: np.ndarray
    day: np.ndarray
    columns: dict[str, np.ndarray]
    first_day: int

    @property
    def key(self) -> np.ndarray:
        return _key(self.code, self.day)


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
    (see ``_history_rows``): window sums must start on or after it; sums since the first
    event (``WindowIndex.total_before``) include it."""
    long: LongRows | None = None
    """When set, ``LONG_COLUMNS`` per day before ``history_day`` (from ``long.first_day``): window
    sums of those columns may start there."""

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


def product_features(source: Source) -> dict[str, int]:
    """The product features used in the valid log, sorted by name, each with the UTC day
    (days since 1970) anyone first used it (exact duplicates change no first day)."""
    names = EventStore.of(source).product_features()
    if len(names) > MAX_FEATURES:
        raise ValueError(
            f"the log names {len(names)} distinct product features; at most {MAX_FEATURES} are"
            " supported. Map fine-grained feature names to feature groups before loading."
        )
    return names


def partitions(source: Source) -> list[tuple[int, int, int]]:
    """(partition, first code, end code) of every customer partition of the event store."""
    return EventStore.of(source).partitions()


def check_customer_order(source: Source, customer_ids: np.ndarray) -> None:
    stored = EventStore.of(source).customer_ids()
    if not np.array_equal(stored, np.asarray(customer_ids, dtype=object)):
        raise ValueError(
            "customer_ids must be the validated customers in their stored order"
            " (ValidatedData.customers['customer_id'])"
        )


def build_daily_log(
    source: Source,
    customer_ids: np.ndarray,
    qualifying_families: list[str],
    until: pd.Timestamp | None = None,
    part: int | None = None,
    features: dict[str, int] | None = None,
    check_order: bool = True,
    since: pd.Timestamp | None = None,
    long_since: pd.Timestamp | None = None,
) -> DailyLog:
    """Per-(customer, UTC day) counts and values from the event store: one partition
    (``part``) or the whole log (None); see ``daily_log``.

    ``customer_ids`` must be the validated customers in order (their position is the customer
    code). ``check_order=False`` skips that check for a caller that made it once for many
    partitions. The log covers the partition's customers only (``customer_ids[lo:hi]``).
    """
    store = EventStore.of(source)
    if check_order:
        check_customer_order(store, customer_ids)
    features = product_features(store) if features is None else features
    partition = store.whole() if part is None else store.partition(part)
    ids = np.asarray(customer_ids)[partition.lo : partition.hi]
    reader = PartitionReader(partition, store.layout, store.feature_codes())
    return daily_log(reader, ids, qualifying_families, until, features, since, long_since)


@dataclass(frozen=True)
class PartitionReader:
    """What a worker needs to read one partition: its files, the ``kind`` bit layout and the
    feature dictionary (no connection: ``open_partition`` opens its own)."""

    partition: Partition
    layout: KindLayout
    feature_codes: dict[str, int]
    threads: int | None = None


def daily_log(
    reader: PartitionReader,
    customer_ids: np.ndarray,
    qualifying_families: list[str],
    until: pd.Timestamp | None,
    features: dict[str, int],
    since: pd.Timestamp | None = None,
    long_since: pd.Timestamp | None = None,
) -> DailyLog:
    """Per-(customer, UTC day) counts and values of one partition (``customer_ids``: its
    customers, in code order), on a short-lived DuckDB connection of its own.

    DuckDB streams the partition's valid events as narrow integer columns; numpy sorts them by
    (customer, time) and reduces each run of equal (customer, day) keys — one pass, no
    per-customer loop (a SQL GROUP BY with twenty FILTER aggregates measured 3× slower).
    ``until`` (exclusive) drops later events. Qualifying events (use of the product) are those
    whose family is in ``qualifying_families``.

    ``since`` (a UTC midnight) keeps day rows only from that day on and folds each customer's
    older events into one history row (the day before): the counts and the spend summed over
    them, the number of distinct (active, qualifying, purchase) days among them, the first and
    last times, the latest payment amount and the last two qualifying days
    (``_history_rows``). Window sums that start before ``since`` raise instead of reading the
    folded totals; "first/last before" queries and sums since the first event stay exact. A
    single as_of needs ``DAY_ROW_WINDOW_DAYS`` of day rows instead of the whole log. The fold
    runs in numpy over the events already read (measured as fast as two DuckDB GROUP BYs over
    them, one read instead of three, and its sums deterministic without DECIMAL).

    ``long_since`` (before ``since``; needs ``since``) adds ``LongRows``: the events in
    [long_since, since) as per-day sums of ``LONG_COLUMNS`` only, so that a 365-day window
    costs a fraction of 365 days of full day rows.
    """
    if long_since is not None and (since is None or long_since > since):
        raise ValueError(f"long_since ({long_since}) must be on or before since ({since})")
    with open_partition(reader.partition, reader.layout, reader.threads) as con:
        events = SortedEvents.of(_read_partition(con, until), reader.layout)
    qualifying = [FAMILY_CODES[f] for f in qualifying_families]
    history_day, history, long = None, None, None
    if since is not None:
        history_day = _utc_day(since)
        old = events.ts < history_day * US_PER_DAY
        before, events = events.where(old), events.where(~old)
        history = _history_rows(before, qualifying)
        if long_since is not None:
            first_day = _utc_day(long_since)
            long = _long_rows(before.where(before.day >= first_day), qualifying, first_day)
    code, day, key = events.code, events.day, events.key
    bit = _feature_bits(reader.feature_codes, features, events.fc, events.ftc)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
    columns = _reduce_days(
        starts, events.ts, events.fc, events.severity, events.amount, bit, qualifying
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
        (0, -1),
        first_day,
        history_day,
        long,
    )


@dataclass(frozen=True)
class SortedEvents:
    """A partition's events sorted by (customer, time), the ``kind`` codes unpacked, with each
    event's UTC day and (customer, day) key: what the day rows, the long rows and the history
    row are reduced from."""

    code: np.ndarray
    ts: np.ndarray
    day: np.ndarray
    key: np.ndarray
    fc: np.ndarray
    severity: np.ndarray
    ftc: np.ndarray
    amount: np.ndarray

    @classmethod
    def of(cls, rows: dict, layout: KindLayout) -> SortedEvents:
        code, ts = np.asarray(rows["code"], np.int32), np.asarray(rows["ts"], np.int64)
        if len(ts) and ts.min() < 0:
            raise ValueError("events before 1970-01-01 are not supported; check occurred_at values")
        order = time_order(code, ts)
        code, ts = code[order], ts[order]
        day = (ts // US_PER_DAY).astype(np.int32)
        codes = layout.unpack(np.asarray(rows["kind"])[order])
        amount = _dense(rows["amount"])[order]
        key = _key(code, day)
        return cls(code, ts, day, key, codes["fc"], codes["severity"], codes["ftc"], amount)

    def where(self, mask: np.ndarray) -> SortedEvents:
        return SortedEvents(**{name: values[mask] for name, values in self.__dict__.items()})


def _long_rows(events: SortedEvents, qualifying: list[int], first_day: int) -> LongRows:
    """``LONG_COLUMNS`` per (customer, day) of ``events`` (days from ``first_day`` on), reduced
    as ``_reduce_days`` reduces them (same counts, same spend sums in the same order)."""
    key, fc = events.key, events.fc
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
    group, n = _day_index(starts, len(key)), len(starts)
    money = np.where(np.isin(fc, SPEND_FAMILIES), np.nan_to_num(events.amount), 0.0)
    columns = {
        "n_events": np.diff(np.r_[starts, len(key)]).astype(np.int32),
        "n_active_days": np.ones(n, dtype=np.int32),
        "n_qualifying": np.bincount(group[np.isin(fc, qualifying)], minlength=n).astype(np.int32),
        "spend": np.bincount(group, weights=money, minlength=n),
    }
    return LongRows(events.code[starts], events.day[starts], columns, first_day)


def _read_partition(con: duckdb.DuckDBPyConnection, until: pd.Timestamp | None) -> dict:
    """The partition's valid events before ``until`` (duplicates set aside): ``code``, ``ts``,
    ``kind``, ``amount`` (NaN where none)."""
    where, params = "TRUE", {}
    if until is not None:
        where, params = "e.ts < $until", {"until": int(pd.Timestamp(until).value // 1000)}
    rows = con.execute(
        "SELECT e.code, e.ts, e.kind, coalesce(e.amount, 'NaN'::DOUBLE) AS amount, e._row"
        f" FROM {RAW_VIEW} e WHERE {where}",
        params,
    ).fetchnumpy()
    rows = _without_duplicates(con, rows)
    del rows["_row"]
    return rows


def _without_duplicates(con: duckdb.DuckDBPyConnection, rows: dict) -> dict:
    """``rows`` less the partition's exact duplicates (by source row number): a lookup in
    numpy instead of an anti-join in the scan (which made every read three times slower)."""
    repeated = con.execute(f"SELECT _row FROM {DUPLICATES_VIEW}").fetchnumpy()["_row"]
    if not len(repeated):
        return rows
    keep = ~np.isin(np.asarray(rows["_row"]), np.asarray(repeated))
    return {name: values[keep] for name, values in rows.items()}


def _feature_bits(
    codes: dict[str, int], features: dict[str, int], fc: np.ndarray, ftc: np.ndarray
) -> np.ndarray:
    """Per event, the bit of its product feature (position in ``features``) for feature use,
    −1 for other events and for features not in ``features``; ``codes``: every feature's
    code in the store."""
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


SPEND_FAMILIES = [FAMILY_CODES["purchase"], FAMILY_CODES["payment"]]
"""Families whose amounts are spend (``spend``, ``spend_90d``, ``spend_lifetime``...)."""


def _count_masks(
    fc: np.ndarray, severity: np.ndarray, qualifying: list[int]
) -> dict[str, np.ndarray]:
    """Which events (or groups of events of one family and severity) each count column counts:
    one definition for the day rows and the history row."""
    fam = {name: fc == code for name, code in FAMILY_CODES.items()}
    support = fam["complaint"] | fam["support_ticket"]
    return {
        "n_events": np.ones(len(fc), dtype=bool),
        "n_login": fam["login"],
        "n_feature_use": fam["feature_use"],
        "n_complaint": fam["complaint"],
        "n_ticket": fam["support_ticket"],
        "n_payment_failed": fam["payment_failed"],
        "n_purchase": fam["purchase"],
        "n_payment": fam["payment"],
        **{f"n_sev{lvl}": support & (severity == lvl) for lvl in (1, 2, 3, 4)},
        "n_qualifying": np.isin(fc, qualifying),
        "spend": np.isin(fc, SPEND_FAMILIES),
    }


EXTREME_TIMES = {
    "last_event_us": ("last", "n_events"),
    "last_login_us": ("last", "n_login"),
    "last_feature_us": ("last", "n_feature_use"),
    "last_complaint_us": ("last", "n_complaint"),
    "last_active_us": ("last", "n_qualifying"),
    "last_purchase_us": ("last", "n_purchase"),
    "first_purchase_us": ("first", "n_purchase"),
    "first_active_us": ("first", "n_qualifying"),
}
"""First/last event times of the events a count column counts (per day, or over the history)."""

SEVERITY_LEVELS = 5
"""Severity codes 0 (none) to 4: a history cell is ``fc * SEVERITY_LEVELS + severity``."""


def _history_rows(events: SortedEvents, qualifying: list[int]) -> dict[str, np.ndarray]:
    """Per customer with events before ``since`` (``events``), one row folding them all: every
    ``_reduce_days`` column over the whole period (counts and spend summed, first and last
    times, the latest payment amount), the distinct days and ``prev_active_day``. Counted in
    cells of (customer, family, severity) — one ``bincount`` and a few ``ufunc.at`` passes, no
    sort — then folded as the day rows are."""
    days = _history_days(events, qualifying)
    cells = _history_cells(events)
    return {**days, **_fold_groups(cells, days["code"], qualifying)}


def _history_cells(events: SortedEvents) -> dict[str, np.ndarray]:
    """Per (customer, family, severity) cell with events: ``n``, ``amount`` (summed, NaN as
    0), ``first_us``, ``last_us``, ``paid_us`` (latest time with an amount) and
    ``paid_amount`` (the larger amount at that time), as ``code``, ``fc``, ``severity``."""
    code, ts, fc, amount = events.code, events.ts, events.fc, events.amount
    width = (int(fc.max(initial=0)) + 1) * SEVERITY_LEVELS
    cell = (code.astype(np.int64) * width + fc.astype(np.int64) * SEVERITY_LEVELS) + events.severity
    size = (int(code.max(initial=-1)) + 1) * width
    n = np.bincount(cell, minlength=size)
    money = np.bincount(cell, weights=np.nan_to_num(amount), minlength=size)
    first = np.full(size, np.iinfo(np.int64).max)
    last = np.full(size, -1, dtype=np.int64)
    np.minimum.at(first, cell, ts)
    np.maximum.at(last, cell, ts)
    paid_us, paid_amount = _latest_amounts(cell, ts, amount, size)
    used = np.flatnonzero(n)
    return {
        "code": used // width,
        "fc": (used % width) // SEVERITY_LEVELS,
        "severity": used % SEVERITY_LEVELS,
        "n": n[used],
        "amount": money[used],
        "first_us": first[used],
        "last_us": last[used],
        "paid_us": paid_us[used],
        "paid_amount": paid_amount[used],
    }


def _latest_amounts(
    cell: np.ndarray, ts: np.ndarray, amount: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the latest time of an event with an amount and the largest amount at that
    time (NaN where none)."""
    has = np.flatnonzero(~np.isnan(amount))
    latest = np.full(size, -1, dtype=np.int64)
    np.maximum.at(latest, cell[has], ts[has])
    at_latest = has[ts[has] == latest[cell[has]]]
    value = np.full(size, -np.inf)
    np.maximum.at(value, cell[at_latest], amount[at_latest])
    paid_us = np.where(latest >= 0, latest.astype(np.float64), np.nan)
    return paid_us, np.where(latest >= 0, value, np.nan)


def _history_days(events: SortedEvents, qualifying: list[int]) -> dict[str, np.ndarray]:
    """Per customer with events: distinct days with any event, with a qualifying event and with
    a purchase, and the qualifying day before the last one (NaN with fewer than two)."""
    code, key = events.code, events.key
    size = int(code.max(initial=-1)) + 1

    def first_of_day(mask: np.ndarray | None) -> np.ndarray:
        """Positions (in ``events``) of the first event of each distinct (customer, day)."""
        at = np.arange(len(key)) if mask is None else np.flatnonzero(mask)
        k = key[at]
        return at[np.r_[True, k[1:] != k[:-1]]] if len(k) else at

    any_day = first_of_day(None)
    active = first_of_day(np.isin(events.fc, qualifying))
    bought = first_of_day(events.fc == FAMILY_CODES["purchase"])
    customers = np.flatnonzero(np.bincount(code[any_day], minlength=size))

    def per_customer(days: np.ndarray) -> np.ndarray:
        return np.bincount(code[days], minlength=size)[customers]

    return {
        "code": customers,
        "n_active_days": per_customer(any_day),
        "n_qualifying_days": per_customer(active),
        "n_purchase_days": per_customer(bought),
        "prev_active_day": _day_before_last(code[active], events.day[active], size)[customers],
    }


def _day_before_last(code: np.ndarray, day: np.ndarray, size: int) -> np.ndarray:
    """Per customer code (< ``size``), the distinct day before its last one (``code``, ``day``
    sorted, one row per distinct day); NaN with fewer than two."""
    out = np.full(size, np.nan)
    if not len(code):
        return out
    last = np.flatnonzero(np.r_[code[1:] != code[:-1], True])
    before = last[last > 0]
    before = before[code[before - 1] == code[before]]
    out[code[before]] = day[before - 1]
    return out


def _fold_groups(
    groups: dict[str, np.ndarray], codes: np.ndarray, qualifying: list[int]
) -> dict[str, np.ndarray]:
    """The (customer, family, severity) groups folded into one value per customer of
    ``codes`` (sorted, the same customers), with the masks the day rows use."""
    at = np.searchsorted(codes, groups["code"])
    masks = _count_masks(groups["fc"], groups["severity"], qualifying)
    n = len(codes)

    def total(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(at[mask], weights=values[mask], minlength=n)

    out = {name: total(mask, groups["n"]) for name, mask in masks.items() if name != "spend"}
    out["spend"] = total(masks["spend"], groups["amount"])
    for name, (how, kind) in EXTREME_TIMES.items():
        column, ufunc = ("last_us", np.fmax) if how == "last" else ("first_us", np.fmin)
        out[name] = np.full(n, np.nan)
        ufunc.at(out[name], at[masks[kind]], groups[column][masks[kind]].astype(np.float64))
    out["payment_amount"] = _latest_payment(groups, at, n)
    return out


def _latest_payment(groups: dict[str, np.ndarray], at: np.ndarray, n: int) -> np.ndarray:
    """Amount of each customer's latest payment with an amount (of two at the same time, the
    larger), NaN where none."""
    paid = np.flatnonzero((groups["fc"] == FAMILY_CODES["payment"]) & ~np.isnan(groups["paid_us"]))
    paid = paid[np.lexsort((groups["paid_amount"][paid], groups["paid_us"][paid], at[paid]))]
    final = np.r_[at[paid][1:] != at[paid][:-1], True] if len(paid) else np.zeros(0, bool)
    out = np.full(n, np.nan)
    out[at[paid][final]] = groups["paid_amount"][paid][final]
    return out


def _prepend_history(
    code: np.ndarray,
    day: np.ndarray,
    columns: dict[str, np.ndarray],
    history: dict[str, np.ndarray],
    history_day: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Insert one row per customer of ``history`` (sorted by code) on ``history_day``, before
    all its day rows, keeping (code, day) order; columns the history lacks are 0 there."""
    h_code = np.asarray(history["code"], dtype=code.dtype)
    # Both sides are sorted: history row i lands before the first day row of a larger key.
    at = np.searchsorted(_key(code, day), _key(h_code, history_day)) + np.arange(len(h_code))
    is_history = np.zeros(len(code) + len(h_code), dtype=bool)
    is_history[at] = True
    rest = np.flatnonzero(~is_history)

    def merge(values: np.ndarray, extra: np.ndarray) -> np.ndarray:
        out = np.empty(len(is_history), dtype=values.dtype)
        out[at], out[rest] = extra, values
        return out

    merged = {}
    for name, values in columns.items():
        extra = history[name] if name in history else np.zeros(len(h_code))
        merged[name] = merge(values, np.asarray(extra, dtype=np.float64).astype(values.dtype))
    h_day = np.full(len(h_code), history_day, dtype=day.dtype)
    return merge(code, h_code), merge(day, h_day), merged


def _link_active_days(code: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Fill ``prev_active_day`` on each day row with qualifying events: the customer's previous
    qualifying day (from the row before, or the history row's last one). In place."""
    active = np.flatnonzero(~np.isnan(columns["last_active_us"]))
    day = columns["last_active_us"][active].astype(np.int64) // US_PER_DAY
    follows = code[active[1:]] == code[active[:-1]]
    columns["prev_active_day"][active[1:][follows]] = day[:-1][follows]


def _day_index(starts: np.ndarray, n_events: int) -> np.ndarray:
    """Per event, the index of its day row (``starts`` opens each day)."""
    opens = np.zeros(n_events, dtype=np.int32)
    opens[starts[1:]] = 1
    return np.cumsum(opens, dtype=np.int32)


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

    Counts are ``bincount`` over each event's day index; first and last times take the first
    and last matching event of each day (the arrays are in time order within a day); the last
    payment amount takes the last payment of the day (of two at the same microsecond the larger
    amount counts as the later, whatever the order the sort left them in).
    """
    n_days = len(starts)
    if n_days == 0:
        return {name: np.zeros(0) for name in DAILY_COLUMNS}
    group = _day_index(starts, len(ts))

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(group[mask], minlength=n_days).astype(np.int32)

    def extreme(mask: np.ndarray, how: str) -> np.ndarray:
        """Latest / earliest time among the matching events of each day (NaN where none);
        the events of a day are in time order."""
        where = np.flatnonzero(mask)
        days = group[where]
        out = np.full(n_days, np.nan, dtype=np.float64)
        if len(days):
            edge = (
                np.r_[days[1:] != days[:-1], True]
                if how == "last"
                else np.r_[True, days[1:] != days[:-1]]
            )
            out[days[edge]] = ts[where[edge]]
        return out

    def last(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` of the last matching event of each day; equal times: the larger value
        last (the sort left ties in any order)."""
        where = np.flatnonzero(mask)
        where = where[np.lexsort((values[where], ts[where], group[where]))]
        days = group[where]
        final = np.r_[days[1:] != days[:-1], True] if len(days) else np.zeros(0, bool)
        out = np.full(n_days, np.nan, dtype=np.float64)
        out[days[final]] = values[where[final]]
        return out

    masks = _count_masks(fc, severity, qualifying)
    money = np.where(masks["spend"], np.nan_to_num(amount), 0.0)
    payment = (fc == FAMILY_CODES["payment"]) & ~np.isnan(amount)
    feature_mask = np.zeros(n_days, dtype=np.uint64)
    for b in np.unique(bit[bit >= 0]):
        used = count(bit == b) > 0
        feature_mask |= used.astype(np.uint64) << np.uint64(b)
    counts = {name: count(mask) for name, mask in masks.items() if name != "spend"}
    times = {name: extreme(masks[kind], how) for name, (how, kind) in EXTREME_TIMES.items()}
    return {
        **counts,
        "n_active_days": np.ones(n_days, dtype=np.int32),
        "n_qualifying_days": (counts["n_qualifying"] > 0).astype(np.int32),
        "n_purchase_days": (counts["n_purchase"] > 0).astype(np.int32),
        **times,
        "prev_active_day": np.full(n_days, np.nan),
        "spend": np.bincount(group, weights=money, minlength=n_days),
        "payment_amount": last(payment, amount),
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
            long = self.daily.long
            if long is not None and name in long.columns:
                return self._long_sum(name, values, start, end)
            raise ValueError(
                f"a {-start}-day window before as_of reaches before day {first} (days since"
                " 1970), where this daily log folds older events into history rows; build it"
                f" with since ≤ the earliest as_of − {-start} days"
            )
        cs = self._cumsum(name, values)
        total = cs[self._position(end)] - cs[self._position(start)]
        return total.astype(np.float64) if total.dtype == np.longdouble else total

    def _long_sum(self, name: str, values: np.ndarray, start: int, end: int) -> np.ndarray:
        """A window reaching before the day rows: its days from ``history_day`` on from the day
        rows, the earlier ones from ``LongRows`` (each query's window cut at the boundary)."""
        long, first = self.daily.long, self.daily.history_day
        if int(self.q_day.min()) + start < long.first_day:
            raise ValueError(
                f"a {-start}-day window before as_of reaches before day {long.first_day} (days"
                " since 1970), where this daily log's long rows start; build it with long_since"
                f" ≤ the earliest as_of − {-start} days"
            )
        lo, hi = self.q_day + start, self.q_day + end
        recent = self._range_sum(
            name, values, self._key, np.maximum(lo, first), np.maximum(hi, first)
        )
        older = self._range_sum(
            f"long:{name}",
            long.columns[name],
            long.key,
            np.minimum(lo, first),
            np.minimum(hi, first),
        )
        total = recent + older
        return total.astype(np.float64) if total.dtype == np.longdouble else total

    def _range_sum(
        self, name: str, values: np.ndarray, key: np.ndarray, lo_day: np.ndarray, hi_day: np.ndarray
    ) -> np.ndarray:
        """Per query, the sum of ``values`` over the rows of ``key`` on days [lo_day, hi_day)."""
        cs = self._cumsum(name, values)
        at = np.searchsorted(key, _key(self.q_code, np.stack([lo_day, hi_day])), side="left")
        return cs[at[1]] - cs[at[0]]

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
