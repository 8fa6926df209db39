"""BG/NBD baseline: P(no purchase in the horizon) from frequency, recency and T.

The beta-geometric / negative binomial model of Fader, Hardie & Lee (2005), "Counting your
customers the easy way: an alternative to the Pareto/NBD model", Marketing Science 24(2), 275-284.
While alive a customer buys at Poisson rate λ ~ Gamma(r, α); after each repeat purchase they drop
out for good with probability p ~ Beta(a, b). A customer with x repeat purchases, the last at t_x,
observed until T (all measured from the first purchase) has the likelihood (FHL 2005, eq. 6)

    L(r, α, a, b | x, t_x, T) = Γ(r+x) α^r / Γ(r) · [ B(a, b+x) / B(a, b) / (α+T)^(r+x)
                                + [x > 0] · B(a+1, b+x-1) / B(a, b) / (α+t_x)^(r+x) ]

(first term: still alive at T; second: dropped out right after the x-th purchase). It is computed
in logs (``gammaln``, ``betaln``, ``logaddexp``); the second term exists only for x > 0.

Units: daily grain, in days. With as_of day A and first purchase day d0 < A: ``T = A - d0``,
``recency = t_x = last purchase day - d0`` and ``frequency = x = distinct purchase days - 1``.
So x = 0 implies t_x = 0 and x > 0 implies t_x ≥ 1 (two distinct days); inputs breaking either
rule are rejected, as they mean the columns do not follow this convention. Continuous times (as in
the simulated data of the tests) are accepted too: the model itself is in continuous time.
"""

from __future__ import annotations

import logging
from numbers import Real

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

log = logging.getLogger(__name__)

PARAM_NAMES = ("r", "alpha", "a", "b")
MIN_CUSTOMERS = 20
LOG_BOUND = 15.0  # log-parameters stay in [-15, 15]: e^±15 covers any rate scale in days
RFM_COLUMNS = (
    "repeat_purchases_lifetime",
    "days_since_first_purchase",
    "days_since_last_purchase",
)


def log_likelihood(params: dict, frequency, recency, T) -> np.ndarray:
    """Per-customer log L(r, α, a, b | x, t_x, T), FHL (2005) eq. 6 (see the module docstring)."""
    common, alive, dropped = _log_terms(params, frequency, recency, T)
    return common + np.logaddexp(alive, dropped)


def _log_terms(params: dict, frequency, recency, T) -> tuple[np.ndarray, ...]:
    """log of the factor Γ(r+x) α^r / (Γ(r) B(a, b)), of the alive and of the dropped term."""
    r, alpha, a, b = (params[name] for name in PARAM_NAMES)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
    ux, at = np.unique(x, return_inverse=True)  # special functions: once per distinct x
    x_pos = np.maximum(ux, 1.0)  # keeps B(a+1, b+x-1) finite where x = 0; masked out below
    common = (gammaln(r + ux) - gammaln(r) + r * np.log(alpha) - betaln(a, b))[at]
    alive = betaln(a, b + ux)[at] - (r + x) * np.log(alpha + T)
    dropped = betaln(a + 1, b + x_pos - 1)[at] - (r + x) * np.log(alpha + t_x)
    return common, alive, np.where(x > 0, dropped, -np.inf)


def log_likelihood_gradient(params: dict, frequency, recency, T) -> np.ndarray:
    """d log L / d (log r, log α, log a, log b) per customer, shape (n, 4); ψ = digamma."""
    r, alpha, a, b = (params[name] for name in PARAM_NAMES)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
    _, alive, dropped = _log_terms(params, x, t_x, T)
    w_alive = np.exp(alive - np.logaddexp(alive, dropped))  # share of L from the alive term
    w_dropped = 1.0 - w_alive
    ux, at = np.unique(x, return_inverse=True)
    psi_r, psi_ab, psi_b = (digamma(v + ux)[at] for v in (r, a + b, b))
    psi_b_dropped = digamma(b + np.maximum(ux, 1.0) - 1)[at]  # ψ(b+x-1), used where x > 0
    log_alive, log_dropped = np.log(alpha + T), np.log(alpha + t_x)
    d_r = psi_r - digamma(r) + np.log(alpha) - w_alive * log_alive - w_dropped * log_dropped
    d_alpha = r / alpha - (r + x) * (w_alive / (alpha + T) + w_dropped / (alpha + t_x))
    d_a = digamma(a + b) - digamma(a) - psi_ab + w_alive * digamma(a) + w_dropped * digamma(a + 1)
    d_b = digamma(a + b) - digamma(b) - psi_ab + w_alive * psi_b
    d_b = d_b + np.where(x > 0, w_dropped * psi_b_dropped, 0.0)
    return np.column_stack([d_r, d_alpha, d_a, d_b]) * np.array([r, alpha, a, b])


def check_rfm(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``frequency, recency, T`` as float arrays, or ValueError naming the first bad row."""
    x, t_x, T = (np.asarray(v, dtype=float).reshape(-1) for v in (frequency, recency, T))
    if not len(x) == len(t_x) == len(T):
        raise ValueError(
            f"frequency, recency and T must have one value per customer; got lengths "
            f"{len(x)}, {len(t_x)}, {len(T)}"
        )
    for bad, what in _rfm_rules(x, t_x, T):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{what} in {int(bad.sum())} of {len(x)} rows (first at position {i}: "
                f"frequency={x[i]}, recency={t_x[i]}, T={T[i]}); expected frequency = distinct "
                f"purchase days - 1, recency = last - first purchase day, T = as_of - first "
                f"purchase day, in days"
            )
    return x, t_x, T


def _rfm_rules(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """(mask of offending rows, what is wrong) for each rule of the RFM convention."""
    finite = np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T)
    with np.errstate(invalid="ignore"):
        return [
            (~finite, "missing or infinite values"),
            (finite & ((x < 0) | (t_x < 0) | (T < 0)), "negative values"),
            (finite & (x != np.round(x)), "non-integer frequency"),
            (finite & (t_x > T), "recency greater than T"),
            (finite & (x == 0) & (t_x != 0), "recency > 0 with frequency 0 (one purchase day)"),
            (finite & (x > 0) & (t_x == 0), "recency 0 with frequency > 0 (repeat purchases)"),
        ]


class BetaGeoModel(BaseEstimator):
    """BG/NBD (Fader, Hardie & Lee 2005) fitted by maximum likelihood, like lifetimes' fitters.

    ``penalizer`` adds ``penalizer · Σ log(θ)²`` to the mean negative log-likelihood (shrinks
    each of r, α, a, b towards 1; 0 = plain maximum likelihood). ``max_iter`` bounds L-BFGS-B.
    Learned: ``params_`` {"r", "alpha", "a", "b"} (α in days), ``log_likelihood_`` (sum over
    customers, at ``params_``), ``converged_`` (the optimiser's success flag).
    """

    def __init__(self, penalizer: float = 0.0, max_iter: int = 200) -> None:
        self.penalizer = penalizer
        self.max_iter = max_iter

    def fit(self, frequency, recency, T) -> BetaGeoModel:
        """Maximise the likelihood over log-parameters; identical rows are fitted once, weighted."""
        self._check_settings()
        x, t_x, T = check_rfm(frequency, recency, T)
        if len(x) < MIN_CUSTOMERS:
            raise ValueError(
                f"BG/NBD needs at least {MIN_CUSTOMERS} customers with a purchase to fit, "
                f"got {len(x)}; use a longer history or skip this baseline"
            )
        rows, weights = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
        result = minimize(
            self._objective,
            _start(x, T),
            args=(rows.T, weights / weights.sum()),
            method="L-BFGS-B",
            jac=True,
            bounds=[(-LOG_BOUND, LOG_BOUND)] * len(PARAM_NAMES),
            options={"maxiter": self.max_iter},
        )
        self.params_ = dict(zip(PARAM_NAMES, np.exp(result.x).tolist(), strict=True))
        self.log_likelihood_ = float(weights @ log_likelihood(self.params_, *rows.T))
        self.converged_ = bool(result.success)
        if not self.converged_:
            log.warning("BG/NBD fit did not converge: %s; params %s", result.message, self.params_)
        return self

    def _check_settings(self) -> None:
        if not (isinstance(self.penalizer, Real) and 0 <= self.penalizer < np.inf):
            raise ValueError(f"penalizer must be a number >= 0, got {self.penalizer!r}")
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")

    def _objective(self, log_params: np.ndarray, rows: np.ndarray, weights: np.ndarray):
        """Mean negative log-likelihood per customer plus the penalty, and its gradient."""
        params = dict(zip(PARAM_NAMES, np.exp(log_params), strict=True))
        value = -float(weights @ log_likelihood(params, *rows))
        gradient = -weights @ log_likelihood_gradient(params, *rows)
        penalty = self.penalizer * float(log_params @ log_params)
        return value + penalty, gradient + 2 * self.penalizer * log_params

    def _posterior(self, frequency, recency, T) -> tuple[np.ndarray, ...]:
        """x, T and the odds ratio D = [x>0] · a/(b+x-1) · ((α+T)/(α+t_x))^(r+x)."""
        check_is_fitted(self, "params_")
        x, t_x, T = check_rfm(frequency, recency, T)
        r, alpha, a, b = (self.params_[name] for name in PARAM_NAMES)
        log_odds = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        return x, T, np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)

    def prob_alive(self, frequency, recency, T) -> np.ndarray:
        """P(alive at T | x, t_x, T) = 1 / (1 + D) (FHL 2005, eq. 11); 1 when x = 0."""
        _, _, odds = self._posterior(frequency, recency, T)
        return np.clip(1.0 / (1.0 + odds), 0.0, 1.0)

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """E[purchases in (T, T+t] | x, t_x, T] (FHL 2005, eq. 10); t in days (a ≠ 1)."""
        x, T, odds = self._posterior(frequency, recency, T)
        r, alpha, a, b = (self.params_[name] for name in PARAM_NAMES)
        t = np.asarray(t, dtype=float)
        decay = ((alpha + T) / (alpha + T + t)) ** (r + x)
        tail = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        expected = (a + b + x - 1) / (a - 1) * (1 - decay * tail) / (1 + odds)
        return np.maximum(expected, 0.0)

    def prob_no_purchase(self, t, frequency, recency, T) -> np.ndarray:
        """P(no purchase in (T, T+t] | x, t_x, T) = (1 - P_alive) + P_alive · ((α+T)/(α+T+t))^(r+x).

        A customer alive at T can only drop out right after a purchase, so "no purchase in t"
        means either gone already, or alive with no Poisson event in t, where
        λ | alive ~ Gamma(r+x, α+T).
        """
        x, T, odds = self._posterior(frequency, recency, T)
        r, alpha = self.params_["r"], self.params_["alpha"]
        p_alive = 1.0 / (1.0 + odds)
        quiet = ((alpha + T) / (alpha + T + np.asarray(t, dtype=float))) ** (r + x)
        return np.clip(1.0 - p_alive + p_alive * quiet, 0.0, 1.0)


def _start(x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Log starting values: r = a = b = 1 and α matching the mean purchase rate."""
    alpha = max(float(T.mean()), 1.0) / (1.0 + float(x.mean()))
    return np.log([1.0, alpha, 1.0, 1.0])


def rfm_from_features(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frequency, recency, T (days, daily grain) from the lifetime purchase features.

    frequency = ``repeat_purchases_lifetime``; T = ``days_since_first_purchase``;
    recency = ``days_since_first_purchase - days_since_last_purchase``. Day counts are taken to
    daily grain first (``ceil``: a purchase at any time of day d0 is A - d0 days before the
    midnight as_of A), so the features may be exact day counts or fractional timestamps' ages.
    Customers with no purchase before as_of (both day columns NaN) get frequency 0, recency 0,
    T 0: a customer whose first purchase would be at as_of (see ``bgnbd_baseline``).
    """
    missing = [c for c in RFM_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"BG/NBD needs the purchase features {missing}; enable the lifetime purchase features"
        )
    first, last = (_days(frame, c) for c in RFM_COLUMNS[1:])
    if (np.isnan(first) != np.isnan(last)).any():
        i = int(np.flatnonzero(np.isnan(first) != np.isnan(last))[0])
        raise ValueError(
            f"row {i}: days_since_first_purchase={first[i]} and days_since_last_purchase="
            f"{last[i]} must both be NaN (no purchase) or both be set"
        )
    frequency = frame["repeat_purchases_lifetime"].to_numpy(dtype=float, na_value=np.nan)
    none = np.isnan(first)
    T = np.where(none, 0.0, first)
    recency = np.where(none, 0.0, first - last)
    return np.where(none, 0.0, frequency), recency, T


def _days(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A days-since column at daily grain (see ``rfm_from_features``)."""
    values = frame[column].to_numpy(dtype=float, na_value=np.nan)
    return np.ceil(values - 1e-9)


def bgnbd_baseline(train: pd.DataFrame, test: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """P(no purchase in [as_of, as_of + horizon_days)) for each test row: the churn score.

    Fitted on the customers with a purchase at the latest as_of of ``train``: the BG/NBD
    likelihood is one term per customer, and the latest date holds each customer once with the
    longest history. Stacking several as_of dates would count the same purchases several times
    (overweighting long-standing customers and understating the uncertainty). Test rows with no
    purchase before as_of are scored as x = 0, t_x = 0, T = 0: alive, λ ~ Gamma(r, α), so
    P = (α / (α + h))^r, the chance that a customer just acquired stays silent for the horizon.
    The rows are the base at that date: customers the base leaves out (e.g. long lapsed) are
    missing from the fit, which tilts the parameters towards active customers.
    """
    latest = train[train["as_of"] == train["as_of"].max()]
    x, t_x, T = rfm_from_features(latest)
    buyers = latest["days_since_first_purchase"].notna().to_numpy()
    model = BetaGeoModel().fit(x[buyers], t_x[buyers], T[buyers])
    log.info("BG/NBD baseline on %d customers: %s", int(buyers.sum()), model.params_)
    return model.prob_no_purchase(float(horizon_days), *rfm_from_features(test))
