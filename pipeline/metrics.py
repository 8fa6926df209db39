"""Evaluation metrics for churn probabilities: one out-of-time slice, and a rolling-origin
backtest's folds with their mean and spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Mean |observed churn rate − mean predicted probability| over equal-count bins of p,
    weighted by bin size (adaptive ECE; equal-width bins would leave most bins empty when churn
    is rare)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, n_bins)
    return float(sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in bins if len(b)) / len(y))


def top_decile(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(lift, recall) among the 10 % highest scores; ties broken by row order (stable)."""
    y, score = np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64)
    n_top = max(1, int(np.ceil(0.1 * len(y))))
    top = np.argsort(-score, kind="stable")[:n_top]
    base = y.mean()
    lift = float(y[top].mean() / base) if base > 0 else float("nan")
    recall = float(y[top].sum() / y.sum()) if y.sum() > 0 else float("nan")
    return lift, recall


def classification_metrics(y: np.ndarray, p: np.ndarray, prefix: str = "") -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, ECE, top-decile lift and recall, base rate."""
    y, p = np.asarray(y), np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    lift, recall = top_decile(y, p)
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_top_decile": lift,
        "recall_top_decile": recall,
        "churn_rate": float(np.mean(y)),
        "mean_probability": float(np.mean(p)),
        "rows": float(len(y)),
    }
    return {f"{prefix}{k}": v for k, v in out.items()}


def tier_table(y: np.ndarray, tier: np.ndarray) -> pd.DataFrame:
    """Per tier: customers, share, churners and observed churn rate (= precision of the tier)."""
    frame = pd.DataFrame({"tier": np.asarray(tier), "churned": np.asarray(y)})
    table = frame.groupby("tier", observed=True)["churned"].agg(customers="size", churners="sum")
    table["share"] = table["customers"] / table["customers"].sum()
    table["churn_rate"] = table["churners"] / table["customers"]
    return table.reset_index()


METRICS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "lift_top_decile",
    "recall_top_decile",
)
"""The metrics a backtest reports per fold and summarises (mean, std, min, max)."""
STATS = ("mean", "std", "min", "max")


def backtest_table(predictions: pd.DataFrame, scorers: dict[str, str]) -> pd.DataFrame:
    """One row per (fold, scorer): test as_of, rows, churn rate and every metric in ``METRICS``.

    ``predictions`` holds ``fold``, ``as_of``, ``churned`` and one column per scorer
    (``scorers``: scorer name → column); scorers whose column is absent are skipped.
    """
    rows = []
    for fold, part in predictions.groupby("fold", sort=True):
        y = part["churned"].to_numpy()
        for name, column in scorers.items():
            if column in part:
                m = classification_metrics(y, part[column].to_numpy())
                rows.append(
                    {"fold": int(fold), "test_as_of": part["as_of"].iloc[0], "scorer": name}
                    | {k: m[k] for k in ("rows", "churn_rate", *METRICS)}
                )
    return pd.DataFrame(rows)


def summarise_backtest(table: pd.DataFrame) -> dict[str, float]:
    """``{scorer}_{metric}`` = mean over folds, plus ``_std`` (0 for one fold), ``_min`` and
    ``_max`` for every scorer and metric of ``backtest_table``."""
    stats = table.groupby("scorer", sort=False)[list(METRICS)].agg(list(STATS))
    out: dict[str, float] = {}
    for scorer, row in stats.iterrows():
        for (metric, stat), value in row.items():
            suffix = "" if stat == "mean" else f"_{stat}"
            one_fold = stat == "std" and pd.isna(value)
            out[f"{scorer}_{metric}{suffix}"] = 0.0 if one_fold else float(value)
    return out
