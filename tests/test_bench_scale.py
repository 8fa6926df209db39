"""The scale bench end to end at a tiny size, through its real code path (generation, the
champion trained on the small log, then each measurement as a fresh subprocess); the 1M-customer
figures themselves come from ``make bench-scale``."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from pipeline.bench import ensure_demo
from pipeline.bench_scale import ROOT, attempt, ensure_champion, main, where_time_goes

RUNS = ("scan", "features_one_as_of", "daily_scoring", "export", "daily_run")
DAILY_PHASES = ("validate", "features at as_of", "score", "export", "monitor", "report")


@pytest.fixture
def project():
    """A project of its own: the champion goes to models/<project>/ under the repository root
    (where the bench runs the CLI), removed afterwards."""
    name = f"scale-test-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(ROOT / "models" / name, ignore_errors=True)


@pytest.mark.model
def test_the_scale_bench_measures_every_run_within_budget_and_says_where_time_goes(
    tmp_path: Path, project: str
):
    out, data_dir = tmp_path / "scale.json", tmp_path / "scale"
    argv = ["--out", str(out), "--data-dir", str(data_dir), "--project", project]
    main([*argv, "--customers", "1500", "--train-customers", "2000", "--cores", "2"])

    got = json.loads(out.read_text())["scale"]
    assert got["data"]["n_customers"] == 1500 and got["data"]["n_events"] > 0
    assert got["champion"]["trained"] is True and got["champion"]["run"]["rc"] == 0
    for name in RUNS:
        run = got["runs"][name]
        assert run["rc"] == 0, name
        assert run["wall_s"] > 0 and run["peak_rss_mb"] > 0 and run["peak_tree_rss_mb"] > 0, name
        assert run["within_budget"] is True, name
    assert got["all_within_budget"] is True
    features_steps = dict(got["runs"]["features_one_as_of"]["detail"]["steps_s"])
    assert set(features_steps) == {"validating inputs", "building features"}
    daily = got["runs"]["daily_run"]["detail"]
    assert {"validating inputs", "daily run"} <= set(dict(daily["steps_s"]))
    timed = dict(daily["phases_s"])
    assert "score/reasons" in timed and timed["score/reasons"] > 0  # red and orange explained
    phases = dict(got["daily_run_phases_s"])
    assert all(phases[p] > 0 for p in DAILY_PHASES), phases
    assert phases["other, inside the daily run"] >= 0
    assert dict(daily["peak_rss_after_mb"])["report"] > 0
    disk = got["disk_mb"]
    assert disk["big_log"] > 0 and disk["event_store"] > 0 and disk["outputs"] > 0
    assert disk["store_dir"] == str(data_dir / "store")

    # a second run would generate and train nothing
    assert ensure_demo(data_dir / "big", 1500, 42)["generated"] is False
    again = ensure_champion(data_dir / "train" / "train.yaml", project, False, 2, tmp_path)
    assert again["trained"] is False


@pytest.mark.code
def test_a_failed_run_is_recorded_with_its_exit_code_instead_of_ending_the_bench(tmp_path: Path):
    cmd = [sys.executable, "-c", "import sys; print('out of memory'); sys.exit(3)"]

    run = attempt("fails", cmd, 1, tmp_path)

    assert run["rc"] == 3 and run["wall_s"] is None and run["within_budget"] is None
    assert "out of memory" in run["detail"]["error"]


@pytest.mark.code
def test_the_daily_run_splits_into_validation_top_level_stages_the_rest_and_start_up():
    run = {
        "wall_s": 20.0,
        "detail": {
            "steps_s": [["validating inputs", 2.0], ["daily run", 15.0]],
            "phases_s": [
                ["validate", 1.9],
                ["features at as_of", 6.0],
                ["score/reasons", 1.0],
                ["score", 3.0],
                ["report", 5.0],
            ],
        },
    }

    assert where_time_goes(run) == [
        ["validate", 2.0],
        ["features at as_of", 6.0],
        ["score", 3.0],
        ["report", 5.0],
        ["other, inside the daily run", 1.0],
        ["start-up, imports, exit", 3.0],
    ]
