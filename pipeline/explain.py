"""Per-customer reasons and a recommended action, from LightGBM's exact TreeSHAP contributions.

Input: ``contributions`` from ``ChurnModel.contributions`` (``pred_contrib=True``): one column per
model feature in log-odds of the *uncalibrated* model, plus a last column with the expected value.
A positive contribution pushes the customer's churn risk up. The largest positive contributions
become reasons, written from the feature's meaning (``PHRASES``, one declaration per feature):

- recency only when > 0 ("no login for 34 days"); counts with their window ("2 complaints in the
  last 30 days"); a falling ratio or change as a fall ("logins down to 40% of the previous 30
  days"); rises, zeros and missing values that mean nothing are not reasons;
- usage is compared with a meaningful reference, named as such: the median of the low-risk
  customers (p below the base rate) of the same lifecycle stage ("… (median of low-risk
  first-year customers: 12)"), only when the two differ;
- context features (plan, tenure, days to the anniversary, stage) read as context ("renewal in
  49 days", "3rd month as a customer") and are never compared;
- a feature whose signal family the log does not contain (no complaint ever mapped, no
  payments…) never becomes a reason; a sentence never reads "nan" or "0 days".

A reason that cannot be written for a customer is skipped and the next one moves up. Each reason
belongs to a family; the family of the first reason shown picks the action from the configured
catalogue (``ExplainConfig.actions``).

Speed: sentences are built per feature with numpy string ufuncs over every row where that
feature is a candidate (a loop over features and slots, never over customers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.tiers import ESCALATION_FEATURE

SEVERITY_NAMES = np.array(["none", "low", "medium", "high", "critical"])
STAGE_PEERS = {"onboarding": "new", "renewal": "first-year", "mature": "long-standing"}
STAGE_WORDS = {
    "onboarding": "new customer, still onboarding",
    "renewal": "in the first year as a customer",
    "mature": "long-standing customer",
}
SPARE = 2
"""Candidate reasons beyond ``top_k``, to fill slots whose sentence cannot be written."""
DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class Phrase:
    """How one feature reads as a reason.

    ``template``: ``{n}`` is the written value, ``{s}`` "s" unless the value is 1. ``when``:
    which values make a reason (``positive`` > 0, ``negative`` < 0 written without its sign,
    ``below_one`` a ratio under 1, ``above_one`` a ratio from 1.05, ``any``). ``zero``: the
    sentence for a value of 0 (None: no reason). ``missing``: the sentence for a missing value
    (None: no reason). ``fmt``: ``int``, ``pct``, ``money``, ``severity``, ``text``, ``month``
    (ordinal month of tenure), ``stage``, ``ratio`` (one decimal, e.g. 2.4).
    ``compare``: quote the low-risk peers' median. ``signals``: event families the feature reads;
    when the log holds none of them the feature is never a reason.
    """

    family: str
    template: str
    when: str = "positive"
    zero: str | None = None
    missing: str | None = None
    fmt: str = "int"
    compare: bool = False
    signals: tuple[str, ...] = ()
    higher_is_worse: bool = False
    """Direction of risk for compared features (recency: higher is worse; counts: lower)."""


def _count(
    noun: str,
    window: int,
    signals: tuple[str, ...],
    family: str,
    zero: bool = True,
    kind: str = "",
) -> Phrase:
    """A usage count in a window: '3 logins in the last 30 days', 'no login in …' for 0."""
    return Phrase(
        family,
        f"{{n}} {noun}{{s}}{kind} in the last {window} days",
        when="positive",
        zero=f"no {noun}{kind} in the last {window} days" if zero else None,
        compare=zero,
        signals=signals,
    )


LOGIN, USE = ("login",), ("feature_use",)
COMPLAINT, TICKET, FAILED = ("complaint",), ("support_ticket",), ("payment_failed",)
SPEND = ("purchase", "payment")
PURCHASE = ("purchase",)
PHRASES: dict[str, Phrase] = {
    "days_since_last_event": Phrase(
        "inactivity", "no activity of any kind for {n} day{s}", compare=True, higher_is_worse=True
    ),
    "days_since_last_activity": Phrase(
        "inactivity",
        "no use for {n} day{s}",
        missing="no use since signup",
        compare=True,
        higher_is_worse=True,
    ),
    "days_since_last_login": Phrase(
        "inactivity",
        "no login for {n} day{s}",
        missing="never logged in",
        compare=True,
        higher_is_worse=True,
        signals=LOGIN,
    ),
    "days_since_last_feature_use": Phrase(
        "narrow_use",
        "no feature used for {n} day{s}",
        missing="never used a feature",
        compare=True,
        higher_is_worse=True,
        signals=USE,
    ),
    "events_7d": _count("event", 7, (), "inactivity", kind=" of any kind"),
    "events_30d": _count("event", 30, (), "inactivity", kind=" of any kind"),
    "events_90d": _count("event", 90, (), "inactivity", kind=" of any kind"),
    "events_180d": _count("event", 180, (), "inactivity", kind=" of any kind"),
    "events_365d": _count("event", 365, (), "inactivity", kind=" of any kind"),
    "events_lifetime": Phrase("inactivity", "{n} event{s} since signup", compare=True),
    "logins_7d": _count("login", 7, LOGIN, "inactivity"),
    "logins_30d": _count("login", 30, LOGIN, "inactivity"),
    "logins_90d": _count("login", 90, LOGIN, "inactivity"),
    "active_days_30d": Phrase(
        "inactivity",
        "active on {n} of the last 30 days",
        zero="not active in the last 30 days",
        compare=True,
    ),
    "active_days_90d": Phrase(
        "inactivity",
        "active on {n} of the last 90 days",
        zero="not active in the last 90 days",
        compare=True,
    ),
    "active_days_180d": Phrase(
        "inactivity",
        "active on {n} of the last 180 days",
        zero="not active in the last 180 days",
        compare=True,
    ),
    "active_days_365d": Phrase(
        "inactivity",
        "active on {n} of the last 365 days",
        zero="not active in the last 365 days",
        compare=True,
    ),
    "active_days_lifetime": Phrase("inactivity", "active on {n} day{s} since signup", compare=True),
    "days_since_last_purchase": Phrase(
        "inactivity",
        "no purchase for {n} day{s}",
        missing="no purchase yet",
        compare=True,
        higher_is_worse=True,
        signals=PURCHASE,
    ),
    "purchases_lifetime": Phrase(
        "inactivity",
        "{n} purchase{s} so far",
        zero="no purchase yet",
        compare=True,
        signals=PURCHASE,
    ),
    "repeat_purchases_lifetime": Phrase(
        "inactivity",
        "bought again on {n} day{s} after the first purchase",
        zero="never bought again after the first purchase",
        compare=True,
        signals=PURCHASE,
    ),
    "overdue_ratio": Phrase(
        "inactivity",
        "quiet for {n}× their usual gap between active days",
        when="above_one",
        fmt="ratio",
    ),
    "last_gap_days": Phrase(
        "inactivity",
        "{n} day{s} between their last two active days",
        compare=True,
        higher_is_worse=True,
    ),
    "mean_gap_days": Phrase("inactivity", "usually active every {n} day{s}", when="positive"),
    "bgnbd_no_purchase_probability": Phrase(
        "inactivity",
        "buying pattern: {n} chance of no purchase in the coming period",
        fmt="pct",
        signals=PURCHASE,
    ),
    "bgnbd_p_alive": Phrase(
        "inactivity",
        "buying pattern: only {n} likely to still be a customer",
        fmt="pct",
        signals=PURCHASE,
    ),
    "days_since_first_purchase": Phrase(
        "onboarding", "first purchase {n} day{s} ago", when="positive", signals=PURCHASE
    ),
    "events_30d_vs_prev_30d": Phrase(
        "inactivity", "activity down to {n} of the previous 30 days", when="below_one", fmt="pct"
    ),
    "logins_30d_vs_prev_30d": Phrase(
        "inactivity",
        "logins down to {n} of the previous 30 days",
        when="below_one",
        fmt="pct",
        signals=LOGIN,
    ),
    "active_days_30d_change": Phrase(
        "inactivity", "{n} fewer active day{s} than in the previous 30 days", when="negative"
    ),
    "feature_uses_30d": _count("feature use", 30, USE, "narrow_use"),
    "feature_uses_90d": _count("feature use", 90, USE, "narrow_use"),
    "distinct_features_30d": Phrase(
        "narrow_use",
        "used {n} distinct feature{s} in the last 30 days",
        zero="no feature used in the last 30 days",
        compare=True,
        signals=USE,
    ),
    "distinct_features_90d": Phrase(
        "narrow_use",
        "used {n} distinct feature{s} in the last 90 days",
        zero="no feature used in the last 90 days",
        compare=True,
        signals=USE,
    ),
    "feature_breadth_90d": Phrase(
        "narrow_use",
        "uses {n} of the product's features (last 90 days)",
        fmt="pct",
        zero="no feature used in the last 90 days",
        compare=True,
        signals=USE,
    ),
    "complaints_30d": _count("complaint", 30, COMPLAINT, "complaint", zero=False),
    "complaints_90d": _count("complaint", 90, COMPLAINT, "complaint", zero=False),
    ESCALATION_FEATURE: Phrase(
        "complaint",
        "{n} serious complaint{s} or ticket{s} in the last 30 days",
        signals=COMPLAINT + TICKET,
    ),
    "max_severity_90d": Phrase(
        "complaint",
        "worst complaint or ticket in the last 90 days: {n}",
        fmt="severity",
        signals=COMPLAINT + TICKET,
    ),
    "days_since_last_complaint": Phrase(
        "complaint", "last complaint {n} day{s} ago", zero="a complaint today", signals=COMPLAINT
    ),
    "tickets_30d": _count("support ticket", 30, TICKET, "support", zero=False),
    "tickets_90d": _count("support ticket", 90, TICKET, "support", zero=False),
    "payment_failures_30d": _count("failed payment", 30, FAILED, "payment", zero=False),
    "payment_failures_90d": _count("failed payment", 90, FAILED, "payment", zero=False),
    "spend_90d": Phrase(
        "value",
        "spent {n} in the last 90 days",
        fmt="money",
        zero="no spend in the last 90 days",
        compare=True,
        signals=SPEND,
    ),
    "spend_365d": Phrase(
        "value",
        "spent {n} in the last 365 days",
        fmt="money",
        zero="no spend in the last 365 days",
        compare=True,
        signals=SPEND,
    ),
    "spend_180d": Phrase(
        "value",
        "spent {n} in the last 180 days",
        fmt="money",
        zero="no spend in the last 180 days",
        compare=True,
        signals=SPEND,
    ),
    "spend_lifetime": Phrase("value", "spent {n} since signup", fmt="money", signals=SPEND),
    "spend_per_purchase_lifetime": Phrase(
        "value", "spends {n} per purchase", fmt="money", compare=True, signals=PURCHASE
    ),
    "mrr": Phrase("value", "pays {n} a month", fmt="money"),
    "mrr_change_90d": Phrase(
        "value", "MRR down by {n} in the last 90 days", when="negative", fmt="money"
    ),
    "tenure_days": Phrase("onboarding", "{n} as a customer", when="any", fmt="month"),
    "lifecycle_stage": Phrase("onboarding", "{n}", when="any", fmt="stage"),
    "days_to_anniversary": Phrase("renewal", "renewal in {n} day{s}", zero="renewal due today"),
    "plan": Phrase("value", "on the {n} plan", when="any", fmt="text"),
}
"""Known features; any other numeric feature reads ``<name>: <value>`` in family ``other``."""
CONTEXT = frozenset(
    {
        "tenure_days",
        "lifecycle_stage",
        "days_to_anniversary",
        "plan",
        "mean_gap_days",
        "days_since_first_purchase",
    }
)
"""Context features: written as context, never compared with a reference."""


def phrase_for(feature: str) -> Phrase:
    """The phrase of a known feature, or a generic '<name>: <value>' in family ``other``."""
    return PHRASES.get(feature, Phrase("other", f"{feature}: {{n}}", when="any"))


def is_evidence(name: str) -> bool:
    """Whether a non-zero value of this feature shows its signal family occurs: counts and
    amounts do; recency (filled with tenure) and ratios (filled with 1.0) do not."""
    phrase = phrase_for(name)
    counted = phrase.fmt in ("int", "money") and phrase.when == "positive"
    return bool(phrase.signals) and counted and not name.startswith("days_since")


def signals_present(features: pd.DataFrame, feature_names: list[str]) -> set[str]:
    """Features whose signal families occur in the log (judged on the whole scored base): a
    feature reading complaints is kept only when some customer has a non-zero, non-missing
    value in a count or amount of the complaint family (``is_evidence``: recency and trend
    features have fills, tenure or 1.0, when the family never occurs)."""
    seen: set[str] = set()
    judged: set[str] = set()  # families with a count or amount to judge by
    for name in feature_names:
        column = features[name]
        if is_evidence(name) and pd.api.types.is_numeric_dtype(column):
            judged.update(phrase_for(name).signals)
            values = column.to_numpy(dtype=np.float64)
            if np.any(np.isfinite(values) & (values != 0)):
                seen.update(phrase_for(name).signals)
    return {n for n in feature_names if _occurs(set(phrase_for(n).signals), seen, judged)}


def _occurs(signals: set[str], seen: set[str], judged: set[str]) -> bool:
    """A feature's families occur, or cannot be judged from the features at hand."""
    return not signals or bool(signals & seen) or not signals & judged


def reference_values(
    features: pd.DataFrame, low_risk: np.ndarray, feature_names: list[str]
) -> pd.DataFrame:
    """Median of every compared feature among ``low_risk`` rows, per lifecycle stage (rows) and
    overall (row ``all``); the whole frame stands in when no row is low-risk."""
    low_risk = np.asarray(low_risk, dtype=bool)
    pool = features[low_risk] if low_risk.any() else features
    names = [n for n in feature_names if phrase_for(n).compare and n in features]
    values = pool[names].astype(np.float64)
    table = pd.DataFrame([values.median()], index=["all"])
    if "lifecycle_stage" in pool and len(pool):
        stage = pool["lifecycle_stage"].astype("str")
        table = pd.concat([values.groupby(stage.to_numpy()).median(), table])
    return table


def top_positive(contributions: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(feature index, contribution) of the ``top_k`` largest positive contributions per row.

    Missing slots have index −1 and contribution NaN. Ties break by feature order (stable).
    """
    k = min(top_k, contributions.shape[1])
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(contributions, order, axis=1)
    positive = values > 0
    return np.where(positive, order, -1), np.where(positive, values, np.nan)


def put_first(
    index: np.ndarray, contribution: np.ndarray, contributions: np.ndarray, feature: int, rows
) -> tuple[np.ndarray, np.ndarray]:
    """Make ``feature`` reason 1 in ``rows`` (the complaint that escalated a customer); other
    reasons shift right, a duplicate of ``feature`` further down is dropped."""
    rows = np.asarray(rows, dtype=bool) & (index[:, 0] != feature)
    if not rows.any():
        return index, contribution
    index, contribution = index.copy(), contribution.copy()
    sub_i, sub_c = index[rows], contribution[rows]
    keep = sub_i != feature
    order = np.argsort(~keep, axis=1, kind="stable")
    sub_i = np.take_along_axis(np.where(keep, sub_i, -1), order, axis=1)
    sub_c = np.take_along_axis(np.where(keep, sub_c, np.nan), order, axis=1)
    index[rows] = np.column_stack([np.full(rows.sum(), feature), sub_i[:, :-1]])
    contribution[rows] = np.column_stack([contributions[rows, feature], sub_c[:, :-1]])
    return index, contribution


def fallback_reasons(
    index: np.ndarray, contributions: np.ndarray, required: np.ndarray
) -> np.ndarray:
    """Rows in ``required`` with no positive reason get every feature as a candidate, largest
    contribution first (a red customer always gets a reason when one can be written)."""
    missing = np.asarray(required, dtype=bool) & (index[:, 0] < 0)
    if not missing.any():
        return index
    order = np.argsort(-contributions[missing], axis=1, kind="stable")[:, : index.shape[1]]
    index = index.copy()
    index[missing, : order.shape[1]] = order
    return index


def written(values: np.ndarray, fmt: str) -> np.ndarray:
    """Values as text (vectorised): ``int`` rounded, ``pct`` ×100 with %, ``money`` rounded with
    thousands separators, ``severity`` names, ``month`` ordinal month or year of tenure,
    ``stage`` words, ``text`` as is."""
    if fmt in ("text", "stage"):
        text = pd.Series(values).astype("str").to_numpy(dtype=str)
        if fmt == "stage":
            text = pd.Series(text).map(STAGE_WORDS).fillna("").to_numpy(dtype=str)
        return text
    v = np.abs(np.asarray(values, dtype=np.float64))
    whole = np.rint(np.nan_to_num(v * 100 if fmt == "pct" else v)).astype(np.int64)
    if fmt == "severity":
        return SEVERITY_NAMES[np.clip(whole, 0, 4)]
    if fmt == "month":
        return tenure_words(np.nan_to_num(v))
    if fmt == "money":
        return thousands(whole)
    if fmt == "ratio":
        return np.char.mod("%.1f", np.nan_to_num(v))
    text = whole.astype(str)
    return np.strings.add(text, "%") if fmt == "pct" else text


def thousands(whole: np.ndarray) -> np.ndarray:
    """Integers with ',' every three digits, vectorised."""
    text = whole.astype(str)
    out = text
    for digits in range(4, 20, 3):
        long = np.strings.str_len(text) >= digits
        if not long.any():
            break
        cut = np.strings.str_len(text) - (digits - 1)
        head = np.where(long, np.strings.slice(text, 0, cut), "")
        tail = np.strings.slice(text, cut, None)
        out = np.where(long, np.strings.add(np.strings.add(head, ","), _grouped(tail)), out)
    return out


def _grouped(tail: np.ndarray) -> np.ndarray:
    """'123456' → '123,456' for tails of 3, 6, 9… digits."""
    parts = [np.strings.slice(tail, i, i + 3) for i in range(0, 18, 3)]
    out = parts[0]
    for part in parts[1:]:
        out = np.where(
            np.strings.str_len(part) > 0, np.strings.add(np.strings.add(out, ","), part), out
        )
    return out


def ordinal(n: np.ndarray) -> np.ndarray:
    """1 → '1st', 2 → '2nd', 11 → '11th', 23 → '23rd'."""
    teen = (n % 100 >= 11) & (n % 100 <= 13)
    suffix = np.where(
        teen, "th", np.array(["th", "st", "nd", "rd", "th", "th", "th", "th", "th", "th"])[n % 10]
    )
    return np.strings.add(n.astype(str), suffix)


def tenure_words(days: np.ndarray) -> np.ndarray:
    """Tenure in days → '3rd month' (first two years) or 'year 3'."""
    month = (days // DAYS_PER_MONTH).astype(np.int64) + 1
    year = (days // 365.25).astype(np.int64) + 1
    return np.where(
        month <= 24,
        np.strings.add(ordinal(month), " month"),
        np.strings.add("year ", year.astype(str)),
    )


def sentences(phrase: Phrase, values: np.ndarray) -> np.ndarray:
    """The sentence per value, or None where the value makes no reason (see ``Phrase``)."""
    if phrase.fmt in ("text", "stage"):
        text = written(values, phrase.fmt)
        ok = pd.notna(pd.Series(values)).to_numpy() & (text != "")
        return np.where(ok, np.strings.replace(phrase.template, "{n}", text), None).astype(object)
    v = np.asarray(values, dtype=np.float64)
    nan = np.isnan(v)
    text = written(v, phrase.fmt)
    plural = np.where(text == "1", "", "s")
    body = np.strings.replace(np.strings.replace(phrase.template, "{n}", text), "{s}", plural)
    ok = ~nan & _wanted(v, phrase.when) & (text != "0")
    out = np.where(ok, body, None).astype(object)
    zero = ~nan & (np.rint(v) == 0) if phrase.fmt not in ("pct",) else ~nan & (v == 0)
    if phrase.zero is not None:
        out[zero] = phrase.zero
    if phrase.missing is not None:
        out[nan] = phrase.missing
    return out


def _wanted(v: np.ndarray, when: str) -> np.ndarray:
    if when == "positive":
        return v > 0
    if when == "negative":
        return v < 0
    if when == "below_one":
        return v < 1
    if when == "above_one":
        return v >= 1.05
    return np.ones(len(v), dtype=bool)


@dataclass(frozen=True)
class Peers:
    """Per row: the reference table's row (lifecycle stage, or 'all') and its words."""

    key: np.ndarray
    label: np.ndarray

    @classmethod
    def of(cls, features: pd.DataFrame, references: pd.DataFrame) -> Peers:
        n = len(features)
        if "lifecycle_stage" not in features:
            where = pd.Index(references.index).get_indexer(["all"])[0]
            return cls(np.full(n, where), np.full(n, " (median of low-risk customers: "))
        stage = features["lifecycle_stage"].astype("str")
        key = pd.Index(references.index).get_indexer(stage.to_numpy(dtype=object))
        words = stage.map(STAGE_PEERS).fillna("").to_numpy(dtype=str)
        spaced = np.where(words == "", "", np.strings.add(words, " "))
        label = np.strings.add(np.strings.add(" (median of low-risk ", spaced), "customers: ")
        return cls(key, label)


def comparisons(
    phrase: Phrase, values: np.ndarray, peers: Peers, rows: np.ndarray, references: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """(' (median of low-risk first-year customers: 12)' per row, '' where there is no
    reference or it reads the same as the customer's value; True where the customer is on the
    healthy side of the reference, so the sentence would contradict the reason)."""
    table = references.to_numpy(dtype=np.float64)[:, 0]
    key = peers.key[rows]
    ref = np.where(key >= 0, table[np.maximum(key, 0)], np.nan) if len(table) else values * np.nan
    mine, theirs = written(values, phrase.fmt), written(ref, phrase.fmt)
    text = np.strings.add(np.strings.add(peers.label[rows], theirs), ")")
    known = ~np.isnan(ref) & ~np.isnan(values)
    show = known & (mine != theirs)
    better = known & show & ((values < ref) if phrase.higher_is_worse else (values > ref))
    return np.where(show, text, ""), better


def explain(
    features: pd.DataFrame,
    contributions: np.ndarray,
    feature_names: list[str],
    references: pd.DataFrame | None,
    actions: dict[str, str],
    top_k: int = 3,
    escalated: np.ndarray | None = None,
    required: np.ndarray | None = None,
    present: set[str] | None = None,
) -> pd.DataFrame:
    """Reasons and action per row of ``features`` (same row order, same index).

    ``contributions``: (n, len(feature_names) + 1) TreeSHAP log-odds, last column the expected
    value. ``references``: ``reference_values`` (None: no comparison). ``escalated``: rows
    lifted by the escalation rule (their reason 1 is the serious complaint). ``required``: rows
    that must get a reason even without a positive contribution (red customers). ``present``:
    features whose signal occurs in the log (``signals_present``; default: judged on ``features``).

    Columns: ``reason_{i}_feature``, ``reason_{i}_value`` (float; NaN for categories),
    ``reason_{i}_contribution`` (log-odds), ``reason_{i}_sentence`` for i = 1..top_k, then
    ``reasons`` (sentences joined by ' | '), ``reason_family`` and ``recommended_action`` (the
    action of reason 1's family). Empty slots hold None / NaN.
    """
    n = len(features)
    contrib = np.asarray(contributions, dtype=np.float64)[:, : len(feature_names)]
    if contrib.shape != (n, len(feature_names)):
        raise ValueError(
            f"contributions have shape {contributions.shape}; expected ({n}, "
            f"{len(feature_names) + 1}) for {len(feature_names)} features + expected value"
        )
    present = signals_present(features, feature_names) if present is None else present
    usable = np.array([name in present for name in feature_names], dtype=bool)
    masked = np.where(usable, contrib, -np.inf)
    index, _ = top_positive(masked, top_k + SPARE)
    if required is not None:
        index = fallback_reasons(index, np.where(usable, contrib, -np.inf), required)
    if escalated is not None and ESCALATION_FEATURE in feature_names:
        feature = feature_names.index(ESCALATION_FEATURE)
        index, _ = put_first(index, np.zeros(index.shape), contrib, feature, escalated)
    names, texts, families = candidate_texts(features, index, feature_names, references)
    return reason_frame(features, index, contrib, names, texts, families, top_k, actions)


def candidate_texts(
    features: pd.DataFrame,
    index: np.ndarray,
    feature_names: list[str],
    references: pd.DataFrame | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature name, sentence (None = cannot be written) and family of every candidate slot."""
    shape = index.shape
    names = np.full(shape, None, dtype=object)
    texts = np.full(shape, None, dtype=object)
    families = np.full(shape, None, dtype=object)
    stages = (
        features["lifecycle_stage"].astype("str").to_numpy(dtype=object)
        if "lifecycle_stage" in features
        else np.full(len(features), "all", dtype=object)
    )
    peers = Peers.of(features, references) if references is not None else None
    for j in np.unique(index[index >= 0]):
        feature, phrase = feature_names[j], phrase_for(feature_names[j])
        rows, slots = np.nonzero(index == j)
        column = features[feature].iloc[rows].to_numpy()
        text = sentences(phrase, column)
        if peers is not None and phrase.compare and feature in references:
            values = column.astype(np.float64)
            extra, better = comparisons(phrase, values, peers, rows, references[[feature]])
            ok = pd.notna(text) & ~better
            text = np.where(ok, np.strings.add(text.astype(str), extra), None)
        names[rows, slots] = feature
        texts[rows, slots] = text
        families[rows, slots] = _families(feature, phrase, stages[rows])
    return names, texts, families


def _families(feature: str, phrase: Phrase, stages: np.ndarray) -> np.ndarray:
    """Lifecycle reasons count as onboarding only for customers in the onboarding stage."""
    if feature in ("tenure_days", "lifecycle_stage"):
        return np.where(stages == "onboarding", "onboarding", "other").astype(object)
    return np.full(len(stages), phrase.family, dtype=object)


def reason_frame(
    features: pd.DataFrame,
    index: np.ndarray,
    contrib: np.ndarray,
    names: np.ndarray,
    texts: np.ndarray,
    families: np.ndarray,
    top_k: int,
    actions: dict[str, str],
) -> pd.DataFrame:
    """The first ``top_k`` candidates that have a sentence, per row, and the action of reason 1."""
    written_ = pd.notna(texts)
    order = np.argsort(~written_, axis=1, kind="stable")[:, :top_k]
    pick = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    ok = pick(written_)
    idx = np.where(ok, pick(index), -1)
    out: dict[str, np.ndarray] = {}
    rows = np.arange(len(features))
    for slot in range(order.shape[1]):
        i, has = slot + 1, ok[:, slot]
        out[f"reason_{i}_feature"] = np.where(has, pick(names)[:, slot], None)
        out[f"reason_{i}_value"] = _values(features, idx[:, slot], names, pick, slot)
        out[f"reason_{i}_contribution"] = np.where(
            has, contrib[rows, np.maximum(idx[:, slot], 0)], np.nan
        )
        out[f"reason_{i}_sentence"] = np.where(has, pick(texts)[:, slot], None)
    for i in range(order.shape[1] + 1, top_k + 1):  # fewer features than slots: empty slots
        empty = np.full(len(features), None, dtype=object)
        nan = np.full(len(features), np.nan)
        out |= {f"reason_{i}_{k}": v for k, v in (("feature", empty), ("value", nan),
                ("contribution", nan), ("sentence", empty))}  # fmt: skip
    frame = pd.DataFrame(out, index=features.index)
    for column in frame.columns:
        if column.endswith(("_feature", "_sentence")):
            frame[column] = frame[column].astype("str")
    frame["reasons"] = join_reasons(frame, top_k)
    family = np.where(ok[:, 0], pick(families)[:, 0], None) if order.shape[1] else None
    frame["reason_family"] = pd.Series(family, index=features.index, dtype="str")
    frame["recommended_action"] = frame["reason_family"].map(actions).astype("str")
    return frame


def _values(
    features: pd.DataFrame, idx: np.ndarray, names: np.ndarray, pick, slot: int
) -> np.ndarray:
    """The customer's value of the feature in one slot (NaN for categories and empty slots)."""
    values = np.full(len(idx), np.nan)
    chosen = pick(names)[:, slot]
    for feature in pd.unique(chosen[idx >= 0]):
        column = features[feature]
        if pd.api.types.is_numeric_dtype(column) and not isinstance(
            column.dtype, pd.CategoricalDtype
        ):
            rows = (chosen == feature) & (idx >= 0)
            values[rows] = column.to_numpy(dtype=np.float64)[rows]
    return values


def join_reasons(frame: pd.DataFrame, slots: int) -> pd.Series:
    """All reason sentences of a row joined by ' | ' (the Parquet record; the workbook shows
    them in separate columns)."""
    if slots == 0:
        return pd.Series(None, index=frame.index, dtype="str")
    joined = frame["reason_1_sentence"].astype("str")
    for i in range(2, slots + 1):
        nxt = frame[f"reason_{i}_sentence"].astype("str")
        joined = joined.where(nxt.isna(), joined + " | " + nxt)
    return joined


def upsell_candidates(
    features: pd.DataFrame,
    tier: np.ndarray,
    value: np.ndarray,
    references: pd.DataFrame,
    value_quantile: float = 0.75,
) -> np.ndarray:
    """Green customers worth at least the base's ``value_quantile`` of value whose usage is at
    least the low-risk median (active days in 30 days and distinct features in 90 days, where
    those features exist): candidates for upsell or referral asks."""
    value = np.asarray(value, dtype=np.float64)
    if not len(value):
        return np.zeros(0, dtype=bool)
    ok = (
        (np.asarray(tier) == "green")
        & (value >= np.nanquantile(value, value_quantile))
        & (value > 0)
    )
    overall = references.loc["all"] if "all" in references.index else pd.Series(dtype=float)
    for usage in ("active_days_30d", "distinct_features_90d"):
        if usage in features and usage in overall and not np.isnan(overall[usage]):
            ok &= features[usage].to_numpy(dtype=np.float64) >= overall[usage]
    return ok
