"""Report rendering: section views (plain dicts of formatted text, tables and figures) from
``ReportInputs``, and the page from Jinja2 templates with autoescape.

Every value reaches the page through a template with autoescape on, so a customer named
``<script>`` shows as text; no markup is assembled in Python. Figures come from the pure
functions of ``pipeline.plots`` and are inlined as base64 PNGs (nothing to fetch).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import jinja2
import matplotlib
import numpy as np
import pandas as pd

from pipeline import plots
from pipeline.report_data import (
    GROUP_COLUMNS,
    ROLE_LABELS,
    SCORE_LABELS,
    SECTIONS,
    ReportInputs,
    at_risk_summary,
    comparison_scores,
    group_quality,
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
from pipeline.tiers import TIERS

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
"""Templates under ``pipeline/templates``; autoescape on for every file."""

# --- building blocks ----------------------------------------------------------------------------


def figure(fig, alt: str, caption: str = "", wide: bool = False) -> dict:
    """A figure view: the PNG of ``fig`` as a data URI, its alt text and caption."""
    data = base64.b64encode(plots.png_bytes(fig)).decode("ascii")
    return {"src": f"data:image/png;base64,{data}", "alt": alt, "caption": caption, "wide": wide}


def fmt(value: object, spec: str | None = None) -> str:
    """Text of one cell: NaN/None as an em dash, dates as YYYY-MM-DD, numbers by ``spec``."""
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return "—"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    if spec and isinstance(value, int | float | np.integer | np.floating):
        return format(value, spec)
    return str(value)


def table(frame: pd.DataFrame, formats: dict[str, str] | None = None, css: str = "") -> dict:
    """A table view. ``formats``: column → format spec (right-aligned number), ``'pill'`` (a
    tier label) or ``'cell'`` (the value is already a cell dict); other cells are text."""
    formats = formats or {}
    special = {"pill", "cell"}
    columns = [{"name": c, "num": c in formats and formats[c] not in special} for c in frame]

    def cell(column: str, value: object) -> object:
        spec = formats.get(column)
        if spec == "pill":
            return {"pill": str(value)}
        return value if spec == "cell" else fmt(value, spec)

    rows = [
        [cell(c, v) for c, v in zip(frame.columns, row, strict=True)]
        for row in frame.itertuples(index=False)
    ]
    return {"columns": columns, "rows": rows, "css": css}


def money(value: float) -> str:
    """Compact money without a currency (the data's own): 8.74 M, 227 k, 950."""
    if not np.isfinite(value):
        return "—"
    for size, suffix in ((1e9, " bn"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def tile(label: str, value: str, detail: str = "", tone: str = "", **extra) -> dict:
    return {"label": label, "value": value, "detail": detail, "tone": tone, **extra}


# --- headline -----------------------------------------------------------------------------------


def _metric(inputs: ReportInputs, key: str) -> float | None:
    """A test metric of the champion (its card) or, without one, of the latest training run."""
    for source in (inputs.card, inputs.last_run):
        if source and key in source.get("metrics", {}):
            return float(source["metrics"][key])
    return None


def headline_view(inputs: ReportInputs) -> list[dict]:
    """The row of headline tiles on top of the page."""
    return [
        *_model_tiles(inputs),
        *_monitor_tiles(inputs),
        *_score_tiles(inputs),
        *_kpi_tiles(inputs),
    ]


def _model_tiles(inputs: ReportInputs) -> list[dict]:
    card = inputs.card or {}
    if not card:
        return [tile("Champion model", "none", tone="warn", command="make train")]
    tested = card.get("backtest", {}).get("test_dates", [])
    trained = card.get("training_as_of_range", ["?", "?"])
    detail = (
        f"{card.get('model_name', '')}; trained on as_of {trained[0]} … {trained[-1]};"
        f" backtested on {', '.join(tested)}"
    )
    tiles = [tile("Champion model", f"v{card.get('model_version', '?')}", detail)]
    auc = _metric(inputs, "model_roc_auc")
    if auc is not None:
        names = (
            ("logistic", "logistic"),
            ("rule_30d_inactive", "30-day rule"),
            ("bgnbd", "BG/NBD"),
            ("oracle", "oracle"),
        )
        spread = _metric(inputs, "model_roc_auc_std") or 0.0
        lowest = _metric(inputs, "model_roc_auc_min") or auc
        others = [(label, _metric(inputs, f"{name}_roc_auc")) for name, label in names]
        parts = [f"± {spread:.3f} over folds, min {lowest:.3f}"]
        parts += [f"{label} {v:.3f}" for label, v in others if v is not None]
        tiles.append(tile("Backtest ROC-AUC (mean)", f"{auc:.3f}", " · ".join(parts)))
    ece = _metric(inputs, "model_ece")
    if ece is not None:
        detail = "mean gap between predicted and observed churn (10 equal-count bins)"
        tiles.append(tile("Calibration error", f"{ece * 100:.2f} pp", detail))
    return tiles


def _monitor_tiles(inputs: ReportInputs) -> list[dict]:
    payload = inputs.monitor
    if payload is None:
        return []
    alerts = payload["alerts"]
    tone = "alert" if alerts else ("warn" if payload["warnings"] or payload["notes"] else "")
    detail = "; ".join(alerts) if alerts else "input drift and expected quality within limits"
    if payload["notes"]:
        detail = "; ".join([*alerts, *payload["notes"]])
    tiles = [tile("Monitoring alerts", f"{len(alerts)}", detail, tone)]
    estimate = payload["expected"].get("expected_roc_auc")
    if estimate is not None:
        backtest = payload.get("backtest_roc_auc")
        versus = f"out-of-time {backtest:.3f}" if backtest is not None else "no backtest in card"
        tiles.append(tile("Expected ROC-AUC today", f"{estimate:.3f}", f"label-free; {versus}"))
    return tiles


def _score_tiles(inputs: ReportInputs) -> list[dict]:
    if inputs.scores is None:
        return [tile("At risk today", "no scores", tone="warn", command="make score")]
    s = at_risk_summary(inputs.scores)
    as_of = pd.Timestamp(inputs.scores["as_of"].iloc[0]).date() if s["scored"] else "?"
    counts = {"red": f"{s['red']:,.0f}", "orange": f"{s['orange']:,.0f}"}
    detail = f"as of {as_of}, of {s['scored']:,.0f} customers scored"
    risk = f"probability × customer value; all tiers {money(s['revenue_at_risk_total'])}"
    return [
        tile("Red · orange today", "", detail, "alert", counts=counts),
        tile("Revenue at risk (red + orange)", money(s["revenue_at_risk_listed"]), risk, "alert"),
    ]


def _kpi_tiles(inputs: ReportInputs) -> list[dict]:
    kpis = inputs.kpis.dropna(subset=["crr_pct"])
    if not len(kpis):
        return []
    last = kpis.iloc[-1]
    when = f"{inputs.period} from {pd.Timestamp(last['period_start']).date()}"
    tiles = [
        tile("CRR", f"{last['crr_pct']:.1f} %", when),
        tile("Churn rate", f"{last['churn_rate'] * 100:.2f} %", when),
    ]
    if np.isfinite(last["ndr"]):
        tiles.append(tile("NDR", f"{last['ndr'] * 100:.1f} %", when))
    return tiles


# --- sections -----------------------------------------------------------------------------------


def monitoring_view(inputs: ReportInputs) -> dict:
    """Drift table and plot, alerts, expected vs realised quality over runs."""
    payload = inputs.monitor
    if payload is None:
        return {"available": False}
    view = {
        "available": True,
        "as_of": payload["as_of"],
        "alerts": payload["alerts"],
        "warnings": payload["warnings"],
        "notes": payload["notes"],
        "expected": _expected_rows(payload),
        "drift": None,
        "quality": None,
    }
    drift = payload["drift"]
    if drift["available"]:
        view["drift"] = _drift_view(drift, payload["thresholds"])
    if inputs.quality is not None and len(inputs.quality):
        view["quality"] = _quality_view(inputs.quality)
    return view


def _expected_rows(payload: dict) -> dict:
    frame = pd.DataFrame(
        [
            {"estimate": k.removeprefix("expected_"), "today": v}
            for k, v in payload["expected"].items()
        ]
    )
    return table(frame, {"today": ".3f"})


def _drift_view(drift: dict, thresholds: dict) -> dict:
    frame = pd.DataFrame(drift["table"])
    frame["new categories"] = frame["new_categories"].map(", ".join)
    frame["vanished categories"] = frame["missing_categories"].map(", ".join)
    shown = frame[["feature", "psi", "status", "new categories", "vanished categories"]].copy()
    shown["status"] = [{"status": s} for s in shown["status"]]
    warn, alert = thresholds["psi_warn"], thresholds["psi_alert"]
    categories = [
        {"feature": name, "table": table(pd.DataFrame(rows), {"reference": ".1%", "today": ".1%"})}
        for name, rows in sorted(drift["categories"].items())
    ]
    return {
        "table": table(shown.rename(columns={"psi": "PSI"}), {"PSI": ".3f", "status": "cell"}),
        "figure": figure(plots.psi_bars(frame, warn, alert), "PSI per feature"),
        "categories": categories,
        "warn": warn,
        "alert": alert,
    }


def _quality_view(quality: pd.DataFrame) -> dict:
    matured = quality.dropna(subset=["realised"])
    shown = quality.rename(columns={"as_of": "run as_of"})
    formats = {"expected": ".3f", "realised": ".3f", "gap": "+.3f"}
    return {
        "table": table(shown, formats),
        "figure": figure(
            plots.quality_over_runs(quality), "Expected and realised quality over runs", wide=True
        ),
        "runs": int(quality["as_of"].nunique()),
        "matured": int(matured["as_of"].nunique()),
    }


def kpi_view(inputs: ReportInputs) -> dict:
    """KPI trends from the first complete period on, the latest periods, the cohort map."""
    from pipeline.kpis import cohort_matrix

    shown = kpi_window(inputs.kpis, inputs.kpi_start)
    if shown.empty:
        return {"available": False, "period": inputs.period}
    basis = str(shown["ndr_basis"].iloc[-1]) == "payment_history"
    recent = shown.tail(6)[
        ["period_start", "S", "N", "lost", "E", "crr_pct", "churn_rate", "ndr", "arpa", "clv"]
    ].rename(
        columns={
            "period_start": inputs.period,
            "crr_pct": "CRR %",
            "churn_rate": "churn",
            "ndr": "NDR",
            "arpa": "ARPA",
            "clv": "CLV",
        }
    )
    counts = dict.fromkeys(("S", "N", "lost", "E", "ARPA", "CLV"), ",.0f")
    formats = counts | {"CRR %": ".2f", "churn": ".2%", "NDR": ".1%"}
    cohorts = None
    if not inputs.cohorts.empty:
        matrix = cohort_matrix(inputs.cohorts)
        cohorts = figure(plots.cohort_heatmap(matrix), "Cohort retention heat map", wide=True)
    return {
        "available": True,
        "period": inputs.period,
        "payment_history": basis,
        "start": str(pd.Timestamp(shown["period_start"].iloc[0]).date()),
        "trends": figure(plots.kpi_trends(shown, inputs.period), "KPI trends", wide=True),
        "table": table(recent, formats),
        "cohorts": cohorts,
    }


def model_view(inputs: ReportInputs) -> dict:
    """Comparison table, curves, calibration, gain and importance on the backtest rows."""
    view: dict = {"predictions": None, "importance": None}
    predictions = inputs.predictions
    if predictions is not None and not predictions.empty:
        view["predictions"] = _test_slice_view(inputs, predictions)
    if inputs.importance is not None and len(inputs.importance):
        view["importance"] = figure(
            plots.feature_importance(inputs.importance, top=15), "Feature importance"
        )
    return view


COMPARISON_HEADERS = {
    "roc_auc": ("ROC-AUC ↑", ".3f"),
    "pr_auc": ("PR-AUC ↑", ".3f"),
    "brier": ("Brier ↓", ".4f"),
    "ece": ("calibration error ↓", ".4f"),
    "lift_top_decile": ("top-decile lift ↑", ".2f"),
    "recall_top_decile": ("top-decile recall ↑", ".1%"),
}


def _test_slice_view(inputs: ReportInputs, predictions: pd.DataFrame) -> dict:
    comparison = model_comparison(predictions)
    shown = comparison.rename(columns={k: v[0] for k, v in COMPARISON_HEADERS.items()})
    shown = shown.reset_index(names="score")
    shown["score"] = shown["score"].map(lambda n: SCORE_LABELS.get(n, n))
    y = predictions["churned"].to_numpy()
    scores = comparison_scores(predictions)
    probs = {k: v for k, v in scores.items() if k in ("model", "oracle")}
    run = inputs.last_run or {}
    champion = (inputs.card or {}).get("model_version")
    return {
        "as_of": ", ".join(
            str(pd.Timestamp(d).date()) for d in sorted(predictions["as_of"].unique())
        ),
        "rows": len(predictions),
        "churn_rate": f"{predictions['churned'].mean():.1%}",
        "version": run.get("version", "?"),
        "decision": run.get("decision", "unknown"),
        "other_champion": champion
        if champion is not None and run.get("version") not in (None, champion)
        else None,
        "table": table(shown, dict(COMPARISON_HEADERS.values())),
        "margins": _margins(comparison),
        "roc_pr": figure(plots.roc_pr(y, scores), "ROC and precision-recall curves", wide=True),
        "calibration": figure(plots.calibration(y, probs), "Calibration curve"),
        "gain": figure(plots.lift_gain(y, scores), "Cumulative gain"),
    }


def _margins(comparison: pd.DataFrame) -> dict:
    """'beats … by' / 'trails … by' phrases against the baselines, and the gap to the oracle."""
    if "model" not in comparison.index:
        return {"phrases": [], "oracle_gap": None}
    auc = comparison["roc_auc"]
    phrases = [
        margin_phrase(SCORE_LABELS[name].split(": ")[-1], auc["model"] - auc[name])
        for name in ("logistic", "rule_30d_inactive", "bgnbd")
        if name in auc
    ]
    gap = f"{auc['oracle'] - auc['model']:.3f}" if "oracle" in auc else None
    return {"phrases": phrases, "oracle_gap": gap}


def scores_view(inputs: ReportInputs) -> dict:
    """Today's score histogram with the tier cut-offs; calibration over [0, 1] (backtest)."""
    cutoffs = tier_cutoffs((inputs.card or {}).get("tier_policy"), inputs.scores)
    view: dict = {"cutoffs": [f"{t} from {v:.3f}" for t, v in cutoffs.items()]}
    scores = inputs.scores
    view["distribution"] = (
        figure(
            plots.score_distribution(
                scores["churn_probability"].to_numpy(), scores["tier"].to_numpy(), cutoffs
            ),
            "Score distribution with tier cut-offs",
        )
        if scores is not None and len(scores)
        else None
    )
    backtest = inputs.backtest
    view["calibration"] = (
        figure(
            plots.calibration_range(
                backtest["churned"].to_numpy(), backtest["churn_probability"].to_numpy(), cutoffs
            ),
            "Calibration over the whole range",
        )
        if backtest is not None and len(backtest)
        else None
    )
    return view


def contributions_view(inputs: ReportInputs) -> dict:
    """Mean |contribution| per feature and the spread of the top features' contributions."""
    summary = inputs.contributions
    if summary is None or summary.empty:
        return {"available": False}
    return {
        "available": True,
        "bars": figure(plots.contribution_bars(summary), "Mean absolute contribution per feature"),
        "spread": figure(plots.contribution_spread(summary), "Spread of contributions"),
        "top": ", ".join(summary["feature"].head(3)),
    }


GROUP_FORMATS = {
    "customers": ",.0f",
    "churners": ",.0f",
    "churn": ".1%",
    "roc_auc": ".3f",
    "churn_red": ".1%",
    "churn_orange": ".1%",
    "churn_green": ".1%",
    "n_red": ",.0f",
    "n_orange": ",.0f",
    "n_green": ",.0f",
}


def groups_view(inputs: ReportInputs) -> dict:
    """Backtest quality per segment, plan and lifecycle stage (pooled over the dates)."""
    backtest = inputs.backtest
    if backtest is None or backtest.empty:
        return {"available": False, "groups": []}
    groups = [
        {
            "name": label,
            "table": table(group_quality(backtest, column, inputs.min_group_size), GROUP_FORMATS),
        }
        for column, label in GROUP_COLUMNS.items()
        if column in backtest
    ]
    return {"available": True, "groups": groups, "min_size": inputs.min_group_size}


CATCH_ROWS = {
    "listed_per_owner_max": ("listed customers per owner and date, at most", ",.0f"),
    "listed_churn_over_base": ("observed churn of the list ÷ the base rate", ".2f"),
    "red_churn_over_green": ("observed churn of red ÷ that of green", ".2f"),
    "churners_covered": ("share of all churners on the list", ".1%"),
    "revenue_at_risk_covered": ("share of revenue at risk on the list", ".1%"),
    "lost_revenue_covered": ("share of the revenue actually lost on the list", ".1%"),
    "listed_below_base_rate_unescalated": ("listed below the base rate, not escalated", ",.0f"),
}
"""What the red + orange list catches over the backtest (``list_outcomes``), in words."""


def _catch_table(backtest: pd.DataFrame) -> dict | None:
    """The list's length, concentration of risk and coverage, when the backtest has values."""
    if "customer_value" not in backtest or "escalated_by" not in backtest:
        return None
    outcomes = list_outcomes(backtest)
    rows = [
        {"measure": label, "value": fmt(outcomes[key], spec)}
        for key, (label, spec) in CATCH_ROWS.items()
    ]
    return table(pd.DataFrame(rows))


def tiers_view(inputs: ReportInputs) -> dict:
    """Tier mix over time, observed churn per tier, tier stability, from the backtest."""
    policy = (inputs.card or {}).get("tier_policy", {}).get("description")
    backtest = inputs.backtest
    if backtest is None or backtest.empty:
        return {"available": False, "policy": policy}
    counts, outcomes = tier_counts(backtest), tier_outcomes(backtest)
    overall = tier_outcomes(backtest, by_date=False).rename(
        columns={
            "churn_rate": "observed churn",
            "mean_probability": "predicted churn",
            "lift": "× average",
        }
    )
    formats = {"tier": "pill", "customers": ",.0f", "churners": ",.0f"}
    formats |= {"observed churn": ".1%", "predicted churn": ".1%", "× average": ".1f"}
    view = {
        "available": True,
        "policy": policy,
        "n_dates": backtest["as_of"].nunique(),
        "dates": _dates_table(inputs, backtest),
        "mix": figure(plots.tier_mix(counts), "Customers per tier over time"),
        "outcomes": figure(plots.tier_outcomes(outcomes), "Observed churn rate per tier"),
        "overall": table(overall, formats),
        "catch": _catch_table(backtest),
        "base_rate": float(backtest["churned"].mean()),
        "stability": None,
    }
    stability = tier_stability(backtest)
    if len(stability):
        view["stability"] = {
            "changed": f"{stability['changed_share'].mean():.1%}",
            "figure": figure(plots.tier_stability(stability), "Tier stability"),
            "moves": figure(plots.tier_transitions(tier_transitions(backtest)), "Tier moves"),
        }
    return view


def _dates_table(inputs: ReportInputs, backtest: pd.DataFrame) -> dict:
    card = inputs.card or {}
    roles = {
        day: ROLE_LABELS.get(name, name)
        for name, days in card.get("split", {}).items()
        for day in days
    } | {day: ROLE_LABELS["backtest"] for day in card.get("backtest", {}).get("test_dates", [])}
    per_date = backtest.groupby("as_of").agg(
        customers=("churned", "size"), churn_rate=("churned", "mean")
    )
    counts = tier_counts(backtest)
    frame = pd.DataFrame(
        {
            "as_of": per_date.index,
            "used in training as": [
                roles.get(str(pd.Timestamp(d).date()), "not used") for d in per_date.index
            ],
            "customers": per_date["customers"].to_numpy(),
            "red": counts["red"].to_numpy(),
            "orange": counts["orange"].to_numpy(),
            "observed churn": per_date["churn_rate"].to_numpy(),
        }
    )
    formats = {"customers": ",.0f", "red": ",.0f", "orange": ",.0f", "observed churn": ".1%"}
    return table(frame, formats)


def at_risk_view(inputs: ReportInputs) -> dict:
    """The top of the latest at-risk list with reasons and actions."""
    scores = inputs.scores
    view: dict = {"scores_path": str(inputs.scores_path), "available": scores is not None}
    if scores is None:
        return view
    top = top_at_risk(scores, inputs.top)
    view["as_of"] = str(pd.Timestamp(scores["as_of"].iloc[0]).date()) if len(scores) else "?"
    view["version"] = str(scores["model_version"].iloc[0]) if len(scores) else "?"
    view["count"] = len(top)
    cells = dict.fromkeys(AT_RISK_CELLS, "cell")
    view["table"] = None if top.empty else table(_at_risk_frame(top), cells, "at-risk")
    return view


AT_RISK_CELLS = ("customer", "tier", "why")


def _at_risk_frame(top: pd.DataFrame) -> pd.DataFrame:
    sentences = [c for c in top.columns if c.startswith("reason_") and c.endswith("_sentence")]

    def reasons(row: pd.Series) -> dict:
        items = [row[c] for c in sentences if isinstance(row[c], str) and row[c]]
        action = row.get("recommended_action")
        return {"reasons": items, "action": action if isinstance(action, str) else None}

    last = pd.to_datetime(top.get("last_activity_at"))
    return pd.DataFrame(
        {
            "customer": [
                {"customer": str(c), "owner": str(o), "segment": str(s)}
                for c, o, s in zip(top["customer_id"], top["owner"], top["segment"], strict=True)
            ],
            "tier": [{"pill": str(t)} for t in top["tier"]],
            "churn probability": [f"{p:.0%}" for p in top["churn_probability"]],
            "revenue at risk": [money(v) for v in top["revenue_at_risk"]],
            "why": top.apply(reasons, axis=1),
            "last activity": [str(t.date()) if pd.notna(t) else "—" for t in last],
        }
    )


# --- the page -----------------------------------------------------------------------------------

VIEWS: dict[str, Callable[[ReportInputs], object]] = {
    "monitoring": monitoring_view,
    "kpis": kpi_view,
    "model": model_view,
    "scores": scores_view,
    "contributions": contributions_view,
    "groups": groups_view,
    "tiers": tiers_view,
    "at-risk": at_risk_view,
}
"""Section key (as in ``SECTIONS``) → its view builder."""


def page_context(inputs: ReportInputs) -> dict:
    """Everything the template shows, as plain data (figures already drawn)."""
    card = inputs.card or {}
    with matplotlib.rc_context(plots.REPORT_STYLE):
        views = {key: build(inputs) for key, build in VIEWS.items()}
        headline = headline_view(inputs)
    return {
        "observed_until": str(inputs.observed_until.date()),
        "horizon_days": inputs.horizon_days,
        "model_name": card.get("model_name", "—"),
        "model_version": card.get("model_version", "—"),
        "sections": SECTIONS,
        "headline": headline,
        "views": views,
        "tiers": list(TIERS),
        "config_path": inputs.config_path,
        "command": inputs.command,
    }


def render(context: dict) -> str:
    """The page from ``report.html.j2``."""
    return ENV.get_template("report.html.j2").render(**context)
