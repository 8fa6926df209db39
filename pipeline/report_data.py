"""Report data: the backtest, tier tables, model comparison, quality per group — pure frames.

No markup here (see ``pipeline.report_render``) and no file I/O (see ``pipeline.report``).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import FeatureConfig, LabelConfig, TierConfig, ValueConfig
from pipeline.metrics import classification_metrics
from pipeline.model import ModelBundle
from pipeline.tiers import TIER_RANK, TIERS, escalation_flags, tier_policy

log = logging.getLogger(__name__)

BACKTEST_DATES = 6
TOP_AT_RISK = 25
SECTIONS: dict[str, str] = {
    "monitoring": "Can I trust today’s list?",
    "kpis": "Retention KPIs",
    "model": "Model quality",
    "scores": "Score distribution and calibration",
    "contributions": "What drives the scores",
    "groups": "Quality per segment, plan and lifecycle stage",
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

GROUP_COLUMNS: dict[str, str] = {
    "segment": "segment",
    "plan": "plan",
    "lifecycle_stage": "lifecycle stage",
}
"""Backtest column → name of the grouping in the quality-per-group section."""

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
    ``monitor``, ``contributions``, ``quality``: a daily run's monitor.json, contribution
    summary and expected-vs-realised table (``pipeline.monitoring``); None outside ``churn run``.
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
    scores_path: Path = Path("outputs/demo/scores/LATEST")
    config_path: str = "configs/demo.yaml"
    top: int = TOP_AT_RISK
    monitor: dict | None = None
    contributions: pd.DataFrame | None = None
    quality: pd.DataFrame | None = None
    kpi_start: pd.Timestamp | None = None
    min_group_size: int = 100
    command: str = "churn report"


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
    from pipeline.features import map_partitions, with_bgnbd
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

    frame = map_partitions(
        con,
        customers,
        dates,
        label.qualifying_families,
        rows,
        until=observed_until,
        lookback_days=lookback_days(label),
    )
    return with_bgnbd(frame, label.horizon_days)


def backtest_tiers(
    frame: pd.DataFrame,
    bundle: ModelBundle,
    tiers: TierConfig,
    value: ValueConfig,
    horizon_days: int,
    onboarding_days: int,
    gross_margin: float = 1.0,
    owners: pd.Series | None = None,
) -> pd.DataFrame:
    """Calibrated probability and tier for each (customer, as_of) of ``backtest_frame``, as
    scoring would have made them on that date: the card's tier policy per date, with value,
    capacity per owner (``owners``: customer_id → owner), escalation, and hysteresis against the
    previous date's tiers.

    Rows scoring would reject (see ``pipeline.score.reject_reasons``) are left out.
    Returns customer_id, as_of, churned, the ``GROUP_COLUMNS`` present, churn_probability, tier,
    customer_value, escalated_by.
    """
    from pipeline.score import customer_value, monthly_value, previous_tiers, reject_reasons

    rejected = reject_reasons(frame, bundle.features, onboarding_days).notna().to_numpy()
    if rejected.any():
        log.info("backtest: %d rows left out as scoring would reject them", rejected.sum())
    # Date by date: one date's rows are copied and predicted at a time, never the whole
    # backtest at once (a 1M base's six dates peaked at 9.3 GB in make bench-scale).
    n = len(frame)
    p, money = np.zeros(n), np.zeros(n)
    tier, by = np.empty(n, dtype=object), np.empty(n, dtype=object)
    policy = tier_policy(tiers, bundle.card.get("base_rate"))
    before = None
    for _, index in frame.groupby("as_of", sort=True).indices.items():
        index = index[~rejected[index]]
        part = frame.iloc[index]
        p[index] = bundle.predict(part) if len(index) else np.zeros(0)
        money[index] = customer_value(
            monthly_value(part, value), p[index], value, horizon_days, gross_margin
        )
        owner = part["customer_id"].map(owners) if owners is not None else None
        result = policy.assign(
            p[index],
            money[index],
            escalation_flags(part, tiers),
            previous_tiers(part["customer_id"], before),
            None if owner is None else owner.astype("str").to_numpy(dtype=object),
        )
        tier[index], by[index] = result.tier, result.escalated_by
        before = pd.DataFrame(
            {
                "customer_id": part["customer_id"],
                "tier": result.tier,
                "tier_proposed": result.proposed,
            }
        )
    keep = ~rejected
    groups = [c for c in GROUP_COLUMNS if c in frame]
    out = frame.loc[keep, ["customer_id", "as_of", "churned", *groups]].reset_index(drop=True)
    out["churn_probability"] = p[keep]
    out["tier"] = pd.Series(tier[keep], dtype="str")
    out["customer_value"] = money[keep]
    out["escalated_by"] = pd.Series(by[keep], dtype="str")
    if owners is not None:
        out["owner"] = out["customer_id"].map(owners).astype("str")
    return out


def list_outcomes(backtest: pd.DataFrame) -> dict[str, float]:
    """What the listed (red + orange) customers catch over the backtest: rows per owner and
    date (max), observed churn of the list, of red and of green ÷ the base rate, the share of
    churners and of revenue at risk (p × value) the list covers."""
    listed = backtest["tier"] != "green"
    churned = backtest["churned"].to_numpy() == 1
    rate = float(churned.mean()) if len(backtest) else float("nan")
    at_risk = backtest["churn_probability"] * backtest["customer_value"]
    lost = backtest["customer_value"].where(churned, 0.0)
    per_owner = (
        backtest[listed].groupby(["as_of", "owner"] if "owner" in backtest else ["as_of"]).size()
    )
    churn_of = lambda t: float(churned[backtest["tier"] == t].mean())  # noqa: E731
    return {
        "base_rate": rate,
        "listed_per_owner_max": int(per_owner.max()) if len(per_owner) else 0,
        "listed_churn_over_base": float(churned[listed].mean()) / rate,
        "red_churn_over_green": churn_of("red") / churn_of("green"),
        "churners_covered": float(churned[listed].sum() / max(churned.sum(), 1)),
        "revenue_at_risk_covered": float(at_risk[listed].sum() / max(at_risk.sum(), 1e-12)),
        "lost_revenue_covered": float(lost[listed].sum() / max(lost.sum(), 1e-12)),
        "listed_below_base_rate_unescalated": int(
            (
                listed & (backtest["churn_probability"] < rate) & backtest["escalated_by"].isna()
            ).sum()
        ),
    }


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


# --- trust: cut-offs, groups, KPI window, wording ------------------------------------------------


def tier_cutoffs(policy: dict | None, scores: pd.DataFrame | None) -> dict[str, float]:
    """Probability at which orange and red start: the thresholds of a ``thresholds`` policy,
    else the lowest probability that reached the tier today (escalated rows left out)."""
    policy = policy or {}
    if policy.get("policy", "thresholds") == "thresholds" and "red_threshold" in policy:
        return {"orange": policy["orange_threshold"], "red": policy["red_threshold"]}
    if scores is None or scores.empty:
        return {}
    plain = scores[~scores.get("escalated", pd.Series(False, index=scores.index)).astype(bool)]
    lows = plain.groupby("tier")["churn_probability"].min()
    return {t: float(lows[t]) for t in ("orange", "red") if t in lows}


def group_quality(backtest: pd.DataFrame, column: str, min_size: int = 100) -> pd.DataFrame:
    """Per value of ``column`` (pooled over the backtest dates): customers, churners, observed
    churn, ROC-AUC, customers and observed churn per tier, and a note when the group is too small
    (< ``min_size`` rows or a single outcome: its ROC-AUC is left out)."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for value, part in backtest.groupby(column, observed=True, sort=True):
        y, n = part["churned"].to_numpy(), len(part)
        small = n < min_size or y.min() == y.max()
        row = {"group": str(value), "customers": n, "churners": int(y.sum()), "churn": y.mean()}
        auc = np.nan if small else roc_auc_score(y, part["churn_probability"])
        row |= {"roc_auc": auc, "note": f"too small (n < {min_size})" if n < min_size else ""}
        if not row["note"] and small:
            row["note"] = "one outcome only: no ROC-AUC"
        per_tier = part.groupby("tier", observed=True)["churned"].agg(["mean", "size"])
        for t in ("red", "orange", "green"):
            row[f"n_{t}"] = int(per_tier["size"].get(t, 0))
            row[f"churn_{t}"] = per_tier["mean"].get(t, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def kpi_window(kpis: pd.DataFrame, start: pd.Timestamp | None = None) -> pd.DataFrame:
    """KPI periods from ``start`` on; by default from one year after the first period with
    customers (before that the first cohort is still filling up and the rates mislead)."""
    if kpis.empty:
        return kpis
    if start is None:
        first = kpis.loc[kpis["S"] > 0, "period_start"]
        if first.empty:
            return kpis
        start = pd.Timestamp(first.min()) + pd.DateOffset(years=1)
    kept = kpis[pd.to_datetime(kpis["period_start"]) >= pd.Timestamp(start)]
    return kept.reset_index(drop=True)


def margin_phrase(name: str, margin: float) -> str:
    """'beats X by 0.012', 'trails X by 0.009' or 'ties with X' (margin rounded to 3 places)."""
    rounded = round(float(margin), 3)
    if rounded > 0:
        return f"beats {name} by {rounded:.3f}"
    if rounded < 0:
        return f"trails {name} by {-rounded:.3f}"
    return f"ties with {name}"
