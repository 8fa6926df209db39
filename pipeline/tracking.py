"""MLflow: the only module that imports mlflow.

Runs, params, metrics and artifacts go to the tracking store (default ``sqlite:///mlflow.db``,
artifacts under ``mlruns/``). One experiment and one registered model per project (names from
``pipeline.paths``); the alias ``champion`` points at the version scoring uses. The registered
model is a pyfunc logged from code (``pipeline/pyfunc_model.py``, no pickle) whose artifact
``bundle`` is the verified text bundle (model.txt, calibrator.json, card.json, manifest.json):
``mlflow.pyfunc.load_model("models:/<name>@champion").predict(features)`` gives the calibrated
probability ``churn score`` gives, and scoring loads the same bundle from the registry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

CHAMPION = "champion"
BUNDLE_ARTIFACT = "bundle"
"""The bundle folder's name among a training run's artifacts and among the pyfunc's artifacts."""
PYFUNC_MODEL = Path(__file__).with_name("pyfunc_model.py")
"""The models-from-code file MLflow runs to load the registered model."""


def _mlflow():
    import mlflow

    return mlflow


def configure(tracking_uri: str, experiment: str, artifact_location: str) -> None:
    """Point MLflow at the store and create the experiment (artifacts under a local folder)."""
    mlflow = _mlflow()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = Path(artifact_location).resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)


@contextlib.contextmanager
def run(name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
    """Start an MLflow run; yields its run id."""
    mlflow = _mlflow()
    with mlflow.start_run(run_name=name, tags=tags) as active:
        yield active.info.run_id


def log_params(params: dict) -> None:
    """Log a flat dict of params (values as strings, cut to MLflow's 6000-char limit)."""
    _mlflow().log_params({k: str(v)[:6000] for k, v in params.items()})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log finite metrics; ``step`` orders repeated values (e.g. a date as YYYYMMDD)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and pd.notna(v)}
    _mlflow().log_metrics(clean, step=step)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifact(str(path), artifact_path=artifact_path)


def log_artifacts(directory: Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifacts(str(directory), artifact_path=artifact_path)


def log_dict(payload: dict, name: str) -> None:
    _mlflow().log_dict(payload, name)


def log_table(frame: pd.DataFrame, name: str) -> None:
    """Log a small frame as a CSV artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_csv(path, index=False)
        log_artifact(path)


def log_pyfunc(bundle, example: pd.DataFrame, model_name: str) -> str:
    """Log ``bundle`` as a models-from-code pyfunc (signature and input example from the
    feature frame ``example``, categorical columns as strings), registered under
    ``model_name``; returns the new version number."""
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    example = pyfunc_input(example)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # integer features are counts that are never missing: MLflow's hint does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        folder = Path(tmp) / BUNDLE_ARTIFACT
        folder.mkdir()
        # the registry's copy holds no registration: its version is known only after logging
        type(bundle)(bundle.model, bundle.calibrator, bundle.card).write(folder)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_MODEL),
            artifacts={BUNDLE_ARTIFACT: str(folder)},
            signature=infer_signature(example, bundle.predict(example)),
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=[
                f"{p}=={_version(p)}"
                for p in ("mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "pyarrow")
            ],
        )
    return str(info.registered_model_version)


def pyfunc_input(features: pd.DataFrame) -> pd.DataFrame:
    """The feature frame as the pyfunc takes it: pandas ``category`` columns as strings (MLflow's
    schema check refuses ``category``; DESIGN §11)."""
    out = features.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.CategoricalDtype):
            out[column] = out[column].astype("str")
    return out


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def champion_version(model_name: str) -> tuple[str, str] | None:
    """(version, run id) of the current champion, or None when there is none."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    return str(version.version), str(version.run_id)


def set_champion(model_name: str, version: str) -> None:
    _mlflow().MlflowClient().set_registered_model_alias(model_name, CHAMPION, version)


def tag_version(model_name: str, version: str, tags: dict[str, str]) -> None:
    client = _mlflow().MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))


def download_bundle(run_id: str, destination: Path) -> Path:
    """Download a run's verified text bundle into ``destination``; returns the bundle folder."""
    mlflow = _mlflow()
    destination.mkdir(parents=True, exist_ok=True)
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=BUNDLE_ARTIFACT, dst_path=str(destination)
    )
    return Path(path)


def active_run_id() -> str | None:
    active = _mlflow().active_run()
    return active.info.run_id if active else None


def store_reachable(tracking_uri: str) -> bool:
    """Whether the tracking store answers, without creating one.

    A ``sqlite:///`` store counts only when its file exists (opening a missing one would create
    an empty store); any other URI is asked for one experiment with a short time-out.
    """
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).exists()
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        return Path(tracking_uri.removeprefix("file://")).exists()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        _mlflow().MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as error:  # any failure means: score from the exported bundle instead
        log.info("tracking store %s not reachable: %s", tracking_uri, error)
        return False
    return True


def champion_bundle(model_name: str, destination: Path) -> tuple[Path, str, str] | None:
    """Download the registered champion's bundle (the pyfunc's ``bundle`` artifact, not yet
    verified); (folder, version, run id), or None when ``model_name`` has no champion."""
    champion = champion_version(model_name)
    if champion is None:
        return None
    version, run_id = champion
    destination.mkdir(parents=True, exist_ok=True)
    path = _mlflow().artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{version}", dst_path=str(destination)
    )
    folder = Path(path) / "artifacts" / BUNDLE_ARTIFACT
    if not folder.is_dir():
        raise FileNotFoundError(
            f"registered model {model_name} v{version} holds no '{BUNDLE_ARTIFACT}' artifact"
            " (registered by an older version of the pipeline): retrain (churn train)"
        )
    return folder, version, run_id


def log_linked_run(
    stage: str,
    model_run_id: str | None,
    model_version: str | None,
    params: dict,
    metrics: dict[str, float],
    artifacts: tuple[Path, ...] | list[Path] = (),
) -> str:
    """A scoring or export run, tagged with the model's run id and version it used (the link
    back to the training run); returns the new run id."""
    tags = {
        "stage": stage,
        "model_run_id": str(model_run_id),
        "model_version": str(model_version),
    }
    with run(stage, tags=tags) as run_id:
        log_params(params)
        log_metrics(metrics)
        for path in artifacts:
            if Path(path).exists():
                log_artifact(Path(path))
    return run_id
