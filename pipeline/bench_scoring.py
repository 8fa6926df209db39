"""Scoring speed at scale: ``python -m pipeline.bench_scoring --out bench/scoring.json``.

The demo base's feature rows at ``observed_until`` are replicated to ``--customers`` rows (one
million by default); feature building is excluded from the timings. Measured, in a worker process
pinned to ``--cores`` CPUs (``OMP_NUM_THREADS`` and CPU affinity):

- ``score``: calibrated probabilities + customer value + tiers for every row (target ≤ 10 s for
  1M rows on 2 cores);
- ``reasons``: TreeSHAP contributions + sentences + actions for the red and orange rows (target
  ≤ 0.2 ms per explained customer), and the sentence building alone;
- peak resident memory of the worker and the model's size (trees × leaves);
- ``runners``: the whole ``score_frame`` (probabilities, tiers, reasons, actions) with
  ``compute.n_jobs: 1`` and ``2`` (joblib worker processes, start included in the first split
  run), and whether both gave the same frame: ``base`` over every row (reasons for red and
  orange), ``explain_all`` over the ``EXPLAIN_ROWS`` highest risks with reasons for all of them.
  Run after the figures above, so it moves no peak memory.

Wall times depend on what else runs on the machine; ``*_cpu_s`` (process CPU time, all threads)
is reported beside them: on an otherwise idle machine wall ≈ CPU ÷ cores for the threaded steps
(predict and TreeSHAP) and ≈ CPU for the sentence building (one thread).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("pipeline.bench_scoring")

TARGET_SCORE_S = 10.0
TARGET_REASON_MS = 0.1
EXPLAIN_ROWS = 20_000
"""Reasons are timed on this many highest-risk rows, whatever the tier policy lists: a
per-owner capacity lists a few hundred, where fixed costs would dominate the figure."""
RUNNER_JOBS = (1, 2)
"""``compute.n_jobs`` values the ``runners`` figures compare."""


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(config_path: Path, models_dir: Path, n_rows: int, result: Path) -> None:
    """Build the demo features once, replicate them, time scoring and reasons; write JSON."""
    import pandas as pd

    from pipeline.config import load_config
    from pipeline.events import load_inputs
    from pipeline.explain import explain, reference_values
    from pipeline.model import ModelBundle
    from pipeline.score import build_base, customer_value, model_settings, monthly_value
    from pipeline.tiers import assign_tiers, escalation_flags

    config = load_config(config_path)
    bundle = ModelBundle.load(models_dir)
    features_cfg, label_cfg, tiers = model_settings(bundle.card, config)
    data = load_inputs(config)
    base = build_base(data, data.observed_until, features_cfg, label_cfg).features
    rows = np.resize(np.arange(len(base)), n_rows)
    frame = base.iloc[rows].reset_index(drop=True)
    frame["customer_id"] = pd.Series(np.arange(n_rows)).astype("str")
    rss_before = _rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    p = bundle.predict(frame)
    monthly = monthly_value(frame, config.value)
    value = customer_value(monthly, p, config.value, label_cfg.horizon_days)
    owner = frame["owner"].astype("str").to_numpy(dtype=object)
    flags = escalation_flags(frame, tiers)
    tier = assign_tiers(p, tiers, value, flags, owner, bundle.card.get("base_rate"))
    score_s, score_cpu = time.perf_counter() - start, time.process_time() - cpu
    explained = np.sort(np.argsort(-p, kind="stable")[:EXPLAIN_ROWS])
    at_risk = frame.iloc[explained]
    refs = reference_values(frame, tier == "green", bundle.features)
    start, cpu = time.perf_counter(), time.process_time()
    contributions = bundle.model.contributions(at_risk)
    shap_s, shap_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    reasons = explain(
        at_risk,
        contributions,
        bundle.features,
        refs,
        config.explain.actions,
        top_k=config.explain.top_k,
        required=tier[explained] == "red",
    )
    words_s, words_cpu = time.perf_counter() - start, time.process_time() - cpu
    n_explained = len(at_risk)
    reason_ms = (shap_s + words_s) * 1000 / max(n_explained, 1)
    out = {
        "rows": n_rows,
        "distinct_feature_rows": len(base),
        "features": len(bundle.features),
        "model": {"version": bundle.card.get("model_version"), **bundle.model.size()},
        "score_s": round(score_s, 3),
        "score_us_per_row": round(score_s * 1e6 / n_rows, 3),
        "score_cpu_s": round(score_cpu, 3),
        "score_target_s": TARGET_SCORE_S,
        "score_ok": score_s <= TARGET_SCORE_S * n_rows / 1_000_000,
        "tiers": {t: int((tier == t).sum()) for t in ("red", "orange", "green")},
        "explained": n_explained,
        "contributions_s": round(shap_s, 3),
        "contributions_cpu_s": round(shap_cpu, 3),
        "sentences_s": round(words_s, 3),
        "sentences_cpu_s": round(words_cpu, 3),
        "reasons_ms_per_customer": round(reason_ms, 4),
        "sentences_us_per_customer": round(words_s * 1e6 / max(n_explained, 1), 3),
        "reasons_cpu_ms_per_customer": round(
            (shap_cpu + words_cpu) * 1000 / max(n_explained, 1), 4
        ),
        "reasons_target_ms": TARGET_REASON_MS,
        "reasons_ok": reason_ms <= TARGET_REASON_MS,
        "red_without_reason": int(
            (reasons["reason_1_sentence"].isna() & (tier[explained] == "red")).sum()
        ),
        "peak_rss_mb_before_scoring": round(rss_before, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "example_reasons": reasons["reasons"].dropna().head(3).tolist(),
    }
    out["runners"] = {
        "base": runner_timings(frame, bundle, config, tiers, label_cfg.horizon_days),
        "explain_all": runner_timings(
            at_risk, bundle, config, tiers, label_cfg.horizon_days, explain_all=True
        ),
    }
    result.write_text(json.dumps(out, indent=2))


def runner_timings(
    frame, bundle, config, tiers, horizon_days: int, explain_all: bool = False
) -> dict:
    """Wall and CPU seconds (this process only, not its workers) of ``score_frame`` over
    ``frame`` for each ``n_jobs`` in ``RUNNER_JOBS`` (explicit, so that a base of any size is
    split; the first split run includes the start of the worker processes); ``same_frame``:
    every run gave the first run's frame."""
    from pipeline.config import ComputeConfig
    from pipeline.score import score_frame

    figures: dict = {"rows": len(frame), "explain_all": explain_all}
    first, same = None, True
    for n_jobs in RUNNER_JOBS:
        start, cpu = time.perf_counter(), time.process_time()
        scores = score_frame(
            frame,
            bundle,
            tiers,
            config.value,
            top_k=config.explain.top_k,
            actions=config.explain.actions,
            explain_all=explain_all,
            horizon_days=horizon_days,
            compute=ComputeConfig(n_jobs=n_jobs),
        )
        figures[f"n_jobs_{n_jobs}"] = {
            "score_and_reasons_s": round(time.perf_counter() - start, 3),
            "driver_cpu_s": round(time.process_time() - cpu, 3),
            "explained": int(scores["reason_1_sentence"].notna().sum()),
        }
        first = scores if first is None else first
        same = same and bool(scores.equals(first))
    one, two = (figures[f"n_jobs_{n}"]["score_and_reasons_s"] for n in RUNNER_JOBS[:2])
    figures["speedup_n_jobs_2"] = round(one / two, 2) if two else None
    figures["same_frame"] = same
    return figures


def run_bench(args: argparse.Namespace) -> dict:
    """Run the worker pinned to ``args.cores`` CPUs and collect its figures with the machine's."""
    result = Path(args.out).with_suffix(".worker.json")
    result.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(args.cores)}
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    cmd = [
        sys.executable,
        "-m",
        "pipeline.bench_scoring",
        "--worker",
        "--config",
        str(args.config),
        "--models",
        str(args.models),
        "--customers",
        str(args.customers),
        "--out",
        str(result),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    figures = json.loads(result.read_text())
    result.unlink()
    return {
        "machine": {
            "cores_used": len(cpus),
            "cpus_available": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "worker_wall_s_incl_feature_building": round(time.perf_counter() - start, 1),
        **figures,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/scoring.json"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--models", type=Path, default=Path("models/demo/champion"))
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        worker(args.config, args.models, args.customers, args.out)
        return
    figures = run_bench(args)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    log.info(json.dumps(figures, indent=2))
    log.info("→ %s", args.out)


if __name__ == "__main__":
    main()
