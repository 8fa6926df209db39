"""Training: out-of-time LightGBM, calibration, baselines, MLflow tracking, champion gate.

Flow (``run_training``): validated inputs → as_of schedule and out-of-time split → one feature
pass for all dates → LightGBM early-stopped on the validation slice → calibrator fitted on the
calibration slice → metrics on the untouched test slice, beside two baselines (the rule "30
days inactive" and a logistic regression) and, on demo data, the simulator's oracle → MLflow
run, registered version, ``champion`` alias when not worse → text bundle in ``models/``.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline import paths, plots, tracking
from pipeline.config import Config, TrainConfig
from pipeline.dataset import TrainingSet, as_of_schedule, build_training_set, out_of_time_split
from pipeline.events import ValidatedData, load_inputs
from pipeline.features import KEYS, feature_columns
from pipeline.io import write_frame, write_json
from pipeline.metrics import classification_metrics, tier_table
from pipeline.model import ChurnModel, ModelBundle, ProbabilityCalibrator, dtype_kind
from pipeline.score import monthly_value
from pipeline.tiers import assign_tiers, describe_policy, escalation_flags

log = logging.getLogger(__name__)

LABEL = "churned"
RULE_INACTIVE_DAYS = 30
PACKAGES = ("lightgbm", "scikit-learn", "pandas", "numpy", "duckdb", "mlflow")


@dataclass
class TrainResult:
    """What a training run produced and decided."""

    run_id: str
    version: str
    promoted: bool
    decision: str
    metrics: dict[str, float]
    bundle_dir: Path
    test_predictions: pd.DataFrame = field(repr=False)


def fit_churn_model(
    training: TrainingSet,
    config: TrainConfig,
    on_iteration: Callable[[int, int], None] | None = None,
) -> ChurnModel:
    """LightGBM on the train slice, early-stopped on the (later) validation slice."""
    train, valid = training.part("train"), training.part("validation")
    features = feature_columns(train.drop(columns=[LABEL, "slice"]))
    model = ChurnModel(
        n_estimators=config.n_estimators,
        learning_rate=config.learning_rate,
        num_leaves=config.num_leaves,
        min_child_samples=config.min_child_samples,
        subsample=config.subsample,
        colsample_bytree=config.colsample_bytree,
        reg_lambda=config.reg_lambda,
        early_stopping_rounds=config.early_stopping_rounds,
        random_state=config.seed,
        n_jobs=config.n_jobs,
    )
    return model.fit(
        train[features], train[LABEL], valid[features], valid[LABEL], on_iteration=on_iteration
    )


def fit_logistic_baseline(train: pd.DataFrame, features: list[str], seed: int):
    """Standardised numeric features + one-hot categoricals → logistic regression."""
    categorical = [c for c in features if dtype_kind(train[c]) == "categorical"]
    numeric = [c for c in features if c not in categorical]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    model = make_pipeline(prep, LogisticRegression(max_iter=2000, random_state=seed))
    return model.fit(_as_strings(train[features], categorical), train[LABEL])


def _as_strings(frame: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    out = frame.copy()
    for c in categorical:
        out[c] = out[c].astype("str")
    return out


def rule_inactive(frame: pd.DataFrame, days: int = RULE_INACTIVE_DAYS) -> np.ndarray:
    """The classic alarm as a score: 1.0 when no use (a qualifying event) for ``days`` days."""
    return (frame["days_since_last_activity"].to_numpy() >= days).astype(np.float64)


def decide_champion(
    new_auc: float, champion_auc: float | None, tolerance: float
) -> tuple[bool, str]:
    """Promote unless the new model is worse than the champion by more than ``tolerance``
    (ROC-AUC on the new test slice)."""
    if champion_auc is None:
        return True, "no champion yet"
    if new_auc >= champion_auc - tolerance:
        return True, f"new ROC-AUC {new_auc:.4f} ≥ champion {champion_auc:.4f} − {tolerance:g}"
    return False, f"new ROC-AUC {new_auc:.4f} < champion {champion_auc:.4f} − {tolerance:g}"


def evaluate(
    test: pd.DataFrame,
    p_model: np.ndarray,
    baselines: dict[str, np.ndarray],
    oracle: np.ndarray | None,
) -> dict[str, float]:
    """Model metrics on the test slice, each baseline's, the oracle's, and the margins."""
    y = test[LABEL].to_numpy()
    metrics = classification_metrics(y, p_model, "test_")
    for name, score in baselines.items():
        base = classification_metrics(y, score, f"{name}_")
        metrics.update({k: v for k, v in base.items() if not k.endswith(("rows", "churn_rate"))})
        metrics[f"margin_roc_auc_vs_{name}"] = metrics["test_roc_auc"] - base[f"{name}_roc_auc"]
    if oracle is not None:
        orc = classification_metrics(y, oracle, "oracle_")
        metrics.update({k: orc[k] for k in ("oracle_roc_auc", "oracle_pr_auc", "oracle_brier")})
        metrics["gap_roc_auc_to_oracle"] = metrics["oracle_roc_auc"] - metrics["test_roc_auc"]
    return metrics


def data_fingerprint(config: Config, data: ValidatedData) -> dict:
    """Row counts, date range and a SHA-256 of each input file: which data made the model."""
    first, last = data.con.execute(
        "SELECT min(occurred_at), max(occurred_at) FROM events"
    ).fetchall()[0]
    return {
        "events_file": str(config.data.events),
        "events_sha256": _sha256(config.data.events),
        "customers_file": str(config.data.customers),
        "customers_sha256": _sha256(config.data.customers),
        "events_valid": data.report.events_valid,
        "events_rejected": data.report.events_rejected,
        "customers_valid": data.report.customers_valid,
        "first_event": str(first),
        "last_event": str(last),
        "observed_until": str(data.observed_until),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flatten(payload: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _oracle(config: Config, test: pd.DataFrame) -> np.ndarray | None:
    if config.data.hazard is None or not Path(config.data.hazard).exists():
        return None
    from pipeline.demo import oracle_probability

    hazard = pd.read_parquet(config.data.hazard)
    return oracle_probability(hazard, test[KEYS], config.label.horizon_days)


def model_card(
    config: Config,
    model: ChurnModel,
    training: TrainingSet,
    metrics: dict[str, float],
    fingerprint: dict,
    run_id: str,
    version_: str,
) -> dict:
    """The JSON card that travels with the exported model."""
    train = training.part("train")
    features = list(model.feature_names_in_)
    return {
        "model_name": config.train.model_name,
        "model_version": version_,
        "mlflow_run_id": run_id,
        "label": config.label.model_dump(mode="json"),
        "feature_config": config.features.model_dump(mode="json"),
        "features": [{"name": f, "kind": dtype_kind(train[f])} for f in features],
        "split": {k: [str(d.date()) for d in v] for k, v in training.split.items()},
        "training_as_of_range": [
            str(training.split["train"].min().date()),
            str(training.split["train"].max().date()),
        ],
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "tier_policy": {
            "description": describe_policy(config.tiers),
            **config.tiers.model_dump(mode="json"),
        },
        "size": model.size(),
        "data_fingerprint": fingerprint,
        "packages": {p: version(p) for p in PACKAGES} | {"python": platform.python_version()},
    }


def run_training(
    config: Config,
    on_iteration: Callable[[int, int], None] | None = None,
    data: ValidatedData | None = None,
) -> TrainResult:
    """The whole training job (see module docstring). I/O: MLflow, ``models/``, outputs."""
    data = data or load_inputs(config)
    horizon = config.label.horizon_days
    first_event = data.con.execute("SELECT min(occurred_at) FROM events").fetchall()[0][0]
    dates = as_of_schedule(first_event, data.observed_until, config.dataset, horizon)
    split = out_of_time_split(dates, horizon, config.dataset)
    used = pd.DatetimeIndex(sorted(d for ds in split.values() for d in ds))
    training = build_training_set(
        data.con, data.customers, used, split, config.features, config.label, data.observed_until
    )
    model = fit_churn_model(training, config.train, on_iteration)
    log.info("LightGBM stopped at %d trees (%s)", model.best_iteration_, model.size())
    features = list(model.feature_names_in_)
    cal_part, test = training.part("calibration"), training.part("test")
    calibrator = ProbabilityCalibrator(config.train.calibration).fit(
        model.raw_proba(cal_part[features]), cal_part[LABEL]
    )
    p_raw = model.raw_proba(test[features])
    p_test = calibrator.transform(p_raw)
    logistic = fit_logistic_baseline(training.part("train"), features, config.train.seed)
    categorical = [c for c in features if dtype_kind(test[c]) == "categorical"]
    baselines = {
        "rule_30d_inactive": rule_inactive(test),
        "logistic": logistic.predict_proba(_as_strings(test[features], categorical))[:, 1],
    }
    oracle = _oracle(config, test)
    metrics = evaluate(test, p_test, baselines, oracle)
    metrics.update(classification_metrics(test[LABEL], np.clip(p_raw, 0, 1), "test_uncalibrated_"))
    predictions = test[[*KEYS, LABEL]].copy()
    predictions["churn_probability"] = p_test
    predictions["tier"] = assign_tiers(
        p_test,
        config.tiers,
        monthly_value(test, config.value) * config.value.months,
        escalation_flags(test, config.tiers),
        owner=test["customer_id"].map(data.customers.set_index("customer_id")["owner"]).to_numpy(),
        base_rate=float(training.part("train")[LABEL].mean()),
    )
    for name, score in baselines.items():
        predictions[f"{name}_score"] = score
    if oracle is not None:
        predictions["oracle_probability"] = oracle
    _log_summary(metrics)
    return _track_and_export(
        config, data, training, model, calibrator, metrics, predictions, baselines, oracle
    )


def _log_summary(metrics: dict[str, float]) -> None:
    log.info(
        "test slice: ROC-AUC %.4f, PR-AUC %.4f, Brier %.4f, ECE %.4f, top-decile lift %.2f",
        metrics["test_roc_auc"],
        metrics["test_pr_auc"],
        metrics["test_brier"],
        metrics["test_ece"],
        metrics["test_lift_top_decile"],
    )
    for name in ("rule_30d_inactive", "logistic"):
        log.info(
            "  vs %s: ROC-AUC %.4f (model ahead by %+.4f)",
            name,
            metrics[f"{name}_roc_auc"],
            metrics[f"margin_roc_auc_vs_{name}"],
        )
    if "oracle_roc_auc" in metrics:
        log.info(
            "  oracle (true simulator hazard): ROC-AUC %.4f (model gap %.4f)",
            metrics["oracle_roc_auc"],
            metrics["gap_roc_auc_to_oracle"],
        )


def _track_and_export(
    config: Config,
    data: ValidatedData,
    training: TrainingSet,
    model: ChurnModel,
    calibrator: ProbabilityCalibrator,
    metrics: dict[str, float],
    predictions: pd.DataFrame,
    baselines: dict[str, np.ndarray],
    oracle: np.ndarray | None,
) -> TrainResult:
    tc = config.train
    tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
    fingerprint = data_fingerprint(config, data)
    test = training.part("test")
    features = list(model.feature_names_in_)
    y = test[LABEL].to_numpy()
    previous = tracking.champion_version(tc.model_name)
    champion_auc = _champion_auc(previous, test) if previous else None
    with tracking.run("train", tags={"stage": "train"}) as run_id:
        tracking.log_params(_flatten(config.model_dump(mode="json")))
        tracking.log_params({f"input.{k}": v for k, v in fingerprint.items()})
        tracking.log_params(
            {f"split.{k}": ",".join(str(d.date()) for d in v) for k, v in training.split.items()}
        )
        tracking.log_metrics(metrics | {"best_iteration": model.best_iteration_})
        tracking.log_dict(data.report.as_dict(), "validation_report.json")
        tracking.log_dict(config.model_dump(mode="json"), "config.json")
        tracking.log_table(tier_table(y, predictions["tier"]), "tiers_test.csv")
        card = model_card(config, model, training, metrics, fingerprint, run_id, None)
        bundle = ModelBundle(model, calibrator, card)
        version_ = tracking.log_pyfunc(bundle, test[features].head(5), tc.model_name)
        bundle.register(tc.model_name, version_, run_id)
        promoted, decision = decide_champion(
            metrics["test_roc_auc"], champion_auc, tc.champion_tolerance
        )
        tracking.log_params({"champion.decision": decision, "champion.previous": previous})
        if champion_auc is not None:
            tracking.log_metrics({"champion_previous_test_roc_auc": champion_auc})
        with tempfile.TemporaryDirectory() as tmp:
            tmp_dir = Path(tmp)
            bundle.save(tmp_dir / "bundle")
            tracking.log_artifacts(tmp_dir / "bundle", tracking.BUNDLE_ARTIFACT)
            _log_plots(
                tmp_dir, y, predictions["churn_probability"].to_numpy(), baselines, oracle, model
            )
            pred_path = tmp_dir / "test_predictions.parquet"
            predictions.to_parquet(pred_path, index=False)
            tracking.log_artifact(pred_path)
        tracking.tag_version(tc.model_name, version_, {"test_roc_auc": metrics["test_roc_auc"]})
        if promoted:
            tracking.set_champion(tc.model_name, version_)
        log.info("champion: %s → %s", decision, "promoted" if promoted else "kept the old one")
    out_dir = config.data.output_dir / "train"
    write_frame(predictions, out_dir / "test_predictions.parquet")
    write_json(
        {
            "run_id": run_id,
            "version": version_,
            "promoted": promoted,
            "decision": decision,
            "metrics": metrics,
        },
        out_dir / "last_run.json",
    )
    bundle_dir = paths.champion_dir(config)
    if promoted:
        bundle.save(bundle_dir)
    elif not (bundle_dir / "card.json").exists() and previous is not None:
        _export_registry_champion(previous[1], bundle_dir)
    return TrainResult(run_id, version_, promoted, decision, metrics, bundle_dir, predictions)


def _champion_auc(previous: tuple[str, str], test: pd.DataFrame) -> float | None:
    """The current champion's ROC-AUC on the new test slice (None if it cannot score it)."""
    from sklearn.metrics import roc_auc_score

    from pipeline.model import FeatureMismatchError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            champion = ModelBundle.load(tracking.download_bundle(previous[1], Path(tmp)))
            return float(roc_auc_score(test[LABEL], champion.predict(test)))
        except (FeatureMismatchError, FileNotFoundError, ValueError) as error:
            log.warning("cannot score the current champion on the new test slice: %s", error)
            return None


def _export_registry_champion(run_id: str, bundle_dir: Path) -> None:
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        source = tracking.download_bundle(run_id, Path(tmp))
        ModelBundle.load(source)  # verify before exporting
        bundle_dir.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            shutil.copy2(item, bundle_dir / item.name)


def _log_plots(
    tmp_dir: Path,
    y: np.ndarray,
    p: np.ndarray,
    baselines: dict[str, np.ndarray],
    oracle: np.ndarray | None,
    model: ChurnModel,
) -> None:
    scores = {"model": p, **baselines}
    probs = {"model": p}
    if oracle is not None:
        scores["oracle"] = oracle
        probs["oracle"] = oracle
    importance = pd.Series(
        model.booster_.feature_importance("gain", iteration=model.best_iteration_),
        index=model.feature_names_in_,
    )
    figures = {
        "roc_pr.png": plots.roc_pr(y, scores),
        "calibration.png": plots.calibration(y, probs | {"logistic": baselines["logistic"]}),
        "lift_gain.png": plots.lift_gain(y, scores),
        "feature_importance.png": plots.feature_importance(importance),
    }
    plot_dir = tmp_dir / "plots"
    plot_dir.mkdir()
    for name, fig in figures.items():
        plots.save(fig, plot_dir / name)
    tracking.log_artifacts(plot_dir, "plots")
    tracking.log_table(
        importance.rename("gain").rename_axis("feature").reset_index(), "feature_importance.csv"
    )
