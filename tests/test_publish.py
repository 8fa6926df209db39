"""Scoring outputs are published as a set (run folder + LATEST pointer); an empty base writes
empty, valid outputs and says why."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from test_score import AS_OF, base_frame, tiny_bundle

from pipeline import io, paths
from pipeline.config import FeatureConfig, LabelConfig, TierConfig, parse_config
from pipeline.events import ValidatedData
from pipeline.model import ModelBundle
from pipeline.schemas import SCORES, check
from pipeline.score import Base, build_base, default_out, publish_run, score_base

pytestmark = pytest.mark.model
RUN_FILES = ["scores.parquet", "scores_rejects.csv", "scores_summary.json"]


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return tiny_bundle()


def config(out: Path):
    return parse_config(
        {
            "project": "shop",
            "data": {"events": "e.parquet", "customers": "c.csv", "output_dir": str(out)},
            "event_types": {"login": ["login"], "complaint": ["complaint"]},
        }
    )


def scored(bundle: ModelBundle, out: Path, days: list[float], as_of=AS_OF):
    """One scoring result: the last row has no events, so it is rejected."""
    frame = base_frame(days).assign(as_of=as_of)
    frame.loc[frame.index[-1], "has_events"] = False
    base = Base(frame, {"customers_valid": len(days), "base": len(days)}, 0, pd.Timestamp(as_of))
    return score_base(base, bundle, config(out), FeatureConfig(), TierConfig(), 90)


def published(out: Path) -> dict[str, bytes]:
    """Every file under the scores folder, by path (staging leftovers included)."""
    root = paths.scores_root(out)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_run_is_published_as_one_folder_with_a_latest_pointer(bundle, tmp_path):
    files = publish_run(scored(bundle, tmp_path, [1.0, 45.0, 3.0]), tmp_path)
    run = tmp_path / "scores" / "2025-06-01"
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    assert (tmp_path / "scores" / "LATEST").read_text() == "2025-06-01\n"
    assert default_out(config(tmp_path)) == run / "scores.parquet"
    assert files["history"] == tmp_path / "scores" / "history" / "scores_2025-06-01.parquet"
    summary = json.loads((run / "scores_summary.json").read_text())
    assert summary["files"]["scores"] == str(run / "scores.parquet")
    assert (summary["customers"]["scored"], summary["customers"]["rejected"]) == (2, 1)
    assert len(pd.read_csv(run / "scores_rejects.csv")) == 1


def test_latest_moves_to_a_newer_as_of_but_not_back_to_a_backfilled_one(bundle, tmp_path):
    publish_run(scored(bundle, tmp_path, [1.0, 3.0], as_of=pd.Timestamp("2025-07-01")), tmp_path)
    publish_run(scored(bundle, tmp_path, [1.0, 3.0]), tmp_path)  # 2025-06-01, a backfill
    assert (tmp_path / "scores" / "LATEST").read_text() == "2025-07-01\n"
    assert (tmp_path / "scores" / "2025-06-01" / "scores.parquet").exists()


def test_publishing_the_same_run_twice_gives_the_same_bytes(bundle, tmp_path):
    publish_run(scored(bundle, tmp_path, [1.0, 45.0, 3.0]), tmp_path)
    first = published(tmp_path)
    publish_run(scored(bundle, tmp_path, [1.0, 45.0, 3.0]), tmp_path)
    assert published(tmp_path) == first


@pytest.mark.parametrize("as_of", ["2025-06-01", "2025-07-01"], ids=["same-as_of", "new-as_of"])
def test_a_kill_while_writing_a_run_leaves_the_previous_set_whole(
    bundle, tmp_path, monkeypatch, as_of
):
    publish_run(scored(bundle, tmp_path, [1.0, 45.0, 3.0]), tmp_path)
    before = published(tmp_path)
    result = scored(bundle, tmp_path, [50.0, 2.0, 4.0, 5.0], as_of=pd.Timestamp(as_of))

    def half_written(self: pd.DataFrame, path, **kwargs) -> None:
        Path(path).write_text("customer_id,as_of\nc0,")  # the rejects file, cut short
        raise KeyboardInterrupt  # killed after scores.parquet, before rejects and summary

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_written)
    with pytest.raises(KeyboardInterrupt):
        publish_run(result, tmp_path)
    monkeypatch.undo()
    assert published(tmp_path) == before  # same files, same bytes, no staging folder left
    assert not [p for p in (tmp_path / "scores").iterdir() if p.name.startswith(".")]


def test_a_kill_before_the_pointer_moves_leaves_a_complete_run_and_the_old_pointer(
    bundle, tmp_path, monkeypatch
):
    publish_run(scored(bundle, tmp_path, [1.0, 45.0, 3.0]), tmp_path)
    new = scored(bundle, tmp_path, [50.0, 2.0, 4.0, 5.0], as_of=pd.Timestamp("2025-07-01"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.score.write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        publish_run(new, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "scores" / "LATEST").read_text() == "2025-06-01\n"
    run = tmp_path / "scores" / "2025-07-01"
    summary = json.loads((run / "scores_summary.json").read_text())
    scores = pd.read_parquet(run / "scores.parquet")
    assert summary["as_of"] == "2025-07-01" and len(scores) == summary["customers"]["scored"] == 3


def test_publish_dir_keeps_the_old_folder_when_the_new_one_cannot_be_moved(tmp_path):
    target = tmp_path / "set"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(FileNotFoundError):
        io.publish_dir(tmp_path / "missing-staging", target)
    assert (target / "a.txt").read_text() == "old"


def customers_and_events(signups: list[str], churned: list[str | None]):
    ids = [f"c{i}" for i in range(len(signups))]
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_at": signups,
            "churned_at": churned,
            "mrr": 50.0,
            "owner": "ann",
        }
    )
    events = pd.DataFrame(
        {"customer_id": ids, "occurred_at": signups, "event_type": ["login"] * len(ids)}
    )
    return events, customers


@pytest.mark.parametrize(
    ("signups", "churned", "why"),
    [
        (["2024-01-01", "2024-02-01"], ["2025-01-01", "2025-03-01"], "2 churned before it"),
        (["2025-06-10", "2025-06-20"], [None, None], "2 signed up on or after it"),
    ],
    ids=["all-churned", "as_of-before-every-signup"],
)
def test_an_empty_base_writes_empty_valid_outputs_and_says_why(
    validate: Callable[..., ValidatedData], bundle, tmp_path, signups, churned, why, caplog
):
    events, customers = customers_and_events(signups, churned)
    data = validate(events, customers, observed_until=pd.Timestamp("2025-07-01"))
    base = build_base(data, AS_OF, FeatureConfig(), LabelConfig(qualifying_families=["login"]))
    result = score_base(base, bundle, config(tmp_path), FeatureConfig(), TierConfig(), 90)
    check(result.scores, SCORES, "scores")
    files = publish_run(result, tmp_path)
    scores = pd.read_parquet(files["scores"])
    assert len(scores) == 0 and list(scores.columns) == list(result.scores.columns)
    assert "churn_probability" in scores.columns
    assert pd.read_csv(files["rejects"]).empty
    summary = json.loads(files["summary"].read_text())
    assert summary["customers"]["base"] == summary["customers"]["scored"] == 0
    assert summary["customers"]["reconciled"] is True
    assert why in summary["empty_reason"]
    assert why in caplog.text
