"""Seeded simulator of a non-contractual retail business: a purchase log and its oracle.

The process is "buy till you die" (BTYD) with heterogeneity, close to the MBG/NBD model:

- customers arrive over the first ``arrival_days`` of the period; the arrival is their first
  purchase (and their ``signup_at``);
- while alive, a customer buys as a Poisson process with rate ``λ ~ Gamma(rate_shape,
  scale=rate_scale_days)`` per day;
- right after each purchase (the first one included) the customer drops out for good with
  probability ``p ~ Beta(dropout_a, dropout_b)``; a customer who buys nothing stays alive;
- a share ``change_share`` of customers changes rate once, at a time ``τ`` after arrival:
  *faders* slow down (rate × ``fade_multiplier``) and drop out after each later purchase with
  probability at least ``fade_dropout``, *boosters* speed up (rate × ``boost_multiplier``);
- each purchase has an amount from the gamma-gamma spend model (per-customer mean spend
  heterogeneous, each amount gamma around it), scaled by the customer's segment.

The oracle file (``oracle.parquet``) holds each customer's latent state, one row per customer:
``first_purchase_at``, ``purchase_rate_per_day``, ``rate_change_at`` (null if none),
``purchase_rate_after_per_day`` and ``dropout_at`` (the time of the purchase after which the
customer dropped out; null while alive at the period end). A customer alive at as_of who buys
nothing stays alive, so the true probability of no purchase in ``[as_of, as_of + h)`` is 1 for a
customer who dropped out before as_of, and otherwise ``exp(-∫ rate)`` over the window, the rate
change included and a later dropout ignored (it needs a purchase first); 0 when the first
purchase itself falls in the window (``no_purchase_probability``).

Determinism: every draw comes from ``numpy`` generators derived from ``seed`` (one stream for
customer attributes, one for the purchase rounds), so the same arguments give the same bytes.
The simulation loops over purchase rounds, vectorised across the customers still buying.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.demo import (
    _DAY_S,
    EVENTS_SCHEMA,
    OWNERS,
    SEGMENTS,
    DemoSummary,
    _atomic,
    _days_since_epoch,
    _iso,
    _rng,
    contacts,
)

logger = logging.getLogger(__name__)

PURCHASE = "purchase"
PLANS = ("guest", "member", "premium_member")
"""Retail ``plan``: the loyalty programme the customer joined (independent of behaviour)."""
RATE_COLUMN = "purchase_rate_per_day"
"""The column that marks an oracle file as a retail one (``pipeline.demo.oracle_probability``)."""
ORACLE_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("first_purchase_at", pa.timestamp("us", tz="UTC")),
        (RATE_COLUMN, pa.float64()),
        ("rate_change_at", pa.timestamp("us", tz="UTC")),
        ("purchase_rate_after_per_day", pa.float64()),
        ("dropout_at", pa.timestamp("us", tz="UTC")),
    ]
)
_US_PER_DAY = _DAY_S * 1_000_000


@dataclass(frozen=True)
class RetailParams:
    """Generator parameters (rates per customer-day, times in days, money in currency units)."""

    arrival_days: float = 180.0
    """First purchases are spread uniformly over the first ``arrival_days`` of the period."""
    rate_shape: float = 0.45
    rate_scale_days: float = 0.02
    """Purchase rate λ ~ Gamma(rate_shape, scale=rate_scale_days): mean 0.009/day (3.3/year)."""
    dropout_a: float = 0.6
    dropout_b: float = 3.5
    """Dropout probability after each purchase p ~ Beta(dropout_a, dropout_b): mean 0.15."""
    change_share: float = 0.08
    """Share of customers whose purchase rate changes once."""
    fade_share: float = 0.6
    """Of those, the share that slow down (the others speed up)."""
    change_after_days: tuple[float, float] = (30.0, 540.0)
    """The change happens uniformly within this range of days after the first purchase."""
    fade_multiplier: float = 0.2
    fade_dropout: float = 0.5
    boost_multiplier: float = 3.0
    spend_p: float = 6.0
    spend_q: float = 3.5
    spend_gamma: float = 15.0
    """Gamma-gamma spend: per-customer ν ~ Gamma(spend_q, scale=1/spend_gamma), each amount
    ~ Gamma(spend_p, scale=1/ν); mean amount spend_p·spend_gamma/(spend_q − 1) = 36."""
    segment_spend: tuple[float, float, float] = (1.0, 2.5, 6.0)
    """Spend multiplier of the SMB, Mid-Market and Enterprise segments."""


PARAMS = RetailParams()


@dataclass(frozen=True)
class Latent:
    """Per-customer latent state; times in days since the period start (``inf`` = never)."""

    first: np.ndarray
    rate: np.ndarray
    change_at: np.ndarray
    rate_after: np.ndarray
    dropout: np.ndarray
    dropout_after: np.ndarray

    def take(self, idx: np.ndarray) -> Latent:
        """The latent state of customers ``idx``."""
        return Latent(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class Purchases:
    """Simulated purchases (customer index, time in days) and each customer's dropout time
    (the time of the purchase after which it dropped out; ``inf`` while alive)."""

    cust: np.ndarray
    day: np.ndarray
    death: np.ndarray


def draw_latent(rng: np.random.Generator, n: int, p: RetailParams = PARAMS) -> Latent:
    """Arrival, purchase rate, dropout probability and (for a few) the rate change."""
    first = np.sort(rng.uniform(0.0, p.arrival_days, n))
    rate = rng.gamma(p.rate_shape, p.rate_scale_days, n)
    dropout = rng.beta(p.dropout_a, p.dropout_b, n)
    u = rng.random((3, n))
    changes = u[0] < p.change_share
    fades = changes & (u[1] < p.fade_share)
    lo, hi = p.change_after_days
    change_at = np.where(changes, first + lo + (hi - lo) * u[2], np.inf)
    mult = np.where(fades, p.fade_multiplier, p.boost_multiplier)
    rate_after = np.where(changes, rate * mult, rate)
    dropout_after = np.where(fades, np.maximum(dropout, p.fade_dropout), dropout)
    return Latent(first, rate, change_at, rate_after, dropout, dropout_after)


def next_purchase(t: np.ndarray, e: np.ndarray, lat: Latent) -> np.ndarray:
    """Time of the next purchase after ``t`` for unit-exponential draws ``e``, under the
    piecewise-constant rate (``rate`` before ``change_at``, ``rate_after`` from it on)."""
    before = t < lat.change_at
    with np.errstate(invalid="ignore"):
        reach = np.where(before, (lat.change_at - t) * lat.rate, 0.0)
        early = t + e / lat.rate
        late = np.maximum(t, lat.change_at) + (e - reach) / lat.rate_after
    return np.where(before & (e < reach), early, late)


def simulate_after(rng: np.random.Generator, t: np.ndarray, lat: Latent, end: float) -> Purchases:
    """Purchases in ``(t, end)`` of customers alive at ``t`` (who do not buy at ``t``).

    One round per purchase, vectorised across the customers still buying: draw the next
    purchase time; those before ``end`` buy, then drop out with their current probability.
    """
    n = len(t)
    death = np.full(n, np.inf)
    idx, now = np.arange(n), np.asarray(t, dtype=np.float64).copy()
    parts_c, parts_t = [np.zeros(0, np.int64)], [np.zeros(0)]
    while len(idx):
        sub = lat.take(idx)
        now = next_purchase(now, rng.standard_exponential(len(idx)), sub)
        buys = now < end
        idx, now, sub = idx[buys], now[buys], sub.take(np.flatnonzero(buys))
        parts_c.append(idx)
        parts_t.append(now)
        drops = rng.random(len(idx)) < np.where(now < sub.change_at, sub.dropout, sub.dropout_after)
        death[idx[drops]] = now[drops]
        idx, now = idx[~drops], now[~drops]
    return Purchases(np.concatenate(parts_c), np.concatenate(parts_t), death)


def simulate(rng: np.random.Generator, lat: Latent, end: float) -> Purchases:
    """All purchases in ``[0, end)``: the first purchase, its dropout draw, then the rounds."""
    n = len(lat.first)
    first_drop = rng.random(n) < np.where(lat.first < lat.change_at, lat.dropout, lat.dropout_after)
    stay = np.flatnonzero(~first_drop)
    later = simulate_after(rng, lat.first[stay], lat.take(stay), end)
    death = np.where(first_drop, lat.first, np.inf)
    death[stay] = later.death
    cust = np.concatenate([np.arange(n), stay[later.cust]])
    day = np.concatenate([lat.first, later.day])
    return Purchases(cust, day, death)


def _seconds(day: np.ndarray) -> np.ndarray:
    """Whole seconds since the period start of times in days (``inf`` stays a sentinel -1)."""
    finite = np.isfinite(day)
    return np.where(finite, np.floor(np.where(finite, day, 0.0) * _DAY_S), -1).astype(np.int64)


def _amounts(rng: np.random.Generator, cust: np.ndarray, segment: np.ndarray, n: int) -> np.ndarray:
    """Gamma-gamma purchase amounts (cents), scaled by each customer's segment."""
    p = PARAMS
    nu = rng.gamma(p.spend_q, 1.0 / p.spend_gamma, n)
    scale = np.asarray(p.segment_spend)[segment] / nu
    amount = rng.gamma(p.spend_p, 1.0, len(cust)) * scale[cust]
    return np.maximum(np.round(amount, 2), 0.01)


def _events_table(
    ids: np.ndarray, cust: np.ndarray, ts_us: np.ndarray, amount: np.ndarray
) -> pa.Table:
    """The purchase events in the input contract, sorted by customer then time."""
    order = np.lexsort((ts_us, cust))
    k = len(cust)
    null = pa.nulls(k, pa.string())
    return pa.Table.from_arrays(
        [
            pa.array(ids).take(pa.array(cust[order])),
            pa.array(ts_us[order], type=pa.timestamp("us", tz="UTC")),
            pa.array(np.full(k, PURCHASE)),
            null,
            pa.array(amount[order], type=pa.float64()),
            null,
        ],
        schema=EVENTS_SCHEMA,
    )


def oracle_table(ids: np.ndarray, lat: Latent, death: np.ndarray, start_us: int) -> pa.Table:
    """One row per customer: its latent purchase-rate schedule and dropout time (UTC)."""

    def stamp(day: np.ndarray) -> pa.Array:
        sec = _seconds(day)
        return pa.array(start_us + sec * 1_000_000, ORACLE_SCHEMA.field("dropout_at").type, sec < 0)

    return pa.Table.from_arrays(
        [
            pa.array(ids),
            stamp(lat.first),
            pa.array(lat.rate),
            stamp(lat.change_at),
            pa.array(lat.rate_after),
            stamp(death),
        ],
        schema=ORACLE_SCHEMA,
    )


def _customers_frame(
    ids: np.ndarray, first_s: np.ndarray, attrs: dict[str, np.ndarray], start_s: int
) -> pd.DataFrame:
    """customers.csv: signup_at = first purchase; no churned_at and no mrr (non-contractual)."""
    return pd.DataFrame(
        {
            "customer_id": ids,
            "signup_at": _iso(start_s + first_s),
            "plan": np.array(PLANS)[attrs["plan"]],
            "owner": np.array(OWNERS)[attrs["owner"]],
            "segment": np.array(SEGMENTS)[attrs["segment"]],
            "contact_name": attrs["contact_name"],
            "contact_email": attrs["contact_email"],
        }
    )


def _attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Ids, plan (loyalty programme), owner, segment and fake contact details."""
    ids, name, email = contacts(rng, n)
    return {
        "ids": ids,
        "plan": rng.choice(len(PLANS), size=n, p=[0.5, 0.4, 0.1]),
        "owner": rng.integers(0, len(OWNERS), n),
        "segment": rng.choice(len(SEGMENTS), size=n, p=[0.6, 0.3, 0.1]),
        "contact_name": name,
        "contact_email": email,
    }


def _readme(n: int, seed: int, start: date, end: date, n_events: int, n_dead: int) -> str:
    """Plain-text description of the generator run and its parameters."""
    params = "\n".join(f"  {k} = {v}" for k, v in asdict(PARAMS).items())
    return (
        "Simulated retail business, purchase log (pipeline.demo_retail.write_retail_data).\n\n"
        f"customers: {n}\nseed: {seed}\nperiod: [{start}, {end}) UTC\n"
        f"purchases: {n_events}\ncustomers dropped out (latent) by the end: {n_dead}\n\n"
        "Files:\n"
        "  events.parquet  purchase log: customer_id, occurred_at (UTC), event_type 'purchase',\n"
        "                  amount (> 0); feature and severity empty; sorted by customer, time.\n"
        "  customers.csv   one row per customer: signup_at = first purchase (ISO 8601 UTC),\n"
        "                  plan (loyalty programme), owner, segment, fake contact_*; no\n"
        "                  churned_at and no mrr (a non-contractual business).\n"
        "  oracle.parquet  one row per customer, its latent state: first_purchase_at,\n"
        "                  purchase_rate_per_day, rate_change_at (empty if none),\n"
        "                  purchase_rate_after_per_day, dropout_at (the purchase after which\n"
        "                  the customer dropped out; empty while alive at the end). Times UTC.\n"
        "                  See pipeline.demo.oracle_probability.\n\n"
        "Buy till you die: gamma-distributed purchase rates, dropout after each purchase with\n"
        "a beta-distributed probability (MBG/NBD-like), a few customers who slow down (and then\n"
        "drop out more readily) or speed up once, gamma-gamma spend per purchase.\n\n"
        f"Parameters:\n{params}\n"
    )


def write_retail_data(
    out_dir: Path,
    n_customers: int = 20_000,
    seed: int = 42,
    start: date = date(2024, 5, 1),
    end: date = date(2026, 11, 1),
) -> DemoSummary:
    """Simulate ``n_customers`` over ``[start, end)`` (UTC) and write the retail demo files.

    Writes ``events.parquet``, ``customers.csv``, ``oracle.parquet`` and ``README.txt`` into
    ``out_dir`` (created if needed), each atomically. Same arguments give byte-identical files.
    ``n_churned`` in the summary counts the customers who dropped out before ``end``.
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1, got {n_customers}")
    n_days = (end - start).days
    if n_days <= PARAMS.arrival_days:
        raise ValueError(f"period {start}..{end} must be longer than {PARAMS.arrival_days} days")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start_s = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
    attrs = _attributes(_rng(seed, 0), n_customers)
    rng = _rng(seed, 1)
    lat = draw_latent(rng, n_customers)
    bought = simulate(rng, lat, float(n_days))
    amount = _amounts(rng, bought.cust, attrs["segment"], n_customers)
    ts_us = (start_s + _seconds(bought.day)) * 1_000_000
    files = {
        "events": out_dir / "events.parquet",
        "customers": out_dir / "customers.csv",
        "oracle": out_dir / "oracle.parquet",
        "readme": out_dir / "README.txt",
    }
    with _atomic(files["events"]) as tmp:
        pq.write_table(_events_table(attrs["ids"], bought.cust, ts_us, amount), tmp)
    with _atomic(files["oracle"]) as tmp:
        pq.write_table(oracle_table(attrs["ids"], lat, bought.death, start_s * 1_000_000), tmp)
    customers = _customers_frame(attrs["ids"], _seconds(lat.first), attrs, start_s)
    with _atomic(files["customers"]) as tmp:
        customers.to_csv(tmp, index=False, lineterminator="\n")
    n_dead = int(np.isfinite(bought.death).sum())
    with _atomic(files["readme"]) as tmp:
        tmp.write_text(_readme(n_customers, seed, start, end, len(bought.cust), n_dead))
    logger.info("wrote %d purchases of %d customers to %s", len(bought.cust), n_customers, out_dir)
    return DemoSummary(out_dir, n_customers, len(bought.cust), n_dead, start, end, files)


def _overlap(lo: np.ndarray, hi: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Days that ``[lo, hi)`` shares with ``[start, end)`` (element-wise, 0 if disjoint)."""
    return np.maximum(np.minimum(hi, end) - np.maximum(lo, start), 0.0)


def _days_or_inf(values: pd.Series) -> np.ndarray:
    """Days since 1970 of timestamps; missing ones (never) are ``inf``."""
    days = _days_since_epoch(values)
    return np.where(values.isna().to_numpy(), np.inf, days)


def no_purchase_probability(
    oracle: pd.DataFrame, keys: pd.DataFrame, horizon_days: int
) -> np.ndarray:
    """True P(no purchase in ``[as_of, as_of + horizon_days)``) for each row of ``keys``.

    ``oracle`` has one row per customer (``first_purchase_at``, ``purchase_rate_per_day``,
    ``rate_change_at``, ``purchase_rate_after_per_day``, ``dropout_at``; missing times mean
    never); ``keys`` has ``customer_id`` and ``as_of`` (naive values are UTC). Given the latent
    state at as_of: 1 if the customer dropped out before as_of; 0 if its first purchase falls in
    the window; otherwise ``exp(-∫ rate)`` over the window, the schedule's rate change included.
    A later dropout does not enter: it needs a purchase, and a customer alive at as_of who buys
    nothing stays alive. Customers without a row never buy (1). Vectorised.
    """
    if horizon_days < 0:
        raise ValueError(f"horizon_days must be non-negative, got {horizon_days}")
    pos = pd.Index(oracle["customer_id"].astype("string")).get_indexer(
        keys["customer_id"].astype("string")
    )
    row = oracle.iloc[np.maximum(pos, 0)] if len(oracle) else oracle.reindex(range(len(pos)))
    first = _days_or_inf(row["first_purchase_at"])
    change = _days_or_inf(row["rate_change_at"])
    dropout = _days_or_inf(row["dropout_at"])
    t0 = _days_since_epoch(keys["as_of"])
    t1 = t0 + horizon_days
    exposure = row[RATE_COLUMN].to_numpy(np.float64) * _overlap(t0, t1, first, change)
    exposure += row["purchase_rate_after_per_day"].to_numpy(np.float64) * _overlap(
        t0, t1, np.maximum(first, change), np.inf
    )
    p = np.where((first >= t0) & (first < t1), 0.0, np.exp(-exposure))
    return np.where((pos < 0) | (dropout < t0), 1.0, p)


def purchase_history(events: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``keys``: the purchase history known at as_of, in days (BTYD notation).

    ``frequency`` = repeat purchases (purchases before as_of − 1), ``recency_days`` = last minus
    first purchase, ``age_days`` = as_of minus first purchase (NaN without a purchase before
    as_of). ``events`` holds the purchases (``customer_id``, ``occurred_at``).
    """
    frame = keys[["customer_id", "as_of"]].reset_index(drop=True)
    frame["_row"] = np.arange(len(frame))
    frame["_t0"] = _days_since_epoch(frame["as_of"])
    ev = pd.DataFrame(
        {"customer_id": events["customer_id"], "_t": _days_since_epoch(events["occurred_at"])}
    )
    joined = frame.merge(ev, on="customer_id")
    joined = joined[joined["_t"] < joined["_t0"]]
    agg = joined.groupby("_row")["_t"].agg(["size", "min", "max"]).reindex(frame["_row"])
    return pd.DataFrame(
        {
            "frequency": agg["size"].to_numpy(np.float64) - 1.0,
            "recency_days": (agg["max"] - agg["min"]).to_numpy(),
            "age_days": frame["_t0"].to_numpy() - agg["min"].to_numpy(),
        }
    )


def posterior_no_purchase_probability(
    history: pd.DataFrame, horizon_days: int, p: RetailParams = PARAMS
) -> np.ndarray:
    """P(no purchase in the next ``horizon_days`` | the purchase history) under the simulator's
    own process and true parameters, without the rate changes (exact for the other customers).

    The best score any model can reach from the purchase times alone, where the latent oracle
    (``no_purchase_probability``) also knows rates and dropouts that the log cannot show. With
    ``x`` repeat purchases, recency ``t`` and age ``T`` (``purchase_history``), rate
    ``λ ~ Gamma(r, α)`` and dropout ``p ~ Beta(a, b)`` after every purchase (the first included):
    alive ∝ B(a, b+x+1)·(α+T)^-(r+x), dropped out after the last purchase ∝
    B(a+1, b+x)·(α+t)^-(r+x); alive and silent for h more days ∝ B(a, b+x+1)·(α+T+h)^-(r+x).
    """
    from scipy.special import betaln, logsumexp

    x = history["frequency"].to_numpy(np.float64)
    t = history["recency_days"].to_numpy(np.float64)
    age = history["age_days"].to_numpy(np.float64)
    alpha, shape = 1.0 / p.rate_scale_days, p.rate_shape + x
    alive = betaln(p.dropout_a, p.dropout_b + x + 1)
    dead = betaln(p.dropout_a + 1, p.dropout_b + x) - shape * np.log(alpha + t)
    silent = alive - shape * np.log(alpha + age + horizon_days)
    alive = alive - shape * np.log(alpha + age)
    return np.exp(logsumexp([silent, dead], axis=0) - logsumexp([alive, dead], axis=0))
