"""Evaluation plots (matplotlib, headless). Each function returns a Figure; callers save it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

COLORS = {
    "model": "#1f6feb",
    "logistic": "#8250df",
    "rule_30d_inactive": "#bf8700",
    "oracle": "#2da44e",
}


def roc_pr(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """ROC and precision-recall curves for each named score on the same rows."""
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax_roc.plot(fpr, tpr, label=name, color=COLORS.get(name))
        prec, rec, _ = precision_recall_curve(y, s)
        ax_pr.plot(rec, prec, label=name, color=COLORS.get(name))
    ax_roc.plot([0, 1], [0, 1], ":", color="grey")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.axhline(np.mean(y), ls=":", color="grey")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision–recall")
    ax_roc.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def calibration(y: np.ndarray, p: dict[str, np.ndarray], n_bins: int = 10) -> Figure:
    """Observed churn rate against mean predicted probability in equal-count bins."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    top = 0.0
    for name, probs in p.items():
        order = np.argsort(probs, kind="stable")
        bins = [b for b in np.array_split(order, n_bins) if len(b)]
        mean_p = [probs[b].mean() for b in bins]
        rate = [np.mean(np.asarray(y)[b]) for b in bins]
        ax.plot(mean_p, rate, "o-", label=name, color=COLORS.get(name))
        top = max(top, *mean_p, *rate)
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed churn rate",
        title="Calibration (test slice)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lift_gain(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Cumulative gain (share of churners caught) against share of customers contacted."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    y = np.asarray(y, dtype=np.float64)
    for name, s in scores.items():
        order = np.argsort(-np.asarray(s), kind="stable")
        gain = np.concatenate([[0], np.cumsum(y[order]) / y.sum()])
        share = np.linspace(0, 1, len(gain))
        ax.plot(share, gain, label=name, color=COLORS.get(name))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="random")
    ax.axvline(0.1, ls="--", color="lightgrey")
    ax.set(
        xlabel="share of customers contacted (highest risk first)",
        ylabel="share of churners reached",
        title="Cumulative gain",
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def feature_importance(importance: pd.Series, top: int = 20) -> Figure:
    """Horizontal bars of total gain per feature."""
    imp = importance.sort_values().tail(top)
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(imp) + 1.2))
    ax.barh(imp.index, imp.to_numpy(), color=COLORS["model"])
    ax.set(xlabel="total gain", title="Feature importance")
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
