"""The model bundle: one SHA-256 manifest over every file, verified on load; published as a set.

A tiny model on synthetic rows (one categorical feature as pandas ``category``) keeps it fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.io import publish_dir, recover_dir
from pipeline.model import (
    BundleError,
    ChurnModel,
    ModelBundle,
    ProbabilityCalibrator,
    dtype_kind,
    export_bundle,
)

pytestmark = pytest.mark.model


def tiny_features(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "days_since_last_login": rng.uniform(0, 60, n),
            "events_30d": rng.integers(0, 40, n).astype("int64"),
            "plan": pd.Categorical(rng.choice(["basic", "pro", "team"], n)),
        }
    )


def tiny_bundle(n: int = 2000, seed: int = 0) -> ModelBundle:
    """Churn when no login for 30 days, more often on the basic plan; sigmoid-calibrated."""
    X = tiny_features(n, seed)
    rng = np.random.default_rng(seed + 1)
    y = (X["days_since_last_login"] > 30) | ((X["plan"] == "basic") & (rng.random(n) < 0.3))
    model = ChurnModel(n_estimators=20, num_leaves=4, min_child_samples=20, n_jobs=1)
    model.fit(X, y.astype(int).to_numpy())
    calibrator = ProbabilityCalibrator("sigmoid").fit(model.raw_proba(X), y.astype(int))
    card = {
        "model_name": "tiny",
        "mlflow_run_id": "run-1",
        "features": [{"name": c, "kind": dtype_kind(X[c])} for c in X.columns],
        "tier_policy": {"policy": "thresholds", "red_threshold": 0.5, "orange_threshold": 0.2},
    }
    return ModelBundle(model, calibrator, card).register("tiny", "3", "run-1")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle().save(tmp_path_factory.mktemp("models") / "champion")


def copy_of(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_the_manifest_lists_every_file_and_the_loaded_bundle_predicts_the_same(saved):
    manifest = json.loads((saved / "manifest.json").read_text())["sha256"]
    assert sorted(manifest) == ["calibrator.json", "card.json", "model.txt", "registration.json"]
    assert "model_version" not in json.loads((saved / "card.json").read_text())
    loaded = ModelBundle.load(saved)
    assert loaded.card["model_version"] == "3"
    assert loaded.registration == {"model_name": "tiny", "version": "3", "run_id": "run-1"}
    X = tiny_features(50, seed=9)
    np.testing.assert_array_equal(loaded.predict(X), tiny_bundle().predict(X))


def test_saving_the_same_bundle_twice_gives_the_same_bytes(saved, tmp_path):
    again = tiny_bundle().save(tmp_path / "champion")
    for name in ("model.txt", "card.json", "calibrator.json", "registration.json", "manifest.json"):
        assert (again / name).read_bytes() == (saved / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("card.json", '"red_threshold": 0.5', '"red_threshold": 0.05'),
        ("calibrator.json", '"method": "sigmoid"', '"method":  "sigmoid"'),
        ("model.txt", "learning_rate", "learning_rate "),
        ("registration.json", '"version": "3"', '"version": "4"'),
    ],
    ids=["tier-threshold", "calibrator", "model", "registration"],
)
def test_an_edited_file_is_refused_with_its_name(saved, tmp_path, name, old, new):
    copy = copy_of(saved, tmp_path)
    text = (copy / name).read_text()
    assert old in text
    (copy / name).write_text(text.replace(old, new, 1))
    with pytest.raises(BundleError, match=rf"{name}' does not match the SHA-256 in the manifest"):
        ModelBundle.load(copy)


def test_a_missing_extra_or_unlisted_file_is_refused(saved, tmp_path):
    copy = copy_of(saved, tmp_path)
    (copy / "calibrator.json").unlink()
    with pytest.raises(BundleError, match=r"calibrator\.json' missing"):
        ModelBundle.load(copy)
    copy = copy_of(saved, tmp_path / "b")
    (copy / "override.json").write_text("{}")
    with pytest.raises(BundleError, match=r"override\.json' not listed"):
        ModelBundle.load(copy)
    (copy / "override.json").unlink()
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"has no manifest\.json"):
        ModelBundle.load(copy)


def test_a_failure_while_saving_leaves_the_previous_bundle_whole(saved, tmp_path, monkeypatch):
    folder = copy_of(saved, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = tiny_bundle(seed=4)

    def crash(self):
        raise OSError("disk full")

    monkeypatch.setattr(ProbabilityCalibrator, "to_dict", crash)  # after model.txt and card
    with pytest.raises(OSError, match="disk full"):
        other.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["copy"]  # no staging left
    ModelBundle.load(folder)


def test_a_kill_between_the_two_renames_is_recovered_to_the_previous_bundle(
    saved, tmp_path, monkeypatch
):
    folder = copy_of(saved, tmp_path)
    staging = tmp_path / "new"
    staging.mkdir()
    tiny_bundle(seed=4).register("tiny", "9", "run-9").write(staging)
    real_replace, calls = os.replace, []

    def killed_on_second(src, dst):
        calls.append(dst)
        if len(calls) >= 2:  # the process dies after setting the old bundle aside
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        publish_dir(staging, folder)
    monkeypatch.undo()
    assert not folder.exists()  # as the kill left it: the old bundle set aside, not lost
    assert ModelBundle.load(folder).registration["run_id"] == "run-1"  # put back on load


def test_recover_dir_puts_back_a_folder_set_aside_by_an_interrupted_swap(saved, tmp_path):
    folder = copy_of(saved, tmp_path)
    os.replace(folder, folder.with_name(".old-copy"))  # what a kill mid-swap leaves
    assert not folder.exists()
    recover_dir(folder)
    assert ModelBundle.load(folder).card["model_version"] == "3"


def test_exporting_a_registry_bundle_keeps_its_files_byte_for_byte(tmp_path):
    bundle = tiny_bundle()
    bundle.registration = None  # as logged to the registry: the version is not known yet
    registry = tmp_path / "registry"
    registry.mkdir()
    bundle.write(registry)
    registration = {"model_name": "tiny", "version": "5", "run_id": "r"}
    target = export_bundle(registry, tmp_path / "champion", registration)
    for name in ("model.txt", "card.json", "calibrator.json"):
        assert (target / name).read_bytes() == (registry / name).read_bytes()
    assert ModelBundle.load(target).card["model_version"] == "5"
