"""Training: rolling-origin backtest, production refit, out-of-fold calibration, champion gate.

Flow (``run_training``): validated inputs → checks that the log can train a model → as_of
schedule and backtest folds (``pipeline.dataset.plan_backtest``; weekly dates or fewer folds on
a short history) → one feature pass for every labelled date → per fold (``backtest_fold``):
1. LightGBM on the fold's ``train`` dates, early-stopped on its later ``validation`` dates;
2. the same procedure as production: refit on every date labelled before the fold's test date
   with the early-stopped number of rounds (``ROUNDS_RULE``), and score the test date; a
   Platt/isotonic calibrator from step 1's validation predictions calibrates it;
3. baselines on the same test rows, fitted on the same rows as the refit: the rule "30 days
   inactive", a logistic regression and, on purchase logs, BG/NBD; the oracle on demo data;
→ per-fold metrics and their mean / std / min / max (``summarise_backtest``)
→ production model: refit on ALL labelled dates with ``production_rounds`` trees (here, or with
  lightgbm.dask when ``compute.dask.distributed_training`` is on: ``pipeline.dask_training``),
  calibrated on the folds' out-of-fold test predictions (``fit_oof_calibrator``)
→ champion gate (``decide_champion``): promoted only when its backtest mean ROC-AUC beats every
  baseline and is within the tolerance of the current champion on the same rows
→ MLflow run, registered version, ``champion`` alias when promoted → text bundle in ``models/``.
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
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from pipeline import monitoring, paths, plots, tracking
from pipeline.config import ComputeConfig, Config, TrainConfig
from pipeline.dataset import (
    LABEL,
    BacktestPlan,
    DatasetError,
    Fold,
    TrainingSet,
    build_training_set,
    check_mapped_events,
    plan_backtest,
)
from pipeline.events import ValidatedData, load_inputs
from pipeline.features import KEYS, feature_columns
from pipeline.io import write_frame, write_json
from pipeline.metrics import backtest_table, summarise_backtest, tier_table
from pipeline.model import ChurnModel, ModelBundle, ProbabilityCalibrator, dtype_kind, export_bundle
from pipeline.score import monthly_value
from pipeline.tiers import assign_tiers, describe_policy, escalation_flags

log = logging.getLogger(__name__)

RULE_INACTIVE_DAYS = 30
PACKAGES = ("lightgbm", "scikit-learn", "pandas", "numpy", "duckdb", "mlflow")
ROUNDS_RULE = (
    "median over backtest folds of the early-stopped best iteration, unscaled (the rows a refit"
    " adds are mostly the same customers at later dates, so the row ratio overstates the new"
    " information: scaling by it lowered the backtest ROC-AUC on the demo and on a one-year"
    " weekly purchase log, where it also left the calibration off, and changed nothing on the"
    " retail demo), at most train.n_estimators"
)
Progress = Callable[[int, int], None] | None


@dataclass
class TrainResult:
    """What a training run produced and decided."""

    run_id: str
    version: str
    promoted: bool
    decision: str
    metrics: dict[str, float]
    bundle_dir: Path
    backtest_predictions: pd.DataFrame = field(repr=False)
    lost_to: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FoldResult:
    """One backtest fold: test-row predictions of every scorer, and the rounds it chose."""

    fold: Fold
    predictions: pd.DataFrame
    best_iteration: int
    train_rows: int


@dataclass(frozen=True)
class Gate:
    """The champion decision and, when not promoted, whom the model lost to and by how much
    (``lost_to``: opponent → model ROC-AUC minus the opponent's, ≤ 0)."""

    promoted: bool
    decision: str
    lost_to: dict[str, float] = field(default_factory=dict)


def _lgbm(config: TrainConfig, n_estimators: int | None = None) -> ChurnModel:
    return ChurnModel(
        n_estimators=n_estimators or config.n_estimators,
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


def fit_churn_model(
    train: pd.DataFrame,
    valid: pd.DataFrame | None,
    config: TrainConfig,
    n_estimators: int | None = None,
    on_iteration: Progress = None,
) -> ChurnModel:
    """LightGBM on ``train``; early-stopped on the later ``valid`` rows when given, else
    exactly ``n_estimators`` rounds."""
    features = feature_columns(train.drop(columns=[LABEL]))
    model = _lgbm(config, n_estimators)
    if valid is None:
        return model.fit(train[features], train[LABEL], on_iteration=on_iteration)
    return model.fit(
        train[features], train[LABEL], valid[features], valid[LABEL], on_iteration=on_iteration
    )


def production_rounds(folds: list[FoldResult], cap: int) -> int:
    """The production model's rounds (``ROUNDS_RULE``)."""
    return int(np.clip(round(float(np.median([f.best_iteration for f in folds]))), 1, cap))


def fit_logistic_baseline(train: pd.DataFrame, features: list[str], seed: int):
    """Numeric features (missing → median plus a missing flag, standardised) + one-hot
    categoricals → logistic regression."""
    categorical = [c for c in features if dtype_kind(train[c]) == "categorical"]
    numeric = [c for c in features if c not in categorical]
    impute = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(impute, StandardScaler()), numeric),
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


def baseline_scores(
    fit_rows: pd.DataFrame, test: pd.DataFrame, features: list[str], config: Config
) -> dict[str, np.ndarray]:
    """Every baseline's score on ``test``, each fitted on ``fit_rows`` (the rows the model's
    refit sees): the 30-day rule, the logistic regression and, on purchase logs, BG/NBD."""
    categorical = [c for c in features if dtype_kind(test[c]) == "categorical"]
    with threadpool_limits(1):  # BLAS threads spin on a shared CPU: 4x slower measured here
        logistic = fit_logistic_baseline(fit_rows, features, config.train.seed)
        p_logistic = logistic.predict_proba(_as_strings(test[features], categorical))[:, 1]
    scores = {"rule_30d_inactive": rule_inactive(test), "logistic": p_logistic}
    if is_purchase_log(config):
        from pipeline.bgnbd import bgnbd_baseline

        # BG/NBD learns no label: fitted on the test date's own history (events before it), it
        # is out of time, and it is what the model's BG/NBD features see at that date too.
        scores["bgnbd"] = bgnbd_baseline(test, test, config.label.horizon_days)
    return scores


def is_purchase_log(config: Config) -> bool:
    """BG/NBD applies: the label is inactivity and purchases are mapped."""
    return config.label.definition == "inactivity" and bool(config.event_types.purchase)


def scorer_columns(baselines: list[str], oracle: bool) -> dict[str, str]:
    """Scorer name → its column in the backtest predictions."""
    columns = {"model": "churn_probability", "model_uncalibrated": "raw_probability"}
    columns |= {name: f"{name}_score" for name in baselines}
    return columns | ({"oracle": "oracle_probability"} if oracle else {})


def backtest_fold(
    training: TrainingSet, fold: Fold, config: Config, on_iteration: Progress = None
) -> FoldResult:
    """Score the fold's test date with the production procedure run on the dates before it
    (see the module docstring, steps 1-3)."""
    tc = config.train
    train, valid = training.rows(fold.train), training.rows(fold.validation)
    inner = fit_churn_model(train, valid, tc, on_iteration=on_iteration)
    h = pd.Timedelta(days=config.label.horizon_days)
    known = training.frame["as_of"] + h <= fold.test
    refit_rows = training.frame[known].reset_index(drop=True)
    rounds = inner.best_iteration_  # the same rule as production (ROUNDS_RULE)
    refit = fit_churn_model(refit_rows, None, tc, rounds, on_iteration)
    features = list(refit.feature_names_in_)
    calibrator = ProbabilityCalibrator(tc.calibration).fit(
        inner.raw_proba(valid[features]), valid[LABEL]
    )
    test = training.rows([fold.test])
    predictions = test[[*KEYS, LABEL]].copy()
    predictions["raw_probability"] = refit.raw_proba(test[features])
    predictions["churn_probability"] = calibrator.transform(predictions["raw_probability"])
    for name, score in baseline_scores(refit_rows, test, features, config).items():
        predictions[f"{name}_score"] = score
    oracle = _oracle(config, test)
    if oracle is not None:
        predictions["oracle_probability"] = oracle
    log.info(
        "fold %s: %d training rows (%d dates), stopped at %d trees on %s, refit %d trees on"
        " %d rows; ROC-AUC %.4f",
        fold.test.date(),
        len(train),
        len(fold.train),
        inner.best_iteration_,
        ", ".join(str(d.date()) for d in fold.validation),
        rounds,
        len(refit_rows),
        _auc(predictions[LABEL], predictions["churn_probability"]),
    )
    return FoldResult(fold, predictions, inner.best_iteration_, len(train))


def _auc(y: pd.Series, p: pd.Series) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def run_backtest(
    training: TrainingSet, plan: BacktestPlan, config: Config, on_iteration: Progress = None
) -> list[FoldResult]:
    """Every fold whose test rows hold both classes (others are skipped with a warning)."""
    results = []
    for number, fold in enumerate(plan.folds, start=1):
        y = training.rows([fold.test])[LABEL]
        if y.nunique() < 2 or training.rows(fold.validation)[LABEL].nunique() < 2:
            log.warning("backtest fold %s skipped: its labels hold one class only", fold.test)
            continue
        result = backtest_fold(training, fold, config, on_iteration)
        result.predictions.insert(0, "fold", number)
        results.append(result)
    if not results:
        raise DatasetError(
            "no backtest fold has both churners and non-churners on its validation and test"
            " dates; use more history or a longer label.horizon_days"
        )
    return results


def fit_oof_calibrator(folds: list[FoldResult], method: str) -> ProbabilityCalibrator:
    """The production calibrator: fitted on the folds' out-of-fold test predictions only
    (raw probabilities of the same refit procedure, and the labels they did not see)."""
    oof = pd.concat([f.predictions for f in folds], ignore_index=True)
    return ProbabilityCalibrator(method).fit(oof["raw_probability"], oof[LABEL])


def fit_production_model(
    training: TrainingSet,
    rounds: int,
    config: TrainConfig,
    on_iteration: Progress = None,
    compute: ComputeConfig | None = None,
) -> tuple[ChurnModel, str]:
    """LightGBM on every labelled as_of date with a fixed number of rounds: here, or across the
    Dask cluster's workers when ``compute.dask.distributed_training`` is on (no early stopping
    there: the rounds are the backtest's). Returns the model and how it was fitted: "local" or
    "dask, N workers"."""
    if compute is None or not compute.dask.distributed_training:
        return fit_churn_model(training.frame, None, config, rounds, on_iteration), "local"
    from pipeline.dask_training import fit_distributed

    features = feature_columns(training.frame.drop(columns=[LABEL]))
    X, y = training.frame[features], training.frame[LABEL].to_numpy()
    model, n = fit_distributed(_lgbm(config, rounds), X, y, compute)
    return model, f"dask, {n} worker{'' if n == 1 else 's'}"


def decide_champion(
    model_auc: float,
    baseline_aucs: dict[str, float],
    champion_auc: float | None,
    tolerance: float,
    model_auc_vs_champion: float | None = None,
    baseline_tolerance: float = 0.0,
) -> Gate:
    """Promote only when ``model_auc`` (backtest mean ROC-AUC) beats every baseline's (or trails
    one by less than ``baseline_tolerance`` when that is set) and is not below ``champion_auc``
    by more than ``tolerance``; ``model_auc_vs_champion`` is the new model's ROC-AUC on the rows
    the champion was scored on (default ``model_auc``)."""
    margins = {n: model_auc - auc for n, auc in baseline_aucs.items()}
    lost = {n: m for n, m in margins.items() if m <= 0 and -m >= baseline_tolerance}
    if lost:
        trails = " and ".join(f"{n} by {-m:.3f}" for n, m in sorted(lost.items(), key=_by_margin))
        return Gate(False, f"not promoted: trails {trails} ROC-AUC (backtest mean)", lost)
    beats = ", ".join(_versus(n, m, baseline_tolerance) for n, m in margins.items())
    if champion_auc is None:
        return Gate(True, f"promoted: beats {beats} ROC-AUC; no comparable champion")
    margin = (model_auc if model_auc_vs_champion is None else model_auc_vs_champion) - champion_auc
    if margin < -tolerance:
        return Gate(
            False,
            f"not promoted: trails the champion by {-margin:.3f} ROC-AUC (more than the"
            f" tolerance {tolerance:g})",
            {"champion": margin},
        )
    return Gate(True, f"promoted: beats {beats}; champion {margin:+.3f} (tolerance {tolerance:g})")


def _versus(name: str, margin: float, baseline_tolerance: float) -> str:
    if margin > 0:
        return f"{name} by {margin:.3f}"
    return f"trails {name} by {-margin:.3f}, within train.baseline_tolerance {baseline_tolerance:g}"


def _by_margin(item: tuple[str, float]) -> float:
    return item[1]


def data_fingerprint(config: Config, data: ValidatedData) -> dict:
    """Row counts, date range and a SHA-256 of each input file: which data made the model."""
    first, last = data.store.event_range()
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


@dataclass(frozen=True)
class Backtest:
    """The backtest's folds, their pooled out-of-fold predictions, the tidy per-fold metrics
    table and its summary (``{scorer}_{metric}`` mean and ``_std`` / ``_min`` / ``_max``)."""

    plan: BacktestPlan
    folds: list[FoldResult]
    predictions: pd.DataFrame
    table: pd.DataFrame
    metrics: dict[str, float]

    @property
    def baselines(self) -> list[str]:
        return [c.removesuffix("_score") for c in self.predictions if c.endswith("_score")]

    @property
    def test_dates(self) -> list[str]:
        return [str(f.fold.test.date()) for f in self.folds]


@dataclass(frozen=True)
class Production:
    """The production model, its out-of-fold calibrator and how they were made."""

    model: ChurnModel
    calibrator: ProbabilityCalibrator
    procedure: dict


def evaluate_backtest(plan: BacktestPlan, folds: list[FoldResult]) -> Backtest:
    """Pool the folds' predictions; per-fold metrics of every scorer; mean and spread; the
    model's margins over each baseline and its gap to the oracle (means over folds)."""
    predictions = pd.concat([f.predictions for f in folds], ignore_index=True)
    baselines = [c.removesuffix("_score") for c in predictions if c.endswith("_score")]
    table = backtest_table(
        predictions, scorer_columns(baselines, "oracle_probability" in predictions)
    )
    metrics = summarise_backtest(table)
    for name in baselines:
        metrics[f"margin_roc_auc_vs_{name}"] = metrics["model_roc_auc"] - metrics[f"{name}_roc_auc"]
    if "oracle_roc_auc" in metrics:
        metrics["gap_roc_auc_to_oracle"] = metrics["oracle_roc_auc"] - metrics["model_roc_auc"]
    metrics["backtest_folds"] = float(len(folds))
    return Backtest(plan, folds, predictions, table, metrics)


def fit_production(
    training: TrainingSet,
    backtest: Backtest,
    config: TrainConfig,
    on_iteration: Progress = None,
    compute: ComputeConfig | None = None,
) -> Production:
    """Refit on every labelled date with ``production_rounds`` (on the Dask cluster when
    ``compute`` says so); calibrate out of fold."""
    rounds = production_rounds(backtest.folds, config.n_estimators)
    model, fitted_on = fit_production_model(training, rounds, config, on_iteration, compute)
    calibrator = fit_oof_calibrator(backtest.folds, config.calibration)
    dates = sorted(training.frame["as_of"].unique())
    oof = backtest.predictions
    procedure = {
        "procedure": (
            "LightGBM refit on every labelled as_of date with a fixed number of rounds chosen"
            " by the backtest's early stopping, calibrated on the backtest folds' out-of-fold"
            " predictions (the same refit procedure, scored on dates it had not seen)"
        ),
        "as_of_dates": [str(pd.Timestamp(d).date()) for d in dates],
        "frequency": backtest.plan.frequency,
        "min_history_days": backtest.plan.min_history_days,
        "rows": len(training.frame),
        "churn_rate": round(float(training.frame[LABEL].mean()), 6),
        "rounds": rounds,
        "rounds_rule": ROUNDS_RULE,
        "fitted_on": fitted_on,
        "fold_best_iterations": [f.best_iteration for f in backtest.folds],
        "fold_training_rows": [f.train_rows for f in backtest.folds],
        "calibration": {
            "method": config.calibration,
            "source": "out-of-fold predictions of the backtest folds",
            "as_of_dates": backtest.test_dates,
            "rows": len(oof),
            "churners": int(oof[LABEL].sum()),
        },
        "fallbacks": list(backtest.plan.fallbacks),
    }
    log.info(
        "production model: %d trees on %d rows (%d as_of dates, %s … %s) fitted %s, calibrated"
        " (%s) on %d out-of-fold rows",
        rounds,
        len(training.frame),
        len(dates),
        procedure["as_of_dates"][0],
        procedure["as_of_dates"][-1],
        "here" if fitted_on == "local" else f"with lightgbm.dask ({fitted_on})",
        config.calibration,
        len(oof),
    )
    return Production(model, calibrator, procedure)


def model_card(
    config: Config,
    training: TrainingSet,
    production: Production,
    backtest: Backtest,
    fingerprint: dict,
    run_id: str,
    version_: str,
) -> dict:
    """The JSON card that travels with the exported model."""
    model, procedure = production.model, production.procedure
    features = list(model.feature_names_in_)
    return {
        "model_name": config.train.model_name,
        "model_version": version_,
        "mlflow_run_id": run_id,
        "label": config.label.model_dump(mode="json"),
        "feature_config": config.features.model_dump(mode="json"),
        "features": [{"name": f, "kind": dtype_kind(training.frame[f])} for f in features],
        "training": procedure,
        "split": {"train": procedure["as_of_dates"]},
        "training_as_of_range": [procedure["as_of_dates"][0], procedure["as_of_dates"][-1]],
        "backtest": {
            "test_dates": backtest.test_dates,
            "folds": [f.fold.as_dict() for f in backtest.folds],
            "gap_days": config.label.horizon_days,
        },
        "metrics": {k: round(v, 6) for k, v in backtest.metrics.items()},
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
    check_mapped_events(data.store, config.label)
    first_event = data.store.first_event()
    plan = plan_backtest(
        first_event, data.observed_until, config.dataset, config.label.horizon_days
    )
    training = build_training_set(
        data.store, data.customers, plan.dates, config.features, config.label, data.observed_until
    )
    backtest = evaluate_backtest(plan, run_backtest(training, plan, config, on_iteration))
    production = fit_production(training, backtest, config.train, on_iteration, config.compute)
    owners = data.customers.set_index("customer_id")["owner"]
    predictions = _with_tiers(backtest.predictions, training, config, owners)
    _log_summary(backtest)
    return _track_and_export(config, data, training, production, backtest, predictions)


def _with_tiers(
    predictions: pd.DataFrame, training: TrainingSet, config: Config, owners: pd.Series
) -> pd.DataFrame:
    """The out-of-fold predictions with the tier each would have got (for the tier table),
    under the configured policy with the training base rate and capacity per owner."""
    rows = predictions[KEYS].merge(training.frame, on=KEYS, how="left", validate="one_to_one")
    out = predictions.copy()
    out["tier"] = assign_tiers(
        out["churn_probability"].to_numpy(),
        config.tiers,
        monthly_value(rows, config.value) * config.value.months,
        escalation_flags(rows, config.tiers),
        owner=rows["customer_id"].map(owners).astype("str").to_numpy(dtype=object),
        base_rate=base_rate(training),
    )
    return out


def base_rate(training: TrainingSet) -> float:
    """The churn rate of every labelled training row: the reference the tier policy scales."""
    return float(training.frame[LABEL].mean())


def _log_summary(backtest: Backtest) -> None:
    m = backtest.metrics
    log.info(
        "backtest over %d fold(s) (%s): ROC-AUC %.4f ± %.4f (min %.4f), PR-AUC %.4f, Brier %.4f,"
        " ECE %.4f, top-decile lift %.2f",
        len(backtest.folds),
        ", ".join(backtest.test_dates),
        m["model_roc_auc"],
        m["model_roc_auc_std"],
        m["model_roc_auc_min"],
        m["model_pr_auc"],
        m["model_brier"],
        m["model_ece"],
        m["model_lift_top_decile"],
    )
    for name in backtest.baselines:
        log.info(
            "  vs %s: ROC-AUC %.4f ± %.4f (model ahead by %+.4f)",
            name,
            m[f"{name}_roc_auc"],
            m[f"{name}_roc_auc_std"],
            m[f"margin_roc_auc_vs_{name}"],
        )
    if "oracle_roc_auc" in m:
        log.info(
            "  oracle (true simulator hazard): ROC-AUC %.4f (model gap %.4f)",
            m["oracle_roc_auc"],
            m["gap_roc_auc_to_oracle"],
        )


def _track_and_export(
    config: Config,
    data: ValidatedData,
    training: TrainingSet,
    production: Production,
    backtest: Backtest,
    predictions: pd.DataFrame,
) -> TrainResult:
    tc = config.train
    tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
    fingerprint = data_fingerprint(config, data)
    model, calibrator, metrics = production.model, production.calibrator, backtest.metrics
    features = list(model.feature_names_in_)
    y = predictions[LABEL].to_numpy()
    previous = tracking.champion_version(tc.model_name)
    champion = _champion_auc(previous, training, backtest, config) if previous else None
    with tracking.run("train", tags={"stage": "train"}) as run_id:
        tracking.log_params(_flatten(config.model_dump(mode="json")))
        tracking.log_params({f"input.{k}": v for k, v in fingerprint.items()})
        tracking.log_params(
            {
                "backtest.test_dates": ",".join(backtest.test_dates),
                "backtest.fallbacks": " | ".join(backtest.plan.fallbacks) or "none",
                "production.rounds": production.procedure["rounds"],
                "production.fitted_on": production.procedure["fitted_on"],
                "production.as_of_dates": ",".join(production.procedure["as_of_dates"]),
            }
        )
        tracking.log_metrics(metrics | {"production_rounds": production.procedure["rounds"]})
        tracking.log_dict(data.report.as_dict(), "validation_report.json")
        tracking.log_dict(config.model_dump(mode="json"), "config.json")
        tracking.log_table(backtest.table, "backtest.csv")
        tracking.log_table(tier_table(y, predictions["tier"]), "tiers_backtest.csv")
        card = model_card(config, training, production, backtest, fingerprint, run_id, None)
        card = _with_reference(card, training, production, features)
        bundle = ModelBundle(model, calibrator, card)
        version_ = tracking.log_pyfunc(bundle, training.frame[features].head(5), tc.model_name)
        bundle.register(tc.model_name, version_, run_id)
        gate = decide_champion(
            metrics["model_roc_auc"],
            {n: metrics[f"{n}_roc_auc"] for n in backtest.baselines},
            champion[0] if champion else None,
            tc.champion_tolerance,
            champion[1] if champion else None,
            tc.baseline_tolerance,
        )
        promoted, decision = gate.promoted, gate.decision
        lost_to = _lost_to_text(gate.lost_to) or "none"
        tracking.log_params(
            {
                "champion.decision": decision,
                "champion.previous": previous,
                "champion.lost_to": lost_to,
            }
        )
        tracking.log_metrics({f"lost_to_{n}_roc_auc_margin": m for n, m in gate.lost_to.items()})
        if champion is not None:
            tracking.log_metrics({"champion_previous_backtest_roc_auc": champion[0]})
        with tempfile.TemporaryDirectory() as tmp:
            tmp_dir = Path(tmp)
            bundle.save(tmp_dir / "bundle")
            tracking.log_artifacts(tmp_dir / "bundle", tracking.BUNDLE_ARTIFACT)
            _log_plots(tmp_dir, predictions, backtest.baselines, model)
            pred_path = tmp_dir / "backtest_predictions.parquet"
            predictions.to_parquet(pred_path, index=False)
            tracking.log_artifact(pred_path)
        tracking.tag_version(
            tc.model_name,
            version_,
            {"backtest_roc_auc": metrics["model_roc_auc"], "champion.lost_to": lost_to},
        )
        if promoted:
            tracking.set_champion(tc.model_name, version_)
        kept = f"the champion stays v{previous[0]}" if previous else "there is no champion yet"
        log.info("champion: %s → %s", decision, "promoted" if promoted else kept)
    out_dir = paths.train_dir(paths.output_dir(config))
    write_frame(predictions, out_dir / "backtest_predictions.parquet")
    write_frame(backtest.table, out_dir / "backtest.csv")
    write_json(
        {
            "run_id": run_id,
            "version": version_,
            "promoted": promoted,
            "decision": decision,
            "lost_to": gate.lost_to,
            "metrics": metrics,
            "backtest": card["backtest"] | {"fallbacks": list(backtest.plan.fallbacks)},
            "production": card["training"],
        },
        out_dir / "last_run.json",
    )
    bundle_dir = paths.champion_dir(config)
    if promoted:
        bundle.save(bundle_dir)
    elif not (bundle_dir / "card.json").exists() and previous is not None:
        _export_registry_champion(previous, bundle_dir, tc.model_name)
    return TrainResult(
        run_id, version_, promoted, decision, metrics, bundle_dir, predictions, gate.lost_to
    )


REFERENCE_DATES = 6
"""Latest labelled as_of dates the monitoring reference profile pools."""


def _with_reference(
    card: dict, training: TrainingSet, production: Production, features: list[str]
) -> dict:
    """The card with the training base rate and the monitoring reference profile: bins of each
    feature over the latest ``REFERENCE_DATES`` labelled dates (recent, so tenure has not moved
    on; several weekdays, as recency features move with the weekday of as_of), and of the
    production model's calibrated score on those rows (what today's scores look like when the
    inputs have not moved)."""
    dates = np.sort(training.frame["as_of"].unique())[-REFERENCE_DATES:]
    rows = training.frame[training.frame["as_of"].isin(dates)]
    score = production.calibrator.transform(production.model.raw_proba(rows[features]))
    card = card | {"base_rate": round(base_rate(training), 6)}
    return monitoring.card_with_profile(card, rows, features, score)


def _lost_to_text(lost_to: dict[str, float]) -> str:
    return ", ".join(f"{name} by {-margin:.3f} ROC-AUC" for name, margin in lost_to.items())


def _champion_auc(
    previous: tuple[str, str], training: TrainingSet, backtest: Backtest, config: Config
) -> tuple[float, float] | None:
    """(champion ROC-AUC, new model ROC-AUC) on the same backtest rows, or None.

    Out of time only: the champion scores the folds whose test date lies one horizon past
    every date it was trained on; when it has seen them all (a rerun on the same log), its own
    recorded backtest mean counts if its test dates are the same as this backtest's.
    """
    from pipeline.model import FeatureMismatchError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            champion = ModelBundle.load(tracking.download_bundle(previous[1], Path(tmp)))
        except (FileNotFoundError, ValueError) as error:
            log.warning("cannot load the current champion: %s", error)
            return None
    card, h = champion.card, pd.Timedelta(days=config.label.horizon_days)
    seen = [pd.Timestamp(d) for days in card.get("split", {}).values() for d in days]
    unseen = [f for f in backtest.folds if seen and f.fold.test >= max(seen) + h]
    if unseen:
        try:
            aucs = [_champion_fold_auc(champion, training, f) for f in unseen]
        except FeatureMismatchError as error:
            log.warning("cannot score the current champion on the backtest rows: %s", error)
            return None
        table = backtest.table[backtest.table["scorer"] == "model"].set_index("test_as_of")
        model = [table.loc[f.fold.test, "roc_auc"] for f in unseen]
        return float(np.mean(aucs)), float(np.mean(model))
    recorded = card.get("backtest", {}).get("test_dates")
    if recorded == backtest.test_dates and "model_roc_auc" in card.get("metrics", {}):
        return float(card["metrics"]["model_roc_auc"]), backtest.metrics["model_roc_auc"]
    log.warning(
        "the current champion v%s has seen every backtest date and its card holds no backtest"
        " on the same dates: it is not compared",
        previous[0],
    )
    return None


def _champion_fold_auc(champion: ModelBundle, training: TrainingSet, fold: FoldResult) -> float:
    rows = training.rows([fold.fold.test])
    return _auc(rows[LABEL], pd.Series(champion.predict(rows)))


def _export_registry_champion(previous: tuple[str, str], bundle_dir: Path, model_name: str) -> None:
    """Export the registry's champion (verified) where scoring looks for it."""
    version_, run_id = previous
    with tempfile.TemporaryDirectory() as tmp:
        source = tracking.download_bundle(run_id, Path(tmp))
        registration = {"model_name": model_name, "version": version_, "run_id": run_id}
        export_bundle(source, bundle_dir, registration)


def _log_plots(
    tmp_dir: Path, predictions: pd.DataFrame, baselines: list[str], model: ChurnModel
) -> None:
    """Curves of the pooled out-of-fold predictions; the production model's importance."""
    y = predictions[LABEL].to_numpy()
    scores = {"model": predictions["churn_probability"].to_numpy()}
    scores |= {name: predictions[f"{name}_score"].to_numpy() for name in baselines}
    probs = {"model": scores["model"], "logistic": scores["logistic"]}
    if "oracle_probability" in predictions:
        scores["oracle"] = probs["oracle"] = predictions["oracle_probability"].to_numpy()
    importance = pd.Series(
        model.booster_.feature_importance("gain", iteration=model.best_iteration_),
        index=model.feature_names_in_,
    )
    figures = {
        "roc_pr.png": plots.roc_pr(y, scores),
        "calibration.png": plots.calibration(y, probs),
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
