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


# --- report figures -----------------------------------------------------------------------------

TIER_COLORS = {"green": "#2da44e", "orange": "#fb8500", "red": "#cf222e"}
TIER_ORDER = ("green", "orange", "red")


def _date_axis(ax) -> None:
    """Compact, unambiguous date ticks on the x axis."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _clean(ax) -> None:
    """No top/right spines, a light horizontal grid behind the data."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)


def kpi_trends(table: pd.DataFrame, period: str = "month") -> Figure:
    """Three small panels over ``period_start``: CRR (%), churn rate (% per period), NDR (%).

    ``table`` is the KPI table of ``pipeline.kpis`` (periods with S = 0 are NaN and not drawn).
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    x = pd.to_datetime(table["period_start"])
    panels = (
        ("crr_pct", 1.0, "CRR", "%", "#1f6feb"),
        ("churn_rate", 100.0, f"Churn rate per {period}", "%", "#cf222e"),
        ("ndr", 100.0, "NDR", "%", "#2da44e"),
    )
    for ax, (column, scale, title, unit, color) in zip(axes, panels, strict=True):
        y = table[column].astype("float64") * scale
        ax.plot(x, y, "o-", color=color, markersize=3, linewidth=1.6)
        latest = y.dropna()
        if len(latest):
            title = f"{title}: {latest.iloc[-1]:.1f} {unit} (latest)"
        if column == "ndr":
            ax.axhline(100, ls=":", color="grey", linewidth=1)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel(unit)
        _date_axis(ax)
        _clean(ax)
    fig.tight_layout()
    return fig


def cohort_heatmap(matrix: pd.DataFrame) -> Figure:
    """Retention (share of the cohort still active) per signup month × months since signup.

    ``matrix`` as from ``pipeline.kpis.cohort_matrix``: index cohort_month, columns months since
    signup, NaN where not yet observed (drawn blank).
    """
    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(min(12, 2.5 + 0.42 * n_cols), 1.4 + 0.3 * n_rows))
    values = matrix.to_numpy(dtype=np.float64) * 100.0
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    image = ax.imshow(
        np.ma.masked_invalid(values), aspect="auto", cmap="YlGnBu", vmin=low, vmax=100
    )
    dark_from = float(np.percentile(finite, 60)) if finite.size else 100.0
    if n_cols <= 30 and n_rows <= 30:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                color = "white" if v > dark_from else "#1f2328"
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6.5, color=color)
    ax.set_xticks(range(n_cols), [str(c) for c in matrix.columns], fontsize=7)
    ax.set_yticks(
        range(n_rows), [pd.Timestamp(i).strftime("%Y-%m") for i in matrix.index], fontsize=7
    )
    ax.grid(False)
    ax.set(xlabel="months since signup", ylabel="signup month")
    ax.set_title("Cohort retention: % of each signup month still active", fontsize=10, loc="left")
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01, label="% active")
    fig.tight_layout()
    return fig


def tier_mix(counts: pd.DataFrame) -> Figure:
    """Stacked bars of customers per tier at each as_of; red and orange counts written on top.

    ``counts``: index as_of, columns a subset of green / orange / red (customer counts).
    """
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    labels = [pd.Timestamp(d).strftime("%Y-%m-%d") for d in counts.index]
    bottom = np.zeros(len(counts))
    for tier in TIER_ORDER:
        if tier not in counts:
            continue
        values = counts[tier].to_numpy(dtype=np.float64)
        ax.bar(labels, values, bottom=bottom, color=TIER_COLORS[tier], label=tier, width=0.7)
        bottom += values
    for i, row in enumerate(counts.itertuples()):
        red, orange = getattr(row, "red", 0), getattr(row, "orange", 0)
        ax.annotate(
            f"red {red:,}\norange {orange:,}",
            (i, bottom[i]),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=7,
        )
    ax.set_ylim(0, bottom.max() * 1.18 if len(bottom) else 1)
    ax.set(ylabel="customers", title="Customers per tier")
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    ax.legend(fontsize=8, loc="lower right", reverse=True)
    _clean(ax)
    fig.tight_layout()
    return fig


def tier_outcomes(outcomes: pd.DataFrame) -> Figure:
    """Observed churn rate per tier at each as_of (bars), with the mean predicted probability
    of the tier (black ticks): did red customers really leave more, and as often as predicted?

    ``outcomes``: rows (as_of, tier) with ``churn_rate`` and ``mean_probability`` (fractions).
    """
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    dates = sorted(outcomes["as_of"].unique())
    tiers = [t for t in TIER_ORDER if t in set(outcomes["tier"])]
    width = 0.8 / max(1, len(tiers))
    for k, tier in enumerate(tiers):
        part = outcomes[outcomes["tier"] == tier].set_index("as_of").reindex(dates)
        x = np.arange(len(dates)) + (k - (len(tiers) - 1) / 2) * width
        ax.bar(
            x,
            part["churn_rate"] * 100,
            width=width * 0.95,
            color=TIER_COLORS[tier],
            label=f"{tier}: observed",
        )
        ax.scatter(
            x,
            part["mean_probability"] * 100,
            marker="_",
            s=140,
            color="#1f2328",
            linewidths=2,
            zorder=3,
            label="predicted (mean)" if k == 0 else None,
        )
    ax.set_xticks(range(len(dates)), [pd.Timestamp(d).strftime("%Y-%m-%d") for d in dates])
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    top = float(np.nanmax(outcomes[["churn_rate", "mean_probability"]].to_numpy())) * 100
    ax.set_ylim(0, max(1.0, top) * 1.4)
    ax.set(ylabel="churned within the horizon (%)", title="Observed churn per tier")
    ax.legend(fontsize=7.5, loc="upper left", ncol=2)
    _clean(ax)
    fig.tight_layout()
    return fig


def tier_stability(stability: pd.DataFrame) -> Figure:
    """Share of customers whose tier went up or down between consecutive as_of dates.

    ``stability``: one row per pair with ``to_as_of``, ``escalated_share`` and
    ``de_escalated_share`` (fractions of the customers present at both dates).
    """
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    labels = [pd.Timestamp(d).strftime("%Y-%m-%d") for d in stability["to_as_of"]]
    up = stability["escalated_share"].to_numpy(dtype=np.float64) * 100
    down = stability["de_escalated_share"].to_numpy(dtype=np.float64) * 100
    ax.bar(labels, up, color=TIER_COLORS["red"], label="tier went up", width=0.6)
    ax.bar(labels, down, bottom=up, color="#8c959f", label="tier went down", width=0.6)
    for i, total in enumerate(up + down):
        ax.annotate(
            f"{total:.1f} %",
            (i, total),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    ax.set_ylim(0, max(1.0, (up + down).max() * 1.35) if len(up) else 1)
    ax.set(ylabel="% of customers changing tier", title="Tier changes since the previous date")
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    _clean(ax)
    fig.tight_layout()
    return fig


def tier_transitions(matrix: pd.DataFrame) -> Figure:
    """Where customers of each tier were one date later: rows = tier before, columns = tier
    after, cells = share of the row (customers scored at both dates, all pairs pooled)."""
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    values = matrix.to_numpy(dtype=np.float64) * 100
    ax.imshow(values, cmap="Blues", vmin=0, vmax=100)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            color = "white" if v > 55 else "#1f2328"
            ax.text(j, i, f"{v:.0f} %", ha="center", va="center", fontsize=10, color=color)
    ax.set_xticks(range(matrix.shape[1]), list(matrix.columns))
    ax.set_yticks(range(matrix.shape[0]), list(matrix.index))
    ax.grid(False)
    ax.set(xlabel="tier one date later", ylabel="tier before", title="Tier moves (row %)")
    fig.tight_layout()
    return fig


REPORT_STYLE = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.titlelocation": "left",
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8,
    "font.size": 9,
    "legend.frameon": False,
}
"""matplotlib settings for report figures (``matplotlib.rc_context(REPORT_STYLE)``)."""


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no timestamp metadata, so the same figure gives the same
    bytes); the figure is closed."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


# --- monitoring and trust figures (pure: frames and arrays in, a Figure out) --------------------

STATUS_COLORS = {"ok": "#8c959f", "warn": "#bf8700", "alert": "#cf222e"}


def _cutoff_lines(ax, cutoffs: dict[str, float]) -> None:
    """Vertical lines at the tier cut-offs, labelled with the tier they open."""
    for tier, value in sorted(cutoffs.items(), key=lambda kv: kv[1]):
        ax.axvline(value, ls="--", color=TIER_COLORS.get(tier, "grey"), linewidth=1.2)
        ax.annotate(
            f"{tier} ≥ {value:.2f}",
            (value, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color=TIER_COLORS.get(tier, "grey"),
        )


def psi_bars(table: pd.DataFrame, warn: float, alert: float, top: int = 20) -> Figure:
    """PSI per feature (and the score), highest first, coloured by status, with the warn and
    alert thresholds. ``table``: feature, psi, status."""
    shown = table.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.26 * len(shown) + 1.4))
    colors = [STATUS_COLORS.get(s, "grey") for s in shown["status"]]
    ax.barh(shown["feature"], shown["psi"], color=colors)
    ax.axvline(warn, ls=":", color=STATUS_COLORS["warn"], label=f"warn {warn:g}")
    ax.axvline(alert, ls="--", color=STATUS_COLORS["alert"], label=f"alert {alert:g}")
    ax.set(xlabel="PSI (today vs training reference)", title="Input drift per feature")
    ax.tick_params(axis="y", labelsize=7.5)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def quality_over_runs(
    table: pd.DataFrame, metrics: tuple[str, ...] = ("roc_auc", "churn_rate")
) -> Figure:
    """Expected (line) and realised (dots, once labels matured) quality per run date.

    ``table``: tidy as_of, metric, expected, realised (``pipeline.monitoring.quality_table``).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(10, 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        part = table[table["metric"] == metric]
        x = pd.to_datetime(part["as_of"])
        ax.plot(x, part["expected"], "o-", color=COLORS["model"], markersize=4, label="expected")
        ax.plot(x, part["realised"], "s", color="#1f2328", markersize=6, label="realised")
        ax.set_title(metric.replace("_", " "), fontsize=10, loc="left")
        _date_axis(ax)
        _clean(ax)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def score_distribution(p: np.ndarray, tier: np.ndarray, cutoffs: dict[str, float]) -> Figure:
    """Histogram of today's probabilities, stacked by tier, with the tier cut-offs drawn."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    bins = np.linspace(0, 1, 41)
    present = [t for t in TIER_ORDER if (np.asarray(tier) == t).any()]
    values = [np.asarray(p)[np.asarray(tier) == t] for t in present]
    ax.hist(values, bins=bins, stacked=True, color=[TIER_COLORS[t] for t in present], label=present)
    _cutoff_lines(ax, cutoffs)
    ax.set_yscale("symlog", linthresh=10)
    ax.set(xlabel="churn probability", ylabel="customers", title="Today's scores by tier")
    ax.legend(fontsize=8, loc="upper right", reverse=True)
    _clean(ax)
    fig.tight_layout()
    return fig


def calibration_range(
    y: np.ndarray, p: np.ndarray, cutoffs: dict[str, float], n_bins: int = 10
) -> Figure:
    """Observed churn against predicted probability in equal-width bins over [0, 1] (dot size
    ~ customers in the bin), the diagonal, and the tier cut-offs."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    seen = count > 0
    mean_p = np.bincount(index, weights=p, minlength=n_bins)[seen] / count[seen]
    rate = np.bincount(index, weights=y, minlength=n_bins)[seen] / count[seen]
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    ax.plot(mean_p, rate, "-", color=COLORS["model"])
    ax.scatter(
        mean_p, rate, s=12 + 120 * count[seen] / count.max(), color=COLORS["model"], zorder=3
    )
    _cutoff_lines(ax, cutoffs)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed churn rate")
    ax.set_title("Calibration over the whole range (backtest)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def contribution_bars(summary: pd.DataFrame, top: int = 15) -> Figure:
    """Mean |contribution| (log-odds) per feature over today's scored base."""
    shown = summary.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(shown) + 1.2))
    ax.barh(shown["feature"], shown["mean_abs"], color=COLORS["model"])
    ax.set(xlabel="mean |contribution| (log-odds)", title="What moves today's scores")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def contribution_spread(summary: pd.DataFrame, top: int = 8) -> Figure:
    """Distribution of the contributions of the top features: box = 25–75 %, whiskers = 5–95 %,
    line = median (quantile columns q05 … q95 of ``pipeline.monitoring.contribution_summary``)."""
    shown = summary.head(top).iloc[::-1]
    stats = [
        {
            "label": r.feature,
            "whislo": r.q05,
            "q1": r.q25,
            "med": r.q50,
            "q3": r.q75,
            "whishi": r.q95,
        }
        for r in shown.itertuples(index=False)
    ]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(stats) + 1.3))
    ax.bxp(stats, orientation="horizontal", showfliers=False)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="contribution to the log-odds (← lowers risk · raises risk →)")
    ax.set_title("Spread of contributions, top features")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig
