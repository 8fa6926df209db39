"""Every feature declared once: name, family, window, unit, dtype, range and a documentation line.

The pandera contract of the feature rows (``pipeline.schemas.FEATURES``) is built from these
declarations, and ``tests/test_catalog.py`` fails when a builder returns a column that is not
declared here, or a declaration names a column no builder returns. Adding a feature touches its
builder and one line here.

``window``: the half-open window before as_of the value reads, in days (``[as_of − N, as_of)``);
``None`` for values at as_of (recency, tenure, plan) or since the first event (lifetime).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Unit = Literal["days", "count", "ratio", "share", "money", "level", "category", "text"]


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature. ``low``/``high`` bound its values (``low_open``: strictly above
    ``low``); ``nullable``: NaN is a legal value (undefined, or rejected at scoring)."""

    name: str
    family: str
    window: int | None
    unit: Unit
    dtype: Literal["int64", "float64", "category", "str"]
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nullable: bool = False


def _count(name: str, family: str, window: int | None, doc: str) -> FeatureSpec:
    return FeatureSpec(name, family, window, "count", "int64", doc, low=0)


def _days(name: str, family: str, doc: str, low: float = 0) -> FeatureSpec:
    return FeatureSpec(name, family, None, "days", "float64", doc, low=low, nullable=True)


def _money(name: str, family: str, window: int | None, doc: str) -> FeatureSpec:
    return FeatureSpec(name, family, window, "money", "float64", doc, low=0, nullable=True)


CATALOG: tuple[FeatureSpec, ...] = (
    # recency
    _days("days_since_last_event", "recency", "days since the last event of any kind"),
    _days(
        "days_since_last_activity",
        "recency",
        "days since the last qualifying event (use of the product); since signup when none",
    ),
    _days("days_since_last_login", "recency", "days since the last login; since signup when none"),
    _days(
        "days_since_last_feature_use",
        "recency",
        "days since the last product feature use; since signup when none",
    ),
    # frequency
    _count("events_7d", "frequency", 7, "events of any kind in the last 7 days"),
    _count("events_30d", "frequency", 30, "events of any kind in the last 30 days"),
    _count("events_90d", "frequency", 90, "events of any kind in the last 90 days"),
    _count("logins_7d", "frequency", 7, "logins in the last 7 days"),
    _count("logins_30d", "frequency", 30, "logins in the last 30 days"),
    _count("logins_90d", "frequency", 90, "logins in the last 90 days"),
    _count("feature_uses_30d", "frequency", 30, "product feature uses in the last 30 days"),
    _count("feature_uses_90d", "frequency", 90, "product feature uses in the last 90 days"),
    _count("active_days_30d", "frequency", 30, "distinct days with any event, last 30 days"),
    _count("active_days_90d", "frequency", 90, "distinct days with any event, last 90 days"),
    # trend
    FeatureSpec(
        "events_30d_vs_prev_30d",
        "trend",
        60,
        "ratio",
        "float64",
        "(events last 30 days + 1) / (events the 30 days before + 1); 1.0 when both empty",
        low=0,
        low_open=True,
        nullable=True,
    ),
    FeatureSpec(
        "logins_30d_vs_prev_30d",
        "trend",
        60,
        "ratio",
        "float64",
        "(logins last 30 days + 1) / (logins the 30 days before + 1)",
        low=0,
        low_open=True,
        nullable=True,
    ),
    FeatureSpec(
        "active_days_30d_change",
        "trend",
        60,
        "count",
        "int64",
        "active days last 30 days minus active days the 30 days before",
        low=-30,
        high=30,
    ),
    # breadth
    _count("distinct_features_30d", "breadth", 30, "distinct product features used, 30 days"),
    _count("distinct_features_90d", "breadth", 90, "distinct product features used, 90 days"),
    FeatureSpec(
        "feature_breadth_90d",
        "breadth",
        90,
        "share",
        "float64",
        "share of the product's features (known at as_of) used in the last 90 days",
        low=0,
        high=1,
        nullable=True,
    ),
    # complaints and support
    _count("complaints_30d", "support", 30, "complaints in the last 30 days"),
    _count("complaints_90d", "support", 90, "complaints in the last 90 days"),
    _count("tickets_30d", "support", 30, "support tickets in the last 30 days"),
    _count("tickets_90d", "support", 90, "support tickets in the last 90 days"),
    _count(
        "serious_complaints_30d",
        "support",
        30,
        "complaints and tickets at or above features.serious_severity, last 30 days",
    ),
    FeatureSpec(
        "max_severity_90d",
        "support",
        90,
        "level",
        "int64",
        "highest complaint/ticket severity in 90 days (0 none, 1 low … 4 critical)",
        low=0,
        high=4,
    ),
    _days("days_since_last_complaint", "support", "days since the last complaint; NaN when none"),
    # billing and value
    _count("payment_failures_30d", "billing", 30, "failed payments in the last 30 days"),
    _count("payment_failures_90d", "billing", 90, "failed payments in the last 90 days"),
    _money("spend_90d", "billing", 90, "purchase and payment amounts in the last 90 days"),
    _money(
        "mrr",
        "billing",
        None,
        "the last recurring payment before as_of; the customers table's mrr when none",
    ),
    FeatureSpec(
        "mrr_change_90d",
        "billing",
        90,
        "money",
        "float64",
        "mrr minus the last payment before as_of − 90 days (0.0 when either is unknown)",
        nullable=True,
    ),
    # lifecycle
    _days("tenure_days", "lifecycle", "days since signup"),
    FeatureSpec(
        "lifecycle_stage",
        "lifecycle",
        None,
        "category",
        "category",
        "onboarding / renewal / mature, from tenure and the anniversary",
    ),
    FeatureSpec(
        "days_to_anniversary",
        "lifecycle",
        None,
        "days",
        "float64",
        "days to the next signup anniversary (renewal)",
        low=0,
        high=365,
        nullable=True,
    ),
    FeatureSpec("plan", "lifecycle", None, "text", "str", "the customer's plan"),
    # lifetime (since the first event), rhythm and long windows
    _count("events_lifetime", "lifetime", None, "events since the first event"),
    _count("purchases_lifetime", "lifetime", None, "purchases since the first event"),
    _money("spend_lifetime", "lifetime", None, "purchase and payment amounts, all time"),
    _count("active_days_lifetime", "lifetime", None, "distinct days with any event, all time"),
    _count(
        "repeat_purchases_lifetime", "lifetime", None, "distinct purchase days minus one (BTYD x)"
    ),
    _money("spend_per_purchase_lifetime", "lifetime", None, "spend_lifetime / purchases_lifetime"),
    _days("days_since_first_purchase", "lifetime", "days since the first purchase; NaN when none"),
    _days("days_since_last_purchase", "lifetime", "days since the last purchase; NaN when none"),
    _days(
        "mean_gap_days",
        "lifetime",
        "mean days between distinct qualifying days; NaN with fewer than 2",
        low=1,
    ),
    _days("last_gap_days", "lifetime", "days between the last two qualifying days", low=1),
    FeatureSpec(
        "overdue_ratio",
        "lifetime",
        None,
        "ratio",
        "float64",
        "days_since_last_activity / mean_gap_days (tenure as the gap when undefined)",
        low=0,
        nullable=True,
    ),
    _count("active_days_180d", "lifetime", 180, "distinct days with any event, last 180 days"),
    _count("active_days_365d", "lifetime", 365, "distinct days with any event, last 365 days"),
    _count("events_180d", "lifetime", 180, "events of any kind in the last 180 days"),
    _count("events_365d", "lifetime", 365, "events of any kind in the last 365 days"),
    _money("spend_180d", "lifetime", 180, "purchase and payment amounts, last 180 days"),
    _money("spend_365d", "lifetime", 365, "purchase and payment amounts, last 365 days"),
)

BASE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "bgnbd_no_purchase_probability",
        "btyd",
        None,
        "share",
        "float64",
        "BG/NBD fitted on the base at as_of: P(no purchase in the label horizon); NaN without"
        " a purchase",
        low=0,
        high=1,
        nullable=True,
    ),
    FeatureSpec(
        "bgnbd_p_alive",
        "btyd",
        None,
        "share",
        "float64",
        "BG/NBD fitted on the base at as_of: P(not dropped out yet); NaN without a purchase",
        low=0,
        high=1,
        nullable=True,
    ),
)
"""Features fitted over the whole base at each as_of (``features.btyd.with_bgnbd``), after
the per-partition builders: declared here, checked by the schema when present."""

BY_NAME: dict[str, FeatureSpec] = {spec.name: spec for spec in CATALOG}


def declared(family: str | None = None) -> list[str]:
    """Names of the declared features (of one family), in declaration order."""
    return [s.name for s in CATALOG if family is None or s.family == family]


def markdown_table() -> str:
    """The catalog as a Markdown table (feature, family, window, unit, meaning) for the docs."""
    rows = ["| feature | family | window | unit | meaning |", "|---|---|---|---|---|"]
    for s in CATALOG:
        window = f"{s.window} d" if s.window else "at as_of" if s.family != "lifetime" else "all"
        rows.append(f"| `{s.name}` | {s.family} | {window} | {s.unit} | {s.doc} |")
    return "\n".join(rows)
