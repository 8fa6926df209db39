"""The scale run: ``python -m pipeline.bench_scale --out bench/scale.json`` (``make bench-scale``).

One as_of and one full daily scoring on a big log (default 1M customers, about 200M events) as
a user runs them, each in a fresh subprocess pinned to ``--cores`` CPUs (``pipeline.bench``'s
``measure``: wall time and peak RSS from ``wait4``), judged against a 4 GB peak:

- ``scan``: the floor, one DuckDB ``GROUP BY customer_id`` over the log (``pipeline.bench``'s
  scan worker);
- ``features_one_as_of``: ``churn features --as-of`` for one date, steps from its own
  ``<step> done in X s`` log lines;
- ``daily_run``: ``churn run --as-of`` (validate → features → score → reasons for red and
  orange → export → monitor → report), run in-process by a worker that times each stage
  function it calls (``PHASES``) besides the CLI's own step lines.

Scoring needs a champion of the same ``project``. Training on the big log is not the point, so
the champion is trained once (``churn train``) on a small log of the same generator and schema
(``--train-customers``, in ``<data-dir>/train``); the big log's config names the same project
and the same MLflow store (``<data-dir>/mlflow.db``), and ``churn run`` scores it with that
champion (``load_champion`` checks the model's project, not the data path). The training
config sets ``train.baseline_tolerance: 0.05`` so that a small training log still yields a
champion: model quality is not what this bench measures (the gate's decision is recorded).

Both logs are generated once and reused while their stamps are fresh (``ensure_demo``); the
champion is retrained only when its log was regenerated or it is missing. Validation writes the
event store under ``compute.store_dir``: ``--store-dir`` puts it (and so the bulk of the scratch
disk) on a disk with room; default ``<data-dir>/store``. The store's size is measured inside the
daily run, before it is removed. DuckDB's own spill files (in-memory connections: ``.tmp/`` of
the working directory, the project root here) are not moved by it and not measured.

Peak memory: ``peak_rss_mb`` is the largest RSS of the measured process or any one of its
children (``wait4``); ``peak_tree_rss_mb`` is the largest sum over the whole process tree,
sampled every ``SAMPLE_S`` (joblib workers run at once). A run is within the budget when both
stay under ``BUDGET_MB``.

Results go under the top-level key ``scale`` of ``--out``; other keys are kept.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.bench import (
    OBSERVED_UNTIL,
    churn_cmd,
    cli_steps,
    ensure_demo,
    machine,
    measure,
    n_events,
    worker_cmd,
    write_bench_config,
)
from pipeline.io import write_json

log = logging.getLogger("pipeline.bench_scale")

ROOT = Path(__file__).resolve().parents[1]
AS_OF = OBSERVED_UNTIL
"""The daily run's as_of: the end of the simulated log, as a scheduler's run of that day."""
BUDGET_MB = 4096
SAMPLE_S = 0.2
MB = 2**20
PHASES: tuple[tuple[str, str, str], ...] = (
    ("validate", "pipeline.events", "load_inputs"),
    ("load champion", "pipeline.score", "load_champion"),
    ("features at as_of", "pipeline.score", "build_base"),
    ("score", "pipeline.score", "score_base"),
    ("predict", "pipeline.model", "ModelBundle.predict"),
    ("reasons", "pipeline.score", "reasons_base"),
    ("TreeSHAP", "pipeline.model", "ChurnModel.contributions"),
    ("write scores", "pipeline.score", "write_outputs"),
    ("mlflow scoring run", "pipeline.score", "_track"),
    ("export", "pipeline.run", "export_stage"),
    ("monitor", "pipeline.monitoring", "build_monitor"),
    ("quality", "pipeline.run", "quality_stage"),
    ("report", "pipeline.run", "_report"),
    ("KPIs", "pipeline.kpis", "run_kpis"),
    ("backtest", "pipeline.report", "run_backtest"),
    ("publish", "pipeline.run", "_publish"),
    ("mlflow monitor run", "pipeline.run", "_track"),
)
"""(label, module, attribute) of the stage functions the daily run is timed by. A call inside
another timed call is named by its path (``score/reasons/TreeSHAP``); ``TreeSHAP`` at the top
level is the contributions for monitoring, computed in ``run_daily`` itself."""


# ---------------------------------------------------------------- set-up


def scale_config(
    data_dir: Path, name: str, project: str, root: Path, store_dir: Path, **train: Any
) -> Path:
    """``write_bench_config`` for ``data_dir``, in ``project`` with its MLflow store and event
    store under ``root`` and ``store_dir``; ``train``: extra ``train:`` keys."""
    path = write_bench_config(data_dir, name=name)
    raw = yaml.safe_load(path.read_text())
    raw = {"project": project, **{k: v for k, v in raw.items() if k != "project"}}
    raw["train"] = {
        **raw.get("train", {}),
        "tracking_uri": f"sqlite:///{root.resolve() / 'mlflow.db'}",
        "artifact_location": str(root.resolve() / "mlruns"),
        **train,
    }
    raw["compute"] = {"store_dir": str(store_dir.resolve())}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def champion_card(project: str) -> Path:
    """The exported champion's card (``models/<project>/champion``, under the project root
    where ``measure`` runs the CLI)."""
    return ROOT / "models" / project / "champion" / "card.json"


def ensure_champion(
    config: Path, project: str, regenerated: bool, cores: int, scratch: Path
) -> dict[str, Any]:
    """``churn train`` on the small log unless this data folder's stamp says its champion of
    ``project`` is there and its log was not regenerated; the measurement and the gate's
    decision."""
    card, stamp = champion_card(project), config.parent / f".champion-{project}"
    if card.exists() and stamp.exists() and not regenerated:
        log.info("reusing the champion in %s", card.parent)
        return {"trained": False, "card": str(card)}
    stamp.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pipeline", "train", "--config", str(config)]
    run = attempt("train_champion", cmd, cores, scratch)
    text = (scratch / "train_champion.log").read_text()
    decision = re.findall(r"champion: (.+?) →", text)
    if run["rc"] != 0 or not card.exists():
        raise RuntimeError(f"training gave no champion for project '{project}': {decision}")
    stamp.touch()
    return {"trained": True, "card": str(card), "decision": decision[-1:], "run": run}


# ---------------------------------------------------------------- measuring


def attempt(name: str, cmd: list[str], cores: int, scratch: Path) -> dict[str, Any]:
    """``measure`` with the process tree's sampled peak RSS; a failed run is recorded with its
    exit code and log tail instead of ending the bench (a 1M run may fail late)."""
    with tree_peak_rss() as peak:
        try:
            run = asdict(measure(name, cmd, cores, scratch))
        except RuntimeError as error:
            log.error("%s", error)
            code = re.search(r"exit (-?\d+)", str(error))
            rc = int(code.group(1)) if code else -1
            run = {"name": name, "wall_s": None, "peak_rss_mb": None, "rc": rc}
            run["detail"] = {"error": str(error)[-2000:]}
    run["peak_tree_rss_mb"] = round(peak["mb"], 1)
    run["within_budget"] = within_budget(run)
    return run


def within_budget(run: dict[str, Any]) -> bool | None:
    """Under ``BUDGET_MB`` by both peak figures; None when the run failed."""
    if run["rc"] != 0:
        return None
    return max(run["peak_rss_mb"], run["peak_tree_rss_mb"]) < BUDGET_MB


@contextmanager
def tree_peak_rss() -> Iterator[dict[str, float]]:
    """The largest sum of RSS over this process's descendants, sampled every ``SAMPLE_S``
    while the block runs (the measured child and its workers: one measurement at a time)."""
    import psutil

    peak, stop = {"mb": 0.0}, threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_S):
            peak["mb"] = max(peak["mb"], _tree_rss(psutil.Process()) / MB)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _tree_rss(process: Any) -> int:
    import psutil

    total = 0
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def disk_mb(path: Path) -> float:
    """Bytes of the files under ``path`` (or of the file), in MB."""
    path = Path(path)
    if path.is_file():
        return round(path.stat().st_size / MB, 1)
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MB, 1)


def add_cli_steps(run: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """The CLI's own ``done in`` lines from the run's log, into its detail."""
    text = (scratch / f"{run['name']}.log").read_text()
    run["detail"] = {**(run.get("detail") or {}), **cli_steps(text)}
    return run


# ---------------------------------------------------------------- the daily-run worker


class PhaseTimer:
    """Wall time per stage function, nested calls named by their path (``a/b``), and this
    process's peak RSS when each top-level call returned (which stage raised the peak)."""

    def __init__(self) -> None:
        self.spans: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self.stack: list[str] = []

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            path = "/".join([*self.stack, label])
            self.stack.append(label)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
                self.spans[path] = self.spans.get(path, 0.0) + time.perf_counter() - start
                if not self.stack:
                    self.peaks[path] = _peak_rss_mb()

        return timed

    def rounded(self) -> list[list[Any]]:
        return [[k, round(v, 3)] for k, v in self.spans.items()]


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def install(timer: PhaseTimer, phases: tuple[tuple[str, str, str], ...] = PHASES) -> None:
    """Replace each stage function of ``phases`` by its timed self (module globals and class
    attributes are looked up at call time, so the unchanged pipeline calls the timed ones)."""
    for label, module_name, attribute in phases:
        owner: Any = importlib.import_module(module_name)
        *classes, name = attribute.split(".")
        for cls in classes:
            owner = getattr(owner, cls)
        setattr(owner, name, timer.wrap(label, getattr(owner, name)))


def measure_store(found: dict[str, float]) -> None:
    """Wrap ``load_inputs`` once more to record the size of the event store it wrote."""
    import pipeline.events as events

    inner = events.load_inputs

    @functools.wraps(inner)
    def sized(*args: Any, **kwargs: Any) -> Any:
        data = inner(*args, **kwargs)
        found["event_store_mb"] = disk_mb(data.store.directory)
        found["event_store_dir"] = str(data.store.directory)
        return data

    events.load_inputs = sized


def worker_daily_run(config: Path, as_of: str, result: Path) -> int:
    """``churn run --config config --as-of as_of`` in this process with ``PHASES`` timed."""
    from typer.main import get_command

    from pipeline.cli import app

    timer, store = PhaseTimer(), {}
    install(timer)
    measure_store(store)
    args = ["run", "--config", str(config), "--as-of", as_of]
    code = get_command(app).main(args, prog_name="churn", standalone_mode=False)
    phases = {
        "phases_s": timer.rounded(),
        "peak_rss_after_mb": list(map(list, timer.peaks.items())),
    }
    write_json({**phases, **store, "exit": code or 0}, result)
    return int(code or 0)


def cli_cmd(command: str, config: Path, *args: str) -> list[str]:
    """``churn COMMAND --config config ARGS`` as a fresh process: the daily scoring as a
    scheduler runs it (``score``: validate → features → probabilities → tiers → reasons for
    red and orange; then ``export``: the lists per owner)."""
    return [sys.executable, "-m", "pipeline", command, "--config", str(config), *args]


def daily_cmd(config: Path, as_of: str) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.bench_scale", "--worker", "daily_run"]
    return [*cmd, "--config", str(config), "--as-of", as_of]


# ---------------------------------------------------------------- the bench


def where_time_goes(run: dict[str, Any]) -> list[list[Any]]:
    """The daily run's wall time by phase: the CLI's validation, the timed stages at the top
    level, what no stage accounts for inside the CLI's daily run, and the process start-up."""
    detail = run.get("detail") or {}
    steps = dict(detail.get("steps_s", []))
    validate, daily = steps.get("validating inputs"), steps.get("daily run")
    top = [[k, v] for k, v in detail.get("phases_s", []) if "/" not in k and k != "validate"]
    rows = [["validate", validate], *top]
    if daily is not None:
        rows.append(["other, inside the daily run", round(daily - sum(v for _, v in top), 3)])
    if run.get("wall_s") and validate is not None and daily is not None:
        rows.append(["start-up, imports, exit", round(run["wall_s"] - daily - validate, 3)])
    return rows


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    data_dir, cores, project = Path(args.data_dir).resolve(), args.cores, args.project
    big_dir, train_dir = data_dir / "big", data_dir / "train"
    store_dir = Path(args.store_dir or data_dir / "store")
    scratch = data_dir / "runs"
    for folder in (big_dir, train_dir, scratch):
        folder.mkdir(parents=True, exist_ok=True)
    generated = {
        "train": ensure_demo(train_dir, args.train_customers, args.seed),
        "big": ensure_demo(big_dir, args.customers, args.seed),
    }
    train_config = scale_config(
        train_dir, "train", project, data_dir, store_dir, baseline_tolerance=0.05
    )
    config = scale_config(big_dir, "scale", project, data_dir, store_dir)
    champion = ensure_champion(
        train_config, project, generated["train"]["generated"], cores, scratch
    )
    features_out = scratch / "features_one_as_of.parquet"
    runs = {
        "scan": attempt("scan", worker_cmd("scan", config, []), cores, scratch),
        "features_one_as_of": add_cli_steps(
            attempt("features_one_as_of", churn_cmd(config, [AS_OF], features_out), cores, scratch),
            scratch,
        ),
        "daily_scoring": add_cli_steps(
            attempt("daily_scoring", cli_cmd("score", config, "--as-of", AS_OF), cores, scratch),
            scratch,
        ),
        "export": add_cli_steps(
            attempt("export", cli_cmd("export", config), cores, scratch), scratch
        ),
        "daily_run": add_cli_steps(
            attempt("daily_run", daily_cmd(config, AS_OF), cores, scratch), scratch
        ),
    }
    output_dir = yaml.safe_load(config.read_text())["data"]["output_dir"]
    return {
        "generated_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "machine": machine(cores),
        "budget_mb": BUDGET_MB,
        "as_of": AS_OF,
        "project": project,
        "data": {
            "dir": str(data_dir),
            "n_customers": args.customers,
            "n_events": n_events(big_dir / "events.parquet"),
            "train_customers": args.train_customers,
            "seed": args.seed,
            "generated": generated,
        },
        "champion": champion,
        "runs": runs,
        "daily_run_phases_s": where_time_goes(runs["daily_run"]),
        "disk_mb": {
            "big_log": round(
                disk_mb(big_dir / "events.parquet") + disk_mb(big_dir / "customers.csv"), 1
            ),
            "big_dir_with_outputs": disk_mb(big_dir),
            "event_store": (runs["daily_run"].get("detail") or {}).get("event_store_mb"),
            "store_dir": str(store_dir),
            "features_one_as_of_file": disk_mb(features_out) if features_out.exists() else None,
            "outputs": disk_mb(Path(output_dir)) if Path(output_dir).exists() else None,
        },
        "all_within_budget": all(r["within_budget"] for r in runs.values()),
    }


def save(section: dict[str, Any], out: Path) -> None:
    """Write ``section`` under ``scale`` in ``out``, keeping any other top-level keys."""
    payload = json.loads(out.read_text()) if out.exists() else {}
    payload["scale"] = section
    write_json(payload, out)


def report(section: dict[str, Any]) -> None:
    data = section["data"]
    log.info(
        "scale bench: %d customers, %d events, as_of %s, %d cores, budget %d MB",
        data["n_customers"],
        data["n_events"],
        section["as_of"],
        section["machine"]["cores_used"],
        section["budget_mb"],
    )
    log.info(
        "%-22s %4s %9s %12s %14s %7s", "run", "rc", "wall s", "peak RSS MB", "tree RSS MB", "< 4GB"
    )
    for name, run in section["runs"].items():
        log.info(
            "%-22s %4s %9s %12s %14s %7s",
            name,
            run["rc"],
            run["wall_s"],
            run["peak_rss_mb"],
            run["peak_tree_rss_mb"],
            run["within_budget"],
        )
    steps = section["runs"]["features_one_as_of"].get("detail", {}).get("steps_s", [])
    log.info("churn features steps: %s", ", ".join(f"{k} {v:.1f} s" for k, v in steps))
    peaks = dict(section["runs"]["daily_run"].get("detail", {}).get("peak_rss_after_mb", []))
    log.info("daily run, where the time goes (and the worker's peak RSS after each stage):")
    for name, seconds in section["daily_run_phases_s"]:
        log.info(
            "  %-32s %9s s %9s", name, seconds, f"{peaks[name]:.0f} MB" if name in peaks else ""
        )
    log.info("disk MB: %s", json.dumps(section["disk_mb"]))


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.bench_scale", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("bench/scale.json"))
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--train-customers", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", type=Path, default=Path("data/scale"))
    p.add_argument(
        "--store-dir", type=Path, help="compute.store_dir: where validation writes the event store"
    )
    p.add_argument("--project", default="scale", help="the project (names models/<project>/)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--worker", choices=["daily_run"], help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--as-of", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        sys.exit(worker_daily_run(args.config, args.as_of, args.result))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    section = run_scale(args)
    save(section, args.out)
    report(section)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
