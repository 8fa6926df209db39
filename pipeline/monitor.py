"""Monitoring without labels: input drift (PSI) and confidence-based quality estimates.

Pure functions on frames and arrays; nothing here reads files or talks to MLflow.

- **Reference profile** (``reference_profile``): per model feature, the bins of the training data
  (numeric: decile edges, plus a bin for missing values; categorical: the categories seen) and
  each bin's share. It is small, JSON-serialisable, and travels with the model.
- **PSI** (population stability index): Σ (a − e) · ln(a / e) over bins, with e the reference
  shares and a today's; shares are floored at ``PSI_FLOOR`` so an empty bin stays finite. Usual
  reading: < 0.1 stable, 0.1–0.2 moderate shift (warn), ≥ 0.2 major shift (alert).
- **Expected quality** (confidence-based performance estimation, as in NannyML's CBPE): when the
  probabilities are calibrated, outcome i is a Bernoulli(p_i) draw, so the expected number of
  churners among the top-k scores is the sum of their probabilities. The expected ROC curve
  follows (expected TPR = cumulated p / Σ p, expected FPR = cumulated (1 − p) / Σ (1 − p)), and
  so the expected ROC-AUC, churn rate (mean p) and precision of a tier (mean p inside it).
Monitoring libraries (evidently, nannyml, whylogs) do not install with this stack (DESIGN §11).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PSI_FLOOR = 1e-4
"""Smallest share used in PSI, so that a bin empty on one side gives a large but finite term."""
MISSING = "__missing__"
"""Bin label of missing values (numeric NaN, categorical null) in a profile."""


def quantile_edges(values: np.ndarray, n_bins: int = 10) -> list[float]:
    """Inner bin edges of the finite ``values``: unique quantiles at 1/n … (n−1)/n.

    Bins are (−inf, e1], (e1, e2], …, (ek, +inf): a value equal to an edge falls left, so a
    feature with many ties (counts, zeros) keeps a bin of its own for the tied value.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return []
    qs = np.quantile(finite, np.arange(1, n_bins) / n_bins, method="lower")
    return [float(q) for q in np.unique(qs)]


def numeric_shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Share of ``values`` in each bin of ``edges`` (``len(edges) + 1`` bins), then missing."""
    x = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(x)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), x[~missing], side="left")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)
    counts = np.append(counts, missing.sum())
    return counts / max(len(x), 1)


def category_shares(values: pd.Series, categories: list[str]) -> tuple[np.ndarray, list[str]]:
    """Shares of ``categories`` then of missing values, and the categories not in the list."""
    text = values.astype("object").where(values.notna(), MISSING).astype("str")
    counts = text.value_counts()
    shares = counts.reindex([*categories, MISSING], fill_value=0).to_numpy(np.float64)
    new = sorted(set(counts.index) - {*categories, MISSING})
    return shares / max(len(text), 1), new


def is_categorical(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(
        series
    )


def feature_profile(series: pd.Series, n_bins: int = 10) -> dict:
    """The reference bins and shares of one feature (see module docstring)."""
    if is_categorical(series):
        categories = sorted(str(v) for v in series.dropna().unique())
        shares, _ = category_shares(series, categories)
        return {"kind": "categorical", "categories": categories, "shares": shares.tolist()}
    edges = quantile_edges(series.to_numpy(np.float64, na_value=np.nan), n_bins)
    shares = numeric_shares(series.to_numpy(np.float64, na_value=np.nan), edges)
    return {"kind": "numeric", "edges": edges, "shares": shares.tolist()}


def reference_profile(frame: pd.DataFrame, columns: list[str], n_bins: int = 10) -> dict:
    """Profile of each column of the training frame (feature name → bins and shares)."""
    return {column: feature_profile(frame[column], n_bins) for column in columns}


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index between two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_status(value: float, warn: float = 0.1, alert: float = 0.2) -> str:
    """'ok', 'warn' or 'alert' for one PSI value under the thresholds."""
    if value >= alert:
        return "alert"
    return "warn" if value >= warn else "ok"


def feature_drift(profile: dict, series: pd.Series) -> dict:
    """PSI of today's ``series`` against its reference ``profile``, with new and missing
    categories for a categorical feature."""
    if profile["kind"] == "categorical":
        shares, new = category_shares(series, profile["categories"])
        gone = [c for c, s in zip(profile["categories"], shares, strict=False) if s == 0]
        value = psi(profile["shares"], shares)
        return {"psi": value, "new_categories": new, "missing_categories": gone}
    shares = numeric_shares(series.to_numpy(np.float64, na_value=np.nan), profile["edges"])
    return {"psi": psi(profile["shares"], shares), "new_categories": [], "missing_categories": []}


def drift_table(
    profiles: dict, frame: pd.DataFrame, warn: float = 0.1, alert: float = 0.2
) -> pd.DataFrame:
    """One row per profiled column present in ``frame``: PSI, status, category changes;
    highest PSI first (ties by name)."""
    rows = [
        {"feature": name, **feature_drift(profile, frame[name])}
        for name, profile in profiles.items()
        if name in frame.columns
    ]
    table = pd.DataFrame(rows, columns=["feature", "psi", "new_categories", "missing_categories"])
    table["status"] = [psi_status(v, warn, alert) for v in table["psi"]]
    return table.sort_values(["psi", "feature"], ascending=[False, True], ignore_index=True)


def expected_roc_auc(p: np.ndarray) -> float:
    """ROC-AUC expected when each outcome is a Bernoulli(p_i) draw scored by p itself.

    Scores are grouped by value (tied scores move the curve diagonally, as in roc_auc_score);
    the area is the trapezoid sum over the expected (FPR, TPR) points. NaN when Σp or Σ(1 − p)
    is zero (no expected positives or negatives).
    """
    p = np.asarray(p, dtype=np.float64)
    values, inverse = np.unique(-p, return_inverse=True)  # descending scores
    pos = np.bincount(inverse, weights=p, minlength=len(values))
    neg = np.bincount(inverse, weights=1.0 - p, minlength=len(values))
    if pos.sum() <= 0 or neg.sum() <= 0:
        return float("nan")
    tpr = np.r_[0.0, np.cumsum(pos)] / pos.sum()
    fpr = np.r_[0.0, np.cumsum(neg)] / neg.sum()
    return float(np.trapezoid(tpr, fpr))


def expected_quality(p: np.ndarray, tier: np.ndarray | None = None) -> dict[str, float]:
    """Label-free estimates from calibrated probabilities: churn rate, ROC-AUC, Brier score
    (E[(y − p)²] = mean p(1 − p) when y ~ Bernoulli(p)), and the precision (expected churn
    rate) of each tier present."""
    p = np.asarray(p, dtype=np.float64)
    empty = len(p) == 0
    out = {
        "expected_churn_rate": float("nan") if empty else float(p.mean()),
        "expected_roc_auc": float("nan") if empty else expected_roc_auc(p),
        "expected_brier": float("nan") if empty else float(np.mean(p * (1.0 - p))),
    }
    if tier is not None:
        tier = np.asarray(tier)
        for name in sorted(set(tier.tolist())):
            out[f"expected_precision_{name}"] = float(p[tier == name].mean())
    return out


def quality_alerts(
    expected: dict[str, float], backtest_roc_auc: float | None, margin: float = 0.05
) -> list[str]:
    """Messages for a drop of the expected ROC-AUC by more than ``margin`` from the backtest."""
    estimate = expected.get("expected_roc_auc", float("nan"))
    if backtest_roc_auc is None or not np.isfinite(estimate):
        return []
    drop = backtest_roc_auc - estimate
    if drop <= margin:
        return []
    return [
        f"expected ROC-AUC {estimate:.3f} is {drop:.3f} below the backtest's"
        f" {backtest_roc_auc:.3f} (alert margin {margin:g})"
    ]


def drift_alerts(drift: pd.DataFrame) -> list[str]:
    """One message per feature whose PSI reached the alert threshold."""
    hits = drift[drift["status"] == "alert"]
    pairs = zip(hits["feature"], hits["psi"], strict=True)
    return [f"input drift on '{feature}': PSI {value:.3f}" for feature, value in pairs]


def realised_quality(y: np.ndarray, p: np.ndarray, tier: np.ndarray) -> dict[str, float]:
    """Quality once labels have matured: ROC-AUC, Brier, churn rate and churn per tier."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y, p, tier = np.asarray(y), np.asarray(p, dtype=np.float64), np.asarray(tier)
    out = {
        "churn_rate": float(y.mean()),
        "brier": float(brier_score_loss(y, p)),
        "roc_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
    }
    for name in sorted(set(tier.tolist())):
        out[f"churn_rate_{name}"] = float(y[tier == name].mean())
    return out
