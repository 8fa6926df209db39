"""Monitoring: PSI on literal distributions, label-free quality estimates against simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline import monitor

pytestmark = pytest.mark.code


def test_psi_of_literal_shares_is_exact() -> None:
    expected = [0.5, 0.3, 0.2]
    actual = [0.4, 0.3, 0.3]
    value = 0.1 * math.log(0.4 / 0.5) * -1 + 0.1 * math.log(0.3 / 0.2)
    assert monitor.psi(expected, actual) == pytest.approx(value, abs=1e-12)
    assert monitor.psi(expected, expected) == 0.0


def test_psi_floors_an_empty_bin() -> None:
    value = monitor.psi([0.5, 0.5, 0.0], [0.5, 0.25, 0.25])
    floor = monitor.PSI_FLOOR
    exact = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - floor) * math.log(0.25 / floor)
    assert value == pytest.approx(exact, abs=1e-12)


def test_numeric_shares_put_ties_left_and_missing_last() -> None:
    shares = monitor.numeric_shares(np.array([0, 0, 1, 2, 5, np.nan, np.inf, 2]), [0.0, 2.0])
    # bins: (-inf, 0], (0, 2], (2, inf), missing (NaN and inf)
    assert shares.tolist() == [2 / 8, 3 / 8, 1 / 8, 2 / 8]


def test_quantile_edges_keep_a_tied_value_in_its_own_bin() -> None:
    values = np.array([0] * 60 + list(range(1, 41)), dtype=float)
    edges = monitor.quantile_edges(values, n_bins=4)
    assert edges[0] == 0.0
    assert monitor.numeric_shares(values, edges)[0] == 0.6


def test_category_shares_report_new_categories_and_missing_values() -> None:
    series = pd.Series(["a", "b", "b", None, "z"], dtype="str")
    shares, new = monitor.category_shares(series, ["a", "b", "c"])
    assert shares.tolist() == [0.2, 0.4, 0.0, 0.2]
    assert new == ["z"]


def test_drift_table_flags_the_shifted_feature_only() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "logins_30d": rng.poisson(10, 5000).astype(float),
            "plan": rng.choice(["basic", "pro"], 5000),
        }
    )
    today = train.copy()
    today["logins_30d"] = np.floor(today["logins_30d"] / 2)
    profile = monitor.reference_profile(train, ["logins_30d", "plan"])
    table = monitor.drift_table(profile, today)
    assert table["feature"].tolist() == ["logins_30d", "plan"]
    assert table["status"].tolist() == ["alert", "ok"]
    assert table["psi"].iloc[1] == 0.0
    message = f"input drift on 'logins_30d': PSI {table['psi'][0]:.3f}"
    assert monitor.drift_alerts(table) == [message]


def test_categorical_drift_lists_new_and_vanished_categories() -> None:
    profile = monitor.feature_profile(pd.Series(["a", "b", "a"], dtype="str"))
    drift = monitor.feature_drift(profile, pd.Series(["a", "c"], dtype="str"))
    assert drift["new_categories"] == ["c"]
    assert drift["missing_categories"] == ["b"]


def test_expected_roc_auc_matches_labels_drawn_from_the_probabilities() -> None:
    rng = np.random.default_rng(7)
    p = rng.beta(0.6, 3.0, 20_000)
    estimate = monitor.expected_roc_auc(p)
    realised = [roc_auc_score(rng.random(len(p)) < p, p) for _ in range(20)]
    # The spread of one realisation is about 0.004 here; the mean of 20 is within ~0.001.
    assert abs(np.mean(realised) - estimate) < 0.003
    assert all(abs(r - estimate) < 0.02 for r in realised)


def test_expected_roc_auc_of_a_literal_case() -> None:
    # Scores 0.8 and 0.2: P(pos) 0.8 / 0.2. Expected TPR/FPR points (0,0), (0.8, 0.2), (1, 1).
    area = 0.5 * 0.2 * 0.8 + 0.8 * 0.8 + 0.5 * 0.8 * 0.2
    assert monitor.expected_roc_auc(np.array([0.8, 0.2])) == pytest.approx(area, abs=1e-12)
    assert math.isnan(monitor.expected_roc_auc(np.zeros(3)))


def test_expected_quality_per_tier_and_alert() -> None:
    p = np.array([0.9, 0.7, 0.1, 0.1])
    tier = np.array(["red", "red", "green", "green"])
    quality = monitor.expected_quality(p, tier)
    assert quality["expected_churn_rate"] == pytest.approx(0.45)
    assert quality["expected_precision_red"] == pytest.approx(0.8)
    assert quality["expected_precision_green"] == pytest.approx(0.1)
    assert monitor.quality_alerts(quality, backtest_roc_auc=quality["expected_roc_auc"]) == []
    alerts = monitor.quality_alerts(quality, backtest_roc_auc=quality["expected_roc_auc"] + 0.1)
    assert len(alerts) == 1 and "below the backtest" in alerts[0]


def test_realised_quality_per_tier() -> None:
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.1])
    tier = np.array(["red", "orange", "orange", "green"])
    quality = monitor.realised_quality(y, p, tier)
    assert quality["roc_auc"] == 1.0
    assert quality["churn_rate_orange"] == 0.5
    assert quality["brier"] == pytest.approx((0.01 + 0.16 + 0.16 + 0.01) / 4)
