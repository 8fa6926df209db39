"""Per-customer reasons and a recommended action, from LightGBM's exact TreeSHAP contributions.

Input: ``contributions`` from ``ChurnModel.contributions`` (``pred_contrib=True``): one column per
model feature in log-odds of the *uncalibrated* model, plus a last column with the expected value.
A positive contribution pushes the customer's churn risk up. The top ``top_k`` positive
contributions become reasons; each reason is written as a plain sentence with the customer's own
value and a reference ("no login for 34 days; typical healthy customer: 3"). References are
computed once per scoring run from the scored base: the median among green customers.

Each feature belongs to a reason family (inactivity, narrow_use, complaint, support, payment,
onboarding, value, other); the family of the first reason picks the action from the configured
catalogue (``ExplainConfig.actions``).

Speed: sentences are built per feature with numpy string ufuncs over every row where that
feature is a reason (a loop over features and reason slots, never over customers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FAMILIES = (
    "inactivity",
    "narrow_use",
    "complaint",
    "support",
    "payment",
    "onboarding",
    "value",
    "other",
)
REFERENCE = "typical healthy customer"
SEVERITY_NAMES = np.array(["none", "low", "medium", "high", "critical"])
ESCALATION_FEATURE = "serious_complaints_30d"


@dataclass(frozen=True)
class Phrase:
    """How one feature reads as a reason: ``prefix + value + suffix``.

    ``{s}`` in the suffix becomes "s" unless the written value is 1 or −1 ("1 login", "2 logins").

    ``fmt``: how the value is written: ``int`` (rounded), ``pct`` (share → whole percent),
    ``ratio`` (ratio → percent of the previous period), ``signed`` (with + or −),
    ``severity`` (0–4 → none … critical), ``text`` (categorical value as it is).
    ``reference``: whether a typical value is worth quoting after the sentence.
    """

    family: str
    prefix: str
    suffix: str = ""
    fmt: str = "int"
    reference: bool = True


PHRASES: dict[str, Phrase] = {
    "days_since_last_event": Phrase("inactivity", "no activity for ", " day{s}"),
    "days_since_last_activity": Phrase("inactivity", "no use of the product for ", " day{s}"),
    "days_since_last_login": Phrase("inactivity", "no login for ", " day{s}"),
    "days_since_last_feature_use": Phrase("inactivity", "no feature used for ", " day{s}"),
    "events_7d": Phrase("inactivity", "", " event{s} in the last 7 days"),
    "events_30d": Phrase("inactivity", "", " event{s} in the last 30 days"),
    "events_90d": Phrase("inactivity", "", " event{s} in the last 90 days"),
    "logins_7d": Phrase("inactivity", "", " login{s} in the last 7 days"),
    "logins_30d": Phrase("inactivity", "", " login{s} in the last 30 days"),
    "logins_90d": Phrase("inactivity", "", " login{s} in the last 90 days"),
    "active_days_30d": Phrase("inactivity", "active on ", " of the last 30 days"),
    "active_days_90d": Phrase("inactivity", "active on ", " of the last 90 days"),
    "events_30d_vs_prev_30d": Phrase(
        "inactivity", "activity at ", " of the previous 30 days", fmt="ratio"
    ),
    "logins_30d_vs_prev_30d": Phrase(
        "inactivity", "logins at ", " of the previous 30 days", fmt="ratio"
    ),
    "active_days_30d_change": Phrase(
        "inactivity", "", " active day{s} against the previous 30 days", fmt="signed"
    ),
    "feature_uses_30d": Phrase("narrow_use", "", " feature use{s} in the last 30 days"),
    "feature_uses_90d": Phrase("narrow_use", "", " feature use{s} in the last 90 days"),
    "distinct_features_30d": Phrase("narrow_use", "uses ", " feature{s} in the last 30 days"),
    "distinct_features_90d": Phrase("narrow_use", "uses ", " feature{s} in the last 90 days"),
    "feature_breadth_90d": Phrase(
        "narrow_use", "uses ", " of the product's features (90 days)", fmt="pct"
    ),
    "complaints_30d": Phrase("complaint", "", " complaint{s} in the last 30 days"),
    "complaints_90d": Phrase("complaint", "", " complaint{s} in the last 90 days"),
    "serious_complaints_30d": Phrase(
        "complaint", "", " serious complaint{s} or ticket{s} in the last 30 days"
    ),
    "max_severity_90d": Phrase(
        "complaint", "worst complaint or ticket in 90 days: ", "", fmt="severity", reference=False
    ),
    "days_since_last_complaint": Phrase("complaint", "last complaint ", " day{s} ago"),
    "tickets_30d": Phrase("support", "", " support ticket{s} in the last 30 days"),
    "tickets_90d": Phrase("support", "", " support ticket{s} in the last 90 days"),
    "payment_failures_30d": Phrase("payment", "", " failed payment{s} in the last 30 days"),
    "payment_failures_90d": Phrase("payment", "", " failed payment{s} in the last 90 days"),
    "spend_90d": Phrase("value", "spent ", " in the last 90 days"),
    "mrr": Phrase("value", "pays ", " a month"),
    "mrr_change_90d": Phrase("value", "MRR changed by ", " in 90 days", fmt="signed"),
    "tenure_days": Phrase("onboarding", "customer for ", " day{s}"),
    "lifecycle_stage": Phrase("onboarding", "", " stage", fmt="text", reference=False),
    "days_to_anniversary": Phrase("value", "contract anniversary in ", " day{s}"),
    "plan": Phrase("value", "on plan ", "", fmt="text", reference=False),
}
"""Known features; any other feature reads ``<name> = <value>`` in family ``other``."""


def phrase_for(feature: str) -> Phrase:
    """The phrase of a known feature, or a generic '<name> = <value>' in family ``other``."""
    return PHRASES.get(feature, Phrase("other", f"{feature} = "))


def reason_families(feature: str, rows: pd.DataFrame) -> np.ndarray:
    """Family of a reason per row: lifecycle reasons count as onboarding only for customers in
    the onboarding stage (otherwise ``other``); every other feature has one family."""
    if feature in ("tenure_days", "lifecycle_stage") and "lifecycle_stage" in rows:
        stage = rows["lifecycle_stage"].astype("str").to_numpy()
        return np.where(stage == "onboarding", "onboarding", "other").astype(object)
    return np.full(len(rows), phrase_for(feature).family, dtype=object)


def reference_values(
    features: pd.DataFrame, healthy: np.ndarray, feature_names: list[str]
) -> dict[str, float]:
    """Median of every numeric feature among ``healthy`` rows (green customers), once per run.

    Falls back to the whole frame when no row is healthy. Categorical features get no reference.
    """
    healthy = np.asarray(healthy, dtype=bool)
    pool = features[healthy] if healthy.any() else features
    return {
        name: float(np.nanmedian(pool[name].to_numpy(dtype=np.float64)))
        for name in feature_names
        if pd.api.types.is_numeric_dtype(features[name]) and len(pool)
    }


def top_positive(contributions: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(feature index, contribution) of the ``top_k`` largest positive contributions per row.

    ``contributions`` excludes the expected-value column. Missing slots have index −1 and
    contribution NaN. Ties break by feature order (stable).
    """
    n_features = contributions.shape[1]
    k = min(top_k, n_features)
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(contributions, order, axis=1)
    positive = values > 0
    return np.where(positive, order, -1), np.where(positive, values, np.nan)


def ensure_reason(
    index: np.ndarray, contribution: np.ndarray, contributions: np.ndarray, required: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows in ``required`` with no positive reason get their largest contribution as reason 1."""
    missing = np.asarray(required, dtype=bool) & (index[:, 0] < 0)
    if missing.any():
        best = np.argmax(contributions[missing], axis=1)
        index, contribution = index.copy(), contribution.copy()
        index[missing, 0] = best
        contribution[missing, 0] = contributions[missing, best]
    return index, contribution


def put_first(
    index: np.ndarray,
    contribution: np.ndarray,
    contributions: np.ndarray,
    feature: int,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Make ``feature`` reason 1 in ``rows`` (e.g. the complaint that escalated a customer).

    Other reasons shift right; a duplicate of ``feature`` further down is dropped.
    """
    rows = np.asarray(rows, dtype=bool) & (index[:, 0] != feature)
    if not rows.any():
        return index, contribution
    index, contribution = index.copy(), contribution.copy()
    sub_i, sub_c = index[rows], contribution[rows]
    keep = sub_i != feature
    # Stable compaction of the kept slots, then prepend the feature.
    order = np.argsort(~keep, axis=1, kind="stable")
    sub_i = np.take_along_axis(np.where(keep, sub_i, -1), order, axis=1)
    sub_c = np.take_along_axis(np.where(keep, sub_c, np.nan), order, axis=1)
    index[rows] = np.column_stack([np.full(rows.sum(), feature), sub_i[:, :-1]])
    contribution[rows] = np.column_stack([contributions[rows, feature], sub_c[:, :-1]])
    return index, contribution


def format_values(values: np.ndarray, fmt: str) -> np.ndarray:
    """Customer values as text, vectorised (numpy string arrays); NaN reads 'n/a'."""
    if fmt == "text":
        return np.asarray(pd.Series(values).astype("str").fillna("n/a"), dtype=str)
    v = np.asarray(values, dtype=np.float64)
    nan = np.isnan(v)
    safe = np.where(nan, 0.0, v)
    if fmt in ("pct", "ratio"):
        text = np.strings.add(np.rint(safe * 100).astype(np.int64).astype(str), "%")
    elif fmt == "signed":
        whole = np.rint(safe).astype(np.int64)
        text = np.strings.add(np.where(whole > 0, "+", ""), whole.astype(str))
    elif fmt == "severity":
        text = SEVERITY_NAMES[np.clip(np.rint(safe).astype(np.int64), 0, 4)]
    else:
        text = np.rint(safe).astype(np.int64).astype(str)
    return np.where(nan, "n/a", text)


def sentences(feature: str, values: np.ndarray, reference: float | None) -> np.ndarray:
    """Plain sentences for one feature over many customers, e.g. 'no login for 34 days;
    typical healthy customer: 3'."""
    phrase = phrase_for(feature)
    written = format_values(values, phrase.fmt)
    suffix: str | np.ndarray = phrase.suffix
    if "{s}" in phrase.suffix:
        one = np.isin(written, ("1", "+1", "-1"))
        suffix = np.where(one, phrase.suffix.replace("{s}", ""), phrase.suffix.replace("{s}", "s"))
    text = np.strings.add(np.strings.add(phrase.prefix, written), suffix)
    if phrase.reference and reference is not None and not np.isnan(reference):
        ref = format_values(np.array([reference]), phrase.fmt)[0]
        text = np.strings.add(text, f"; {REFERENCE}: {ref}")
    return text


def explain(
    features: pd.DataFrame,
    contributions: np.ndarray,
    feature_names: list[str],
    references: dict[str, float],
    actions: dict[str, str],
    top_k: int = 3,
    escalated: np.ndarray | None = None,
    required: np.ndarray | None = None,
) -> pd.DataFrame:
    """Reasons and action per row of ``features`` (same row order, same index).

    ``contributions``: (n, len(feature_names) + 1) TreeSHAP log-odds, last column the expected
    value. ``escalated``: rows lifted by the escalation rule; their reason 1 is the serious
    complaint. ``required``: rows that must get a reason even without a positive contribution
    (e.g. red customers under a capacity policy).

    Columns: ``reason_{i}_feature``, ``reason_{i}_value`` (float; NaN for categorical values),
    ``reason_{i}_contribution`` (log-odds), ``reason_{i}_sentence`` for i = 1..top_k, then
    ``reasons`` (sentences joined by ' | '), ``reason_family`` and ``recommended_action``.
    Empty slots hold None / NaN.
    """
    n = len(features)
    contrib = np.asarray(contributions, dtype=np.float64)[:, : len(feature_names)]
    if contrib.shape != (n, len(feature_names)):
        raise ValueError(
            f"contributions have shape {contributions.shape}; expected ({n}, "
            f"{len(feature_names) + 1}) for {len(feature_names)} features + expected value"
        )
    index, value = top_positive(contrib, top_k)
    if required is not None:
        index, value = ensure_reason(index, value, contrib, required)
    if escalated is not None and ESCALATION_FEATURE in feature_names:
        index, value = put_first(
            index, value, contrib, feature_names.index(ESCALATION_FEATURE), escalated
        )
    out: dict[str, np.ndarray] = {}
    family = np.full(n, None, dtype=object)
    for slot in range(index.shape[1]):
        names, values, texts = _slot(
            features, index[:, slot], feature_names, references, family, slot == 0
        )
        i = slot + 1
        out[f"reason_{i}_feature"] = names
        out[f"reason_{i}_value"] = values
        out[f"reason_{i}_contribution"] = value[:, slot]
        out[f"reason_{i}_sentence"] = texts
    frame = pd.DataFrame(out, index=features.index)
    for c in frame.columns:
        if c.endswith(("_feature", "_sentence")):
            frame[c] = frame[c].astype("str")
    frame["reasons"] = join_reasons(frame, index.shape[1])
    frame["reason_family"] = pd.Series(family, index=features.index, dtype="str")
    frame["recommended_action"] = frame["reason_family"].map(actions)
    if "other" in actions:
        frame["recommended_action"] = frame["recommended_action"].where(
            frame["reason_family"].isna(), frame["recommended_action"].fillna(actions["other"])
        )
    return frame


def _slot(
    features: pd.DataFrame,
    index: np.ndarray,
    feature_names: list[str],
    references: dict[str, float],
    family: np.ndarray,
    first: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature name, value and sentence of one reason slot for every row, one feature at a time."""
    n = len(index)
    names = np.full(n, None, dtype=object)
    values = np.full(n, np.nan)
    texts = np.full(n, None, dtype=object)
    for j in np.unique(index[index >= 0]):
        feature = feature_names[j]
        rows = np.flatnonzero(index == j)
        column = features[feature].iloc[rows]
        names[rows] = feature
        if pd.api.types.is_numeric_dtype(column) and not isinstance(
            column.dtype, pd.CategoricalDtype
        ):
            values[rows] = column.to_numpy(dtype=np.float64)
        texts[rows] = sentences(feature, column.to_numpy(), references.get(feature))
        if first:
            family[rows] = reason_families(feature, features.iloc[rows])
    return names, values, texts


def join_reasons(frame: pd.DataFrame, slots: int) -> pd.Series:
    """All reason sentences of a row joined by ' | ' (one Excel-friendly text cell)."""
    joined = frame["reason_1_sentence"].astype("str")
    for i in range(2, slots + 1):
        nxt = frame[f"reason_{i}_sentence"].astype("str")
        joined = joined.where(nxt.isna(), joined + " | " + nxt)
    return joined


def upsell_candidates(
    features: pd.DataFrame,
    tier: np.ndarray,
    value: np.ndarray,
    references: dict[str, float],
    value_quantile: float = 0.75,
) -> np.ndarray:
    """Green customers worth at least the base's ``value_quantile`` of value whose usage is at
    least typical (active days in 30 days and distinct features in 90 days ≥ the healthy
    median, where those features exist): candidates for upsell or referral asks."""
    value = np.asarray(value, dtype=np.float64)
    ok = (np.asarray(tier) == "green") & (value >= np.nanquantile(value, value_quantile))
    for usage in ("active_days_30d", "distinct_features_90d"):
        if usage in features and usage in references:
            ok &= features[usage].to_numpy(dtype=np.float64) >= references[usage]
    return ok
