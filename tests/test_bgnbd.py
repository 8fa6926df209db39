"""BG/NBD baseline: exact likelihood, parameter recovery, predictions against simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.bgnbd import (
    BetaGeoModel,
    bgnbd_baseline,
    log_likelihood,
    log_likelihood_gradient,
    rfm_from_features,
)

# A frequent-shopper population in days: λ mean 1/30 per day, dropout p mean 0.25 per purchase.
# Over 180-365 days of observation: about 4.3 repeat purchase days on average, 90 % repeaters.
TRUE = {"r": 1.0, "alpha": 30.0, "a": 0.5, "b": 1.5}
N_RECOVERY = 50_000


def latent(rng: np.random.Generator, n: int, params: dict, t_lo=180.0, t_hi=365.0):
    """λ, p, observation length T, purchases K the Poisson process makes in (0, T], and the
    index G of the purchase after which the customer drops out (geometric in p)."""
    lam = rng.gamma(params["r"], 1.0 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    T = rng.uniform(t_lo, t_hi, n)
    return lam, p, T, rng.poisson(lam * T), rng.geometric(p)


def observe(rng: np.random.Generator, T: np.ndarray, k: np.ndarray, g: np.ndarray):
    """Continuous x = min(K, G) and t_x, the x-th of K uniform arrival times on (0, T]."""
    x = np.minimum(k, g)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), k - x + 1), 0.0)
    return x.astype(float), t_x, T


def simulate(seed: int, n: int, params: dict):
    rng = np.random.default_rng(seed)
    _, _, T, k, g = latent(rng, n, params)
    return observe(rng, T, k, g)


def simulate_daily(seed: int, n: int, params: dict):
    """The same process seen at daily grain: first purchase at a random time of day 0, as_of
    the midnight after T, frequency = distinct purchase days - 1 (same-day purchases merge)."""
    rng = np.random.default_rng(seed)
    _, _, T, k, g = latent(rng, n, params)
    kept = np.minimum(k, g)
    start = rng.uniform(0.0, 1.0, n)
    customer = np.repeat(np.arange(n), k)
    times = rng.uniform(0.0, 1.0, k.sum()) * T[customer]
    order = np.lexsort((times, customer))
    customer, times = customer[order], times[order]
    rank = np.arange(len(customer)) - np.repeat(np.cumsum(k) - k, k)
    keep = rank < kept[customer]
    days = np.column_stack(
        [
            np.r_[np.arange(n), customer[keep]],
            np.r_[np.zeros(n), np.floor(start[customer[keep]] + times[keep])],
        ]
    )
    days = np.unique(days, axis=0)
    owner = days[:, 0].astype(int)
    last = np.zeros(n)
    np.maximum.at(last, owner, days[:, 1])
    return np.bincount(owner, minlength=n) - 1.0, last, np.ceil(start + T)


def fitted(params: dict) -> BetaGeoModel:
    """A model at given parameters, to test the closed forms on literal inputs."""
    model = BetaGeoModel()
    model.params_ = dict(params)
    return model


def assert_within(params: dict, truth: dict, tolerance: float) -> None:
    errors = {k: params[k] / truth[k] - 1 for k in truth}
    assert all(abs(e) < tolerance for e in errors.values()), errors


@pytest.mark.model
def test_recovers_known_parameters_from_continuous_time_data():
    model = BetaGeoModel().fit(*simulate(7, N_RECOVERY, TRUE))
    assert model.converged_
    assert_within(model.params_, TRUE, 0.10)


@pytest.mark.model
def test_recovers_parameters_within_15_percent_at_daily_grain():
    x, t_x, T = simulate_daily(11, N_RECOVERY, TRUE)
    assert np.array_equal(x, np.round(x)) and (t_x[x > 0] >= 1).all() and (t_x[x == 0] == 0).all()
    model = BetaGeoModel().fit(x, t_x, T)
    assert model.converged_
    assert_within(model.params_, TRUE, 0.15)


@pytest.mark.code
def test_log_likelihood_equals_hand_computation():
    params = {"r": 0.5, "alpha": 3.0, "a": 0.7, "b": 2.0}
    rows = [(0, 0.0, 10.0), (2, 5.0, 12.0), (1, 0.5, 1.0)]

    def beta(p, q):
        return math.gamma(p) * math.gamma(q) / math.gamma(p + q)

    def by_hand(x, t_x, T):
        r, al, a, b = params.values()
        nbd = math.gamma(r + x) * al**r / math.gamma(r)
        alive = beta(a, b + x) / beta(a, b) * nbd / (al + T) ** (r + x)
        dropped = beta(a + 1, b + x - 1) / beta(a, b) * nbd / (al + t_x) ** (r + x) if x else 0
        return math.log(alive + dropped)

    got = log_likelihood(params, *np.array(rows).T)
    assert got == pytest.approx([by_hand(*row) for row in rows], abs=1e-9, rel=0)
    assert got[0] == pytest.approx(0.5 * math.log(3 / 13), abs=1e-12)  # x = 0: (α/(α+T))^r


@pytest.mark.code
def test_gradient_matches_finite_differences_of_the_log_likelihood():
    params = {"r": 0.5, "alpha": 3.0, "a": 0.7, "b": 0.6}  # b < 1: x = 0 must not touch ψ(b-1)
    x, t_x, T = np.array([[0, 0.0, 10.0], [2, 5.0, 12.0], [1, 0.5, 1.0], [7, 80.0, 90.0]]).T
    names, step = list(params), 1e-6
    numeric = []
    for name in names:
        up, down = dict(params), dict(params)
        up[name], down[name] = params[name] * math.exp(step), params[name] * math.exp(-step)
        diff = log_likelihood(up, x, t_x, T) - log_likelihood(down, x, t_x, T)
        numeric.append(diff / (2 * step))
    got = log_likelihood_gradient(params, x, t_x, T)
    np.testing.assert_allclose(got, np.column_stack(numeric), rtol=1e-6, atol=1e-8)


@pytest.mark.model
def test_fit_weights_identical_rows_and_reports_total_log_likelihood():
    x, t_x, T = simulate_daily(3, 2_000, TRUE)
    model = BetaGeoModel().fit(x, t_x, T)
    assert model.log_likelihood_ == pytest.approx(log_likelihood(model.params_, x, t_x, T).sum())
    assert len(np.unique(np.column_stack([x, t_x, T]), axis=0)) < len(x)
    assert set(model.get_params()) == {"penalizer", "max_iter"}
    assert not hasattr(BetaGeoModel(), "params_")
    shrunk = BetaGeoModel(penalizer=100.0).fit(x, t_x, T).params_  # penalty on log θ: towards 1
    assert all(abs(math.log(v)) < 0.1 for v in shrunk.values()), shrunk


@pytest.mark.code
def test_prob_no_purchase_exact_for_one_time_buyers_and_long_silence():
    model = fitted(TRUE)
    got = model.prob_no_purchase(90.0, [0, 0], [0, 0], [0, 200])
    assert got == pytest.approx([(30 / 120) ** 1.0, (230 / 320) ** 1.0], abs=1e-12)
    # x = 3, last purchase on day 10, silent until day 3000: almost surely gone
    odds = 0.5 / (1.5 + 2) * (3030 / 40) ** 4
    alive = 1 / (1 + odds)
    expected = 1 - alive + alive * (3030 / 3120) ** 4
    assert model.prob_no_purchase(90.0, [3], [10], [3000]) == pytest.approx([expected], abs=1e-12)
    assert model.prob_alive([3, 0], [10, 0], [3000, 50]) == pytest.approx([alive, 1.0], abs=1e-12)


@pytest.mark.code
def test_prob_no_purchase_is_monotone_in_t_and_a_probability():
    model = fitted(TRUE)
    x, t_x, T = np.array([0, 1, 4, 4]), np.array([0, 30, 200, 20]), np.array([60, 100, 210, 210])
    curves = np.array([model.prob_no_purchase(t, x, t_x, T) for t in (0, 1, 7, 30, 90, 365, 1e5)])
    assert (np.diff(curves, axis=0) <= 0).all()
    assert curves[0] == pytest.approx(np.ones(4)) and (curves >= 0).all()


@pytest.mark.model
def test_predictions_match_simulation_of_the_fitted_process():
    """Law of total probability: on customers simulated from the fitted parameters, mean
    P(no purchase in 90 days) and mean E[purchases] equal the simulated outcomes, overall and
    within groups of the score."""
    params = BetaGeoModel().fit(*simulate(5, 5_000, TRUE)).params_
    rng = np.random.default_rng(23)
    lam, _, T, k, g = latent(rng, 60_000, params)
    x, t_x, T = observe(rng, T, k, g)
    alive = g > k
    future = np.where(alive, np.minimum(rng.poisson(lam * 90.0), g - k), 0)
    score = fitted(params).prob_no_purchase(90.0, x, t_x, T)
    expected = fitted(params).expected_purchases(90.0, x, t_x, T)
    groups = np.digitize(score, np.quantile(score, [0.2, 0.4, 0.6, 0.8]))
    for group in range(5):
        inside = groups == group
        silent = (future[inside] == 0).mean()
        error = math.sqrt(silent * (1 - silent) / inside.sum())
        assert abs(score[inside].mean() - silent) < 4 * error + 1e-3, group
    spread = future.std() / math.sqrt(len(future))
    assert abs(expected.mean() - future.mean()) < 4 * spread
    assert fitted(params).prob_alive(x, t_x, T).mean() == pytest.approx(alive.mean(), abs=0.01)


@pytest.mark.code
def test_rfm_from_features_daily_grain_and_no_purchase_rows():
    frame = pd.DataFrame(
        {
            "repeat_purchases_lifetime": [0, 2, 0, 5],
            "days_since_first_purchase": [10.0, 40.0, np.nan, 99.5],
            "days_since_last_purchase": [10.0, 3.0, np.nan, 0.25],
        }
    )
    frequency, recency, T = rfm_from_features(frame)
    np.testing.assert_array_equal(frequency, [0.0, 2.0, 0.0, 5.0])
    np.testing.assert_array_equal(recency, [0.0, 37.0, 0.0, 99.0])
    np.testing.assert_array_equal(T, [10.0, 40.0, 0.0, 100.0])


@pytest.mark.code
@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, -1], [2, 0], [5, 5], "negative values in 1 of 2 rows"),
        ([1, 1], [2, 6], [5, 5], "recency greater than T"),
        ([1, 2], [2, 0], [5, 5], "recency 0 with frequency > 0"),
        ([0, 1], [3, 2], [5, 5], "recency > 0 with frequency 0"),
        ([1, np.nan], [2, 0], [5, 5], "missing or infinite"),
        ([1.5, 1], [2, 2], [5, 5], "non-integer frequency"),
        ([1, 1], [2, 2], [5], "one value per customer"),
    ],
)
def test_invalid_inputs_are_rejected_by_name(frequency, recency, T, message):
    with pytest.raises(ValueError, match=message):
        fitted(TRUE).prob_alive(frequency, recency, T)


@pytest.mark.code
def test_fit_rejects_too_few_customers_bad_settings_and_missing_columns():
    with pytest.raises(ValueError, match="at least 20 customers"):
        BetaGeoModel().fit([1] * 19, [3] * 19, [9] * 19)
    with pytest.raises(ValueError, match="penalizer must be a number >= 0, got -1"):
        BetaGeoModel(penalizer=-1).fit([1] * 30, [3] * 30, [9] * 30)
    with pytest.raises(ValueError, match="days_since_last_purchase"):
        rfm_from_features(pd.DataFrame({"repeat_purchases_lifetime": [0]}))
    with pytest.raises(ValueError, match="must both be NaN"):
        rfm_from_features(
            pd.DataFrame(
                {
                    "repeat_purchases_lifetime": [0],
                    "days_since_first_purchase": [4.0],
                    "days_since_last_purchase": [np.nan],
                }
            )
        )


def feature_rows(seed: int, n: int, as_of: str) -> pd.DataFrame:
    x, t_x, T = simulate_daily(seed, n, TRUE)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "as_of": pd.Timestamp(as_of),
            "repeat_purchases_lifetime": x,
            "days_since_first_purchase": T,
            "days_since_last_purchase": T - t_x,
        }
    )


@pytest.mark.model
def test_baseline_fits_the_latest_train_date_and_scores_non_buyers_as_new():
    latest = feature_rows(1, 3_000, "2025-06-01")
    train = pd.concat([feature_rows(2, 3_000, "2025-03-01"), latest], ignore_index=True)
    test = feature_rows(3, 5, "2025-09-01")
    test.loc[4, ["days_since_first_purchase", "days_since_last_purchase"]] = np.nan
    test.loc[4, "repeat_purchases_lifetime"] = 0
    scores = bgnbd_baseline(train, test, horizon_days=90)
    direct = BetaGeoModel().fit(*rfm_from_features(latest))
    x, t_x, T = rfm_from_features(test)
    np.testing.assert_allclose(scores, direct.prob_no_purchase(90.0, x, t_x, T), rtol=1e-12)
    r, alpha = direct.params_["r"], direct.params_["alpha"]
    assert scores[4] == pytest.approx((alpha / (alpha + 90)) ** r, abs=1e-12)
