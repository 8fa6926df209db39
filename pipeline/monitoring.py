"""The monitoring stage of the daily run: ``monitor.json`` from today's scored base.

Pure functions on frames and dicts (the primitives are in ``pipeline.monitor``):

- ``card_with_profile``: what training adds to the model card, ``card["reference_profile"]``:
  the bins of each model feature and of the score ``churn_probability`` over a training frame.
- ``build_monitor``: drift of today's features and score against that profile (PSI, status,
  category shares, new and vanished categories), the label-free quality estimate, alerts.
- ``contribution_summary``: mean |contribution| per feature (``pred_contrib``) over the base,
  with quantiles of the contributions for the distribution plot.
- ``realised_table``: for past runs whose horizon has passed, expected against realised
  quality, one tidy row per (as_of, metric).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline import monitor
from pipeline.config import MonitorConfig
from pipeline.explain import is_evidence, signals_present

SCORE = "churn_probability"
NO_PROFILE = "no reference profile in the model card (retrain)"
BACKTEST_KEYS = ("model_roc_auc", "backtest_roc_auc", "test_roc_auc")
"""Card metrics the expected ROC-AUC is compared with, first found wins."""
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
REALISED_FROM_EXPECTED = {
    "expected_churn_rate": "churn_rate",
    "expected_roc_auc": "roc_auc",
    "expected_brier": "brier",
}


def card_with_profile(
    card: dict, frame: pd.DataFrame, features: list[str], probability: np.ndarray
) -> dict:
    """The card plus ``reference_profile``: bins of each feature and of the calibrated score
    over ``frame`` (call it on the training rows nearest in time, e.g. the test slice)."""
    profiled = frame[features].assign(**{SCORE: np.asarray(probability, dtype=np.float64)})
    return card | {"reference_profile": monitor.reference_profile(profiled, [*features, SCORE])}


def backtest_roc_auc(card: dict) -> float | None:
    """The ROC-AUC the model showed out of time (backtest if the card has one, else test)."""
    metrics = card.get("metrics") or {}
    found = [metrics[k] for k in BACKTEST_KEYS if metrics.get(k) is not None]
    return float(found[0]) if found else None


def clean(value: object) -> object:
    """JSON-safe value: NaN and inf become None, floats are rounded to 6 decimals."""
    if isinstance(value, float | np.floating):
        return round(float(value), 6) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [clean(v) for v in value]
    return value


def category_changes(profile: dict, frame: pd.DataFrame) -> dict[str, list[dict]]:
    """Per categorical feature: each category's reference and today's share (incl. missing)."""
    out = {}
    for name, bins in profile.items():
        if bins["kind"] != "categorical" or name not in frame:
            continue
        shares, _ = monitor.category_shares(frame[name], bins["categories"])
        labels = [*bins["categories"], monitor.MISSING]
        rows = zip(labels, bins["shares"], shares, strict=True)
        out[name] = [{"category": c, "reference": r, "today": t} for c, r, t in rows]
    return out


def present_only(profile: dict | None, today: pd.DataFrame) -> dict | None:
    """The profile without the features of signal families the log does not contain, neither
    in training (the reference) nor today: their values are fills (tenure, 1.0) that move with
    the base's age, not with behaviour. A family seen in training stays monitored even when it
    vanished today: that is the drift to catch."""
    if not profile:
        return profile
    names = [n for n in profile if n in today.columns and n != SCORE]
    trained = {n: 1 if _nonzero_in_reference(profile[n]) else 0 for n in names if is_evidence(n)}
    reference = pd.DataFrame([{n: trained.get(n, 0) for n in names}])
    keep = signals_present(today, names) | signals_present(reference, names)
    return {name: bins for name, bins in profile.items() if name in keep | {SCORE}}


def _nonzero_in_reference(bins: dict) -> bool:
    """Whether the reference had any value above 0 (bins above the first, or an edge > 0)."""
    if bins.get("kind") != "numeric":
        return True
    shares, edges = bins.get("shares", []), bins.get("edges", [])
    return any(e > 0 for e in edges) or sum(shares[1:-1]) > 0


def drift(profile: dict | None, today: pd.DataFrame, cfg: MonitorConfig) -> dict:
    """PSI table (records), category shares and the drift alerts / warnings."""
    if not profile:
        return {"available": False, "note": NO_PROFILE, "table": [], "categories": {}}
    table = monitor.drift_table(profile, today, cfg.psi_warn, cfg.psi_alert)
    warned = table[table["status"] == "warn"]
    return {
        "available": True,
        "note": None,
        "table": table.to_dict("records"),
        "categories": category_changes(profile, today),
        "alerts": monitor.drift_alerts(table),
        "warnings": [
            f"moderate drift on '{f}': PSI {v:.3f}"
            for f, v in warned[["feature", "psi"]].itertuples(index=False)
        ],
    }


def expected(scores: pd.DataFrame, card: dict, cfg: MonitorConfig) -> dict:
    """Label-free quality today and the alert on a drop of the expected ROC-AUC."""
    p = scores[SCORE].to_numpy(np.float64)
    quality = monitor.expected_quality(p, scores["tier"].to_numpy())
    backtest = backtest_roc_auc(card)
    alerts = monitor.quality_alerts(quality, backtest, cfg.roc_auc_margin)
    return {"estimate": quality, "backtest_roc_auc": backtest, "alerts": alerts}


def build_monitor(
    as_of: pd.Timestamp,
    features: pd.DataFrame,
    scores: pd.DataFrame,
    card: dict,
    cfg: MonitorConfig,
) -> dict:
    """Everything ``monitor.json`` holds for one run (JSON-safe, sorted, no wall-clock time).

    ``features``: today's base with the model features, keyed by customer_id; ``scores``: the
    scored rows (``churn_probability``, ``tier``). Rejected customers are not in the drift.
    """
    today = features.merge(scores[["customer_id", SCORE]], on="customer_id", how="inner")
    drifted = drift(present_only(card.get("reference_profile"), today), today, cfg)
    quality = expected(scores, card, cfg)
    alerts = [*drifted.get("alerts", []), *quality["alerts"]]
    notes = [drifted["note"]] if drifted["note"] else []
    payload = {
        "as_of": str(pd.Timestamp(as_of).date()),
        "model_version": str(card.get("model_version")),
        "customers_scored": len(scores),
        "thresholds": cfg.model_dump(mode="json"),
        "drift": {k: v for k, v in drifted.items() if k not in ("alerts", "note")},
        "expected": quality["estimate"],
        "backtest_roc_auc": quality["backtest_roc_auc"],
        "alerts": alerts,
        "warnings": drifted.get("warnings", []),
        "notes": notes,
    }
    return clean(payload)


def monitor_metrics(payload: dict) -> dict[str, float]:
    """Flat metrics for MLflow: PSI per feature, the estimates, alert count."""
    metrics = {f"psi_{row['feature']}": row["psi"] for row in payload["drift"]["table"]}
    metrics |= dict(payload["expected"].items())
    return metrics | {"monitor_alerts": len(payload["alerts"])}


CONTRIBUTION_SAMPLE = 50_000
"""Scored customers whose TreeSHAP contributions the daily run summarises, at most: evenly
spaced in score order, enough for means and quartiles to two digits. Every customer of a 1M base
took 75 s and ~0.5 GB (``make bench-scale``)."""


def contribution_rows(n_rows: int, at_most: int = CONTRIBUTION_SAMPLE) -> np.ndarray:
    """Positions of the rows to explain for ``contribution_summary``: every row up to
    ``at_most``, else ``at_most`` evenly spaced ones (the same for the same base)."""
    if n_rows <= at_most:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, at_most).round().astype(np.int64))


def contribution_summary(contrib: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Per feature: mean |contribution| (log-odds), mean contribution and its quantiles, over
    the rows given (the daily run: ``contribution_rows`` of the scored base); largest mean
    |contribution| first (ties by name)."""
    values = np.asarray(contrib, dtype=np.float64)[:, : len(names)]
    table = pd.DataFrame(
        {"feature": names, "mean_abs": np.abs(values).mean(axis=0), "mean": values.mean(axis=0)}
    )
    for q in QUANTILES:
        table[f"q{round(q * 100):02d}"] = np.quantile(values, q, axis=0) if len(values) else np.nan
    order = table.sort_values(["mean_abs", "feature"], ascending=[False, True])
    return order.reset_index(drop=True)


def realised_rows(as_of: str, expected_quality: dict, realised: dict) -> list[dict]:
    """Tidy rows of one run: each expected metric beside its realised value (None while the
    run's labels are not known yet)."""
    pairs = dict(REALISED_FROM_EXPECTED)
    pairs |= {
        k: "churn_rate_" + k.removeprefix("expected_precision_")
        for k in expected_quality
        if k.startswith("expected_precision_")
    }
    return [
        {
            "as_of": as_of,
            "metric": name,
            "expected": expected_quality.get(key),
            "realised": realised.get(name),
        }
        for key, name in sorted(pairs.items(), key=lambda kv: kv[1])
        if key in expected_quality
    ]


def quality_table(
    expected_by_run: dict[str, dict], realised_by_run: dict[str, dict]
) -> pd.DataFrame:
    """Expected vs realised quality over runs: one row per (as_of, metric), oldest first;
    ``realised`` and ``gap`` (realised − expected) are NaN until the run's horizon has passed."""
    rows = []
    for as_of in sorted(expected_by_run):
        rows += realised_rows(as_of, expected_by_run[as_of], realised_by_run.get(as_of, {}))
    table = pd.DataFrame(rows, columns=["as_of", "metric", "expected", "realised"])
    table[["expected", "realised"]] = table[["expected", "realised"]].astype("float64")
    table["gap"] = table["realised"] - table["expected"]
    return table


def realised_of(scored: pd.DataFrame) -> dict[str, float]:
    """Realised quality of one past run from its scores with the known ``churned`` (0/1)."""
    return monitor.realised_quality(
        scored["churned"].to_numpy(), scored[SCORE].to_numpy(), scored["tier"].to_numpy()
    )
