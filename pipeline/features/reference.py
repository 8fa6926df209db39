"""A plain pandas reference for every feature family: the spec the fast builders are tested against.

It works the way a data scientist would write it: one as_of at a time, boolean masks on the
event frame, ``groupby("customer_id")``, then ``reindex`` onto the eligible customers. It
rescans the log for every as_of, so it is slow; it exists only to check the one-pass builders
in ``pipeline.features`` (``tests/test_reference.py``, ``python -m pipeline.bench``).

Inputs: ``events`` is the validated log as a DataFrame (``events_frame``):
``customer_id, occurred_at (naive UTC), event_type, family, feature, amount, severity``;
``customers`` the validated customers frame. Every window is half-open, [as_of − N days, as_of):
an event at as_of belongs to the future.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from pipeline.config import FeatureConfig, LabelConfig
from pipeline.features.grid import normalise_as_of
from pipeline.features.lifecycle import STAGES
from pipeline.store import EventStore

DAY = pd.Timedelta(days=1)
SUPPORT_FAMILIES = ("complaint", "support_ticket")
SPEND_FAMILIES = ("purchase", "payment")
QUALIFYING = tuple(LabelConfig().qualifying_families)


def events_frame(source: EventStore | duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The validated events (``EventStore.events_frame``) as a pandas DataFrame."""
    return EventStore.of(source).events_frame()


def n_product_features(events: pd.DataFrame) -> int:
    """How many distinct product features ``events`` name (feature-use events only); called
    with the events before as_of, so that features first used later do not count."""
    used = events[(events["family"] == "feature_use") & events["feature"].notna()]
    return int(used["feature"].nunique())


def reference_features(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    as_of_dates: list | pd.DatetimeIndex,
    config: FeatureConfig | None = None,
    qualifying_families: list[str] | tuple[str, ...] = QUALIFYING,
) -> pd.DataFrame:
    """Features for every eligible customer at each as_of, one date at a time.

    Same columns, dtypes and row order as ``pipeline.features.build_features`` over a daily log
    built with the same ``qualifying_families`` (``label.qualifying_families``): rows by as_of,
    then in the order of ``customers`` (the validated table is sorted by customer_id).
    """
    config = config or FeatureConfig()
    frames = [
        features_at(
            events,
            customers,
            as_of,
            config,
            n_product_features(events[events["occurred_at"] < as_of]),
            tuple(qualifying_families),
        )
        for as_of in normalise_as_of(as_of_dates)
    ]
    return pd.concat(frames, ignore_index=True)


def features_at(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    as_of: pd.Timestamp,
    config: FeatureConfig,
    n_features: int,
    qualifying_families: tuple[str, ...] = QUALIFYING,
) -> pd.DataFrame:
    """All families for one as_of: eligible customers only, past events only."""
    base = eligible(customers, as_of).set_index("customer_id")
    past = events[events["occurred_at"] < as_of]
    recent = past[past["occurred_at"] >= as_of - 90 * DAY]
    ids = base.index
    tenure = (as_of - base["signup_at"]) / DAY
    keys = pd.DataFrame({"customer_id": ids.astype("str"), "as_of": as_of}, index=ids)
    keys["as_of"] = keys["as_of"].astype("datetime64[us]")
    parts = [
        keys,
        recency(past, ids, as_of, tenure, qualifying_families),
        frequency(recent, ids, as_of),
        trend(recent, ids, as_of),
        breadth(recent, ids, as_of, n_features),
        support(past, recent, ids, as_of, tenure, config.serious_severity),
        billing(past, recent, ids, as_of, base["mrr"]),
        lifecycle(tenure, base["plan"], config),
        lifetime(past, ids, as_of, tenure, qualifying_families),
    ]
    return pd.concat(parts, axis=1).reset_index(drop=True)


def eligible(customers: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Customers signed up strictly before as_of and not churned before it."""
    signed_up = customers["signup_at"] < as_of
    churned = customers["churned_at"] < as_of  # NaT compares False: still active
    return customers[signed_up & ~churned]


def window(frame: pd.DataFrame, as_of: pd.Timestamp, start: int, end: int = 0) -> pd.DataFrame:
    """Rows with occurred_at in [as_of − start days, as_of − end days)."""
    t = frame["occurred_at"]
    return frame[(t >= as_of - start * DAY) & (t < as_of - end * DAY)]


def of_family(frame: pd.DataFrame, *families: str) -> pd.DataFrame:
    return frame[frame["family"].isin(families)]


def count(frame: pd.DataFrame, ids: pd.Index) -> pd.Series:
    """Rows per customer, 0 for customers without any."""
    return frame.groupby("customer_id").size().reindex(ids, fill_value=0).astype("int64")


def active_days(frame: pd.DataFrame, ids: pd.Index) -> pd.Series:
    """Distinct UTC days with at least one event, per customer."""
    days = frame["occurred_at"].dt.floor("D")
    per = days.groupby(frame["customer_id"]).nunique()
    return per.reindex(ids, fill_value=0).astype("int64")


def days_since_last(
    frame: pd.DataFrame, ids: pd.Index, as_of: pd.Timestamp, fallback: pd.Series
) -> pd.Series:
    """Float days from each customer's last event in ``frame`` to as_of; ``fallback`` if none."""
    last = frame.groupby("customer_id")["occurred_at"].max().reindex(ids)
    return ((as_of - last) / DAY).fillna(fallback)


def recency(
    past: pd.DataFrame,
    ids: pd.Index,
    as_of: pd.Timestamp,
    tenure: pd.Series,
    qualifying_families: tuple[str, ...],
) -> pd.DataFrame:
    active = of_family(past, *qualifying_families)
    return pd.DataFrame(
        {
            "days_since_last_event": days_since_last(past, ids, as_of, tenure),
            "days_since_last_activity": days_since_last(active, ids, as_of, tenure),
            "days_since_last_login": days_since_last(of_family(past, "login"), ids, as_of, tenure),
            "days_since_last_feature_use": days_since_last(
                of_family(past, "feature_use"), ids, as_of, tenure
            ),
        }
    )


def frequency(recent: pd.DataFrame, ids: pd.Index, as_of: pd.Timestamp) -> pd.DataFrame:
    w7, w30 = window(recent, as_of, 7), window(recent, as_of, 30)
    return pd.DataFrame(
        {
            "events_7d": count(w7, ids),
            "events_30d": count(w30, ids),
            "events_90d": count(recent, ids),
            "logins_7d": count(of_family(w7, "login"), ids),
            "logins_30d": count(of_family(w30, "login"), ids),
            "logins_90d": count(of_family(recent, "login"), ids),
            "feature_uses_30d": count(of_family(w30, "feature_use"), ids),
            "feature_uses_90d": count(of_family(recent, "feature_use"), ids),
            "active_days_30d": active_days(w30, ids),
            "active_days_90d": active_days(recent, ids),
        }
    )


def trend(recent: pd.DataFrame, ids: pd.Index, as_of: pd.Timestamp) -> pd.DataFrame:
    now, prev = window(recent, as_of, 30), window(recent, as_of, 60, 30)
    return pd.DataFrame(
        {
            "events_30d_vs_prev_30d": (count(now, ids) + 1) / (count(prev, ids) + 1),
            "logins_30d_vs_prev_30d": (
                (count(of_family(now, "login"), ids) + 1)
                / (count(of_family(prev, "login"), ids) + 1)
            ),
            "active_days_30d_change": active_days(now, ids) - active_days(prev, ids),
        }
    )


def distinct_features(frame: pd.DataFrame, ids: pd.Index) -> pd.Series:
    used = of_family(frame, "feature_use").dropna(subset=["feature"])
    per = used.groupby("customer_id")["feature"].nunique()
    return per.reindex(ids, fill_value=0).astype("int64")


def breadth(
    recent: pd.DataFrame, ids: pd.Index, as_of: pd.Timestamp, n_features: int
) -> pd.DataFrame:
    d30 = distinct_features(window(recent, as_of, 30), ids)
    d90 = distinct_features(recent, ids)
    share = d90 / n_features if n_features else pd.Series(0.0, index=ids)
    return pd.DataFrame(
        {"distinct_features_30d": d30, "distinct_features_90d": d90, "feature_breadth_90d": share}
    )


def support(
    past: pd.DataFrame,
    recent: pd.DataFrame,
    ids: pd.Index,
    as_of: pd.Timestamp,
    tenure: pd.Series,
    serious_severity: int,
) -> pd.DataFrame:
    rated = of_family(recent, *SUPPORT_FAMILIES)
    last30 = window(rated, as_of, 30)
    serious = last30[last30["severity"].fillna(0) >= serious_severity]
    max_sev = rated.groupby("customer_id")["severity"].max().reindex(ids)
    return pd.DataFrame(
        {
            "complaints_30d": count(of_family(last30, "complaint"), ids),
            "complaints_90d": count(of_family(recent, "complaint"), ids),
            "tickets_30d": count(of_family(last30, "support_ticket"), ids),
            "tickets_90d": count(of_family(recent, "support_ticket"), ids),
            "serious_complaints_30d": count(serious, ids),
            "max_severity_90d": max_sev.fillna(0).astype("int64"),
            "days_since_last_complaint": days_since_last(
                of_family(past, "complaint"), ids, as_of, tenure
            ),
        }
    )


def last_payment(payments: pd.DataFrame, ids: pd.Index) -> pd.Series:
    """Amount of each customer's latest payment (NaN where none); ``last`` skips missing amounts."""
    ordered = payments.sort_values(["occurred_at", "amount"], kind="stable", na_position="first")
    return ordered.groupby("customer_id")["amount"].last().reindex(ids).astype("float64")


def billing(
    past: pd.DataFrame,
    recent: pd.DataFrame,
    ids: pd.Index,
    as_of: pd.Timestamp,
    static_mrr: pd.Series,
) -> pd.DataFrame:
    payments = of_family(past, "payment")
    last = last_payment(payments, ids)
    before = last_payment(payments[payments["occurred_at"] < as_of - 90 * DAY], ids)
    spend = of_family(recent, *SPEND_FAMILIES).groupby("customer_id")["amount"].sum()
    failed = of_family(recent, "payment_failed")
    return pd.DataFrame(
        {
            "payment_failures_30d": count(window(failed, as_of, 30), ids),
            "payment_failures_90d": count(failed, ids),
            "spend_90d": spend.reindex(ids, fill_value=0.0).astype("float64"),
            "mrr": last.fillna(static_mrr.astype("float64")),
            "mrr_change_90d": (last - before).fillna(0.0),
        }
    )


def lifecycle(tenure: pd.Series, plan: pd.Series, config: FeatureConfig) -> pd.DataFrame:
    stage = np.select(
        [tenure < config.onboarding_days, tenure < config.mature_after_days],
        [STAGES[0], STAGES[1]],
        default=STAGES[2],
    )
    return pd.DataFrame(
        {
            "tenure_days": tenure,
            "lifecycle_stage": pd.Categorical(stage, categories=STAGES),
            "days_to_anniversary": (365.0 - tenure % 365.0) % 365.0,
            "plan": plan.astype("str"),
        },
        index=tenure.index,
    )


def spend(frame: pd.DataFrame, ids: pd.Index) -> pd.Series:
    """Purchase and payment amounts per customer (missing amounts count 0), 0.0 when none."""
    total = of_family(frame, *SPEND_FAMILIES).groupby("customer_id")["amount"].sum()
    return total.reindex(ids, fill_value=0.0).astype("float64")


def active_day_span(active: pd.DataFrame, ids: pd.Index) -> pd.DataFrame:
    """Per customer: number of distinct active days, the first, the last and the one before
    the last (as days since 1970; NaN where there are none)."""
    days = active.assign(day=(active["occurred_at"] - pd.Timestamp("1970-01-01")) // DAY)
    days = days[["customer_id", "day"]].drop_duplicates().sort_values(["customer_id", "day"])
    by = days.groupby("customer_id")["day"]
    second = by.nth(-2)  # rows of ``days``, not one per group
    prev = pd.Series(second.to_numpy(), index=days.loc[second.index, "customer_id"].to_numpy())
    frame = pd.DataFrame({"n": by.size(), "first": by.min(), "last": by.max(), "prev": prev})
    return frame.reindex(ids).astype("float64")


def lifetime(
    past: pd.DataFrame,
    ids: pd.Index,
    as_of: pd.Timestamp,
    tenure: pd.Series,
    qualifying_families: tuple[str, ...],
) -> pd.DataFrame:
    purchases = of_family(past, "purchase")
    n_purchases = count(purchases, ids)
    total = spend(past, ids)
    bought = purchases.groupby("customer_id")["occurred_at"]
    span = active_day_span(of_family(past, *qualifying_families), ids)
    several = span["n"].fillna(0) >= 2
    mean_gap = ((span["last"] - span["first"]) / (span["n"] - 1)).where(several)
    since_active = days_since_last(of_family(past, *qualifying_families), ids, as_of, tenure)
    columns = {
        "events_lifetime": count(past, ids),
        "purchases_lifetime": n_purchases,
        "spend_lifetime": total,
        "active_days_lifetime": active_days(past, ids),
        "repeat_purchases_lifetime": (active_days(purchases, ids) - 1).clip(lower=0),
        "spend_per_purchase_lifetime": (total / n_purchases).where(n_purchases > 0),
        "days_since_first_purchase": (as_of - bought.min().reindex(ids)) / DAY,
        "days_since_last_purchase": (as_of - bought.max().reindex(ids)) / DAY,
        "mean_gap_days": mean_gap,
        "last_gap_days": (span["last"] - span["prev"]).where(several),
        "overdue_ratio": since_active / mean_gap.where(several, tenure),
    }
    for days in (180, 365):
        columns[f"active_days_{days}d"] = active_days(window(past, as_of, days), ids)
    for days in (180, 365):
        columns[f"events_{days}d"] = count(window(past, as_of, days), ids)
    for days in (180, 365):
        columns[f"spend_{days}d"] = spend(window(past, as_of, days), ids)
    return pd.DataFrame(columns, index=ids)
