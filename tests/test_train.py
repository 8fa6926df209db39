"""Model tests: the training job end to end on small data, calibration, the champion gate."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import demo_config

from pipeline.config import parse_config
from pipeline.model import ModelBundle, ProbabilityCalibrator
from pipeline.train import decide_champion, run_training

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
    assert result.decision == "no champion yet"
    bundle = ModelBundle.load(root / "models" / "default" / "champion")
    assert bundle.card["mlflow_run_id"] == result.run_id
    assert bundle.card["model_version"] == result.version == "1"
    for key in (
        "test_roc_auc",
        "test_pr_auc",
        "test_log_loss",
        "test_brier",
        "test_ece",
        "test_lift_top_decile",
        "test_recall_top_decile",
        "oracle_roc_auc",
        "rule_30d_inactive_roc_auc",
        "logistic_roc_auc",
        "margin_roc_auc_vs_logistic",
    ):
        assert key in result.metrics, key
    assert 0.5 < result.metrics["test_roc_auc"] <= 1.0


def test_the_exported_bundle_reproduces_the_run_test_predictions(first_run):
    root, config, result = first_run
    from pipeline.events import load_inputs
    from pipeline.features import build_daily_log, build_features

    bundle = ModelBundle.load(root / "models" / "default" / "champion")
    preds = result.test_predictions
    (test_as_of,) = pd.to_datetime(preds["as_of"].unique())
    assert bundle.card["split"]["test"] == [str(test_as_of.date())]
    data = load_inputs(config)
    daily = build_daily_log(
        data.con, data.customers["customer_id"].to_numpy(), config.label.qualifying_families
    )
    features = build_features(daily, data.customers, [test_as_of], config.features)
    scored = preds[["customer_id", "as_of", "churn_probability"]].merge(
        features, on=["customer_id", "as_of"], how="left", validate="one_to_one"
    )
    np.testing.assert_allclose(bundle.predict(scored), scored["churn_probability"], rtol=1e-12)


def test_a_tampered_model_file_is_refused(first_run, tmp_path):
    root, _, _ = first_run
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(root / "models" / "default" / "champion", copy)
    text = (copy / "model.txt").read_text()
    (copy / "model.txt").write_text(text.replace("learning_rate", "learning_rate ", 1))
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        ModelBundle.load(copy)


def test_training_twice_with_the_same_seed_gives_identical_test_predictions(
    first_run, demo_dir, tmp_path, monkeypatch
):
    _, _, result = first_run
    monkeypatch.chdir(tmp_path)
    again = run_training(demo_config(tmp_path, demo_dir, train={"n_estimators": 200}))
    pd.testing.assert_frame_equal(again.test_predictions, result.test_predictions)
    assert (tmp_path / "models/default/champion/model.txt").read_text() == (
        first_run[0] / "models/default/champion/model.txt"
    ).read_text()


def test_the_champion_gate_keeps_the_old_champion_when_a_crippled_model_is_worse(
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
    assert "< champion" in worse.decision
    card = ModelBundle.load(root / "models" / "default" / "champion").card
    assert card["mlflow_run_id"] == result.run_id  # the export still holds the old champion
    from pipeline import tracking

    tracking.configure(
        crippled.train.tracking_uri, crippled.train.experiment, crippled.train.artifact_location
    )
    assert tracking.champion_version("default")[0] == result.version


@pytest.mark.code
@pytest.mark.parametrize(
    ("new", "old", "tolerance", "promoted"),
    [
        (0.80, None, 0.0, True),
        (0.80, 0.80, 0.0, True),
        (0.796, 0.80, 0.005, True),
        (0.79, 0.80, 0.005, False),
    ],
)
def test_the_champion_decision_compares_roc_auc_within_the_tolerance(new, old, tolerance, promoted):
    assert decide_champion(new, old, tolerance)[0] is promoted


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
    assert result.promoted
    assert result.metrics["test_roc_auc"] > 0.6
    assert "oracle_roc_auc" not in result.metrics
    assert (tmp_path / "models/default/champion/card.json").exists()
