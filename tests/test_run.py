"""`churn run`: the daily job end to end on a small demo log (run folder, bytes, alerts, exit
codes, report sections), and the monitoring stage on literal frames."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support import demo_config
from typer.testing import CliRunner

from pipeline import monitoring
from pipeline.cli import app
from pipeline.config import MonitorConfig

runner = CliRunner()
AS_OF = "2026-10-28"
"""A Wednesday. The reference profile pools month starts; a Sunday as_of (the demo log's end,
2026-11-01) moves the recency features by PSI ≈ 0.2 on this small demo (less activity at
weekends), which is a real weekday shift, not the drift this test is about."""
EARLY = "2026-07-01"
"""An earlier run whose 90-day horizon has passed by AS_OF: its realised quality is known."""
IMAGE = re.compile(r'<img src="data:image/png;base64,([^"]*)"')
HOSTILE = '<script>alert("x")</script>'


def config_file(root: Path, data_dir: Path, name: str, **sections: dict) -> Path:
    """A YAML config on ``data_dir`` whose tracking store does not exist (the run scores from
    ``models/champion`` and logs nothing), outputs under ``root/<name>``."""
    config = demo_config(root, data_dir, **sections)
    raw = config.model_dump(mode="json")
    raw["data"]["output_dir"] = str(root / name)  # "outputs": beside the training outputs
    raw["train"]["tracking_uri"] = f"sqlite:///{root / 'absent.db'}"
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def halve_logins(source: Path, target: Path, days: int = 30) -> Path:
    """A copy of the demo log with every other login in the last ``days`` days removed."""
    target.mkdir()
    events = pd.read_parquet(source / "events.parquet")
    stamps = events["occurred_at"]
    cutoff = pd.Timestamp(AS_OF, tz=stamps.dt.tz) - pd.Timedelta(days=days)
    recent = (events["event_type"] == "login") & (events["occurred_at"] >= cutoff)
    drop = recent & (recent.cumsum() % 2 == 0)
    events[~drop].to_parquet(target / "events.parquet", index=False)
    shutil.copy(source / "customers.csv", target / "customers.csv")
    return target


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train once on a small demo (training writes the reference profile into the card), run
    the day twice on the unchanged log and once on the log with halved logins; everything the
    tests read. 3,000 customers: on fewer the model honestly ties the logistic baseline and the
    gate promotes nothing to run with."""
    from pipeline.demo import write_demo_data
    from pipeline.events import load_inputs
    from pipeline.train import run_training

    data_dir = tmp_path_factory.mktemp("demo")
    write_demo_data(data_dir, n_customers=3000, seed=11)
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        config = demo_config(root, data_dir, train={"n_estimators": 100})
        data = load_inputs(config)
        run_training(config, data=data)
        plain = config_file(root, data_dir, "outputs")
        early = runner.invoke(app, ["run", "-c", str(plain), "--as-of", EARLY])
        first = runner.invoke(app, ["run", "-c", str(plain), "--as-of", AS_OF, "--fail-on-alert"])
        snapshot = folder_bytes(root / "outputs" / "runs" / AS_OF)
        second = runner.invoke(app, ["run", "-c", str(plain), "--as-of", AS_OF])
        halved = config_file(root, halve_logins(data_dir, root / "halved-data"), "halved")
        drifted = runner.invoke(
            app, ["run", "-c", str(halved), "--as-of", AS_OF, "--fail-on-alert"]
        )
    return {
        "root": root,
        "early": early,
        "first": first,
        "second": second,
        "drifted": drifted,
        "snapshot": snapshot,
        "folder": root / "outputs" / "runs" / AS_OF,
    }


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.model
def test_a_run_publishes_one_folder_with_every_output_and_a_summary_line(project):
    first = project["first"]
    assert first.exit_code == 0, first.output
    names = set(project["snapshot"])
    expected = {"scores.parquet", "scores_rejects.csv", "scores_summary.json", "monitor.json"}
    expected |= {"contributions.csv", "quality.csv", "report.html", "run.json"}
    assert expected <= names
    assert any(n.startswith(f"export/at_risk_{AS_OF}/") for n in names)
    line = first.output.strip().splitlines()[-1]
    assert line.startswith(f"churn run {AS_OF}: ") and "no alerts" in line
    assert re.search(r"red \d+, orange \d+, green \d+", line)
    assert str(project["folder"]) in line
    siblings = sorted(p.name for p in project["folder"].parent.iterdir())
    assert siblings == [EARLY, AS_OF]  # one folder per as_of; no staging or old folder left


@pytest.mark.model
def test_running_the_same_day_twice_gives_byte_identical_files(project):
    assert project["second"].exit_code == 0, project["second"].output
    again = folder_bytes(project["folder"])
    assert sorted(again) == sorted(project["snapshot"])
    changed = [name for name, data in again.items() if project["snapshot"][name] != data]
    assert changed == []


@pytest.mark.model
def test_json_files_name_the_published_folder_not_the_staging_one(project):
    for name, data in project["snapshot"].items():
        if name.endswith(".json"):
            assert ".staging-" not in data.decode(), name
    run = json.loads(project["snapshot"]["run.json"])
    assert run["files"]["monitor.json"] and run["alerts"] == []


@pytest.mark.model
def test_the_unchanged_log_raises_no_alert_and_measures_drift_on_every_feature(project):
    payload = json.loads(project["snapshot"]["monitor.json"])
    assert payload["alerts"] == [] and payload["notes"] == []
    features = {row["feature"] for row in payload["drift"]["table"]}
    assert {"churn_probability", "logins_30d"} <= features
    assert payload["expected"]["expected_roc_auc"] > 0.6


@pytest.mark.model
def test_halved_logins_raise_a_psi_alert_on_login_features_and_exit_3(project):
    drifted = project["drifted"]
    assert drifted.exit_code == 3, drifted.output
    folder = project["root"] / "halved" / "runs" / AS_OF
    payload = json.loads((folder / "monitor.json").read_text())
    alerted = {row["feature"] for row in payload["drift"]["table"] if row["status"] == "alert"}
    assert any("login" in feature for feature in alerted), alerted
    assert any("login" in alert for alert in payload["alerts"])
    assert "alert(s)" in drifted.output.strip().splitlines()[-1]


@pytest.mark.model
def test_the_quality_table_has_the_realised_quality_of_the_earlier_run(project):
    assert project["early"].exit_code == 0, project["early"].output
    table = pd.read_csv(io.BytesIO(project["snapshot"]["quality.csv"]))
    assert sorted(table["as_of"].unique()) == [EARLY, AS_OF]
    early = table[table["as_of"] == EARLY].set_index("metric")
    assert {"roc_auc", "brier", "churn_rate", "churn_rate_red", "churn_rate_green"} <= set(
        early.index
    )
    assert early["realised"].notna().all() and 0.5 < early.loc["roc_auc", "realised"] <= 1
    # calibrated probabilities: the realised churn rate is near the expected one
    assert abs(early.loc["churn_rate", "gap"]) < 0.03
    assert table[table["as_of"] == AS_OF]["realised"].isna().all()  # horizon not passed yet


@pytest.mark.model
def test_the_run_report_has_every_section_with_its_images(project):
    from pipeline.report import SECTIONS

    page = project["snapshot"]["report.html"].decode()
    for key, title in SECTIONS.items():
        assert f'<section id="{key}"><h2>{title}</h2>' in page
    images = {
        key: IMAGE.findall(page.split(f'<section id="{key}">')[1].split("</section>")[0])
        for key in SECTIONS
    }
    counts = {key: len(found) for key, found in images.items()}
    # monitoring: PSI bars + expected/realised over runs; kpis: trends + cohorts; model: ROC/PR,
    # calibration, gain, importance; scores: distribution + calibration over [0, 1];
    # contributions: bars + spread; tiers: mix, churn, stability, moves; groups/at-risk: tables
    assert counts == {
        "monitoring": 2,
        "kpis": 2,
        "model": 4,
        "scores": 2,
        "contributions": 2,
        "groups": 0,
        "tiers": 4,
        "at-risk": 0,
    }
    for found in images.values():
        for data in found:
            assert base64.b64decode(data).startswith(b"\x89PNG")
    groups = page.split('<section id="groups">')[1].split("</section>")[0]
    assert "Per segment" in groups and "Per plan" in groups and "Per lifecycle stage" in groups
    assert "Made by <code>churn run" in page


@pytest.mark.model
def test_a_bad_config_exits_2_with_a_message(project, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {}, "event_types": {}, "monitor": {"psi": 1}}))
    result = runner.invoke(app, ["run", "-c", str(bad)])
    assert result.exit_code == 2
    assert "monitor.psi" in result.output


# --- the monitoring stage on literal frames ----------------------------------------------------


def literal_profile() -> dict:
    train = pd.DataFrame(
        {"logins_30d": [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "plan": ["a"] * 5 + ["b"] * 5}
    )
    p = np.linspace(0.05, 0.5, 10)
    return monitoring.card_with_profile({"model_version": "3"}, train, ["logins_30d", "plan"], p)


@pytest.mark.code
def test_without_a_reference_profile_the_monitor_says_retrain_and_does_not_crash():
    scores = pd.DataFrame(
        {"customer_id": ["a", "b"], "churn_probability": [0.1, 0.6], "tier": ["green", "red"]}
    )
    features = pd.DataFrame({"customer_id": ["a", "b"], "logins_30d": [1.0, 2.0]})
    payload = monitoring.build_monitor(
        pd.Timestamp(AS_OF), features, scores, {"model_version": "1"}, MonitorConfig()
    )
    assert payload["notes"] == [monitoring.NO_PROFILE]
    assert payload["drift"]["available"] is False and payload["alerts"] == []
    assert payload["expected"]["expected_churn_rate"] == pytest.approx(0.35)


@pytest.mark.code
def test_the_monitor_lists_new_categories_and_alerts_on_a_shifted_feature():
    card = literal_profile() | {"metrics": {"test_roc_auc": 0.99}}
    features = pd.DataFrame(
        {"customer_id": list("abcd"), "logins_30d": [0.0] * 4, "plan": ["a", "a", "c", "c"]}
    )
    scores = pd.DataFrame(
        {
            "customer_id": list("abcd"),
            "churn_probability": [0.1, 0.2, 0.3, 0.4],
            "tier": ["green", "orange", "orange", "red"],
        }
    )
    payload = monitoring.build_monitor(pd.Timestamp(AS_OF), features, scores, card, MonitorConfig())
    rows = {row["feature"]: row for row in payload["drift"]["table"]}
    assert rows["plan"]["new_categories"] == ["c"] and rows["plan"]["missing_categories"] == ["b"]
    assert rows["logins_30d"]["status"] == "alert"
    shares = {c["category"]: c["today"] for c in payload["drift"]["categories"]["plan"]}
    assert shares == {"a": 0.5, "b": 0.0, "__missing__": 0.0}
    assert any("below the backtest's 0.990" in alert for alert in payload["alerts"])
    assert json.loads(json.dumps(payload)) == payload  # plain JSON, no NaN


@pytest.mark.code
def test_the_quality_table_pairs_expected_and_realised_per_run():
    expected = {
        "2026-09-01": {"expected_roc_auc": 0.8, "expected_churn_rate": 0.2, "expected_brier": 0.1},
        "2026-10-01": {"expected_roc_auc": 0.7, "expected_churn_rate": 0.3, "expected_brier": 0.1},
    }
    realised = {"2026-09-01": {"roc_auc": 0.75, "churn_rate": 0.25, "brier": 0.12}}
    table = monitoring.quality_table(expected, realised)
    assert table.columns.tolist() == ["as_of", "metric", "expected", "realised", "gap"]
    first = table[table["as_of"] == "2026-09-01"].set_index("metric")
    assert first.loc["roc_auc", "gap"] == pytest.approx(-0.05)
    assert table[table["as_of"] == "2026-10-01"]["realised"].isna().all()


@pytest.mark.code
def test_contribution_summary_ranks_features_by_mean_absolute_contribution():
    contrib = np.array([[1.0, -0.5, 0.2], [-1.0, 0.1, 0.2], [0.5, 0.0, 0.2]])  # last: bias
    table = monitoring.contribution_summary(contrib, ["x", "y"])
    assert table["feature"].tolist() == ["x", "y"]
    assert table["mean_abs"].tolist() == pytest.approx([2.5 / 3, 0.6 / 3])
    assert table.loc[0, "q50"] == 0.5


@pytest.mark.code
def test_contributions_are_summarised_over_every_row_or_an_even_sample_of_a_large_base():
    assert monitoring.contribution_rows(5, at_most=10).tolist() == [0, 1, 2, 3, 4]
    sample = monitoring.contribution_rows(1_000_001, at_most=5)
    assert sample.tolist() == [0, 250_000, 500_000, 750_000, 1_000_000]
    assert len(monitoring.contribution_rows(1_000_000)) == monitoring.CONTRIBUTION_SAMPLE


@pytest.mark.code
def test_the_expected_brier_matches_labels_drawn_from_the_probabilities():
    from pipeline.monitor import expected_quality

    rng = np.random.default_rng(3)
    p = rng.beta(0.6, 3.0, 50_000)
    y = rng.random(len(p)) < p
    assert expected_quality(p)["expected_brier"] == pytest.approx(np.mean((y - p) ** 2), abs=0.002)


@pytest.mark.code
def test_monitoring_metrics_go_to_mlflow_with_the_as_of_as_step(tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline import run, tracking

    config = demo_config(tmp_path, tmp_path)
    tc = config.train
    tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
    payload = {
        "as_of": AS_OF,
        "model_version": "3",
        "drift": {"table": [{"feature": "logins_30d", "psi": 0.25}]},
        "expected": {"expected_roc_auc": 0.8},
        "alerts": ["input drift on 'logins_30d': PSI 0.250"],
    }
    quality = monitoring.quality_table(
        {EARLY: {"expected_roc_auc": 0.79}, AS_OF: {"expected_roc_auc": 0.8}},
        {EARLY: {"roc_auc": 0.77}},
    )
    run._track(config, payload, quality, pd.Timestamp(AS_OF))
    client = MlflowClient(tc.tracking_uri)
    (found,) = client.search_runs(
        [client.get_experiment_by_name(tc.experiment).experiment_id],
        "tags.stage = 'monitor'",
    )
    history = client.get_metric_history(found.info.run_id, "psi_logins_30d")
    assert [(m.step, m.value) for m in history] == [(20261028, 0.25)]
    realised = client.get_metric_history(found.info.run_id, "realised_roc_auc")
    assert [(m.step, m.value) for m in realised] == [(20260701, 0.77)]
    assert found.data.metrics["monitor_alerts"] == 1


def test_features_of_a_family_the_log_lacks_are_left_out_of_the_drift() -> None:
    today = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "days_since_last_login": [400.0, 800.0],  # tenure stands in: no login ever
            "logins_30d": [0, 0],
            "events_30d": [3, 1],
            "churn_probability": [0.2, 0.4],
        }
    )
    never = {"kind": "numeric", "edges": [0.0], "shares": [1.0, 0.0, 0.0]}  # all 0 in training
    some = {"kind": "numeric", "edges": [0.0, 4.0], "shares": [0.5, 0.3, 0.2, 0.0]}
    profile = {name: never for name in today.columns if name != "customer_id"}
    kept = monitoring.present_only(profile, today)
    assert set(kept) == {"events_30d", "churn_probability"}
    # Logins seen in training but gone today: that is drift, so they stay monitored.
    kept = monitoring.present_only(profile | {"logins_30d": some}, today)
    assert {"logins_30d", "days_since_last_login"} <= set(kept)
