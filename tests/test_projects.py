"""Projects never cross: two projects trained one after the other in one MLflow store and one
working folder keep their own champion, scores and exports; scoring never takes another
project's model; config names are checked when the config loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support import DEMO_EVENT_TYPES
from typer.testing import CliRunner

from pipeline import paths, tracking
from pipeline.cli import app
from pipeline.config import ConfigError, load_config, parse_config
from pipeline.model import ModelBundle
from pipeline.score import ChampionError, build_base, load_champion, model_settings, run_scoring

pytestmark = pytest.mark.model
runner = CliRunner()
AS_OF = "2026-10-01"


def raw_config(root: Path, data_dir: Path, project: str | None = None) -> dict:
    """The demo's settings on a small log; MLflow store shared by every project under root."""
    raw: dict = {
        "data": {
            "events": str(data_dir / "events.parquet"),
            "customers": str(data_dir / "customers.csv"),
            "observed_until": "2026-11-01",
        },
        "event_types": DEMO_EVENT_TYPES,
        "train": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_location": str(root / "mlruns"),
            "n_estimators": 60,
            "min_child_samples": 20,
        },
    }
    return raw | ({"project": project} if project else {})


def snapshot(root: Path, project: str) -> dict[str, bytes]:
    """Every file the project persisted (its models and outputs), by path."""
    files = [*(root / "models" / project).rglob("*"), *(root / "outputs" / project).rglob("*")]
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(files) if p.is_file()}


def score_and_export(config, data):
    from pipeline.export import run_export

    result, files = run_scoring(config, data, AS_OF)
    run_export(config, files["scores"])
    return result


@pytest.fixture(scope="module")
def two_projects(tmp_path_factory: pytest.TempPathFactory):
    """alpha trained, scored and exported; then beta trained and scored in the same place."""
    from pipeline.demo import write_demo_data
    from pipeline.events import load_inputs
    from pipeline.train import run_training

    data_dir = tmp_path_factory.mktemp("demo")
    write_demo_data(data_dir, n_customers=1500, seed=5)
    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        alpha = parse_config(raw_config(root, data_dir, "alpha"))
        beta = parse_config(raw_config(root, data_dir, "beta"))
        data = load_inputs(alpha)
        trained_alpha = run_training(alpha, data=data)
        scored_alpha = score_and_export(alpha, data)
        before = snapshot(root, "alpha")
        trained_beta = run_training(beta, data=load_inputs(beta))
        score_and_export(beta, data)
        after = snapshot(root, "alpha")
        tracking.configure(alpha.train.tracking_uri, "alpha", alpha.train.artifact_location)
        champions = {p: tracking.champion_version(p) for p in ("alpha", "beta")}
    return {
        "root": root,
        "data_dir": data_dir,
        "configs": (alpha, beta),
        "data": data,
        "trained": (trained_alpha, trained_beta),
        "scored_alpha": scored_alpha,
        "before": before,
        "after": after,
        "champions": champions,
    }


def test_training_a_second_project_leaves_the_first_ones_files_and_champion_as_they_were(
    two_projects,
):
    before, after = two_projects["before"], two_projects["after"]
    assert "models/alpha/champion/manifest.json" in before
    assert "outputs/alpha/scores/2026-10-01/scores.parquet" in before
    assert any(name.startswith("outputs/alpha/export/") for name in before)
    assert after == before  # byte for byte: champion bundle, scores, export
    trained_alpha, trained_beta = two_projects["trained"]
    champions = two_projects["champions"]
    assert champions["alpha"] == (trained_alpha.version, trained_alpha.run_id)
    assert champions["beta"] == (trained_beta.version, trained_beta.run_id)
    assert trained_beta.bundle_dir == Path("models/beta/champion")


def test_each_project_scores_with_its_own_champion_and_rescoring_gives_the_same_bytes(
    two_projects, monkeypatch
):
    root = two_projects["root"]
    monkeypatch.chdir(root)
    alpha, beta = two_projects["configs"]
    bundle, source = load_champion(alpha)
    assert bundle.card["model_name"] == "alpha"
    assert source.startswith("registry alpha@champion")
    assert load_champion(beta)[0].card["model_name"] == "beta"
    result, files = run_scoring(alpha, two_projects["data"], AS_OF)
    name = "outputs/alpha/scores/2026-10-01/scores.parquet"
    assert files["scores"].read_bytes() == two_projects["before"][name]
    assert result.summary["model"]["name"] == "alpha"


def test_the_registered_pyfunc_predicts_the_probabilities_churn_score_wrote(
    two_projects, monkeypatch
):
    import mlflow

    monkeypatch.chdir(two_projects["root"])
    alpha = two_projects["configs"][0]
    bundle, _ = load_champion(alpha)
    features, label, _ = model_settings(bundle.card, alpha)
    base = build_base(two_projects["data"], pd.Timestamp(AS_OF), features, label).features
    scores = two_projects["scored_alpha"].scores
    assert len(scores) > 500
    frame = tracking.pyfunc_input(base.set_index("customer_id").loc[scores["customer_id"]])
    assert any(frame[c].dtype == "str" for c in bundle.features)  # categoricals as strings
    model = mlflow.pyfunc.load_model("models:/alpha@champion")
    got = np.asarray(model.predict(frame[bundle.features]))
    np.testing.assert_allclose(got, scores["churn_probability"], rtol=0, atol=1e-9)


def test_a_registry_and_an_export_that_disagree_stop_scoring_and_say_the_fix(
    two_projects, monkeypatch, tmp_path
):
    monkeypatch.chdir(two_projects["root"])
    alpha = two_projects["configs"][0]
    copied = tmp_path / "champion"
    shutil.copytree(two_projects["root"] / "models/beta/champion", copied)
    with pytest.raises(ChampionError, match="disagree") as error:
        load_champion(alpha, copied)
    assert "Remove" in str(error.value)
    assert "set_registered_model_alias('alpha'" in str(error.value)


def test_a_missing_export_is_rewritten_from_the_registry_champion(two_projects, monkeypatch):
    root = two_projects["root"]
    monkeypatch.chdir(root)
    alpha = two_projects["configs"][0]
    folder = root / "elsewhere" / "champion"
    bundle, _ = load_champion(alpha, folder)
    exported = ModelBundle.load(folder)
    assert exported.registration == bundle.registration
    for name in ("model.txt", "card.json", "calibrator.json", "registration.json"):
        assert (folder / name).read_bytes() == (root / "models/alpha/champion" / name).read_bytes()


def test_without_a_tracking_store_the_projects_export_is_used(two_projects, monkeypatch):
    monkeypatch.chdir(two_projects["root"])
    raw = raw_config(two_projects["root"], two_projects["data_dir"], "alpha")
    raw["train"]["tracking_uri"] = f"sqlite:///{two_projects['root'] / 'no-store.db'}"
    bundle, source = load_champion(parse_config(raw))
    assert source == "exported bundle models/alpha/champion"
    assert bundle.card["model_version"] == two_projects["trained"][0].version


def test_scoring_a_project_without_a_champion_exits_2_and_says_how_to_train(two_projects):
    root = two_projects["root"]
    path = root / "configs" / "gamma.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw_config(root, two_projects["data_dir"])))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = runner.invoke(app, ["score", "--config", str(path)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "project 'gamma' has no champion model" in message
    assert "churn train --config" in message
    assert not (root / "outputs" / "gamma" / "scores").exists()


@pytest.mark.code
def test_the_project_defaults_to_the_file_stem_and_names_everything(tmp_path):
    path = tmp_path / "retail.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, tmp_path)))
    config = load_config(path)
    assert config.project == "retail"
    assert (config.train.model_name, config.train.experiment) == ("retail", "retail")
    assert paths.champion_dir(config) == Path("models/retail/champion")
    assert paths.output_dir(config) == Path("outputs/retail")
    assert paths.run_dir(paths.output_dir(config), "2026-10-01") == Path(
        "outputs/retail/scores/2026-10-01"
    )


@pytest.mark.code
def test_the_demo_config_is_the_demo_project():
    config = load_config(Path(__file__).parents[1] / "configs" / "demo.yaml")
    assert (config.project, config.train.model_name, config.train.experiment) == ("demo",) * 3
    assert paths.champion_dir(config) == Path("models/demo/champion")
    assert paths.output_dir(config) == Path("outputs/demo")


@pytest.mark.code
def test_explicit_names_win_over_the_project_defaults(tmp_path):
    raw = raw_config(tmp_path, tmp_path, "retail")
    raw["train"] |= {"model_name": "retail-churn", "experiment": "retail experiments"}
    config = parse_config(raw)
    assert config.train.model_name == "retail-churn"
    assert config.train.experiment == "retail experiments"
    assert parse_config(config.model_dump(mode="json")) == config  # defaults do not drift


@pytest.mark.code
@pytest.mark.parametrize("name", ["retail/churn", "retail:churn", " retail", ""])
def test_a_model_name_mlflow_cannot_register_fails_when_the_config_loads(tmp_path, name):
    raw = raw_config(tmp_path, tmp_path, "retail")
    raw["train"]["model_name"] = name
    path = tmp_path / "retail.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"'train.model_name'.*cannot be registered in MLflow"):
        load_config(path)


@pytest.mark.code
def test_a_config_file_name_that_cannot_name_a_project_asks_for_project(tmp_path):
    path = tmp_path / "my retail.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, tmp_path)))
    with pytest.raises(ConfigError, match=r"'project'.*set `project:`"):
        load_config(path)
