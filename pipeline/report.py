"""The run report: one self-contained HTML file that answers "can I trust today's list?".

Split by job:

- ``pipeline.report_data``: the numbers — backtest (the champion scored on the last N monthly
  as_of dates whose label window is fully observed, with the card's feature, label and tier
  settings), tier tables, the model comparison on the test slice, quality per segment / plan /
  lifecycle stage, KPI window, tier cut-offs;
- ``pipeline.plots``: pure figure functions;
- ``pipeline.report_render`` and ``pipeline/templates/*.j2``: section views (plain data) and
  Jinja2 templates with autoescape;
- this module: the edge — read what exists (champion bundle, training outputs, scores, a daily
  run's monitoring), compute, write the page atomically (``run_report``).

Sections: headline tiles; monitoring ("can I trust today's list?": input drift, expected and
realised quality, alerts — from ``churn run``); retention KPIs; model quality on the test slice;
score distribution with the tier cut-offs and calibration over the whole range; what drives the
scores (mean |contribution|); quality per segment, plan and lifecycle stage; risk tiers
(backtest); the at-risk list. A missing input gives a note saying what to run, not a crash.

Self-contained: figures are base64 PNGs inside the page, styles are inline, nothing is fetched,
so the file opens offline and can be mailed. No wall-clock time is written, so the same inputs
give the same bytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.config import Config
from pipeline.events import ValidatedData
from pipeline.model import ModelBundle
from pipeline.report_data import (
    BACKTEST_DATES,
    SECTIONS,
    TOP_AT_RISK,
    ReportInputs,
    at_risk_summary,
    backtest_dates,
    backtest_frame,
    backtest_tiers,
    comparison_scores,
    group_quality,
    importance_from,
    kpi_window,
    list_outcomes,
    margin_phrase,
    model_comparison,
    tier_counts,
    tier_cutoffs,
    tier_outcomes,
    tier_stability,
    tier_transitions,
    top_at_risk,
)
from pipeline.report_render import page_context, render

log = logging.getLogger(__name__)

__all__ = [
    "BACKTEST_DATES",
    "SECTIONS",
    "TOP_AT_RISK",
    "ReportInputs",
    "at_risk_summary",
    "backtest_dates",
    "backtest_frame",
    "backtest_tiers",
    "comparison_scores",
    "default_report_path",
    "group_quality",
    "importance_from",
    "kpi_window",
    "list_outcomes",
    "margin_phrase",
    "model_comparison",
    "render_report",
    "run_backtest",
    "run_report",
    "tier_counts",
    "tier_cutoffs",
    "tier_outcomes",
    "tier_stability",
    "tier_transitions",
    "top_at_risk",
]


def render_report(inputs: ReportInputs) -> str:
    """The whole page as one HTML string (figures inline; nothing to fetch)."""
    return render(page_context(inputs))


# --- the edge: read what exists, compute, write atomically --------------------------------------


def default_report_path(config: Config) -> Path:
    """Where ``churn report`` writes by default."""
    return paths.report_path(paths.output_dir(config))


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _read_parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.exists() else None


def _load_bundle(config: Config) -> ModelBundle | None:
    folder = paths.champion_dir(config)
    try:
        return ModelBundle.load(folder)
    except (FileNotFoundError, ValueError) as error:
        log.warning(
            "no usable champion bundle in %s (%s): no backtest or importance", folder, error
        )
        return None


def run_backtest(
    config: Config, data: ValidatedData, bundle: ModelBundle, n_dates: int = BACKTEST_DATES
) -> pd.DataFrame | None:
    """Score the champion on the last ``n_dates`` monthly as_of dates with known outcomes, with
    the card's feature, label and tier settings (see the module docstring)."""
    from pipeline.score import model_settings

    features, label, tiers = model_settings(bundle.card, config)
    until = pd.Timestamp(data.observed_until)
    dates = backtest_dates(until, label.horizon_days, n_dates)
    first_signup = data.customers["signup_at"].min()
    dates = dates[dates > first_signup]
    if len(dates) == 0:
        log.warning("backtest: no as_of date with a known outcome; tiers section left empty")
        return None
    frame = backtest_frame(data.store, data.customers, dates, features, label, until)
    if "segment" in data.customers and "segment" not in frame:
        # A mapped column, not a merge: a merge copies every feature row of the backtest.
        segments = data.customers.drop_duplicates("customer_id").set_index("customer_id")
        frame["segment"] = frame["customer_id"].map(segments["segment"])
    out = backtest_tiers(
        frame,
        bundle,
        tiers,
        config.value,
        label.horizon_days,
        features.onboarding_days,
        config.kpis.gross_margin,
        data.customers.set_index("customer_id")["owner"],
    )
    log.info(
        "backtest: %d customer-dates on %d as_of dates (%s … %s)",
        len(out),
        len(dates),
        dates[0].date(),
        dates[-1].date(),
    )
    return out


def _backtest_or_none(
    config: Config, data: ValidatedData, bundle: ModelBundle | None, n_dates: int
) -> pd.DataFrame | None:
    """The backtest, or None (logged) when there is no champion or it cannot score these
    features; the tiers section then says so instead of the command failing."""
    from pipeline.model import FeatureMismatchError

    if bundle is None:
        return None
    try:
        return run_backtest(config, data, bundle, n_dates)
    except FeatureMismatchError as error:
        log.warning("backtest skipped: %s", error)
        return None


def run_report(
    config: Config,
    out: Path | None = None,
    data: ValidatedData | None = None,
    n_dates: int = BACKTEST_DATES,
    top: int = TOP_AT_RISK,
    config_path: str = "configs/demo.yaml",
    *,
    scores_path: Path | None = None,
    monitor: dict | None = None,
    contributions: pd.DataFrame | None = None,
    quality: pd.DataFrame | None = None,
    command: str = "churn report",
) -> Path:
    """Edge function: load inputs and the latest outputs, compute KPIs and the backtest, write
    the HTML report atomically to ``out`` (default ``<output_dir>/report.html``); returns it.

    The daily run (``pipeline.run``) passes its own ``scores_path`` and its ``monitor``,
    ``contributions`` and ``quality``; without them those sections say how to get them."""
    from pipeline.events import load_inputs
    from pipeline.io import write_atomic
    from pipeline.kpis import run_kpis

    data = data or load_inputs(config)
    kpis, cohorts, _ = run_kpis(config, data)
    bundle = _load_bundle(config)
    card_label = (bundle.card.get("label") or {}) if bundle else {}
    train_dir = paths.train_dir(paths.output_dir(config))
    scores_path = scores_path or paths.latest_scores(paths.output_dir(config))
    scores = _read_parquet(scores_path)
    if scores is None:
        log.warning("no scores file at %s: the at-risk section says how to make it", scores_path)
    inputs = ReportInputs(
        kpis=kpis,
        cohorts=cohorts,
        period=config.kpis.period,
        observed_until=pd.Timestamp(data.observed_until),
        horizon_days=int(card_label.get("horizon_days", config.label.horizon_days)),
        card=bundle.card if bundle else None,
        importance=importance_from(bundle) if bundle else None,
        last_run=_read_json(train_dir / "last_run.json"),
        predictions=_read_parquet(train_dir / "backtest_predictions.parquet"),
        backtest=_backtest_or_none(config, data, bundle, n_dates),
        scores=scores,
        scores_path=scores_path,
        config_path=config_path,
        top=top,
        monitor=monitor,
        contributions=contributions,
        quality=quality,
        kpi_start=pd.Timestamp(start) if (start := config.monitor.kpi_start) else None,
        min_group_size=config.monitor.min_group_size,
        command=command,
    )
    page = render_report(inputs)
    target = Path(out) if out is not None else default_report_path(config)
    write_atomic(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    log.info("report: %.1f MB → %s", len(page.encode()) / 1e6, target)
    return target
