"""Speed and memory of the feature stage at scale: ``python -m pipeline.bench --out FILE``.

Generates the demo log once (default 200k customers, reused while its stamp is newer than
``pipeline/demo.py``), then runs each measurement in a fresh subprocess pinned to ``--cores``
CPUs, so that wall time and peak RSS (``wait4`` rusage of that child alone) are honest:

- ``scan``: the floor, one DuckDB ``GROUP BY customer_id`` over the Parquet log;
- ``validation_floor``: a lower bound on validating that log (the contract's row checks and the
  search for repeated rows in their cheapest form, nothing written, no features);
- ``one_date`` / ``twelve_dates``: ``churn features`` exactly as a user runs it;
- ``reference_*``: the plain pandas reference (``pipeline.features.reference``);
- ``phases_*``: the fast path again, timed step by step (each SQL statement of validation, the
  daily GROUP BY, the grid, each feature family, the Parquet write);
- ``time_ordered_log``: the floors and ``churn features`` again over the same rows in time
  order (the layout real logs have), with the features compared to the first runs'.

Results go under the top-level key ``features`` of ``--out``; other keys in an existing file are
kept (other benches add their own sections).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.events import sql_literal
from pipeline.io import write_json

log = logging.getLogger("pipeline.bench")

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
OBSERVED_UNTIL = "2026-11-01"
TWELVE = [d.strftime("%Y-%m-%d") for d in pd.date_range("2025-11-01", periods=12, freq="MS")]
ONE = TWELVE[-1]
GOALS = {"one_date_over_scan": 6.0, "twelve_over_one_date": 2.0, "twelve_dates_peak_rss_mb": 2048}
"""Issue 15's goals for ``churn features`` as a user runs it (one as_of within 6× the bare scan,
twelve dates within 2× one), and the twelve-date peak memory kept from issue 3."""
N_JOBS_2_SPEEDUP_GOAL = 1.6
"""The feature pass on 2 joblib processes against 1 (``engines``)."""
FLOAT_RTOL = 1e-9


@dataclass
class Measurement:
    """One fresh subprocess: its wall time, peak RSS and exit status."""

    name: str
    wall_s: float
    peak_rss_mb: float
    rc: int
    detail: dict[str, Any]


# ---------------------------------------------------------------- set-up


def ensure_demo(data_dir: Path, n_customers: int, seed: int) -> dict[str, Any]:
    """Write the demo log into ``data_dir`` unless a fresh stamp says it is already there."""
    from pipeline import demo

    stamp = data_dir / f".built-{n_customers}-{seed}"
    if stamp.exists() and stamp.stat().st_mtime >= Path(demo.__file__).stat().st_mtime:
        log.info("reusing demo data in %s (%s)", data_dir, stamp.name)
        return {"generated": False, "generate_s": None}
    start = time.perf_counter()
    for old in data_dir.glob(".built-*"):
        old.unlink()
    demo.write_demo_data(data_dir, n_customers=n_customers, seed=seed)
    stamp.touch()
    seconds = time.perf_counter() - start
    log.info("generated demo data (%d customers) in %.0f s", n_customers, seconds)
    return {"generated": True, "generate_s": round(seconds, 1)}


def write_bench_config(data_dir: Path, events: str = "events.parquet", name: str = "bench") -> Path:
    """A config for the bench data: the demo's event mapping, paths under ``data_dir``."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["data"] = {
        "events": str(data_dir / events),
        "customers": str(data_dir / "customers.csv"),
        "output_dir": str(data_dir / "outputs" / name),
        "observed_until": OBSERVED_UNTIL,
    }
    path = data_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def ensure_time_ordered(data_dir: Path) -> str:
    """The bench log again with its rows in time order, as most activity logs arrive (the demo
    writes them customer by customer, which flatters a scan: each row group holds few ids).
    Written once next to the log, rebuilt when the log is newer. Returns its file name."""
    import duckdb

    source, out = data_dir / "events.parquet", data_dir / "events_by_time.parquet"
    if out.exists() and out.stat().st_mtime >= source.stat().st_mtime:
        return out.name
    tmp = out.with_name(out.name + ".tmp")
    duckdb.connect(":memory:").execute(
        f"COPY (SELECT * FROM read_parquet({sql_literal(source)}) ORDER BY occurred_at,"
        f" customer_id, event_type, feature, amount, severity) TO {sql_literal(tmp)}"
        " (FORMAT parquet)"
    )
    tmp.replace(out)
    return out.name


def machine(cores: int) -> dict[str, Any]:
    import duckdb

    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "cores_used": cores,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "cpu": platform.processor() or platform.machine(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }


def n_events(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


# ---------------------------------------------------------------- measuring


def measure(name: str, cmd: list[str], cores: int, scratch: Path) -> Measurement:
    """Run ``cmd`` in a fresh process on ``cores`` CPUs; wall time and that child's peak RSS."""
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    result = scratch / f"{name}.result.json"
    result.unlink(missing_ok=True)
    logfile = scratch / f"{name}.log"
    log.info("running %s: %s", name, " ".join(cmd[2:]))
    start = time.perf_counter()
    with logfile.open("w") as err:
        proc = subprocess.Popen(
            [*cmd, "--result", str(result)] if "--worker" in cmd else cmd,
            stdout=err,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = logfile.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{text[-2000:]}")
    detail = json.loads(result.read_text()) if result.exists() else cli_steps(text)
    rss_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    log.info("%s: %.1f s, peak RSS %.0f MB", name, wall, rss_mb)
    return Measurement(name, round(wall, 2), round(rss_mb, 1), proc.returncode, detail)


def cli_steps(text: str) -> dict[str, Any]:
    """The ``<step> done in X s`` lines that ``churn`` logs, as step → seconds."""
    steps = re.findall(r"([a-z][a-z ]*[a-z]) done in ([\d.]+) s", text)
    return {"steps_s": [[name.strip(), float(seconds)] for name, seconds in steps]}


def worker_cmd(worker: str, config: Path, dates: list[str], out: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.bench", "--worker", worker, "--config", str(config)]
    for d in dates:
        cmd += ["--as-of", d]
    return [*cmd, "--features-out", str(out)] if out else cmd


def churn_cmd(config: Path, dates: list[str], out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "features", "--config", str(config)]
    for d in dates:
        cmd += ["--as-of", d]
    return [*cmd, "--out", str(out)]


# ---------------------------------------------------------------- workers (fresh processes)


class Timer:
    """Named wall-clock spans, in the order they ran."""

    def __init__(self) -> None:
        self.spans: dict[str, float] = {}

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - start

    def rounded(self) -> list[list[Any]]:
        """``[name, seconds]`` pairs in the order the spans first ran (JSON keeps the order)."""
        return [[k, round(v, 3)] for k, v in self.spans.items()]


class TimedConnection:
    """A DuckDB connection that times each ``execute`` under a label taken from its SQL."""

    def __init__(self, con: Any, timer: Timer) -> None:
        self._con, self._timer = con, timer

    def execute(self, sql: str, *args: Any) -> Any:
        with self._timer.span("sql: " + _sql_label(sql)):
            return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _sql_label(sql: str) -> str:
    words = " ".join(sql.split())
    if words.startswith("CREATE OR REPLACE TEMP TABLE"):
        return "create " + words.split()[5]
    if "GROUP BY ALL" in words:
        return "daily GROUP BY"
    return words[:70]


def worker_scan(config_path: Path, result: Path) -> None:
    """The floor: one scan of the log, grouped per customer (no validation, no features)."""
    import duckdb

    from pipeline.config import load_config

    events = load_config(config_path).data.events
    start = time.perf_counter()
    con = duckdb.connect(":memory:")
    out = con.execute(
        "SELECT customer_id, count(*) AS n, max(occurred_at) AS last"
        f" FROM read_parquet({sql_literal(events)}) GROUP BY customer_id"
    ).fetchnumpy()
    seconds = time.perf_counter() - start
    write_json({"query_s": round(seconds, 3), "groups": len(out["n"])}, result)


def worker_validation_floor(config_path: Path, result: Path) -> None:
    """A lower bound on validating the log, for judging the one-date ratio: the row checks of the
    input contract and the search for repeated rows, in their cheapest form, writing nothing
    and computing no feature.

    Cheaper than any run that validates as the contract asks: values are checked as stored (no
    trimming of padded ids or types, no text parsing: the bench log has native types), and rows
    sharing (customer, microsecond) count as duplicate candidates without comparing their other
    columns. One DuckDB query gives each row's check code and one integer (customer code, then
    microseconds since the first event) that numpy sorts; equal neighbours are the candidates.
    """
    import duckdb

    from pipeline.config import load_config

    data = load_config(config_path).data
    read_customers = (
        f"read_csv({sql_literal(data.customers)}, header = true, all_varchar = true)"
        if Path(data.customers).suffix.lower() == ".csv"
        else f"read_parquet({sql_literal(data.customers)})"
    )
    start = time.perf_counter()
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE TEMP TABLE ids AS SELECT CAST(customer_id AS VARCHAR) AS customer_id,"
        f" (row_number() OVER () - 1)::UBIGINT AS code FROM {read_customers}"
    )
    events = f"read_parquet({sql_literal(data.events)})"
    first, last, n_ids = con.execute(
        f"SELECT epoch_us(min(occurred_at)), epoch_us(max(occurred_at)),"
        f" (SELECT count(*) FROM ids) FROM {events}"
    ).fetchall()[0]
    ts_bits = max(int(last) - int(first), 1).bit_length()
    if max(int(n_ids) - 1, 1).bit_length() + ts_bits > 64:
        raise ValueError("validation floor: (customer, microsecond) does not fit 64 bits")
    bound = int(pd.Timestamp(data.observed_until or OBSERVED_UNTIL).value // 1000)
    got = con.execute(
        f"""SELECT (k.code << {ts_bits}) + CAST(epoch_us(e.occurred_at) - {int(first)} AS UBIGINT)
                   AS key,
               CAST(CASE WHEN e.customer_id IS NULL THEN 1 WHEN e.occurred_at IS NULL THEN 2
                    WHEN e.event_type IS NULL THEN 3 WHEN epoch_us(e.occurred_at) >= {bound} THEN 4
                    WHEN e.amount < 0 THEN 5
                    WHEN e.severity NOT IN ('low', 'medium', 'high', 'critical') THEN 6
                    WHEN k.code IS NULL THEN 7 ELSE 0 END AS TINYINT) AS failed
            FROM {events} e LEFT JOIN ids k ON k.customer_id = CAST(e.customer_id AS VARCHAR)"""
    ).fetchnumpy()
    failed = np.bincount(got["failed"], minlength=8)
    key, valid = np.asarray(got["key"]), got["failed"] == 0
    if not valid.all():
        key = key[valid]
    key.sort()  # in place: a sorted copy costs a fresh 320 MB of page faults at 40M rows
    candidates = int(np.count_nonzero(key[1:] == key[:-1]))
    seconds = time.perf_counter() - start
    write_json(
        {
            "query_s": round(seconds, 3),
            "rows_failing_a_check": int(failed[1:].sum()),
            "duplicate_candidates": candidates,
        },
        result,
    )


def worker_reference(config_path: Path, dates: list[str], out: Path, result: Path) -> None:
    """The pandas reference end to end: validation (shared code), to pandas, features, write."""
    from pipeline.config import load_config
    from pipeline.events import load_inputs
    from pipeline.features.reference import events_frame, reference_features
    from pipeline.io import write_frame

    timer = Timer()
    config = load_config(config_path)
    with timer.span("validate (load_inputs)"):
        data = load_inputs(config)
    with timer.span("events table to pandas"):
        events = events_frame(data.store)
        data.con.close()
    with timer.span("reference features"):
        frame = reference_features(
            events, data.customers, dates, config.features, config.label.qualifying_families
        )
    with timer.span("write parquet"):
        write_frame(frame, out)
    write_json({"phases_s": timer.rounded(), "rows": len(frame)}, result)


def worker_phases(config_path: Path, dates: list[str], out: Path, result: Path) -> None:
    """The path of ``churn features`` (``features_for_dates``: partition by partition, 90-day
    lookback), timed step by step; spans of the same name add up over partitions."""
    from pipeline.config import load_config
    from pipeline.events import connect, load_inputs
    from pipeline.features import FAMILIES, FEATURE_WINDOW_DAYS, build_daily_log, read_bounds
    from pipeline.features.daily import check_customer_order, partitions, product_features
    from pipeline.features.grid import build_grid, normalise_as_of
    from pipeline.io import write_frame

    timer = Timer()
    config = load_config(config_path)
    con = TimedConnection(connect(), timer)
    with timer.span("validate (load_inputs) total"):
        data = load_inputs(config, con=con)
    ids = data.customers["customer_id"].to_numpy()
    stamps = normalise_as_of(dates)
    since, long_since = read_bounds(stamps, FEATURE_WINDOW_DAYS)
    with timer.span("features total"):
        products = product_features(data.store)
        check_customer_order(data.store, ids)
        frames, daily_rows = [], 0
        for part, _, _ in partitions(data.store):
            with timer.span("build_daily_log (all partitions)"):
                daily = build_daily_log(
                    data.store,
                    ids,
                    config.label.qualifying_families,
                    stamps.max(),
                    part,
                    products,
                    check_order=False,
                    since=since,
                    long_since=long_since,
                )
            daily_rows += len(daily)
            with timer.span("build_grid"):
                grid = build_grid(daily, data.customers, stamps)
            parts = [grid.keys.reset_index(drop=True)]
            for name, builder in FAMILIES.items():
                with timer.span(f"family {name}"):
                    parts.append(builder(grid, config.features).reset_index(drop=True))
            frames.append(pd.concat(parts, axis=1))
        with timer.span("concat and sort"):
            frame = pd.concat(frames, ignore_index=True)
            frame = frame.sort_values(["as_of", "customer_id"], kind="stable", ignore_index=True)
    with timer.span("write parquet"):
        write_frame(frame, out)
    write_json({"phases_s": timer.rounded(), "rows": len(frame), "daily_rows": daily_rows}, result)


def worker_engines(config_path: Path, dates: list[str], result: Path) -> None:
    """Validation once, then the feature pass (``features_for_dates``) on each runner: local
    ``n_jobs: 1`` and ``2`` (joblib processes) and Dask (a LocalCluster of 2 worker processes,
    its start included); seconds each and whether the bytes equal ``n_jobs: 1``'s."""
    import hashlib
    import io

    from pipeline.config import ComputeConfig, load_config
    from pipeline.events import load_inputs
    from pipeline.features import features_for_dates

    config = load_config(config_path)
    start = time.perf_counter()
    data = load_inputs(config)
    validate_s = time.perf_counter() - start
    runners = {
        "local_n_jobs_1": ComputeConfig(n_jobs=1),
        "local_n_jobs_2": ComputeConfig(n_jobs=2),
        "dask_local_cluster_2": ComputeConfig(engine="dask", dask={"n_workers": 2}),
    }
    runs = {}
    for name, compute in runners.items():
        load, cpu = os.getloadavg()[0], _cpu_seconds()
        start = time.perf_counter()
        frame = features_for_dates(
            data.store, data.customers, dates, config.features, config.label.qualifying_families,
            compute,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        runs[name] = {
            "features_s": round(seconds, 2),
            "cpu_s": round(_cpu_seconds() - cpu, 2),
            "sha256": digest,
            "load_1min": load,
        }
    serial = runs["local_n_jobs_1"]
    write_json(
        {
            "validate_s": round(validate_s, 2),
            "partitions": len(data.store.partitions()),
            "rows": len(frame),
            "runs": runs,
            "identical": len({r["sha256"] for r in runs.values()}) == 1,
            "n_jobs_2_speedup": round(
                serial["features_s"] / runs["local_n_jobs_2"]["features_s"], 2
            ),
            "n_jobs_2_speedup_goal": {
                "goal": f">= {N_JOBS_2_SPEEDUP_GOAL}",
                "met": serial["features_s"] / runs["local_n_jobs_2"]["features_s"]
                >= N_JOBS_2_SPEEDUP_GOAL,
            },
            "dask_over_n_jobs_2_s": round(
                runs["dask_local_cluster_2"]["features_s"] - runs["local_n_jobs_2"]["features_s"], 2
            ),
        },
        result,
    )


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, its ended children and its live ones
    (joblib and Dask workers): how much work a runner did, whatever the machine's load."""
    import resource

    import psutil  # installed with the dask extra

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def engine_runs(config: Path, cores: int, scratch: Path) -> dict[str, Any]:
    """``worker_engines`` for one date in a fresh process on ``cores`` CPUs, with the machine's
    load around it (the machine may be shared)."""
    before = os.getloadavg()
    run = measure("engines", worker_cmd("engines", config, [ONE]), cores, scratch)
    return {**asdict(run), "load_avg_before": before, "load_avg_after": os.getloadavg()}


# ---------------------------------------------------------------- equality


def compare(fast_path: Path, reference_path: Path, dates: list[str]) -> dict[str, Any]:
    """Fast against reference on ``dates``: exact for ints/keys, floats to rtol 1e-9."""
    stamps = pd.to_datetime(dates)
    fast = pd.read_parquet(fast_path)
    fast = fast[fast["as_of"].isin(stamps)].reset_index(drop=True)
    ref = pd.read_parquet(reference_path)
    worst = _max_relative_diffs(fast, ref)
    try:
        pd.testing.assert_frame_equal(fast, ref, rtol=FLOAT_RTOL, atol=0.0)
        equal, message = True, ""
    except AssertionError as error:
        equal, message = False, str(error)[:600]
    return {
        "dates": dates,
        "rows": len(fast),
        "equal": equal,
        "rtol": FLOAT_RTOL,
        "max_relative_diff": worst,
        "message": message,
    }


def _max_relative_diffs(fast: pd.DataFrame, ref: pd.DataFrame) -> dict[str, float]:
    if len(fast) != len(ref) or list(fast.columns) != list(ref.columns):
        return {}
    out = {}
    for col in fast.columns:
        if fast[col].dtype.kind == "f":
            a, b = fast[col].to_numpy(), ref[col].to_numpy()
            scale = np.maximum(np.abs(b), 1e-300)
            out[col] = float(np.nanmax(np.abs(a - b) / scale)) if len(a) else 0.0
    return {k: v for k, v in out.items() if v > 0}


# ---------------------------------------------------------------- the bench


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    data_dir, cores = Path(args.data_dir), args.cores
    data_dir.mkdir(parents=True, exist_ok=True)
    generated = ensure_demo(data_dir, args.customers, args.seed)
    config = write_bench_config(data_dir)
    scratch = data_dir / "runs"
    scratch.mkdir(exist_ok=True)
    fast1, fast12 = scratch / "fast_1.parquet", scratch / "fast_12.parquet"
    ref1, ref_n = scratch / "reference_1.parquet", scratch / "reference_n.parquet"
    runs = core_runs(config, cores, scratch, fast1, fast12)
    runs["reference_one_date"] = measure(
        "reference_one_date", worker_cmd("reference", config, [ONE], ref1), cores, scratch
    )
    ref_dates = reference_dates(runs["reference_one_date"], args.reference_budget_s)
    runs["reference_n_dates"] = measure(
        "reference_n_dates", worker_cmd("reference", config, ref_dates, ref_n), cores, scratch
    )
    phases = {
        "one_date": measure(
            "phases_one_date",
            worker_cmd("phases", config, [ONE], scratch / "phases_1.parquet"),
            cores,
            scratch,
        ),
        "twelve_dates": measure(
            "phases_twelve_dates",
            worker_cmd("phases", config, TWELVE, scratch / "phases_12.parquet"),
            cores,
            scratch,
        ),
    }
    engines = engine_runs(config, cores, scratch)
    ref12 = reference_twelve(runs, ref_dates)
    by_time = time_ordered_runs(data_dir, cores, scratch, fast1, fast12)
    equality = {
        "one_date": compare(fast1, ref1, [ONE]),
        "n_dates": compare(fast12, ref_n, ref_dates),
    }
    return {
        "generated_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "machine": machine(cores),
        "data": {
            "dir": str(data_dir),
            "n_customers": args.customers,
            "n_events": n_events(data_dir / "events.parquet"),
            "seed": args.seed,
            **generated,
        },
        "as_of": {"one_date": ONE, "twelve_dates": TWELVE, "reference_n_dates": ref_dates},
        "runs": {k: asdict(v) for k, v in runs.items()},
        "reference_twelve_dates": ref12,
        "ratios": ratios(runs, ref12["wall_s"]),
        "equality": equality,
        "phases": {k: asdict(v) for k, v in phases.items()},
        "time_ordered_log": by_time,
        "engines": engines,
    }


def core_runs(
    config: Path, cores: int, scratch: Path, one: Path, twelve: Path, prefix: str = ""
) -> dict[str, Measurement]:
    """The two floors, then ``churn features`` for one date (to ``one``) and for twelve (to
    ``twelve``), each in a fresh process; ``prefix`` names their logs in ``scratch``."""

    def run(name: str, cmd: list[str]) -> Measurement:
        return measure(prefix + name, cmd, cores, scratch)

    return {
        "scan": run("scan", worker_cmd("scan", config, [])),
        "validation_floor": run("validation_floor", worker_cmd("validation_floor", config, [])),
        "one_date": run("one_date", churn_cmd(config, [ONE], one)),
        "twelve_dates": run("twelve_dates", churn_cmd(config, TWELVE, twelve)),
    }


def core_ratios(runs: dict[str, Measurement]) -> dict[str, float]:
    """One date against both floors, twelve dates against one date, and the twelve-date peak."""
    scan, floor = runs["scan"].wall_s, runs["validation_floor"].wall_s
    one, twelve = runs["one_date"], runs["twelve_dates"]
    return {
        "one_date_over_scan": one.wall_s / scan,
        "twelve_over_one_date": twelve.wall_s / one.wall_s,
        "twelve_dates_peak_rss_mb": twelve.peak_rss_mb,
        "validation_floor_over_scan": floor / scan,
        "one_date_over_validation_floor": one.wall_s / floor,
    }


def time_ordered_runs(
    data_dir: Path, cores: int, scratch: Path, fast1: Path, fast12: Path
) -> dict[str, Any]:
    """Floors and ``churn features`` again over the same rows in time order: the goals must
    hold for the layout real logs have, and the features must not depend on row order."""
    config = write_bench_config(data_dir, ensure_time_ordered(data_dir), "bench_by_time")
    one, twelve = scratch / "by_time_1.parquet", scratch / "by_time_12.parquet"
    runs = core_runs(config, cores, scratch, one, twelve, prefix="by_time_")
    return {
        "events": str(data_dir / "events_by_time.parquet"),
        "runs": {k: asdict(v) for k, v in runs.items()},
        "ratios": {k: round(v, 2) for k, v in core_ratios(runs).items()},
        "same_features_as_customer_ordered_log": {
            "one_date": compare(one, fast1, [ONE]),
            "twelve_dates": compare(twelve, fast12, TWELVE),
        },
    }


def reference_dates(one: Measurement, budget_s: float) -> list[str]:
    """All twelve dates when the estimate fits ``budget_s``, else three (then extrapolated)."""
    per_date = dict(one.detail["phases_s"])["reference features"]
    estimate = one.wall_s + 11 * per_date
    if estimate <= budget_s:
        return TWELVE
    log.info("reference for 12 dates estimated at %.0f s > %.0f s: running 3", estimate, budget_s)
    return TWELVE[-3:]


def reference_twelve(runs: dict[str, Measurement], ref_dates: list[str]) -> dict[str, Any]:
    """Measured when all twelve dates ran, else linear in the number of dates from 1 and 3."""
    one, many = runs["reference_one_date"], runs["reference_n_dates"]
    if len(ref_dates) == len(TWELVE):
        return {"wall_s": many.wall_s, "peak_rss_mb": many.peak_rss_mb, "extrapolated": False}
    per_date = (many.wall_s - one.wall_s) / (len(ref_dates) - 1)
    wall = one.wall_s + per_date * (len(TWELVE) - 1)
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": None,
        "extrapolated": True,
        "how": f"1-date wall + {len(TWELVE) - 1} × per-date cost measured from 1 and"
        f" {len(ref_dates)} dates; peak RSS not extrapolated",
    }


def ratios(runs: dict[str, Measurement], reference_twelve_s: float) -> dict[str, Any]:
    """The headline ratios and whether each goal is met."""
    one, twelve = runs["one_date"], runs["twelve_dates"]
    values = {
        **core_ratios(runs),
        "reference_over_fast_one_date": runs["reference_one_date"].wall_s / one.wall_s,
        "reference_over_fast_twelve_dates": reference_twelve_s / twelve.wall_s,
    }
    out: dict[str, Any] = {k: round(v, 2) for k, v in values.items()}
    out["goals"] = {key: {"goal": _goal_text(key), "met": _met(key, values[key])} for key in GOALS}
    return out


def _goal_text(key: str) -> str:
    return f"< {GOALS[key]}" if key == "twelve_dates_peak_rss_mb" else f"<= {GOALS[key]}"


def _met(key: str, value: float) -> bool:
    return value < GOALS[key] if key == "twelve_dates_peak_rss_mb" else value <= GOALS[key]


def save(section: dict[str, Any], out: Path) -> None:
    """Write ``section`` under ``features`` in ``out``, keeping any other top-level keys."""
    payload = json.loads(out.read_text()) if out.exists() else {}
    payload["features"] = section
    write_json(payload, out)


def save_engines(args: argparse.Namespace) -> None:
    """``--only-engines``: the runner measurements alone, into ``features.engines``."""
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_demo(data_dir, args.customers, args.seed)
    scratch = data_dir / "runs"
    scratch.mkdir(exist_ok=True)
    engines = engine_runs(write_bench_config(data_dir), args.cores, scratch)
    payload = json.loads(args.out.read_text()) if args.out.exists() else {}
    payload.setdefault("features", {})["engines"] = engines
    write_json(payload, args.out)
    log.info("engines: %s", json.dumps(engines["detail"]))


def report(section: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    for name, run in section["runs"].items():
        rows.append((name, f"{run['wall_s']:.1f}", f"{run['peak_rss_mb']:.0f}"))
    ref12 = section["reference_twelve_dates"]
    label = "reference_12 (extrapolated)" if ref12["extrapolated"] else "reference_12"
    rows.append((label, f"{ref12['wall_s']:.1f}", str(ref12["peak_rss_mb"] or "-")))
    data = section["data"]
    log.info(
        "features bench: %d customers, %d events, %d cores",
        data["n_customers"],
        data["n_events"],
        section["machine"]["cores_used"],
    )
    log.info("%-28s %9s %12s", "run", "wall s", "peak RSS MB")
    for row in rows:
        log.info("%-28s %9s %12s", *row)
    goals = section["ratios"]["goals"]
    for key, value in section["ratios"].items():
        if key != "goals":
            goal = goals.get(key)
            verdict = (
                f"(goal {goal['goal']}: {'met' if goal['met'] else 'NOT met'})" if goal else ""
            )
            log.info("%-34s %8s %s", key, value, verdict)
    for name in ("one_date", "twelve_dates"):
        steps = section["runs"][name]["detail"].get("steps_s", [])
        log.info("churn features %-12s %s", name, ", ".join(f"{k} {v:.1f} s" for k, v in steps))
    for key, check in section["equality"].items():
        log.info("equality %-10s %s on %d rows", key, check["equal"], check["rows"])
    by_time = section["time_ordered_log"]
    log.info("same log in time order (%s):", by_time["events"])
    for name, run in by_time["runs"].items():
        log.info("  %-26s %9.1f %12.0f", name, run["wall_s"], run["peak_rss_mb"])
    for key, value in by_time["ratios"].items():
        log.info("  %-32s %8s", key, value)
    for key, check in by_time["same_features_as_customer_ordered_log"].items():
        log.info("  same features as the customer-ordered log, %s: %s", key, check["equal"])
    for key, phases in section["phases"].items():
        log.info("phases (%s):", key)
        for name, seconds in phases["detail"]["phases_s"]:
            log.info("  %-60s %7.2f s", name[:60], seconds)


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results.json"))
    p.add_argument("--customers", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--reference-budget-s", type=float, default=600.0)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--only-engines",
        action="store_true",
        help="measure only the runners (features.engines in --out; the rest is kept)",
    )
    p.add_argument(
        "--worker",
        choices=["scan", "validation_floor", "reference", "phases", "engines"],
        help=argparse.SUPPRESS,
    )
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--as-of", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--features-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_worker(args: argparse.Namespace) -> None:
    config, dates, out, result = args.config, args.as_of, args.features_out, args.result
    workers: dict[str, Callable[[], None]] = {
        "scan": lambda: worker_scan(config, result),
        "validation_floor": lambda: worker_validation_floor(config, result),
        "reference": lambda: worker_reference(config, dates, out, result),
        "phases": lambda: worker_phases(config, dates, out, result),
        "engines": lambda: worker_engines(config, dates, result),
    }
    workers[args.worker]()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.worker:
        run_worker(args)
        return
    if args.only_engines:
        save_engines(args)
        return
    section = run_bench(args)
    save(section, args.out)
    report(section)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
