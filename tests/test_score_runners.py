"""Scoring through the runners: probabilities and reasons computed chunk by chunk in this
process, in joblib worker processes and on a Dask LocalCluster give the same scores frame and
the same scores file, to the byte; a small base starts no worker unless asked to."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import DEMO_EVENT_TYPES

from pipeline import score
from pipeline.config import (
    ComputeConfig,
    Config,
    EventTypes,
    FeatureConfig,
    LabelConfig,
    TierConfig,
    parse_config,
)
from pipeline.dataset import LABEL, build_training_set
from pipeline.events import load_and_validate
from pipeline.features import feature_columns
from pipeline.model import (
    ChurnModel,
    FeatureMismatchError,
    ModelBundle,
    ProbabilityCalibrator,
    dtype_kind,
)
from pipeline.score import (
    CHUNK_ROWS,
    build_base,
    chunk_bounds,
    score_base,
    score_frame,
    scoring_compute,
    write_outputs,
)

pytestmark = pytest.mark.model

OBSERVED_UNTIL = pd.Timestamp("2026-11-01")
TRAIN_DATES = pd.DatetimeIndex(["2025-09-01", "2026-01-01", "2026-05-01"])
PREVIOUS_AS_OF = pd.Timestamp("2026-10-01")
SERIAL = ComputeConfig(n_jobs=1)
TWO = ComputeConfig(n_jobs=2)
DASK = ComputeConfig(engine="dask", dask={"n_workers": 2, "processes": False})
TIERS = TierConfig(policy="thresholds")  # red ≥ 0.5, orange ≥ 0.2


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 400-customer demo log in 5 store partitions, a LightGBM champion trained on three
    earlier as_of dates (saved and loaded as ``churn score`` loads it), the scoring base at
    the end of the log and an earlier run's scores (for hysteresis)."""
    from pipeline.demo import write_demo_data

    root = tmp_path_factory.mktemp("demo")
    write_demo_data(root, n_customers=400, seed=11)
    data = load_and_validate(
        root / "events.parquet",
        root / "customers.csv",
        EventTypes(**DEMO_EVENT_TYPES),
        observed_until=OBSERVED_UNTIL,
        partition_customers=90,
    )
    data.store.compute = SERIAL
    label = LabelConfig()
    bundle = ModelBundle.load(_train(data, label).save(root / "champion"))
    earlier = build_base(data, PREVIOUS_AS_OF, FeatureConfig(), label)
    previous = score_base(earlier, bundle, _config(root, SERIAL), FeatureConfig(), TIERS, 90)
    base = build_base(data, OBSERVED_UNTIL, FeatureConfig(), label)
    return {"root": root, "bundle": bundle, "base": base, "previous": previous.scores}


def _train(data, label: LabelConfig) -> ModelBundle:
    training = build_training_set(
        data.con, data.customers, TRAIN_DATES, FeatureConfig(), label, OBSERVED_UNTIL
    ).frame
    names = feature_columns(training.drop(columns=[LABEL]))
    model = ChurnModel(n_estimators=40, num_leaves=8, min_child_samples=10, n_jobs=1)
    model.fit(training[names], training[LABEL])
    calibrator = ProbabilityCalibrator("sigmoid").fit(
        model.raw_proba(training[names]), training[LABEL]
    )
    card = {
        "model_name": "demo",
        "model_version": "1",
        "mlflow_run_id": "run-1",
        "features": [{"name": n, "kind": dtype_kind(training[n])} for n in names],
    }
    return ModelBundle(model, calibrator, card)


def _config(root: Path, compute: ComputeConfig) -> Config:
    raw = {
        "data": {"events": "e.parquet", "customers": "c.csv", "output_dir": str(root / "out")},
        "event_types": DEMO_EVENT_TYPES,
        "compute": compute.model_dump(mode="json"),
    }
    return parse_config(raw)


def _scored(demo: dict, compute: ComputeConfig, explain_all: bool) -> score.ScoringResult:
    config = _config(demo["root"], compute)
    return score_base(
        demo["base"],
        demo["bundle"],
        config,
        FeatureConfig(),
        TIERS,
        90,
        explain_all=explain_all,
        previous=demo["previous"],
    )


@pytest.mark.parametrize("explain_all", [False, True], ids=["red_orange", "everyone"])
def test_every_runner_gives_the_serial_scores_and_the_same_file(
    demo: dict, tmp_path: Path, explain_all: bool
) -> None:
    serial = _scored(demo, SERIAL, explain_all)
    scores = serial.scores
    explained = scores["reason_1_sentence"].notna()
    assert len(scores) > 300 and explained.sum() >= 20  # a base worth splitting, reasons to ship
    assert set(scores["tier"]) == {"red", "orange", "green"}
    assert scores["previous_probability"].notna().any()  # hysteresis saw the earlier run
    files = write_outputs(serial, tmp_path / "serial" / "s.parquet", tmp_path)
    for name, compute in (("two", TWO), ("dask", DASK)):
        other = _scored(demo, compute, explain_all)
        pd.testing.assert_frame_equal(other.scores, scores, check_exact=True)
        pd.testing.assert_frame_equal(other.rejects, serial.rejects, check_exact=True)
        assert other.summary == serial.summary
        written = write_outputs(other, tmp_path / name / "s.parquet", tmp_path)
        assert written["scores"].read_bytes() == files["scores"].read_bytes()


def test_a_small_base_with_every_core_is_scored_without_workers(
    demo: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_workers(*args: object) -> list:
        raise AssertionError("a small base started workers")

    monkeypatch.setattr(score, "run_tasks", no_workers)
    result = _scored(demo, ComputeConfig(), explain_all=False)  # n_jobs: -1, the default
    assert len(result.scores) == len(demo["base"].features) - len(result.rejects)


def test_an_explicit_n_jobs_sends_even_a_small_base_to_workers(
    demo: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    real = score.run_tasks

    def counted(fn, tasks, compute, *args):
        calls.append((fn.__name__, len(tasks)))
        return real(fn, tasks, SERIAL, *args)  # counted here, run in this process

    monkeypatch.setattr(score, "run_tasks", counted)
    _scored(demo, TWO, explain_all=False)
    assert calls[0] == ("predict_chunk", 2) and calls[1][0] == "reasons_chunk"


def test_a_missing_feature_is_refused_before_any_worker_starts(
    demo: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(score, "run_tasks", lambda *a: pytest.fail("workers started"))
    frame = demo["base"].features.drop(columns=["tenure_days"])
    with pytest.raises(FeatureMismatchError, match=r"lack \['tenure_days'\]"):
        score_frame(frame, demo["bundle"], TIERS, _config(demo["root"], TWO).value, compute=TWO)


def test_every_core_scores_in_this_process_and_explicit_settings_stay() -> None:
    assert scoring_compute(ComputeConfig(), 10).n_jobs == 1
    assert scoring_compute(ComputeConfig(), 10_000_000).n_jobs == 1
    assert scoring_compute(TWO, 10) == TWO
    assert scoring_compute(DASK, 10) == DASK


@pytest.mark.parametrize("rows", [0, 1, 3, 317, 2 * CHUNK_ROWS + 7])
def test_chunks_cover_the_base_in_order_one_per_worker_at_least(rows: int) -> None:
    assert chunk_bounds(rows, SERIAL) == [(0, rows)]
    for compute in (TWO, DASK):
        bounds = chunk_bounds(rows, compute)
        assert bounds[0][0] == 0 and bounds[-1][1] == rows
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        sizes = np.diff([lo for lo, _ in bounds] + [rows])
        assert (sizes <= CHUNK_ROWS).all() and (rows == 0 or (sizes > 0).all())
        assert len(bounds) == max(1, min(rows, max(2, -(-rows // CHUNK_ROWS))))


def test_the_bench_times_both_runners_on_the_same_frame(demo: dict) -> None:
    from pipeline.bench_scoring import runner_timings

    config = _config(demo["root"], SERIAL)
    figures = runner_timings(demo["base"].features, demo["bundle"], config, TIERS, 90, True)
    assert figures["same_frame"] and figures["rows"] == len(demo["base"].features)
    assert figures["n_jobs_1"]["explained"] == figures["n_jobs_2"]["explained"] > 0
    assert figures["speedup_n_jobs_2"] > 0
