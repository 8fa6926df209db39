"""The churn model: LightGBM on point-in-time features, plus a probability calibrator.

Both follow the scikit-learn estimator contract (arguments stored in ``__init__``, learned state
ends in ``_``, ``fit`` returns ``self``). Both save to plain text (LightGBM's model format and
JSON), never pickle, so a model bundle can be checked by hash and loaded without running code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

BUNDLE_MODEL = "model.txt"
BUNDLE_CARD = "card.json"
BUNDLE_CALIBRATOR = "calibrator.json"
BUNDLE_REGISTRATION = "registration.json"
BUNDLE_MANIFEST = "manifest.json"
BUNDLE_FILES = (BUNDLE_MODEL, BUNDLE_CALIBRATOR, BUNDLE_CARD)
"""The files the registry artifact and the exported bundle share, byte for byte."""


class FeatureMismatchError(ValueError):
    """Scoring features differ from the ones the model was trained on."""


class ChurnModel(ClassifierMixin, BaseEstimator):
    """LightGBM (sklearn API) with out-of-time early stopping and stable categorical codes.

    Categorical columns (pandas category or string) are encoded to integer codes with the
    categories seen at fit (unknown values become missing), so the model and its MLflow
    signature only ever see numbers.
    """

    def __init__(
        self,
        n_estimators: int = 600,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 50,
        random_state: int = 42,
        n_jobs: int = 2,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _lgbm(self) -> lgb.LGBMClassifier:
        return lgb.LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            subsample_freq=1,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        eval_X: pd.DataFrame | None = None,
        eval_y: np.ndarray | None = None,
        on_iteration: Callable[[int, int], None] | None = None,
    ) -> ChurnModel:
        """Fit on (X, y); early-stop on the later out-of-time slice (eval_X, eval_y)."""
        self.learn_columns(X)
        model = self._lgbm()
        callbacks = []
        kwargs: dict = {"categorical_feature": list(self.categories_) or "auto"}
        if eval_X is not None:
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
            kwargs.update(eval_X=(self.encode(eval_X),), eval_y=(np.asarray(eval_y),))
        if on_iteration is not None:
            callbacks.append(lambda env: on_iteration(env.iteration + 1, env.end_iteration))
        model.fit(self.encode(X), np.asarray(y), callbacks=callbacks, **kwargs)
        self.booster_ = model.booster_
        self.best_iteration_ = int(model.best_iteration_ or model.n_estimators)
        self.classes_ = np.array([0, 1])
        return self

    def learn_columns(self, X: pd.DataFrame) -> ChurnModel:
        """Learn the column order and the categories of the non-numeric columns (what ``encode``
        maps to stable integer codes); every fitting path, local or distributed, calls it."""
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.categories_ = {
            c: sorted(str(v) for v in X[c].dropna().unique())
            if not isinstance(X[c].dtype, pd.CategoricalDtype)
            else [str(v) for v in X[c].cat.categories]
            for c in X.columns
            if not pd.api.types.is_numeric_dtype(X[c])
            or isinstance(X[c].dtype, pd.CategoricalDtype)
        }
        return self

    def encode(self, X: pd.DataFrame) -> pd.DataFrame:
        """Numeric frame in training column order; categoricals as stable integer codes."""
        check_features(X, list(self.feature_names_in_))
        out = X[list(self.feature_names_in_)].copy()
        for column, categories in self.categories_.items():
            codes = pd.Categorical(out[column].astype("str"), categories=categories).codes
            out[column] = np.where(codes < 0, np.nan, codes).astype(np.float64)
        return out.astype(np.float64)

    def raw_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated P(churn) from the boosted trees (best iteration)."""
        return self.booster_.predict(self.encode(X), num_iteration=self.best_iteration_)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.raw_proba(X)
        return np.column_stack([1 - p, p])

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """Exact TreeSHAP contributions in log-odds; last column is the expected value."""
        return self.booster_.predict(
            self.encode(X), num_iteration=self.best_iteration_, pred_contrib=True
        )

    def size(self) -> dict[str, int]:
        dump = self.booster_.dump_model(num_iteration=self.best_iteration_)
        leaves = [t["num_leaves"] for t in dump["tree_info"]]
        return {"trees": len(leaves), "leaves_total": int(sum(leaves)), "max_leaves": max(leaves)}


def check_features(X: pd.DataFrame, expected: list[str], dtypes: dict[str, str] | None = None):
    """Raise ``FeatureMismatchError`` unless X has every expected column (and dtype kind)."""
    missing = [c for c in expected if c not in X.columns]
    if missing:
        raise FeatureMismatchError(
            f"scoring features lack {missing} that the model was trained on; rebuild features"
            " with the same pipeline version or retrain (make train)"
        )
    for column, expected_kind in (dtypes or {}).items():
        kind = dtype_kind(X[column])
        if kind != expected_kind:
            raise FeatureMismatchError(
                f"feature '{column}' is {kind} here but was {expected_kind} in training;"
                " rebuild the features or retrain"
            )


def dtype_kind(series: pd.Series) -> str:
    """'categorical', 'integer' or 'float': what the model card records per feature."""
    if isinstance(series.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    return "integer" if pd.api.types.is_integer_dtype(series) else "float"


class ProbabilityCalibrator(BaseEstimator):
    """Maps raw model probabilities to calibrated ones, fitted on a later out-of-time slice.

    ``isotonic``: a monotone step-linear map (the same fit as scikit-learn's
    ``CalibratedClassifierCV(FrozenEstimator(model), method='isotonic')`` for a binary model),
    stored as its breakpoints. ``sigmoid``: Platt scaling on the log-odds.
    """

    def __init__(self, method: str = "isotonic") -> None:
        self.method = method

    def fit(self, p_raw: np.ndarray, y: np.ndarray) -> ProbabilityCalibrator:
        p_raw, y = np.asarray(p_raw, dtype=np.float64), np.asarray(y)
        if self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p_raw, y)
            self.x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        elif self.method == "sigmoid":
            lr = LogisticRegression(C=1e6).fit(_logit(p_raw)[:, None], y)
            self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        else:
            raise ValueError(f"calibration method '{self.method}': use isotonic or sigmoid")
        return self

    def transform(self, p_raw: np.ndarray) -> np.ndarray:
        p_raw = np.asarray(p_raw, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(p_raw, self.x_, self.y_)
        return 1.0 / (1.0 + np.exp(-(self.a_ * _logit(p_raw) + self.b_)))

    def to_dict(self) -> dict:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist()}
        return {"method": "sigmoid", "a": self.a_, "b": self.b_}

    @classmethod
    def from_dict(cls, payload: dict) -> ProbabilityCalibrator:
        cal = cls(payload["method"])
        if cal.method == "isotonic":
            cal.x_, cal.y_ = np.asarray(payload["x"]), np.asarray(payload["y"])
        else:
            cal.a_, cal.b_ = float(payload["a"]), float(payload["b"])
        return cal


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


class BundleError(ValueError):
    """A model bundle that is incomplete or was changed after export; the message says how."""


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file in ``directory`` but the manifest, by file name."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).iterdir())
        if p.is_file() and p.name != BUNDLE_MANIFEST
    }


def verify_bundle(directory: Path) -> dict[str, str]:
    """The bundle's manifest after checking it lists exactly the files present, with their
    SHA-256; raise ``BundleError`` naming the first file that differs."""
    directory = Path(directory)
    manifest_path = directory / BUNDLE_MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"'{directory}' has no {BUNDLE_MANIFEST} (a bundle from an older version, or not a"
            " bundle): retrain to export a verified one (churn train)"
        )
    listed = json.loads(manifest_path.read_text())["sha256"]
    found = file_digests(directory)
    for name in sorted(set(listed) | set(found)):
        if listed.get(name) != found.get(name):
            state = "missing" if name not in found else "not listed" if name not in listed else ""
            raise BundleError(
                f"'{directory / name}' {state or 'does not match the SHA-256 in the manifest'}"
                f" ({str(found.get(name))[:12]}… vs manifest {str(listed.get(name))[:12]}…):"
                " the bundle was changed after export; refusing it. Re-export it with"
                " `churn train` (or restore the original files)"
            )
    return listed


class ModelBundle:
    """A trained model, its calibrator and its card: what scoring needs, from text files only.

    On disk (``save``): ``model.txt`` (LightGBM text), ``calibrator.json``, ``card.json``,
    ``registration.json`` (registered name, version and run id, when registered) and
    ``manifest.json`` (SHA-256 of every other file); ``load`` refuses any difference. The
    registry version is not in ``card.json`` (it is known only after the model is logged), so
    the registry artifact and the exported bundle share model, calibrator and card bytes.
    """

    def __init__(
        self,
        model: ChurnModel,
        calibrator: ProbabilityCalibrator,
        card: dict,
        registration: dict | None = None,
    ) -> None:
        self.model = model
        self.calibrator = calibrator
        self.card = card
        self.registration = registration

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.card["features"]]

    def register(self, name: str, version: str, run_id: str) -> ModelBundle:
        """Record the registry name and version this bundle was registered as."""
        self.registration = {"model_name": name, "version": str(version), "run_id": run_id}
        self.card = {**self.card, "model_version": str(version)}
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated P(churn within the horizon) per row."""
        check_features(X, self.features, {f["name"]: f["kind"] for f in self.card["features"]})
        if len(X) == 0:  # LightGBM refuses an empty frame; an empty base scores to nothing
            return np.zeros(0, dtype=np.float64)
        return self.calibrator.transform(self.model.raw_proba(X))

    def save(self, directory: Path) -> Path:
        """Write the bundle to a staging folder, then publish it onto ``directory`` as one set
        (the previous bundle stays whole until the new one is complete)."""
        from pipeline.io import staged_dir

        with staged_dir(directory) as staging:
            self.write(staging)
        return Path(directory)

    def write(self, folder: Path) -> Path:
        """Write the bundle files and their manifest into the existing empty ``folder``."""
        folder = Path(folder)
        text = self.model.booster_.model_to_string(num_iteration=self.model.best_iteration_)
        (folder / BUNDLE_MODEL).write_text(text)
        card = {k: v for k, v in self.card.items() if k not in ("model_version", "calibrator")}
        card["model_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        card["categories"] = self.model.categories_
        card["best_iteration"] = self.model.best_iteration_
        self.card = {**self.card, **card}
        _dump(card, folder / BUNDLE_CARD)
        _dump(self.calibrator.to_dict(), folder / BUNDLE_CALIBRATOR)
        if self.registration is not None:
            _dump(self.registration, folder / BUNDLE_REGISTRATION)
        _dump({"sha256": file_digests(folder)}, folder / BUNDLE_MANIFEST)
        return folder

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        """Load a bundle after verifying every file against its manifest (``BundleError``)."""
        from pipeline.io import recover_dir

        directory = recover_dir(Path(directory))
        if not (directory / BUNDLE_MODEL).exists():
            raise FileNotFoundError(
                f"no model bundle in '{directory}' (needs {BUNDLE_MODEL}, {BUNDLE_CARD},"
                f" {BUNDLE_CALIBRATOR}, {BUNDLE_MANIFEST}); run `churn train` first"
            )
        verify_bundle(directory)
        card = json.loads((directory / BUNDLE_CARD).read_text())
        registration_path = directory / BUNDLE_REGISTRATION
        registration = None
        if registration_path.exists():
            registration = json.loads(registration_path.read_text())
            card["model_version"] = registration["version"]
        model = ChurnModel()
        model.booster_ = lgb.Booster(model_str=(directory / BUNDLE_MODEL).read_text())
        model.feature_names_in_ = np.asarray([f["name"] for f in card["features"]], dtype=object)
        model.categories_ = card["categories"]
        model.best_iteration_ = int(card["best_iteration"])
        model.classes_ = np.array([0, 1])
        calibrator = json.loads((directory / BUNDLE_CALIBRATOR).read_text())
        return cls(model, ProbabilityCalibrator.from_dict(calibrator), card, registration)


def export_bundle(source: Path, target: Path, registration: dict) -> Path:
    """Publish a verified bundle folder (e.g. the registry's) onto ``target`` with its
    registration: model, calibrator and card copied byte for byte, a new manifest."""
    from pipeline.io import staged_dir

    verify_bundle(source)
    with staged_dir(target) as staging:
        for name in BUNDLE_FILES:
            (staging / name).write_bytes((Path(source) / name).read_bytes())
        _dump(registration, staging / BUNDLE_REGISTRATION)
        _dump({"sha256": file_digests(staging)}, staging / BUNDLE_MANIFEST)
    return Path(target)


def _dump(payload: dict, path: Path) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
