"""`churn run`: the daily job a scheduler calls — validate → score → export → monitor → report.

One run folder per as_of, ``<output_dir>/runs/<as_of>/``::

    scores.parquet, scores_rejects.csv, scores_summary.json   every customer scored or rejected
    export/at_risk_<as_of>/…              lists per CS owner + manifest
    monitor.json                          drift (PSI), expected quality, alerts
    contributions.csv                     mean |contribution| per feature
    quality.csv                           expected vs realised quality over runs
    report.html                           "can I trust today's list?"
    run.json                              counts, tiers, alerts, file hashes (written last)

The folder is built in a staging sibling (``runs/.staging-<as_of>``) and moved into place with
``os.replace``: readers see the old set or the new set, never a mix. Re-running an as_of replaces
that folder only; the same inputs give the same bytes (no wall-clock time is written; paths in
the JSON files name the published folder, not the staging one).

Exit codes (``churn run``): 0 done; 2 bad input or config; 3 done but an alert fired (only with
``--fail-on-alert``).

The stages are called through ``score_stage`` and ``export_stage``, so a change of the scoring or
export interfaces touches those two functions only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import monitoring, paths, tracking
from pipeline.config import Config, LabelConfig
from pipeline.events import ValidatedData
from pipeline.io import write_frame, write_json
from pipeline.model import ModelBundle
from pipeline.score import ScoringResult

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_ALERT = 3
DATE_NAME = "%Y-%m-%d"


@dataclass
class DailyRun:
    """What one daily run made: the published folder, the scoring summary and monitor.json."""

    as_of: str
    folder: Path
    scoring: dict
    monitor: dict
    files: dict[str, str]

    @property
    def alerts(self) -> list[str]:
        return list(self.monitor["alerts"])

    def line(self) -> str:
        """The one-line summary a scheduler's log keeps."""
        c, t = self.scoring["customers"], self.scoring["tiers"]
        alerts = (
            f"{len(self.alerts)} alert(s): " + "; ".join(self.alerts)
            if self.alerts
            else "no alerts"
        )
        return (
            f"churn run {self.as_of}: {c['base']} in base = {c['scored']} scored +"
            f" {c['rejected']} rejected; red {t['red']}, orange {t['orange']}, green {t['green']};"
            f" {alerts}; files → {self.folder}"
        )


def runs_dir(config: Config) -> Path:
    """Where run folders live (one per as_of)."""
    return paths.runs_dir(paths.output_dir(config))


def run_folder(config: Config, as_of: pd.Timestamp) -> Path:
    return runs_dir(config) / pd.Timestamp(as_of).strftime(DATE_NAME)


# --- stages (adapters to the scoring and export jobs) -------------------------------------------


def score_stage(
    config: Config, data: ValidatedData, as_of: pd.Timestamp, out: Path
) -> tuple[ScoringResult, pd.DataFrame, ModelBundle]:
    """Score the base into ``out``; also the scored customers' features (for the drift and the
    contributions) and the bundle, in the order of the scores."""
    from pipeline.score import run_scoring

    result, _ = run_scoring(config, data, as_of, out)
    features = result.scores[["customer_id"]].merge(result.features, on="customer_id", how="left")
    return result, features, result.bundle


def export_stage(config: Config, scores_path: Path, out_dir: Path) -> Path:
    """The at-risk lists of the run (configured format and split) into ``out_dir``."""
    from pipeline.export import run_export

    folder, _ = run_export(config, scores_path, out_dir)
    return folder


# --- realised quality of past runs --------------------------------------------------------------


def past_runs(root: Path, as_of: pd.Timestamp) -> list[tuple[pd.Timestamp, Path]]:
    """Published run folders before ``as_of`` with scores and monitor.json, oldest first."""
    found = []
    for folder in sorted(Path(root).glob("????-??-??")):
        stamp = pd.Timestamp(folder.name)
        if (
            stamp < as_of
            and (folder / "monitor.json").exists()
            and (folder / "scores.parquet").exists()
        ):
            found.append((stamp, folder))
    return found


def matured_labels(
    data: ValidatedData, dates: list[pd.Timestamp], label: LabelConfig, as_of: pd.Timestamp
) -> pd.DataFrame:
    """customer_id, as_of, churned for past dates whose label window ended by ``as_of`` (only
    events before ``as_of`` are read, so a backfilled run sees what that day could know)."""
    from pipeline.features import map_partitions
    from pipeline.labels import build_labels, lookback_days

    if not dates:
        return pd.DataFrame(columns=["customer_id", "as_of", "churned"])
    index = pd.DatetimeIndex(dates).as_unit("us")
    labels = map_partitions(
        data.store,
        data.customers,
        index,
        label.qualifying_families,
        lambda grid: build_labels(grid, label, as_of),
        until=as_of,
        lookback_days=lookback_days(label),
    )
    return labels.dropna(subset=["churned"])


def quality_stage(
    config: Config, data: ValidatedData, as_of: pd.Timestamp, label: LabelConfig, today: dict
) -> pd.DataFrame:
    """Expected vs realised quality over the published runs and today (see monitoring)."""
    runs = past_runs(runs_dir(config), as_of)
    expected = {r.strftime(DATE_NAME): _read(f / "monitor.json")["expected"] for r, f in runs}
    expected[as_of.strftime(DATE_NAME)] = today
    horizon = pd.Timedelta(days=label.horizon_days)
    matured = [(r, f) for r, f in runs if r + horizon <= as_of]
    labels = matured_labels(data, [r for r, _ in matured], label, as_of)
    realised = {}
    for stamp, folder in matured:
        known = labels.loc[pd.to_datetime(labels["as_of"]) == stamp, ["customer_id", "churned"]]
        scored = pd.read_parquet(folder / "scores.parquet").merge(known, on="customer_id")
        if len(scored):
            realised[stamp.strftime(DATE_NAME)] = monitoring.realised_of(scored)
    return monitoring.quality_table(expected, realised)


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# --- the job ------------------------------------------------------------------------------------


def run_daily(
    config: Config,
    data: ValidatedData,
    as_of: pd.Timestamp | str | None = None,
    config_path: str = "configs/demo.yaml",
) -> DailyRun:
    """The whole daily job for one as_of (see module docstring); returns what it published."""
    from pipeline.score import model_settings, resolve_as_of

    stamp = resolve_as_of(as_of, data.observed_until)
    target = run_folder(config, stamp)
    staging = target.with_name(f".staging-{target.name}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        result, features, bundle = score_stage(config, data, stamp, staging / "scores.parquet")
        export_stage(config, staging / "scores.parquet", staging / "export")
        payload = monitoring.build_monitor(
            stamp, features, result.scores, bundle.card, config.monitor
        )
        explained = features[bundle.features].iloc[monitoring.contribution_rows(len(features))]
        contributions = monitoring.contribution_summary(
            bundle.model.contributions(explained), bundle.features
        )
        _, label, _ = model_settings(bundle.card, config)
        quality = quality_stage(config, data, stamp, label, payload["expected"])
        _write_monitoring(staging, payload, contributions, quality)
        _report(config, data, staging, payload, contributions, quality, config_path)
        _relocate(staging, target)
        files = _hashes(staging)
        write_json(_run_json(result.summary, payload, files, target), staging / "run.json")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _track(config, payload, quality, stamp)
    return DailyRun(result.summary["as_of"], target, result.summary, payload, files)


def _write_monitoring(
    folder: Path, payload: dict, contributions: pd.DataFrame, quality: pd.DataFrame
) -> None:
    write_json(payload, folder / "monitor.json")
    write_frame(contributions, folder / "contributions.csv")
    write_frame(quality, folder / "quality.csv")


def _report(config, data, folder, payload, contributions, quality, config_path) -> None:
    from pipeline.report import run_report

    run_report(
        config,
        folder / "report.html",
        data=data,
        config_path=config_path,
        scores_path=folder / "scores.parquet",
        monitor=payload,
        contributions=contributions,
        quality=quality,
        command="churn run",
    )


def _relocate(staging: Path, target: Path) -> None:
    """Paths in the staging folder's JSON files name the published folder instead."""
    for path in sorted(staging.rglob("*.json")):
        text = path.read_text()
        if str(staging) in text:
            path.write_text(text.replace(str(staging), str(target)))


def _hashes(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def _run_json(summary: dict, payload: dict, files: dict[str, str], target: Path) -> dict:
    return {
        "as_of": summary["as_of"],
        "folder": str(target),
        "model": {k: summary["model"].get(k) for k in ("name", "version", "mlflow_run_id")},
        "customers": summary["customers"],
        "tiers": summary["tiers"],
        "alerts": payload["alerts"],
        "warnings": payload["warnings"],
        "notes": payload["notes"],
        "files": files,
    }


def _publish(staging: Path, target: Path) -> None:
    """Move the finished folder onto ``target`` (replacing an older run of that as_of)."""
    from pipeline.export import publish

    staging.chmod(0o755)
    publish(staging, target)


def _track(config: Config, payload: dict, quality: pd.DataFrame, as_of: pd.Timestamp) -> None:
    """A monitoring MLflow run: today's metrics with the as_of (YYYYMMDD) as step, and the
    realised metrics of matured runs at their own as_of."""
    tc = config.train
    if not tracking.store_reachable(tc.tracking_uri):
        log.info("tracking store not reachable: monitoring not logged to MLflow")
        return
    tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
    with tracking.run("monitor", tags={"stage": "monitor", "as_of": payload["as_of"]}):
        tracking.log_params({"as_of": payload["as_of"], "model_version": payload["model_version"]})
        tracking.log_metrics(monitoring.monitor_metrics(payload), step=_step(as_of))
        for row in quality.dropna(subset=["realised"]).itertuples(index=False):
            tracking.log_metrics({f"realised_{row.metric}": row.realised}, step=_step(row.as_of))
        tracking.log_dict(payload, "monitor.json")


def _step(as_of: pd.Timestamp | str) -> int:
    return int(pd.Timestamp(as_of).strftime("%Y%m%d"))
