"""The run report: one self-contained HTML file people would rather look at than read.

Sections, and what each one rests on:

- headline: the champion's card (version, test metrics beside the baselines and, on demo data,
  the oracle), the latest scores (red / orange customers and their revenue at risk), and the
  latest complete KPI period;
- KPIs: CRR, churn rate and NDR per period and the cohort retention heat map, recomputed from
  the validated inputs with ``pipeline.kpis`` (the same numbers as ``churn kpis``);
- model: ROC / precision-recall, calibration and cumulative-gain curves, feature importance and
  a comparison table, from the latest training run's rolling-origin backtest (out-of-fold
  predictions, ``<output_dir>/train/backtest_predictions.parquet``; mean and spread over folds
  from its metrics) and the champion bundle;
- tiers: a backtest. The champion scores the last N monthly as_of dates whose label window is
  fully observed (one feature pass for all dates, the feature, label and tier settings of the
  model card, labels from ``pipeline.labels.build_labels``), so the tier mix over time, the
  observed churn per tier and the tier changes between consecutive dates rest on known
  outcomes. Dates that the training run used (validation, calibration, test) are marked;
  customers rejected by scoring's rules are left out as scoring leaves them out;
- at-risk list: the top of the latest scores file (``<output_dir>/scores/scores.parquet``) by
  expected loss, with reasons and the recommended action; a note says how to make it when the
  file does not exist yet.

Self-contained: figures are base64 PNGs inside the page, styles are inline, nothing is fetched,
so the file opens offline and can be mailed. No wall-clock time is written, so the same inputs
give the same bytes. Pure functions build tables, figures and HTML from frames; I/O happens only
in ``run_report``.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from pipeline import plots
from pipeline.config import Config, FeatureConfig, LabelConfig, TierConfig, ValueConfig
from pipeline.events import ValidatedData
from pipeline.metrics import classification_metrics
from pipeline.model import ModelBundle
from pipeline.tiers import TIER_RANK, TIERS, assign_tiers, escalation_flags

log = logging.getLogger(__name__)

BACKTEST_DATES = 6
TOP_AT_RISK = 25
SECTIONS: dict[str, str] = {
    "kpis": "Retention KPIs",
    "model": "Model quality",
    "tiers": "Risk tiers",
    "at-risk": "At-risk customers",
}
"""Section anchor → heading, in page order."""

SCORE_COLUMNS: dict[str, str] = {
    "model": "churn_probability",
    "logistic": "logistic_score",
    "rule_30d_inactive": "rule_30d_inactive_score",
    "bgnbd": "bgnbd_score",
    "oracle": "oracle_probability",
}
"""Name in the comparison → column of ``backtest_predictions.parquet``."""

SCORE_LABELS: dict[str, str] = {
    "model": "Model (LightGBM, calibrated)",
    "logistic": "Baseline: logistic regression",
    "rule_30d_inactive": "Baseline: rule “30 days inactive”",
    "bgnbd": "Baseline: BG/NBD (no purchase in the horizon)",
    "oracle": "Oracle: the simulator's true hazard (demo only)",
}

ROLE_LABELS: dict[str, str] = {
    "train": "training (in-sample)",
    "validation": "early stopping",
    "calibration": "calibration",
    "test": "test (held out)",
    "backtest": "backtest test date (then in the production fit)",
}


@dataclass
class ReportInputs:
    """Everything the report shows, already loaded; ``None`` where an input does not exist yet.

    ``backtest``: customer_id, as_of, churned (0/1), churn_probability, tier per scored
    (customer, as_of). ``predictions``: the training run's test slice as written by
    ``run_training``. ``scores``: the latest scores table as written by ``run_scoring``.
    """

    kpis: pd.DataFrame
    cohorts: pd.DataFrame
    period: str
    observed_until: pd.Timestamp
    horizon_days: int
    card: dict | None = None
    importance: pd.Series | None = None
    last_run: dict | None = None
    predictions: pd.DataFrame | None = None
    backtest: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None
    scores_path: Path = Path("outputs/scores/scores.parquet")
    config_path: str = "configs/demo.yaml"
    top: int = TOP_AT_RISK


# --- backtest -----------------------------------------------------------------------------------


def backtest_dates(
    observed_until: pd.Timestamp, horizon_days: int, n: int = BACKTEST_DATES
) -> pd.DatetimeIndex:
    """The last ``n`` month starts whose label window [as_of, as_of + horizon) ends at or before
    ``observed_until`` (so every outcome is known), oldest first."""
    last_known = pd.Timestamp(observed_until) - pd.Timedelta(days=horizon_days)
    dates = pd.date_range(end=last_known.normalize(), periods=n, freq="MS")
    return pd.DatetimeIndex(dates, name="as_of").as_unit("us")


def backtest_frame(
    con,
    customers: pd.DataFrame,
    dates: pd.DatetimeIndex,
    features: FeatureConfig,
    label: LabelConfig,
    observed_until: pd.Timestamp,
) -> pd.DataFrame:
    """Features, ``has_events`` and the ``churned`` label (0/1) for every in-base customer at
    each date whose label is known: one feature pass for all dates, partition by partition."""
    from pipeline.dataset import labelled_rows
    from pipeline.features import map_partitions
    from pipeline.labels import lookback_days

    def rows(grid) -> pd.DataFrame:
        frame = labelled_rows(grid, features, label, observed_until)
        has_events = pd.DataFrame(
            {
                "customer_id": grid.keys["customer_id"],
                "as_of": grid.keys["as_of"],
                "has_events": ~np.isnan(grid.index.last_before("last_event_us")),
            }
        )
        return frame.merge(has_events, on=["customer_id", "as_of"], how="left")

    return map_partitions(
        con,
        customers,
        dates,
        label.qualifying_families,
        rows,
        until=observed_until,
        lookback_days=lookback_days(label),
    )


def backtest_tiers(
    frame: pd.DataFrame,
    bundle: ModelBundle,
    tiers: TierConfig,
    value: ValueConfig,
    horizon_days: int,
    onboarding_days: int,
    gross_margin: float = 1.0,
) -> pd.DataFrame:
    """Calibrated probability and tier for each (customer, as_of) of ``backtest_frame``, as
    scoring would have made them on that date (value, capacity and escalation per date).

    Rows scoring would reject (see ``pipeline.score.reject_reasons``) are left out.
    Returns customer_id, as_of, churned, churn_probability, tier.
    """
    from pipeline.score import customer_value, reject_reasons

    rejected = reject_reasons(frame, bundle.features, onboarding_days).notna().to_numpy()
    if rejected.any():
        log.info("backtest: %d rows left out as scoring would reject them", rejected.sum())
    rows = frame[~rejected].reset_index(drop=True)
    p = bundle.predict(rows) if len(rows) else np.zeros(0)
    tier = np.empty(len(rows), dtype=object)
    for _, index in rows.groupby("as_of", sort=True).indices.items():
        part = rows.iloc[index]
        money = customer_value(part["mrr"].to_numpy(), p[index], value, horizon_days, gross_margin)
        tier[index] = assign_tiers(p[index], tiers, money, escalation_flags(part, tiers))
    out = rows[["customer_id", "as_of", "churned"]].copy()
    out["churn_probability"] = p
    out["tier"] = pd.Series(tier, dtype="str")
    return out


def tier_counts(backtest: pd.DataFrame) -> pd.DataFrame:
    """Customers per tier at each as_of: index as_of, columns green / orange / red."""
    counts = backtest.groupby(["as_of", "tier"]).size().unstack("tier", fill_value=0)
    return counts.reindex(columns=list(TIERS), fill_value=0).astype("int64")


def tier_outcomes(backtest: pd.DataFrame, by_date: bool = True) -> pd.DataFrame:
    """Per tier (and as_of when ``by_date``): customers, churners, observed churn rate, mean
    predicted probability, and lift = the tier's churn rate ÷ the overall churn rate."""
    keys = ["as_of", "tier"] if by_date else ["tier"]
    table = backtest.groupby(keys, observed=True).agg(
        customers=("churned", "size"),
        churners=("churned", "sum"),
        churn_rate=("churned", "mean"),
        mean_probability=("churn_probability", "mean"),
    )
    base = (
        backtest.groupby("as_of")["churned"].mean()
        if by_date
        else pd.Series(backtest["churned"].mean())
    )
    table = table.reset_index()
    overall = table["as_of"].map(base) if by_date else base.iloc[0]
    table["lift"] = table["churn_rate"] / overall
    table["rank"] = table["tier"].map(TIER_RANK)
    return table.sort_values([*keys[:-1], "rank"]).drop(columns="rank").reset_index(drop=True)


def tier_stability(backtest: pd.DataFrame) -> pd.DataFrame:
    """Tier changes between consecutive as_of dates, over customers scored at both.

    One row per pair: from_as_of, to_as_of, customers (at both), changed, escalated (tier went
    up), de_escalated, and the same three as shares of ``customers``.
    """
    dates = sorted(backtest["as_of"].unique())
    rows = []
    for before, after in itertools.pairwise(dates):
        a = backtest.loc[backtest["as_of"] == before, ["customer_id", "tier"]]
        b = backtest.loc[backtest["as_of"] == after, ["customer_id", "tier"]]
        both = a.merge(b, on="customer_id", suffixes=("_before", "_after"))
        step = both["tier_after"].map(TIER_RANK) - both["tier_before"].map(TIER_RANK)
        n = len(both)
        rows.append(
            {
                "from_as_of": pd.Timestamp(before),
                "to_as_of": pd.Timestamp(after),
                "customers": n,
                "changed": int((step != 0).sum()),
                "escalated": int((step > 0).sum()),
                "de_escalated": int((step < 0).sum()),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=["from_as_of", "to_as_of", "customers", "changed", "escalated", "de_escalated"],
    )
    for column in ("changed", "escalated", "de_escalated"):
        table[f"{column}_share"] = table[column] / table["customers"].where(table["customers"] > 0)
    return table


def tier_transitions(backtest: pd.DataFrame) -> pd.DataFrame:
    """Share of each tier's customers found in each tier one date later (rows sum to 1), over
    customers scored at both dates of every consecutive pair; rows and columns green, orange,
    red (NaN for a tier nobody held)."""
    dates = sorted(backtest["as_of"].unique())
    pairs = []
    for before, after in itertools.pairwise(dates):
        a = backtest.loc[backtest["as_of"] == before, ["customer_id", "tier"]]
        b = backtest.loc[backtest["as_of"] == after, ["customer_id", "tier"]]
        pairs.append(a.merge(b, on="customer_id", suffixes=("_before", "_after")))
    moves = (
        pd.concat(pairs, ignore_index=True)
        if pairs
        else pd.DataFrame(columns=["tier_before", "tier_after"])
    )
    counts = pd.crosstab(moves["tier_before"], moves["tier_after"]).reindex(
        index=list(TIERS), columns=list(TIERS), fill_value=0
    )
    totals = counts.sum(axis=1)
    return counts.div(totals.where(totals > 0), axis=0)


# --- model --------------------------------------------------------------------------------------


def comparison_scores(predictions: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each named score present in the test predictions (model, baselines, oracle)."""
    return {
        name: predictions[column].to_numpy(dtype=np.float64)
        for name, column in SCORE_COLUMNS.items()
        if column in predictions
    }


def model_comparison(predictions: pd.DataFrame) -> pd.DataFrame:
    """ROC-AUC, PR-AUC, Brier, calibration error and top-decile lift / recall of the model and
    each baseline (and the oracle) on the same test rows; index = score name."""
    y = predictions["churned"].to_numpy()
    keep = ["roc_auc", "pr_auc", "brier", "ece", "lift_top_decile", "recall_top_decile"]
    rows = {
        name: {k: classification_metrics(y, s)[k] for k in keep}
        for name, s in comparison_scores(predictions).items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")[keep]


def importance_from(bundle: ModelBundle) -> pd.Series:
    """Total gain per feature of the bundle's trees."""
    gain = bundle.model.booster_.feature_importance("gain")
    return pd.Series(gain, index=bundle.features, dtype="float64")


# --- at-risk list -------------------------------------------------------------------------------


def top_at_risk(scores: pd.DataFrame, n: int = TOP_AT_RISK) -> pd.DataFrame:
    """Red and orange customers with the highest expected loss first (ties: higher tier, then
    customer_id), at most ``n`` rows."""
    listed = scores[scores["tier"].isin(["red", "orange"])].copy()
    listed["_rank"] = listed["tier"].map(TIER_RANK)
    listed = listed.sort_values(
        ["expected_loss", "_rank", "customer_id"], ascending=[False, False, True]
    )
    return listed.drop(columns="_rank").head(n).reset_index(drop=True)


def at_risk_summary(scores: pd.DataFrame) -> dict[str, float]:
    """Counts and revenue at risk of red and orange customers, and the scored base size."""
    out: dict[str, float] = {"scored": float(len(scores))}
    for tier in ("red", "orange"):
        part = scores[scores["tier"] == tier]
        out[tier] = float(len(part))
        out[f"{tier}_revenue_at_risk"] = float(part["revenue_at_risk"].sum())
    out["revenue_at_risk_listed"] = out["red_revenue_at_risk"] + out["orange_revenue_at_risk"]
    out["revenue_at_risk_total"] = float(scores["revenue_at_risk"].sum())
    return out


# --- HTML building blocks -----------------------------------------------------------------------


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def figure_html(png: bytes, alt: str, caption: str = "", wide: bool = False) -> str:
    """A ``<figure>`` with the PNG inlined as base64 (no file, no fetch)."""
    data = base64.b64encode(png).decode("ascii")
    cls = "figure wide" if wide else "figure"
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    image = f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
    return f'<figure class="{cls}">{image}{cap}</figure>'


def note_html(text: str, kind: str = "note") -> str:
    """A highlighted paragraph (``note`` for missing inputs, ``hint`` for how to read)."""
    return f'<p class="{kind}">{text}</p>'


def table_html(
    frame: pd.DataFrame, formats: dict[str, str] | None = None, classes: str = ""
) -> str:
    """A plain HTML table; ``formats`` maps a column to a format spec (e.g. ``'.3f'``, ``'.1%'``,
    ``',.0f'``; numbers so formatted are right-aligned) or ``'raw'`` (trusted HTML, not
    escaped); NaN shows as an em dash. All other cell text is escaped."""
    formats = formats or {}
    numeric = {c for c, spec in formats.items() if spec != "raw"}

    def cell(tag: str, column: str, text: str) -> str:
        align = ' class="num"' if column in numeric else ""
        return f"<{tag}{align}>{text}</{tag}>"

    head = "".join(cell("th", c, esc(c)) for c in frame.columns)
    body = [
        "<tr>"
        + "".join(
            cell("td", c, _fmt(v, formats.get(c))) for c, v in zip(frame.columns, row, strict=True)
        )
        + "</tr>"
        for row in frame.itertuples(index=False)
    ]
    return (
        f'<table class="{classes}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _fmt(value: object, spec: str | None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, pd.Timestamp):
        return esc(value.strftime("%Y-%m-%d"))
    if spec == "raw":
        return str(value)
    if spec and isinstance(value, int | float | np.integer | np.floating):
        return esc(format(value, spec))
    return esc(value)


def tier_pill(tier: str) -> str:
    """A coloured label for a tier."""
    return f'<span class="pill {esc(tier)}">{esc(tier)}</span>'


def money(value: float) -> str:
    """Compact money without a currency (the data's own): 8.74 M, 227 k, 950."""
    if not np.isfinite(value):
        return "—"
    for size, suffix in ((1e9, " bn"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def tile(label: str, value: str, detail: str = "", tone: str = "") -> str:
    """One headline number with its label and a line of context."""
    return (
        f'<div class="tile {tone}"><div class="label">{esc(label)}</div>'
        f'<div class="value">{value}</div><div class="detail">{detail}</div></div>'
    )


# --- sections -----------------------------------------------------------------------------------


def _metric(inputs: ReportInputs, key: str) -> float | None:
    """A backtest metric of the champion (its card) or, without one, of the latest run."""
    for source in (inputs.card, inputs.last_run):
        if source and key in source.get("metrics", {}):
            return float(source["metrics"][key])
    return None


def headline_html(inputs: ReportInputs) -> str:
    """The row of headline tiles on top of the page."""
    tiles = []
    card = inputs.card or {}
    if card:
        tested = card.get("backtest", {}).get("test_dates", [])
        trained = card.get("training_as_of_range", ["?", "?"])
        tiles.append(
            tile(
                "Champion model",
                f"v{esc(card.get('model_version', '?'))}",
                f"{esc(card.get('model_name', ''))}; trained on as_of {esc(trained[0])} … "
                f"{esc(trained[-1])}; backtested on {esc(', '.join(tested))}",
            )
        )
    else:
        tiles.append(tile("Champion model", "none", "run <code>make train</code>", "warn"))
    auc = _metric(inputs, "model_roc_auc")
    if auc is not None:
        spread = _metric(inputs, "model_roc_auc_std") or 0.0
        parts = [
            f"± {spread:.3f} over folds, min {_metric(inputs, 'model_roc_auc_min') or auc:.3f}"
        ]
        for name, label in (
            ("logistic", "logistic"),
            ("rule_30d_inactive", "30-day rule"),
            ("bgnbd", "BG/NBD"),
            ("oracle", "oracle"),
        ):
            other = _metric(inputs, f"{name}_roc_auc")
            if other is not None:
                parts.append(f"{label} {other:.3f}")
        tiles.append(tile("Backtest ROC-AUC (mean)", f"{auc:.3f}", " · ".join(parts)))
    ece = _metric(inputs, "model_ece")
    if ece is not None:
        tiles.append(
            tile(
                "Calibration error",
                f"{ece * 100:.2f} pp",
                "mean gap between predicted and observed churn (10 equal-count bins)",
            )
        )
    if inputs.scores is not None:
        s = at_risk_summary(inputs.scores)
        as_of = pd.Timestamp(inputs.scores["as_of"].iloc[0]).date() if s["scored"] else "?"
        tiles.append(
            tile(
                "Red · orange today",
                f'<span class="red-text">{s["red"]:,.0f}</span> · '
                f'<span class="orange-text">{s["orange"]:,.0f}</span>',
                f"as of {as_of}, of {s['scored']:,.0f} customers scored",
                "alert",
            )
        )
        tiles.append(
            tile(
                "Revenue at risk (red + orange)",
                money(s["revenue_at_risk_listed"]),
                f"probability × customer value; all tiers {money(s['revenue_at_risk_total'])}",
                "alert",
            )
        )
    else:
        tiles.append(tile("At risk today", "no scores", "run <code>make score</code>", "warn"))
    kpis = inputs.kpis.dropna(subset=["crr_pct"])
    if len(kpis):
        last = kpis.iloc[-1]
        when = f"{inputs.period} from {pd.Timestamp(last['period_start']).date()}"
        tiles.append(tile("CRR", f"{last['crr_pct']:.1f} %", when))
        tiles.append(tile("Churn rate", f"{last['churn_rate'] * 100:.2f} %", when))
        if np.isfinite(last["ndr"]):
            tiles.append(tile("NDR", f"{last['ndr'] * 100:.1f} %", when))
    return f'<section class="tiles">{"".join(tiles)}</section>'


def kpi_section(inputs: ReportInputs) -> str:
    """CRR, churn rate and NDR trend lines, the latest periods as a table, the cohort map."""
    from pipeline.kpis import cohort_matrix

    parts = [_heading("kpis")]
    table = inputs.kpis
    if table.empty:
        parts.append(note_html(f"No complete {inputs.period} in the log yet: no KPIs."))
        return _section("kpis", parts)
    basis = (
        "the payment history"
        if str(table["ndr_basis"].iloc[-1]) == "payment_history"
        else "current MRR only (an approximation: NDR = GRR)"
    )
    parts.append(
        note_html(
            f"Per calendar {inputs.period}, complete periods only. CRR = (E − N) / S; churn rate"
            f" = lost / S; NDR from {basis}. Definitions: <code>pipeline/kpis.py</code>.",
            "hint",
        )
    )
    parts.append(
        figure_html(
            plots.png_bytes(plots.kpi_trends(table, inputs.period)), "KPI trends", wide=True
        )
    )
    recent = table.tail(6)[
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
    parts.append(
        table_html(
            recent,
            {
                "S": ",.0f",
                "N": ",.0f",
                "lost": ",.0f",
                "E": ",.0f",
                "CRR %": ".2f",
                "churn": ".2%",
                "NDR": ".1%",
                "ARPA": ",.0f",
                "CLV": ",.0f",
            },
        )
    )
    if not inputs.cohorts.empty:
        matrix = cohort_matrix(inputs.cohorts)
        parts.append(
            figure_html(
                plots.png_bytes(plots.cohort_heatmap(matrix)),
                "Cohort retention heat map",
                "Each row is a signup month; read along a row to see how fast that cohort"
                " leaves. Blank cells are not observed yet.",
                wide=True,
            )
        )
    return _section("kpis", parts)


def model_section(inputs: ReportInputs) -> str:
    """Curves, calibration, gain, importance and the comparison table on the backtest rows."""
    parts = [_heading("model")]
    predictions = inputs.predictions
    if predictions is None or predictions.empty:
        parts.append(
            note_html(
                "No backtest predictions yet"
                " (<code>outputs/train/backtest_predictions.parquet</code>):"
                " run <code>make train</code>, then <code>make report</code> again."
            )
        )
    else:
        parts.append(_run_note(inputs, predictions))
        comparison = model_comparison(predictions)
        shown = comparison.reset_index(names="score")
        shown["score"] = shown["score"].map(lambda n: SCORE_LABELS.get(n, n))
        shown.columns = [
            "score",
            "ROC-AUC ↑",
            "PR-AUC ↑",
            "Brier ↓",
            "calibration error ↓",
            "top-decile lift ↑",
            "top-decile recall ↑",
        ]
        parts.append(
            table_html(
                shown,
                {
                    "ROC-AUC ↑": ".3f",
                    "PR-AUC ↑": ".3f",
                    "Brier ↓": ".4f",
                    "calibration error ↓": ".4f",
                    "top-decile lift ↑": ".2f",
                    "top-decile recall ↑": ".1%",
                },
            )
        )
        parts.append(_margin_note(comparison))
        y = predictions["churned"].to_numpy()
        scores = comparison_scores(predictions)
        probs = {k: v for k, v in scores.items() if k in ("model", "oracle")}
        parts.append(
            figure_html(
                plots.png_bytes(plots.roc_pr(y, scores)),
                "ROC and precision-recall curves",
                "Higher and further left is better. The dotted line is a random ranking (ROC) or"
                " the base churn rate (precision-recall).",
                wide=True,
            )
        )
        parts.append(
            '<div class="pair">'
            + figure_html(
                plots.png_bytes(plots.calibration(y, probs)),
                "Calibration curve",
                "On the diagonal, “0.3” means 30 % of such customers leave.",
            )
            + figure_html(
                plots.png_bytes(plots.lift_gain(y, scores)),
                "Cumulative gain",
                "Share of churners reached when calling the riskiest customers first; the dashed"
                " line marks the top 10 %.",
            )
            + "</div>"
        )
    if inputs.importance is not None and len(inputs.importance):
        parts.append(
            figure_html(
                plots.png_bytes(plots.feature_importance(inputs.importance, top=15)),
                "Feature importance",
                "Total gain of the champion's trees per feature: what the model leans on, not"
                " why one customer is at risk (that is in the at-risk list).",
            )
        )
    return _section("model", parts)


def _run_note(inputs: ReportInputs, predictions: pd.DataFrame) -> str:
    as_of = ", ".join(str(pd.Timestamp(d).date()) for d in sorted(predictions["as_of"].unique()))
    run = inputs.last_run or {}
    text = (
        f"Out-of-fold backtest predictions of the latest training run"
        f" (v{esc(run.get('version', '?'))}, one fold per as_of {esc(as_of)}, each scored by a"
        " model fitted only on dates whose outcomes were known by then; pooled here):"
        f" {len(predictions):,} customer-dates, churn rate"
        f" {predictions['churned'].mean():.1%} within {inputs.horizon_days} days."
        f" Champion decision: {esc(run.get('decision', 'unknown'))}."
    )
    champion = (inputs.card or {}).get("model_version")
    if champion is not None and run.get("version") not in (None, champion):
        text += (
            f" <strong>The champion is v{esc(champion)}, not this run's model</strong>: the"
            " curves describe the latest run."
        )
    return note_html(text, "hint")


def _margin_note(comparison: pd.DataFrame) -> str:
    if "model" not in comparison.index:
        return ""
    auc = comparison["roc_auc"]
    parts = [
        f"{SCORE_LABELS[name].split(': ')[-1]} by {auc['model'] - auc[name]:+.3f}"
        for name in ("logistic", "rule_30d_inactive")
        if name in auc
    ]
    text = "ROC-AUC: the model beats " + " and ".join(parts) + "." if parts else ""
    if "oracle" in auc:
        text += (
            f" It stays {auc['oracle'] - auc['model']:.3f} below the oracle, the best any model"
            " could do on this simulated data."
        )
    return note_html(text, "hint") if text else ""


def tier_section(inputs: ReportInputs) -> str:
    """Tier mix over time, observed churn per tier, tier stability, from the backtest."""
    parts = [_heading("tiers")]
    policy = (inputs.card or {}).get("tier_policy", {}).get("description")
    if policy:
        parts.append(note_html(f"Tier policy (from the model card): {esc(policy)}.", "hint"))
    backtest = inputs.backtest
    if backtest is None or backtest.empty:
        parts.append(
            note_html(
                "No backtest: it needs a champion model (run <code>make train</code>) and as_of"
                f" dates at least {inputs.horizon_days} days before the end of the log."
            )
        )
        return _section("tiers", parts)
    parts.append(
        note_html(
            "Backtest: the champion scored every customer on the last"
            f" {backtest['as_of'].nunique()} month starts whose {inputs.horizon_days}-day"
            " outcome is known, exactly as"
            " <code>churn score</code> would have on that day; then we looked at who left.",
            "hint",
        )
    )
    parts.append(_dates_table(inputs, backtest))
    counts = tier_counts(backtest)
    outcomes = tier_outcomes(backtest)
    parts.append(
        '<div class="pair">'
        + figure_html(
            plots.png_bytes(plots.tier_mix(counts)),
            "Customers per tier over time",
            "How many customers each tier held on each date.",
        )
        + figure_html(
            plots.png_bytes(plots.tier_outcomes(outcomes)),
            "Observed churn rate per tier",
            "Bars: share of the tier that left within the horizon; black ticks: what the model"
            " predicted for them. Red should stand clearly above orange, orange above green.",
        )
        + "</div>"
    )
    overall = tier_outcomes(backtest, by_date=False)
    overall["tier"] = overall["tier"].map(tier_pill)
    parts.append(
        table_html(
            overall.rename(
                columns={
                    "churn_rate": "observed churn",
                    "mean_probability": "predicted churn",
                    "lift": "× average",
                }
            ),
            {
                "tier": "raw",
                "customers": ",.0f",
                "churners": ",.0f",
                "observed churn": ".1%",
                "predicted churn": ".1%",
                "× average": ".1f",
            },
        )
    )
    stability = tier_stability(backtest)
    if len(stability):
        mean_changed = stability["changed_share"].mean()
        parts.append(
            '<div class="pair">'
            + figure_html(
                plots.png_bytes(plots.tier_stability(stability)),
                "Tier stability",
                f"Among customers scored on both dates, {mean_changed:.1%} changed tier from one"
                " month to the next on average. Some change is the point (risk moves); a large"
                " share would make the lists noisy for CS teams.",
            )
            + figure_html(
                plots.png_bytes(plots.tier_transitions(tier_transitions(backtest))),
                "Tier moves",
                "Read a row: of the customers in that tier on one date, where they were on the"
                " next (customers who left in between are not counted).",
            )
            + "</div>"
        )
    return _section("tiers", parts)


def _dates_table(inputs: ReportInputs, backtest: pd.DataFrame) -> str:
    roles = {
        day: ROLE_LABELS.get(name, name)
        for name, days in (inputs.card or {}).get("split", {}).items()
        for day in days
    } | {
        day: ROLE_LABELS["backtest"]
        for day in (inputs.card or {}).get("backtest", {}).get("test_dates", [])
    }
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
    return table_html(
        frame,
        {"customers": ",.0f", "red": ",.0f", "orange": ",.0f", "observed churn": ".1%"},
    )


def at_risk_section(inputs: ReportInputs) -> str:
    """The top of the latest at-risk list with reasons and actions, or how to make it."""
    parts = [_heading("at-risk")]
    scores = inputs.scores
    if scores is None:
        parts.append(
            note_html(
                f"No scores yet: <code>{esc(inputs.scores_path)}</code> does not exist. Run"
                f" <code>make score</code> (or <code>churn score --config"
                f" {esc(inputs.config_path)}</code>), then <code>make report</code> again."
            )
        )
        return _section("at-risk", parts)
    top = top_at_risk(scores, inputs.top)
    as_of = pd.Timestamp(scores["as_of"].iloc[0]).date() if len(scores) else "?"
    version = scores["model_version"].iloc[0] if len(scores) else "?"
    parts.append(
        note_html(
            f"From <code>{esc(inputs.scores_path)}</code> (as of {as_of}, model v{esc(version)}):"
            f" the {len(top)} red and orange customers with the highest expected loss. The full"
            " lists per CS owner: <code>make export</code>.",
            "hint",
        )
    )
    if top.empty:
        parts.append(note_html("Nobody is red or orange in the latest scores."))
        return _section("at-risk", parts)
    formats = {c: "raw" for c in AT_RISK_RAW} | {"churn probability": "s", "revenue at risk": "s"}
    parts.append(table_html(_at_risk_view(top), formats, "at-risk"))
    return _section("at-risk", parts)


AT_RISK_RAW = ("tier", "why", "customer")


def _at_risk_view(top: pd.DataFrame) -> pd.DataFrame:
    sentences = [c for c in top.columns if c.startswith("reason_") and c.endswith("_sentence")]

    def reasons(row: pd.Series) -> str:
        items = [esc(row[c]) for c in sentences if isinstance(row[c], str) and row[c]]
        listed = "".join(f"<li>{s}</li>" for s in items) or "<li>—</li>"
        action = row.get("recommended_action")
        todo = f'<div class="action">→ {esc(action)}</div>' if isinstance(action, str) else ""
        return f"<ul>{listed}</ul>{todo}"

    last = pd.to_datetime(top.get("last_activity_at"))
    return pd.DataFrame(
        {
            "customer": [
                f"<strong>{esc(c)}</strong><br><small>{esc(o)} · {esc(s)}</small>"
                for c, o, s in zip(top["customer_id"], top["owner"], top["segment"], strict=True)
            ],
            "tier": top["tier"].map(tier_pill),
            "churn probability": [f"{p:.0%}" for p in top["churn_probability"]],
            "revenue at risk": [money(v) for v in top["revenue_at_risk"]],
            "why": top.apply(reasons, axis=1),
            "last activity": [str(t.date()) if pd.notna(t) else "—" for t in last],
        }
    )


def _heading(key: str) -> str:
    return f"<h2>{esc(SECTIONS[key])}</h2>"


def _section(key: str, parts: list[str]) -> str:
    return f'<section id="{key}">{"".join(parts)}</section>'


# --- the page -----------------------------------------------------------------------------------

STYLE = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; --blue:#1f6feb;
        --red:#cf222e; --orange:#fb8500; --green:#2da44e; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#0d1117; color:#f0f6fc; padding:24px 32px 18px; }
header h1 { margin:0 0 4px; font-size:24px; }
header p { margin:0; color:#9198a1; }
nav { margin-top:12px; }
nav a { color:#f0f6fc; margin-right:18px; text-decoration:none; border-bottom:1px solid #3d444d; }
main { max-width:1180px; margin:0 auto; padding:20px 32px 48px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px;
          margin:18px 0; }
section h2 { margin:0 0 10px; font-size:19px; }
section.tiles { display:grid; grid-template-columns:repeat(auto-fill, minmax(210px, 1fr));
                gap:12px; background:none; border:none; padding:0; }
.tile { background:#fff; border:1px solid var(--line); border-left:4px solid var(--blue);
        border-radius:8px; padding:12px 14px; }
.tile.alert { border-left-color:var(--red); }
.tile.warn { border-left-color:#9a6700; background:#fff8c5; }
.tile .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.tile .value { font-size:26px; font-weight:650; margin:2px 0; }
.tile .detail { color:var(--muted); font-size:12.5px; }
.red-text { color:var(--red); } .orange-text { color:var(--orange); }
figure { margin:14px 0; }
figure img { max-width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.pair { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
@media (max-width: 900px) { .pair { grid-template-columns:1fr; } }
table { border-collapse:collapse; width:100%; margin:10px 0; font-size:13.5px; }
th { text-align:left; color:var(--muted); font-weight:600; border-bottom:2px solid var(--line);
     padding:6px 8px; }
td { border-bottom:1px solid #eaeef2; padding:6px 8px; vertical-align:top; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.at-risk ul { margin:0; padding-left:18px; }
table.at-risk .action { color:var(--blue); margin-top:3px; }
table.at-risk small { color:var(--muted); }
.pill { display:inline-block; padding:1px 9px; border-radius:10px; color:#fff; font-size:12px;
        font-weight:600; }
.pill.red { background:var(--red); } .pill.orange { background:var(--orange); }
.pill.green { background:var(--green); }
p.note { background:#fff8c5; border:1px solid #d4a72c66; padding:10px 12px; border-radius:6px; }
p.hint { color:var(--muted); margin:4px 0 10px; }
code { background:#eff2f5; padding:1px 5px; border-radius:4px; font-size:90%; }
footer { color:var(--muted); font-size:12.5px; text-align:center; padding:0 0 30px; }
"""


def render_report(inputs: ReportInputs) -> str:
    """The whole page as one HTML string (figures inline; nothing to fetch)."""
    card = inputs.card or {}
    subtitle = (
        f"Data observed until {inputs.observed_until.date()} · label horizon"
        f" {inputs.horizon_days} days · champion"
        f" {esc(card.get('model_name', '—'))} v{esc(card.get('model_version', '—'))}"
    )
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in SECTIONS.items())
    with matplotlib.rc_context(plots.REPORT_STYLE):
        body = "".join(
            [
                headline_html(inputs),
                kpi_section(inputs),
                model_section(inputs),
                tier_section(inputs),
                at_risk_section(inputs),
            ]
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Churn-risk report · {inputs.observed_until.date()}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>Churn-risk report</h1><p>{subtitle}</p><nav>{nav}</nav></header>"
        f"<main>{body}</main>"
        f"<footer>Made by <code>churn report --config {esc(inputs.config_path)}</code>."
        " Self-contained: every figure is inside this file.</footer>"
        "</body></html>\n"
    )


# --- the edge: read what exists, compute, write atomically --------------------------------------


def default_report_path(config: Config) -> Path:
    """Where ``churn report`` writes by default."""
    return config.data.output_dir / "report.html"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _read_parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.exists() else None


def _load_bundle(config: Config) -> ModelBundle | None:
    folder = config.models_dir / "champion"
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
    frame = backtest_frame(data.con, data.customers, dates, features, label, until)
    out = backtest_tiers(
        frame,
        bundle,
        tiers,
        config.value,
        label.horizon_days,
        features.onboarding_days,
        config.kpis.gross_margin,
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
) -> Path:
    """Edge function: load inputs and the latest outputs, compute KPIs and the backtest, write
    the HTML report atomically to ``out`` (default ``<output_dir>/report.html``); returns it."""
    from pipeline.events import load_inputs
    from pipeline.io import write_atomic
    from pipeline.kpis import run_kpis

    data = data or load_inputs(config)
    kpis, cohorts, _ = run_kpis(config, data)
    bundle = _load_bundle(config)
    card_label = (bundle.card.get("label") or {}) if bundle else {}
    train_dir = config.data.output_dir / "train"
    scores_path = config.data.output_dir / "scores" / "scores.parquet"
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
    )
    page = render_report(inputs)
    target = Path(out) if out is not None else default_report_path(config)
    write_atomic(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    log.info("report: %.1f MB → %s", len(page.encode()) / 1e6, target)
    return target
