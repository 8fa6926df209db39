"""The registered champion is an MLflow pyfunc from code: calibrated probabilities, no pickle,
a signature that takes the feature frame as scoring builds it, a verified bundle artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_bundle import tiny_bundle, tiny_features

from pipeline import tracking
from pipeline.config import TierConfig, ValueConfig, parse_config
from pipeline.score import ChampionError, load_champion, score_frame

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    """A tiny bundle logged and registered as ``tiny`` v1 with the champion alias."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.configure(uri, "tiny", str(root / "mlruns"))
    bundle = tiny_bundle()
    with tracking.run("train") as run_id:
        version = tracking.log_pyfunc(bundle, tiny_features(5, seed=3), "tiny")
    tracking.set_champion("tiny", version)
    bundle.register("tiny", version, run_id)
    return root, uri, bundle


def base(n: int = 200) -> pd.DataFrame:
    """A scoring base as ``build_base`` gives it: keys, the features, owner and value columns."""
    frame = tiny_features(n, seed=7)
    frame["plan"] = frame["plan"].astype("str")  # scoring's frame carries strings
    return frame.assign(
        customer_id=[f"c{i}" for i in range(n)],
        as_of=pd.Timestamp("2026-10-01"),
        mrr=100.0,
        owner="ann",
        segment="SMB",
        last_activity_at=pd.Timestamp("2026-09-01"),
        has_events=True,
        tenure_days=400.0,
    )


def test_the_pyfunc_predicts_the_calibrated_probabilities_scoring_writes(registered):
    import mlflow

    _, uri, bundle = registered
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/tiny@champion")
    frame = base()
    scores = score_frame(frame, bundle, TierConfig(), ValueConfig())
    got = np.asarray(model.predict(frame[bundle.features]))
    assert got.shape == (200,)
    assert 0 < got.min() < got.max() < 1 and len(np.unique(got)) > 10  # not labels
    assert np.abs(got - bundle.model.raw_proba(frame)).max() > 0.01  # calibrated, not raw
    np.testing.assert_allclose(got, scores["churn_probability"], rtol=0, atol=1e-9)


def test_the_pyfunc_is_logged_from_code_with_signature_example_and_pinned_packages(registered):
    from importlib.metadata import version

    import mlflow

    _, uri, _ = registered
    mlflow.set_tracking_uri(uri)
    folder = Path(mlflow.artifacts.download_artifacts("models:/tiny/1"))
    files = [p.name for p in folder.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))]
    assert "pyfunc_model.py" in files
    assert sorted(p.name for p in (folder / "artifacts" / "bundle").iterdir()) == [
        "calibrator.json",
        "card.json",
        "manifest.json",
        "model.txt",
    ]
    info = mlflow.models.get_model_info("models:/tiny/1")
    inputs = {c.name: c.type.name for c in info.signature.inputs.inputs}
    assert inputs == {"days_since_last_login": "double", "events_30d": "long", "plan": "string"}
    assert info.saved_input_example_info is not None
    requirements = (folder / "requirements.txt").read_text().split()
    assert f"lightgbm=={version('lightgbm')}" in requirements


def test_an_edited_registry_artifact_is_refused_by_the_pyfunc_and_by_scoring(registered, tmp_path):
    import mlflow

    root, uri, _ = registered
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    source = client.get_model_version("tiny", "1").source
    logged = mlflow.get_logged_model(source.removeprefix("models:/"))
    stored = Path(logged.artifact_location.removeprefix("file://")) / "artifacts/bundle/card.json"
    original = stored.read_text()
    stored.write_text(original.replace('"red_threshold": 0.5', '"red_threshold": 0.01'))
    try:
        with pytest.raises(Exception, match=r"card\.json' does not match the SHA-256"):
            mlflow.pyfunc.load_model("models:/tiny@champion")
        config = parse_config(
            {
                "project": "tiny",
                "data": {"events": "e.parquet", "customers": "c.csv"},
                "event_types": {"login": ["login"]},
                "train": {"tracking_uri": uri, "artifact_location": str(root / "mlruns")},
            }
        )
        with pytest.raises(ChampionError, match="registry artifact of tiny v1 is refused"):
            load_champion(config, tmp_path / "champion")
        assert not (tmp_path / "champion").exists()  # nothing exported from it
    finally:
        stored.write_text(original)
