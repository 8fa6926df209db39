"""Seeded, reproducible simulator of a subscription business's activity log (demo data).

The simulator draws customers who sign up over the whole period, gives each a slowly drifting
latent health state, and turns that state into an event log (logins, feature use, support
tickets, complaints, invoices and failed payments) and into a true daily cancellation hazard.
Customers cancel at random with that hazard; after cancelling they emit no more events.

Time semantics: every timestamp is UTC. The simulated period is ``[start, end)`` in whole UTC
days; day ``d`` is ``[start + d days, start + d + 1 days)``. A customer is *at risk* on every day
from the signup day up to and including the day it cancels. The true hazard is written per
customer in fixed 7-day blocks starting at ``start`` (the last block may be shorter), from the
signup day to the end of the period: after a cancellation the latent state keeps evolving and the
stored hazard is the one the customer would have had if still subscribed. Storing only at-risk
days would cut every churner's window sum short at its cancellation and make the oracle
(:func:`oracle_probability`) nearly uninformative; ``at_risk_days`` tells the two apart.

Determinism: every random draw comes from ``numpy`` generators derived from ``seed`` through
``SeedSequence`` spawn keys (one for customer attributes, one per fixed-size chunk of customers),
so the same arguments always give byte-identical files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

EVENT_TYPES = (
    "login",
    "feature_used",
    "ticket_opened",
    "complaint",
    "payment_failed",
    "invoice_paid",
    "newsletter_opened",
)
FEATURES = (
    "dashboards",
    "reports",
    "alerts",
    "api",
    "integrations",
    "exports",
    "automation",
    "collaboration",
)
SEVERITIES = ("low", "medium", "high", "critical")
PLANS = ("monthly_basic", "monthly_pro", "annual_pro", "annual_enterprise")
SEGMENTS = ("SMB", "Mid-Market", "Enterprise")
OWNERS = (
    "Alice Martin",
    "Bruno Keller",
    "Chloé Dubois",
    "David Okafor",
    "Elena Rossi",
    "Farid Haddad",
    "Grace Lee",
    "Hugo Santos",
)
# fmt: off
_FIRST = (
    "Anna", "Ben", "Carla", "Dmitri", "Emma", "Felix", "Giulia", "Hannah", "Ivan", "Julia",
    "Karim", "Laura", "Marco", "Nina", "Oscar", "Paula", "Quentin", "Rosa", "Sven", "Tara",
    "Umar", "Vera", "Wei", "Xenia", "Yusuf", "Zoe",
)
_LAST = (
    "Andersen", "Bauer", "Costa", "Dupont", "Evans", "Fischer", "Garcia", "Hoffmann", "Ito",
    "Jansen", "Kowalski", "Lopez", "Meyer", "Novak", "Olsen", "Petrov", "Quinn", "Richter",
    "Silva", "Tanaka", "Ueda", "Varga", "Weber", "Young", "Zimmer",
)
# fmt: on

EVENTS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()),
        ("feature", pa.string()),
        ("amount", pa.float64()),
        ("severity", pa.string()),
    ]
)
HAZARD_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("week_start", pa.date32()),
        ("hazard", pa.float32()),
        ("at_risk_days", pa.int8()),
    ]
)

_CHUNK = 8192
"""Customers simulated together. Fixed, so a given ``n_customers`` always chunks the same way."""
_DAY_S = 86_400
_WEEK_D = 7
_LOGIN, _FEATURE, _TICKET, _COMPLAINT, _FAILED, _PAID, _NEWSLETTER = range(7)


@dataclass(frozen=True)
class SimParams:
    """Generator parameters (rates are per customer-day unless stated; money in currency units)."""

    signup_growth: float = 1.5
    """Daily signup intensity grows linearly from 1 to ``1 + signup_growth`` over the period."""
    mu_sd: float = 0.9
    """Spread of the customers' long-run engagement level (latent units)."""
    state_phi: float = 0.997
    """Daily AR(1) persistence of the engagement deviation (half-life about 230 days)."""
    state_sd: float = 0.4
    """Stationary spread of the engagement deviation."""
    shock_rate: float = 0.0002
    """Daily probability of a bad support experience (before the engagement tilt). Shocks are
    what no model can foresee: kept rare, and the hazard weighs the persistent engagement state
    more than the loads of individual complaints and failed charges, so that the next 90 days'
    hazard is mostly set by the state at as_of (the oracle stays reachable from the log)."""
    shock_drop: tuple[float, float] = (0.5, 1.2)
    """Uniform range of the engagement drop of a bad experience."""
    login_log_rate: float = -1.5
    feature_log_rate: float = -1.75
    engagement_slope: float = 1.0
    """Log-rate slope of logins and feature use on engagement."""
    breadth_slope: float = 1.2
    """Adopted features move with the engagement deviation by this many features per unit."""
    ticket_rate: float = 0.008
    complaint_rate: float = 0.0012
    newsletter_rate: float = 0.0065
    duplicate_share: float = 1e-4
    weekend_factor: float = 0.3
    """Logins and feature use on Saturdays and Sundays relative to weekdays."""
    payment_risk_share: float = 0.15
    """Share of customers with a high chance of failed charges."""
    upgrade_rate: float = 0.012
    downgrade_rate: float = 0.008
    """Monthly chances of an MRR change at an invoice (tilted by engagement)."""
    base_log_hazard: float = -8.25
    hazard_engagement: float = 1.4
    hazard_narrow: float = 1.0
    hazard_complaint: float = 0.2
    hazard_failed: float = 0.3
    complaint_half_life_d: float = 30.0
    failed_half_life_d: float = 20.0
    onboarding_amp: float = 2.0
    onboarding_tau_d: float = 30.0
    annual_base_mult: float = 0.15
    renewal_mult: float = 6.0
    renewal_window_d: int = 30
    """Annual plans cancel mostly in the ``renewal_window_d`` days before each anniversary."""


PARAMS = SimParams()


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`write_demo_data` wrote: counts, the period ``[start, end)`` and file paths."""

    out_dir: Path
    n_customers: int
    n_events: int
    n_churned: int
    start: date
    end: date
    files: dict[str, Path]


@dataclass(frozen=True)
class _Calendar:
    """The simulated days ``[start, end)``: day-of-month, weekday factor, epoch seconds."""

    start: date
    n_days: int
    day_of_month: np.ndarray
    activity_factor: np.ndarray
    start_epoch_s: int


@dataclass(frozen=True)
class _Customers:
    """Per-customer attributes drawn once for the whole base (index = customer number - 1)."""

    ids: np.ndarray
    signup_day: np.ndarray
    signup_sec: np.ndarray
    plan: np.ndarray
    segment: np.ndarray
    mrr: np.ndarray
    owner: np.ndarray
    contact_name: np.ndarray
    contact_email: np.ndarray
    bill_dom: np.ndarray


@dataclass
class _Outcome:
    """Simulated per-customer outcome: cancellation day/second (-1 while active), final MRR."""

    churn_day: np.ndarray
    churn_sec: np.ndarray
    mrr: np.ndarray


@dataclass
class _Chunk:
    """One chunk's simulation: daily matrices (day × customer) and the in-loop events."""

    active: np.ndarray
    engagement: np.ndarray
    breadth: np.ndarray
    hazard: np.ndarray
    outcome: _Outcome
    perm: np.ndarray
    events: dict[str, np.ndarray]


def _calendar(start: date, end: date, p: SimParams) -> _Calendar:
    """Day-of-month and activity (weekday) factor for every day of ``[start, end)``."""
    n_days = (end - start).days
    if n_days < 28:
        raise ValueError(f"period {start}..{end} must span at least 28 days")
    days = np.datetime64(start, "D") + np.arange(n_days)
    dom = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    weekday = (start.weekday() + np.arange(n_days)) % 7
    factor = np.where(weekday >= 5, p.weekend_factor, 1.0)
    factor = factor / factor.mean()
    epoch = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
    return _Calendar(start, n_days, dom, factor, epoch)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Generator for one stream (``key``) of ``seed``; independent of how many streams exist."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _draw_customers(n: int, seed: int, cal: _Calendar, p: SimParams) -> _Customers:
    """Signup time (growing cohorts, fewer at weekends), plan, segment, MRR, owner, contact."""
    rng = _rng(seed, 0)
    t = np.arange(cal.n_days) / cal.n_days
    weight = (1.0 + p.signup_growth * t) * np.where(cal.activity_factor < 1.0, 0.4, 1.0)
    day = rng.choice(cal.n_days, size=n, p=weight / weight.sum())
    minute = np.clip(rng.normal(14 * 60, 180, n), 0, 1439).astype(np.int64)
    order = np.lexsort((minute, day))
    day, minute = day[order], minute[order]
    segment = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    plan_p = np.array(
        [[0.6, 0.3, 0.1, 0.0], [0.15, 0.4, 0.35, 0.1], [0.0, 0.1, 0.3, 0.6]],
    )
    u = rng.random(n)
    plan = (u[:, None] > np.cumsum(plan_p[segment], axis=1)).sum(axis=1)
    plan = np.minimum(plan, 3)
    base = np.array([49.0, 199.0, 179.0, 1500.0])[plan] * np.array([1.0, 2.5, 6.0])[segment]
    mrr = np.round(base * rng.lognormal(0.0, 0.3, n), 2)
    ids, name, email = contacts(rng, n)
    return _Customers(
        ids=ids,
        signup_day=day.astype(np.int64),
        signup_sec=minute * 60,
        plan=plan,
        segment=segment,
        mrr=mrr,
        owner=rng.integers(0, len(OWNERS), n),
        contact_name=name,
        contact_email=email,
        bill_dom=np.minimum(cal.day_of_month[day], 28),
    )


def contacts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customer ids ``C000001``… and fake contact names and unique e-mail addresses."""
    first = np.array(_FIRST)[rng.integers(0, len(_FIRST), n)]
    last = np.array(_LAST)[rng.integers(0, len(_LAST), n)]
    number = np.arange(1, n + 1).astype(str)
    email = np.char.add(
        np.char.add(np.char.add(np.char.lower(first), "."), np.char.lower(last)),
        np.char.add(number, "@example.com"),
    )
    ids = np.char.add("C", np.char.zfill(number, 6))
    return ids, np.char.add(np.char.add(first, " "), last), email


def _sample_severity(rng: np.random.Generator, probs: tuple[float, ...], k: int) -> np.ndarray:
    """``k`` severity codes (0 low … 3 critical) with the given probabilities."""
    return rng.choice(4, size=k, p=np.asarray(probs))


class _Log:
    """Accumulates in-loop events (day, customer, type, severity, amount) as array pieces.

    Only customers with ``keep`` set (at risk that day) are logged: the state of a customer who
    has cancelled keeps evolving (for the counterfactual hazard) but emits no events.
    """

    def __init__(self, n: int) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.keep = np.zeros(n, bool)

    def add(
        self,
        day: int,
        cust: np.ndarray,
        kind: int,
        sev: np.ndarray | None = None,
        amount: np.ndarray | None = None,
    ) -> None:
        """Record events of one type on ``day`` for customers ``cust`` (one row each)."""
        kept = self.keep[cust]
        cust = cust[kept]
        sev = None if sev is None else sev[kept]
        amount = None if amount is None else amount[kept]
        k = len(cust)
        if k == 0:
            return
        self.parts.append(
            (
                np.full(k, day, np.int64),
                cust.astype(np.int64),
                np.full(k, kind, np.int64),
                np.full(k, -1, np.int64) if sev is None else sev.astype(np.int64),
                np.full(k, np.nan) if amount is None else amount.astype(np.float64),
            )
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The recorded events as columns (unsorted)."""
        names = ("day", "cust", "kind", "severity", "amount")
        if not self.parts:
            empty = [np.zeros(0, np.int64)] * 4 + [np.zeros(0)]
            return dict(zip(names, empty, strict=True))
        return {n: np.concatenate([x[i] for x in self.parts]) for i, n in enumerate(names)}


def _support_events(
    rng: np.random.Generator,
    d: int,
    signed: np.ndarray,
    z: np.ndarray,
    shock: np.ndarray,
    log: _Log,
    p: SimParams,
) -> np.ndarray:
    """Draw day ``d``'s tickets and complaints; return each customer's severity load added."""
    n = len(z)
    n_ticket = rng.poisson(p.ticket_rate * np.exp(-0.4 * z)) * signed
    n_compl = rng.poisson(p.complaint_rate * np.exp(-0.8 * z)) * signed
    load = np.zeros(n)
    t_cust = np.concatenate([np.repeat(np.arange(n), n_ticket), np.flatnonzero(shock)])
    t_sev = np.concatenate(
        [
            _sample_severity(rng, (0.45, 0.35, 0.15, 0.05), int(n_ticket.sum())),
            _sample_severity(rng, (0.0, 0.3, 0.5, 0.2), int(shock.sum())),
        ]
    )
    shock_compl = np.flatnonzero(shock & (rng.random(n) < 0.7))
    c_cust = np.concatenate([np.repeat(np.arange(n), n_compl), shock_compl])
    c_sev = np.concatenate(
        [
            _sample_severity(rng, (0.1, 0.3, 0.4, 0.2), int(n_compl.sum())),
            _sample_severity(rng, (0.0, 0.0, 0.5, 0.5), len(shock_compl)),
        ]
    )
    log.add(d, t_cust, _TICKET, t_sev)
    log.add(d, c_cust, _COMPLAINT, c_sev)
    load += np.bincount(t_cust, np.array([0.0, 0.05, 0.2, 0.4])[t_sev], minlength=n)
    load += np.bincount(c_cust, np.array([0.2, 0.5, 1.0, 1.6])[c_sev], minlength=n)
    return load


@dataclass
class _Billing:
    """Dunning state: next retry day (-1 none), failed attempts, MRR and payment risk."""

    retry_day: np.ndarray
    attempts: np.ndarray
    mrr: np.ndarray
    risk: np.ndarray


def _billing_events(
    rng: np.random.Generator,
    d: int,
    dom: int,
    signed: np.ndarray,
    z: np.ndarray,
    tenure: np.ndarray,
    bill_dom: np.ndarray,
    b: _Billing,
    log: _Log,
    p: SimParams,
) -> np.ndarray:
    """Invoices, MRR changes and dunning on day ``d``; return the failed-payment load added."""
    n = len(z)
    u = rng.random((5, n))
    due = signed & (bill_dom == dom)
    change = due & (tenure >= 25)
    up = change & (u[0] < p.upgrade_rate * np.exp(0.5 * z))
    down = change & ~up & (u[0] > 1.0 - p.downgrade_rate * np.exp(-0.5 * z))
    factor = np.where(up, np.array([1.2, 1.5, 2.0])[(u[1] * 3).astype(np.int64)], 1.0)
    factor = np.where(down, np.array([0.5, 0.7, 0.8])[(u[1] * 3).astype(np.int64)], factor)
    b.mrr = np.where(up | down, np.round(b.mrr * factor, 2), b.mrr)
    retry = signed & (b.retry_day == d)
    fail_due = due & (u[2] < b.risk)
    fail_retry = retry & (u[3] < np.minimum(0.9, 2.5 * b.risk))
    paid = np.flatnonzero((due & ~fail_due) | (retry & ~fail_retry))
    failed = np.flatnonzero(fail_due | fail_retry)
    log.add(d, paid, _PAID, amount=b.mrr[paid])
    log.add(d, failed, _FAILED, amount=b.mrr[failed])
    b.attempts = np.where(fail_due, 1, np.where(fail_retry, b.attempts + 1, b.attempts))
    exhausted = fail_retry & (b.attempts >= 3)
    b.retry_day = np.where(fail_due | fail_retry, d + np.where(fail_due, 3, 4), b.retry_day)
    b.retry_day = np.where(exhausted | (retry & ~fail_retry), -1, b.retry_day)
    return (fail_due | fail_retry).astype(np.float64) + 2.0 * exhausted


def _daily_hazard(
    z: np.ndarray,
    breadth: np.ndarray,
    complaint_load: np.ndarray,
    failed_load: np.ndarray,
    tenure: np.ndarray,
    annual: np.ndarray,
    p: SimParams,
) -> np.ndarray:
    """True cancellation hazard (probability scale, per day) from the state of that day."""
    log_h = (
        p.base_log_hazard
        - p.hazard_engagement * z
        + p.hazard_narrow * (8 - breadth) / 7
        + p.hazard_complaint * complaint_load
        + p.hazard_failed * failed_load
    )
    onboarding = 1.0 + p.onboarding_amp * np.exp(-np.maximum(tenure, 0) / p.onboarding_tau_d)
    in_window = (tenure >= 300) & (tenure % 365 >= 365 - p.renewal_window_d)
    plan = np.where(annual, np.where(in_window, p.renewal_mult, p.annual_base_mult), 1.0)
    return np.minimum(np.exp(log_h) * onboarding * plan, 0.5)


@dataclass(frozen=True)
class _Traits:
    """Per-customer latent traits of a chunk (engagement level, adoption, payment risk)."""

    mu: np.ndarray
    """Long-run engagement level (latent units)."""
    breadth0: np.ndarray
    """Features adopted at the long-run level (continuous, 1–8)."""
    pay_risk: np.ndarray
    """Probability that a monthly charge fails."""
    perm: np.ndarray
    """Order in which the customer adopts the 8 features (n × 8 codes)."""


def _draw_traits(rng: np.random.Generator, n: int, p: SimParams) -> _Traits:
    """Heterogeneous traits: some customers use 1–2 features, others 6–8; 15% pay badly."""
    mu = rng.normal(0.0, p.mu_sd, n)
    breadth0 = 1.0 + 7.0 * rng.beta(1.3, 1.3, n)
    risky = rng.random(n) < p.payment_risk_share
    risk = np.where(risky, rng.uniform(0.1, 0.35, n), rng.uniform(0.005, 0.03, n))
    perm = np.argsort(rng.random((n, 8)), axis=1)
    return _Traits(mu, breadth0, risk, perm)


def _simulate_chunk(
    cust: _Customers, lo: int, hi: int, cal: _Calendar, rng: np.random.Generator, p: SimParams
) -> _Chunk:
    """Run the daily state/hazard/churn loop for customers ``lo..hi-1`` (vectorised over them).

    The state of every signed-up customer evolves to the end of the period; a cancelled
    customer only stops emitting events, so its stored hazard is the counterfactual one.
    """
    n, n_days = hi - lo, cal.n_days
    signup, annual, bill_dom = cust.signup_day[lo:hi], cust.plan[lo:hi] >= 2, cust.bill_dom[lo:hi]
    tr = _draw_traits(rng, n, p)
    dev = rng.normal(0.0, p.state_sd, n)
    innov = p.state_sd * np.sqrt(1.0 - p.state_phi**2)
    bill = _Billing(np.full(n, -1), np.zeros(n, np.int64), cust.mrr[lo:hi].copy(), tr.pay_risk)
    c_load, f_load = np.zeros(n), np.zeros(n)
    c_decay, f_decay = 0.5 ** (1 / p.complaint_half_life_d), 0.5 ** (1 / p.failed_half_life_d)
    out = _Outcome(np.full(n, -1), np.full(n, -1), bill.mrr.copy())
    m_active = np.zeros((n_days, n), bool)
    m_z = np.zeros((n_days, n), np.float32)
    m_breadth = np.zeros((n_days, n), np.uint8)
    m_hazard = np.zeros((n_days, n), np.float32)
    log = _Log(n)
    for d in range(n_days):
        signed = signup <= d
        active = signed & (out.churn_day < 0)
        log.keep, tenure = active, d - signup
        dev = p.state_phi * dev + innov * rng.standard_normal(n)
        u = rng.random((3, n))
        shock = signed & (u[0] < p.shock_rate * np.exp(-0.3 * (tr.mu + dev)))
        dev = dev - shock * (p.shock_drop[0] + (p.shock_drop[1] - p.shock_drop[0]) * u[1])
        z = tr.mu + dev
        breadth = np.clip(np.rint(tr.breadth0 + p.breadth_slope * dev), 1, 8)
        c_load = c_decay * c_load + _support_events(rng, d, signed, z, shock, log, p)
        dom = int(cal.day_of_month[d])
        f_load = f_decay * f_load + _billing_events(
            rng, d, dom, signed, z, tenure, bill_dom, bill, log, p
        )
        out.mrr = np.where(active, bill.mrr, out.mrr)
        h = _daily_hazard(z, breadth, c_load, f_load, tenure, annual, p)
        m_active[d], m_z[d], m_breadth[d], m_hazard[d] = active, z, breadth, h
        new = active & (u[2] < -np.expm1(-h))
        if new.any():
            _record_churn(rng, d, new, cust.signup_sec[lo:hi], tenure, out)
    return _Chunk(m_active, m_z, m_breadth, m_hazard, out, tr.perm, log.arrays())


def _record_churn(
    rng: np.random.Generator,
    d: int,
    new: np.ndarray,
    signup_sec: np.ndarray,
    tenure: np.ndarray,
    out: _Outcome,
) -> None:
    """Set day ``d`` and a second of that day (after the signup second) for new cancellations."""
    idx = np.flatnonzero(new)
    lo = np.where(tenure[idx] == 0, signup_sec[idx] + 1, 1)
    out.churn_day[idx] = d
    out.churn_sec[idx] = lo + (rng.random(len(idx)) * (_DAY_S - lo)).astype(np.int64)


def _activity_events(
    rng: np.random.Generator, ch: _Chunk, cal: _Calendar, p: SimParams
) -> dict[str, np.ndarray]:
    """Logins, feature use and newsletter opens from the daily engagement (cell-wise Poisson)."""
    n = ch.active.shape[1]
    cells = np.flatnonzero(ch.active)
    z = ch.engagement.ravel()[cells].astype(np.float64)
    breadth = ch.breadth.ravel()[cells].astype(np.int64)
    factor = cal.activity_factor[cells // n]
    n_login = rng.poisson(np.exp(p.login_log_rate + p.engagement_slope * z) * factor)
    feat_rate = np.exp(p.feature_log_rate + p.engagement_slope * z) * (0.4 + breadth / 8) * factor
    n_feat = rng.poisson(feat_rate)
    n_news = rng.poisson(p.newsletter_rate, len(cells))
    feat_cells = np.repeat(cells, n_feat)
    pick = (np.repeat(breadth, n_feat) * rng.random(len(feat_cells)) ** 1.5).astype(np.int64)
    feature = ch.perm[feat_cells % n, pick]
    counts = [int(n_login.sum()), len(feat_cells), int(n_news.sum())]
    all_cells = np.concatenate([np.repeat(cells, n_login), feat_cells, np.repeat(cells, n_news)])
    return {
        "day": all_cells // n,
        "cust": all_cells % n,
        "kind": np.repeat(np.array([_LOGIN, _FEATURE, _NEWSLETTER]), counts),
        "severity": np.full(len(all_cells), -1, np.int64),
        "amount": np.full(len(all_cells), np.nan),
        "feature": np.concatenate([np.full(counts[0], -1), feature, np.full(counts[2], -1)]),
    }


def _event_table(
    rng: np.random.Generator, ch: _Chunk, cust: _Customers, lo: int, cal: _Calendar, p: SimParams
) -> pa.Table:
    """All of a chunk's events with times, a few exact duplicates, sorted by customer and time.

    Event times are whole seconds of their day, after the signup second on the signup day and
    before the cancellation second on the cancellation day.
    """
    ev = dict(ch.events, feature=np.full(len(ch.events["day"]), -1, np.int64))
    act = _activity_events(rng, ch, cal, p)
    cols = {k: np.concatenate([ev[k], act[k]]) for k in act}
    c, d = cols["cust"], cols["day"]
    signup_day, signup_sec = cust.signup_day[lo:][c], cust.signup_sec[lo:][c]
    first = np.where(d == signup_day, signup_sec, 0)
    last = np.where(d == ch.outcome.churn_day[c], ch.outcome.churn_sec[c], _DAY_S)
    frac = np.mod(rng.normal(14.5, 3.5, len(c)), 24.0) / 24.0
    sec = first + (frac * (last - first)).astype(np.int64)
    cols["time"] = (cal.start_epoch_s + d * _DAY_S + sec) * 1_000_000
    dup = np.flatnonzero(rng.random(len(c)) < p.duplicate_share)
    order = np.concatenate([np.arange(len(c)), dup])
    cols = {k: v[order] for k, v in cols.items()}
    order = np.lexsort((cols["feature"], cols["kind"], cols["time"], cols["cust"]))
    cols = {k: v[order] for k, v in cols.items()}
    return pa.Table.from_arrays(
        [
            pa.array(cust.ids[lo:]).take(pa.array(cols["cust"])),
            pa.array(cols["time"], type=pa.timestamp("us", tz="UTC")),
            pa.array(np.array(EVENT_TYPES)).take(pa.array(cols["kind"])),
            _coded(FEATURES, cols["feature"]),
            pa.array(cols["amount"], type=pa.float64(), mask=np.isnan(cols["amount"])),
            _coded(SEVERITIES, cols["severity"]),
        ],
        schema=EVENTS_SCHEMA,
    )


def _coded(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """String array from integer codes into ``values``; negative codes become null."""
    return pa.array(np.array(values)).take(pa.array(codes, mask=codes < 0))


def _hazard_table(ch: _Chunk, ids: np.ndarray, signup_day: np.ndarray, cal: _Calendar) -> pa.Table:
    """Per customer and 7-day block from ``start``: summed daily hazard and days at risk.

    ``hazard`` sums the daily hazard over the block's days from the signup day on, including days
    after a cancellation (the hazard the customer would have had if still subscribed: the state
    keeps evolving, only the events stop), so that oracle probabilities over a window are not
    cut short by the cancellation they predict. ``at_risk_days`` counts the block's days from
    signup up to and including the cancellation day; summing ``hazard`` over at-risk days only is
    impossible from this table, by design.
    """
    n_days, n = ch.active.shape
    n_weeks = -(-n_days // _WEEK_D)
    signed = np.zeros((n_weeks * _WEEK_D, n), bool)
    signed[:n_days] = np.arange(n_days)[:, None] >= signup_day[None, :]
    daily = np.zeros((n_weeks * _WEEK_D, n))
    daily[:n_days] = ch.hazard
    daily[~signed] = 0.0
    at_risk = np.zeros((n_weeks * _WEEK_D, n), np.int8)
    at_risk[:n_days] = ch.active
    weekly = daily.reshape(n_weeks, _WEEK_D, n).sum(axis=1).T
    risk_days = at_risk.reshape(n_weeks, _WEEK_D, n).sum(axis=1, dtype=np.int8).T
    keep = signed.reshape(n_weeks, _WEEK_D, n).any(axis=1).T
    cust, week = np.nonzero(keep)
    start_day = (np.datetime64(cal.start, "D") - np.datetime64(0, "D")).astype(np.int64)
    return pa.Table.from_arrays(
        [
            pa.array(ids).take(pa.array(cust)),
            pa.array((start_day + _WEEK_D * week).astype(np.int32), type=pa.date32()),
            pa.array(weekly[keep].astype(np.float32)),
            pa.array(risk_days[keep]),
        ],
        schema=HAZARD_SCHEMA,
    )


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` only on success."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _iso(epoch_s: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC strings (``2025-03-04T09:12:00Z``) from epoch seconds."""
    return np.datetime_as_string(epoch_s.astype("datetime64[s]"), unit="s", timezone="UTC")


def _customers_frame(cust: _Customers, out: _Outcome, cal: _Calendar) -> pd.DataFrame:
    """The customer table: signup/churn times, plan, current MRR, owner, segment, contact."""
    signup = cal.start_epoch_s + cust.signup_day * _DAY_S + cust.signup_sec
    churn = cal.start_epoch_s + out.churn_day * _DAY_S + out.churn_sec
    churned_at = np.where(out.churn_day >= 0, _iso(churn), "")
    return pd.DataFrame(
        {
            "customer_id": cust.ids,
            "signup_at": _iso(signup),
            "churned_at": churned_at,
            "plan": np.array(PLANS)[cust.plan],
            "mrr": np.char.mod("%.2f", out.mrr),
            "owner": np.array(OWNERS)[cust.owner],
            "segment": np.array(SEGMENTS)[cust.segment],
            "contact_name": cust.contact_name,
            "contact_email": cust.contact_email,
        }
    )


def _readme(n: int, seed: int, start: date, end: date, n_events: int, n_churned: int) -> str:
    """Plain-text description of the generator run and its parameters."""
    params = "\n".join(f"  {k} = {v}" for k, v in asdict(PARAMS).items())
    return (
        "Simulated subscription business (pipeline.demo.write_demo_data).\n\n"
        f"customers: {n}\nseed: {seed}\nperiod: [{start}, {end}) UTC\n"
        f"events: {n_events}\nchurned customers: {n_churned}\n\n"
        "Files:\n"
        "  events.parquet  activity log: customer_id, occurred_at (UTC), event_type, feature,\n"
        "                  amount, severity; sorted by customer then time. On purpose it holds\n"
        "                  ~1% unmapped 'newsletter_opened' events and ~0.01% exact duplicates.\n"
        "  customers.csv   one row per customer; times ISO 8601 UTC; churned_at empty while\n"
        "                  active; mrr is the current (or last) MRR; contact_* are fake.\n"
        "  hazard.parquet  true daily cancellation hazard, summed per customer over 7-day blocks\n"
        "                  from the period start (week_start), from the signup day to the end of\n"
        "                  the period. After a cancellation it is the hazard the customer would\n"
        "                  have had if still subscribed (so oracle probabilities are not cut\n"
        "                  short); at_risk_days counts the block's days from signup to the\n"
        "                  cancellation day. See pipeline.demo.oracle_probability.\n\n"
        "A latent engagement state (AR(1) with daily persistence state_phi, plus bad-support\n"
        "shocks) drives logins, feature use and breadth, tickets and complaints; a separate\n"
        "payment-risk trait drives failed charges. The hazard rises with low engagement, narrow\n"
        "feature use, recent complaints and failed payments, in onboarding and in the 30 days\n"
        "before each anniversary of annual plans. Invoices are monthly on the billing day\n"
        "(signup day of month, at most 28) with amount = MRR; MRR moves by up/downgrades.\n\n"
        f"Parameters:\n{params}\n"
    )


def write_demo_data(
    out_dir: Path,
    n_customers: int = 20_000,
    seed: int = 42,
    start: date = date(2024, 11, 1),
    end: date = date(2026, 11, 1),
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Simulate ``n_customers`` over ``[start, end)`` (UTC days) and write the demo files.

    Writes ``events.parquet``, ``customers.csv``, ``hazard.parquet`` and ``README.txt`` into
    ``out_dir`` (created if needed), each atomically. Customers are simulated in fixed chunks of
    8192; ``progress(done_chunks, total_chunks)`` is called after each. Same arguments give
    byte-identical files.
    """
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cal = _calendar(start, end, PARAMS)
    cust = _draw_customers(n_customers, seed, cal, PARAMS)
    n_chunks = -(-n_customers // _CHUNK)
    files = {
        "events": out_dir / "events.parquet",
        "customers": out_dir / "customers.csv",
        "hazard": out_dir / "hazard.parquet",
        "readme": out_dir / "README.txt",
    }
    logger.info("simulating %d customers over %s..%s (seed %d)", n_customers, start, end, seed)
    outcomes: list[_Outcome] = []
    n_events = 0
    with (
        _atomic(files["events"]) as ev_tmp,
        _atomic(files["hazard"]) as hz_tmp,
        pq.ParquetWriter(ev_tmp, EVENTS_SCHEMA, compression="zstd") as ev_writer,
        pq.ParquetWriter(
            hz_tmp,
            HAZARD_SCHEMA,
            compression="zstd",
            use_dictionary=["customer_id", "week_start", "at_risk_days"],
            use_byte_stream_split=["hazard"],
        ) as hz_writer,
    ):
        if progress is not None:
            progress(0, n_chunks)
        for i in range(n_chunks):
            lo, hi = i * _CHUNK, min((i + 1) * _CHUNK, n_customers)
            rng = _rng(seed, 1, i)
            chunk = _simulate_chunk(cust, lo, hi, cal, rng, PARAMS)
            events = _event_table(rng, chunk, cust, lo, cal, PARAMS)
            ev_writer.write_table(events, row_group_size=1 << 20)
            hz_writer.write_table(
                _hazard_table(chunk, cust.ids[lo:hi], cust.signup_day[lo:hi], cal)
            )
            n_events += events.num_rows
            outcomes.append(chunk.outcome)
            del chunk, events
            if progress is not None:
                progress(i + 1, n_chunks)
    outcome = _Outcome(
        *(
            np.concatenate([getattr(o, f) for o in outcomes])
            for f in ("churn_day", "churn_sec", "mrr")
        )
    )
    n_churned = int((outcome.churn_day >= 0).sum())
    with _atomic(files["customers"]) as tmp:
        _customers_frame(cust, outcome, cal).to_csv(tmp, index=False, lineterminator="\n")
    with _atomic(files["readme"]) as tmp:
        tmp.write_text(_readme(n_customers, seed, start, end, n_events, n_churned))
    logger.info("wrote %d events, %d churned customers to %s", n_events, n_churned, out_dir)
    return DemoSummary(out_dir, n_customers, n_events, n_churned, start, end, files)


def _days_since_epoch(values: pd.Series) -> np.ndarray:
    """Float UTC days since 1970-01-01 of dates or timestamps (naive values are taken as UTC)."""
    ts = pd.to_datetime(values, utc=True).dt.tz_localize(None)
    return np.asarray(ts.to_numpy(), dtype="datetime64[us]").astype(np.int64) / (_DAY_S * 1e6)


_KEY_SPAN = 1e6
"""Days per customer code in the (code, day) search key; days since 1970 stay far below."""


def _cumulative_hazard(
    code: np.ndarray,
    week: np.ndarray,
    before: np.ndarray,
    value: np.ndarray,
    q_code: np.ndarray,
    q_day: np.ndarray,
) -> np.ndarray:
    """Hazard of customer ``q_code`` summed from its first block up to day ``q_day`` (exclusive).

    Blocks (``code``, ``week`` start day, ``value``, ``before`` = sum of the customer's earlier
    blocks) must be sorted by code then week; a block counts pro rata for the days before
    ``q_day``. Unknown customers (code -1) get 0.
    """
    if len(code) == 0:
        return np.zeros(len(q_day))
    pos = np.searchsorted(code * _KEY_SPAN + week, q_code * _KEY_SPAN + q_day, side="right") - 1
    safe = np.maximum(pos, 0)
    hit = (pos >= 0) & (q_code >= 0) & (code[safe] == q_code)
    share = np.clip((q_day - week[safe]) / _WEEK_D, 0.0, 1.0)
    return np.where(hit, before[safe] + value[safe] * share, 0.0)


def oracle_probability(hazard: pd.DataFrame, keys: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """True probability of the churn label in ``[as_of, as_of + horizon_days)`` per row of keys.

    A retail oracle file (``purchase_rate_per_day`` column, see ``pipeline.demo_retail``) gives
    the probability of no purchase in the window; a subscription hazard file that of cancelling.
    """
    from pipeline import demo_retail

    if demo_retail.RATE_COLUMN in hazard.columns:
        return demo_retail.no_purchase_probability(hazard, keys, horizon_days)
    return _cancellation_probability(hazard, keys, horizon_days)


def _cancellation_probability(
    hazard: pd.DataFrame, keys: pd.DataFrame, horizon_days: int
) -> np.ndarray:
    """True probability of cancelling in ``[as_of, as_of + horizon_days)`` for each row of keys.

    ``hazard`` is the stored table (``customer_id``, ``week_start``, ``hazard``: the daily
    hazard summed over a 7-day block); ``keys`` has ``customer_id`` and ``as_of`` (UTC-midnight
    timestamps; naive ones are taken as UTC). Returns ``1 - exp(-H)`` where ``H`` is the hazard
    summed over the window, each block pro-rated linearly by the days it shares with the window
    (so the shorter last block of the period is spread over 7 days). Customers without hazard
    rows get 0. Vectorised: per-customer cumulative hazard plus a binary search per key.
    """
    if horizon_days < 0:
        raise ValueError("horizon_days must be non-negative")
    customer = hazard["customer_id"].astype("string")
    ids = pd.Index(customer.unique())
    code = ids.get_indexer(customer).astype(np.float64)
    week = _days_since_epoch(hazard["week_start"])
    value = hazard["hazard"].to_numpy(dtype=np.float64)
    order = np.lexsort((week, code))
    code, week, value = code[order], week[order], value[order]
    before = np.cumsum(value) - value
    first = np.flatnonzero(np.r_[True, code[1:] != code[:-1]]) if len(code) else np.zeros(0, int)
    before -= np.repeat(before[first], np.diff(np.r_[first, len(code)]))
    q_code = ids.get_indexer(keys["customer_id"].astype("string")).astype(np.float64)
    q_day = _days_since_epoch(keys["as_of"])
    total = _cumulative_hazard(code, week, before, value, q_code, q_day + horizon_days)
    total -= _cumulative_hazard(code, week, before, value, q_code, q_day)
    return -np.expm1(-np.maximum(total, 0.0))
