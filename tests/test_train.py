"""Model tests: the training job end to end on small data (backtest, production refit,
out-of-fold calibration, the champion gate), and calibration."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import demo_config

from pipeline.config import parse_config
from pipeline.metrics import METRICS
from pipeline.model import ModelBundle, ProbabilityCalibrator
from pipeline.train import run_training

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.demo import write_demo_data

    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, n_customers=3000, seed=11)
    return out


@pytest.fixture(scope="module")
def first_run(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        config = demo_config(root, demo_dir, train={"n_estimators": 200})
        result = run_training(config)
    return root, config, result


def test_a_first_training_run_becomes_champion_and_exports_a_verified_bundle(first_run):
    root, _, result = first_run
    assert result.promoted
    assert result.decision.startswith("promoted: beats rule_30d_inactive by")
    assert result.decision.endswith("no comparable champion")
    bundle = ModelBundle.load(root / "models" / "default" / "champion")
    assert bundle.card["mlflow_run_id"] == result.run_id
    assert bundle.card["model_version"] == result.version == "1"
    for scorer in ("model", "model_uncalibrated", "rule_30d_inactive", "logistic", "oracle"):
        for metric in METRICS:
            for stat in ("", "_std", "_min", "_max"):
                assert f"{scorer}_{metric}{stat}" in result.metrics, (scorer, metric, stat)
    assert "margin_roc_auc_vs_logistic" in result.metrics
    assert result.metrics["backtest_folds"] == 3
    assert 0.5 < result.metrics["model_roc_auc"] <= 1.0
    table = pd.read_csv(root / "outputs/train/backtest.csv")
    assert (
        table.groupby("fold")["scorer"].apply(list).tolist()
        == [["model", "model_uncalibrated", "rule_30d_inactive", "logistic", "oracle"]] * 3
    )
    assert table.loc[table["scorer"] == "model", "roc_auc"].mean() == pytest.approx(
        result.metrics["model_roc_auc"]
    )


def test_the_production_model_trains_on_every_labelled_date_up_to_the_last_one(first_run):
    root, _, _ = first_run
    card = ModelBundle.load(root / "models" / "default" / "champion").card
    training = card["training"]
    # observed_until 2026-11-01, 90-day horizon: the last labelled month start is 08-01
    assert training["as_of_dates"][-1] == "2026-08-01"
    assert card["training_as_of_range"][-1] == "2026-08-01"
    assert card["backtest"]["test_dates"] == ["2026-06-01", "2026-07-01", "2026-08-01"]
    assert set(card["backtest"]["test_dates"]) <= set(training["as_of_dates"])
    assert training["rounds"] == card["best_iteration"] == card["size"]["trees"]
    assert training["rounds_rule"].startswith("median over backtest folds")
    last_run = json.loads((root / "outputs/train/last_run.json").read_text())
    assert last_run["production"]["as_of_dates"] == training["as_of_dates"]
    assert last_run["lost_to"] == {}


def test_the_production_calibrator_is_the_one_fitted_on_the_backtest_predictions(first_run):
    root, config, result = first_run
    bundle = ModelBundle.load(root / "models" / "default" / "champion")
    card = bundle.card
    oof = result.backtest_predictions
    assert sorted(oof["as_of"].dt.strftime("%Y-%m-%d").unique()) == card["backtest"]["test_dates"]
    want = ProbabilityCalibrator(config.train.calibration).fit(
        oof["raw_probability"], oof["churned"]
    )
    assert bundle.calibrator.to_dict() == want.to_dict()
    assert card["training"]["calibration"]["rows"] == len(oof)
    assert card["training"]["calibration"]["source"] == (
        "out-of-fold predictions of the backtest folds"
    )


def test_the_backtest_folds_never_learn_from_a_label_window_reaching_their_test_date(first_run):
    root, config, _ = first_run
    h = pd.Timedelta(days=config.label.horizon_days)
    for fold in ModelBundle.load(root / "models" / "default" / "champion").card["backtest"][
        "folds"
    ]:
        test = pd.Timestamp(fold["test"])
        validation = pd.to_datetime(fold["validation"])
        assert (validation + h <= test).all()
        assert (pd.to_datetime(fold["train"]) + h <= validation.min()).all()


def test_a_tampered_model_file_is_refused(first_run, tmp_path):
    root, _, _ = first_run
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(root / "models" / "default" / "champion", copy)
    text = (copy / "model.txt").read_text()
    (copy / "model.txt").write_text(text.replace("learning_rate", "learning_rate ", 1))
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        ModelBundle.load(copy)


def test_training_twice_with_the_same_seed_gives_the_same_predictions_and_model_bytes(
    first_run, demo_dir, tmp_path, monkeypatch
):
    _, _, result = first_run
    monkeypatch.chdir(tmp_path)
    again = run_training(demo_config(tmp_path, demo_dir, train={"n_estimators": 200}))
    pd.testing.assert_frame_equal(again.backtest_predictions, result.backtest_predictions)
    assert (tmp_path / "models/default/champion/model.txt").read_text() == (
        first_run[0] / "models/default/champion/model.txt"
    ).read_text()


def test_a_model_that_loses_to_a_baseline_is_registered_but_not_promoted(
    first_run, demo_dir, monkeypatch
):
    root, _, result = first_run
    monkeypatch.chdir(root)
    crippled = demo_config(
        root,
        demo_dir,
        train={"n_estimators": 1, "num_leaves": 2, "learning_rate": 0.01, "colsample_bytree": 0.1},
    )
    worse = run_training(crippled)
    assert not worse.promoted
    assert worse.version == "2"
    margin = worse.metrics["model_roc_auc"] - worse.metrics["logistic_roc_auc"]
    assert margin < 0
    assert f"trails logistic by {-margin:.3f} ROC-AUC" in worse.decision
    assert worse.lost_to["logistic"] == pytest.approx(margin)
    last_run = json.loads((root / "outputs/train/last_run.json").read_text())
    assert last_run["promoted"] is False
    assert last_run["lost_to"]["logistic"] == pytest.approx(margin)
    card = ModelBundle.load(root / "models" / "default" / "champion").card
    assert card["mlflow_run_id"] == result.run_id  # the export still holds the old champion
    from pipeline import tracking

    tracking.configure(
        crippled.train.tracking_uri, crippled.train.experiment, crippled.train.artifact_location
    )
    assert tracking.champion_version("default")[0] == result.version
    import mlflow

    params = mlflow.get_run(worse.run_id).data.params
    assert params["champion.lost_to"].startswith("logistic by ")


def test_a_rerun_on_the_same_log_is_compared_with_the_champion_on_the_same_backtest_dates(
    first_run, demo_dir, monkeypatch
):
    root, _, result = first_run
    monkeypatch.chdir(root)
    again = run_training(demo_config(root, demo_dir, train={"n_estimators": 200}))
    assert again.promoted
    assert re.search(r"champion [+-]0\.000 \(tolerance 0\.005\)", again.decision), again.decision
    assert again.metrics["model_roc_auc"] == result.metrics["model_roc_auc"]


@pytest.mark.code
def test_calibration_on_a_later_slice_improves_brier_on_held_out_data():
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.0, 0.3, 40_000)
    y = (rng.random(40_000) < true_p).astype(int)
    inflated = np.sqrt(true_p)  # a monotone but badly calibrated score, like is_unbalance gives
    fit, held = slice(0, 20_000), slice(20_000, None)
    for method in ("isotonic", "sigmoid"):
        cal = ProbabilityCalibrator(method).fit(inflated[fit], y[fit])
        before = np.mean((inflated[held] - y[held]) ** 2)
        after = np.mean((cal.transform(inflated[held]) - y[held]) ** 2)
        assert after < before - 0.01, method
        restored = ProbabilityCalibrator.from_dict(cal.to_dict())
        np.testing.assert_array_equal(
            restored.transform(inflated[held]), cal.transform(inflated[held])
        )


def purchase_only_log(n_customers: int = 400, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A retail-like log: orders only, no cancellations; some customers lapse for good."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")
    signup = start + pd.to_timedelta(rng.integers(0, 200, n_customers), unit="D")
    lapse_day = rng.integers(100, 900, n_customers)
    rate = rng.uniform(0.02, 0.15, n_customers)
    rows = []
    for i in range(n_customers):
        days = np.flatnonzero(rng.random(900) < rate[i])
        days = days[(days < lapse_day[i])]
        for d in days:
            rows.append(
                (
                    f"R{i:04d}",
                    signup[i] + pd.Timedelta(days=int(d), hours=12),
                    "order",
                    float(rng.uniform(5, 80)),
                )
            )
    events = pd.DataFrame(rows, columns=["customer_id", "occurred_at", "event_type", "amount"])
    customers = pd.DataFrame(
        {"customer_id": [f"R{i:04d}" for i in range(n_customers)], "signup_at": signup}
    )
    return events, customers


def test_training_works_for_a_non_contractual_purchase_only_business(tmp_path, monkeypatch):
    events, customers = purchase_only_log()
    events.to_parquet(tmp_path / "orders.parquet", index=False)
    customers.to_csv(tmp_path / "customers.csv", index=False)
    monkeypatch.chdir(tmp_path)
    config = parse_config(
        {
            "data": {
                "events": "orders.parquet",
                "customers": "customers.csv",
                "observed_until": str(date(2026, 8, 1)),
            },
            "event_types": {"purchase": ["order"]},
            "label": {"definition": "inactivity", "horizon_days": 60},
            "train": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_location": str(tmp_path / "mlruns"),
                "min_child_samples": 20,
            },
        }
    )
    result = run_training(config)
    assert result.metrics["model_roc_auc"] > 0.6
    assert result.metrics["bgnbd_roc_auc"] > 0.6  # BG/NBD scored beside the model
    assert "oracle_roc_auc" not in result.metrics
    # whichever wins on this small log, the gate's decision and its reason agree
    assert result.promoted == (not result.lost_to)
    for name, margin in result.lost_to.items():
        assert margin <= 0
        assert f"{name} by {-margin:.3f}" in result.decision
    assert (tmp_path / "models/default/champion/card.json").exists() == result.promoted
