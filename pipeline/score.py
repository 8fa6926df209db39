"""Batch scoring: the whole customer base at one as_of → calibrated probability, tier, reasons.

Flow (``run_scoring``): this project's champion bundle (registry alias ``champion`` when the
tracking store is reachable, else ``models/<project>/champion``; see ``load_champion``) →
validated inputs → one feature pass at as_of with the builders, feature settings and label
settings the model was trained with → rejects (rows that cannot be scored honestly, each with a
reason) → calibrated probability → value and revenue at
risk → tier under the model card's policy → reasons and action for red and orange (or everyone)
→ Parquet scores, rejects CSV, summary JSON published together as ``scores/<as_of>/`` with the
``scores/LATEST`` pointer (``publish_run``; identical bytes for the same inputs).

Runners: the probabilities, then the reasons, are computed in chunks of rows of the base on
``config.compute`` (joblib worker processes or Dask; ``n_jobs: -1`` stays in this process,
see ``scoring_compute``); tiers, hysteresis, references and ordering are decided
on the whole base here, so the outputs are the same bytes whatever the runner.

Time semantics: as_of is a UTC midnight; features see events strictly before it. It defaults to
``observed_until`` (the day after the last event), and may not lie after it: windows past the end
of the log would read as inactivity.

The base at as_of: valid customers signed up before as_of and not churned before it (for the
``inactivity`` label, also a qualifying event before as_of). Reconciliation, checked on every
run: customers in the base = scored + rejected; customers that the optional
``label.active_window_days`` drops are rejects with the reason ``lapsed`` (counted as ``lapsed``).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths, tracking
from pipeline.config import (
    ComputeConfig,
    Config,
    ExplainConfig,
    FeatureConfig,
    LabelConfig,
    TierConfig,
    ValueConfig,
)
from pipeline.events import InputError, ValidatedData
from pipeline.explain import explain, reference_values, signals_present, upsell_candidates
from pipeline.export import previous_scores
from pipeline.features import (
    KEYS,
    NAN_WHEN_UNDEFINED,
    build_features_for_grid,
    map_partitions,
    with_bgnbd,
)
from pipeline.features.daily import product_features
from pipeline.features.grid import Grid, normalise_as_of
from pipeline.io import recover_dir, staged_dir, write_frame, write_json, write_text
from pipeline.labels import in_base, lapsed, lookback_days
from pipeline.model import ModelBundle, check_features
from pipeline.runner import run_tasks, shared_cluster, workers
from pipeline.schemas import FEATURES, SCORES, check
from pipeline.tiers import TIERS, escalation_flags, tier_policy

log = logging.getLogger(__name__)

DAYS_PER_MONTH = 365.25 / 12
NO_EVENTS = (
    "no events at all before as_of and not new (tenure ≥ {days} days): check its id in the log"
)
NOT_FINITE = "feature '{feature}' is not a finite number"
LAPSED = (
    "lapsed: no qualifying event within label.active_window_days before as_of"
    " (unset it to score every customer active before as_of)"
)


class ScoringError(InputError):
    """Scoring cannot run as asked (e.g. as_of after the end of the log); the message says why."""


@dataclass
class Base:
    """Features of every customer in the base at one as_of, and what the counts rest on.

    ``features``: keys, model features, ``owner``, ``segment``, ``last_activity_at`` (naive UTC,
    last qualifying event before as_of; NaT when none) and ``has_events`` (any valid event before
    as_of). ``counts``: valid customers and why the others are not in the base.
    """

    features: pd.DataFrame
    counts: dict[str, int]
    n_product_features: int
    as_of: pd.Timestamp


@dataclass
class ScoringResult:
    """Scores (one row per scored customer), rejects (one row per rejected one), run summary;
    ``features`` (the base's feature rows) and ``bundle`` (the model used) when ``run_scoring``
    made them, so a caller that monitors the run needs no second feature pass."""

    scores: pd.DataFrame
    rejects: pd.DataFrame
    summary: dict = field(default_factory=dict)
    features: pd.DataFrame | None = field(default=None, repr=False)
    bundle: ModelBundle | None = field(default=None, repr=False)


def resolve_as_of(as_of: pd.Timestamp | str | None, observed_until: pd.Timestamp) -> pd.Timestamp:
    """as_of as a UTC midnight; default ``observed_until``; an error when after it."""
    stamp = normalise_as_of([as_of if as_of is not None else observed_until])[0]
    if stamp > pd.Timestamp(observed_until):
        raise ScoringError(
            f"as_of {stamp.date()} is after the end of the log ({pd.Timestamp(observed_until)}):"
            " features would read missing days as inactivity. Use an earlier --as-of."
        )
    return stamp


def model_settings(
    card: dict, config: Config, tiers_from_config: bool = False
) -> tuple[FeatureConfig, LabelConfig, TierConfig]:
    """Feature, label and tier settings the model was trained with (its card), so scoring builds
    the same features; the config's tier policy only with ``tiers_from_config``. Differences from
    the config are logged."""
    features = _from_card(FeatureConfig, card.get("feature_config"), config.features, "features")
    label = _from_card(LabelConfig, card.get("label"), config.label, "label")
    if tiers_from_config:
        return features, label, config.tiers
    return features, label, _from_card(TierConfig, card.get("tier_policy"), config.tiers, "tiers")


def _from_card(kind: type, payload: dict | None, configured, section: str):
    if not payload:
        return configured
    from_card = kind(**{k: v for k, v in payload.items() if k in kind.model_fields})
    if from_card != configured:
        log.warning(
            "config section '%s' differs from the model card; scoring uses the card's (%s)."
            " Retrain to change it%s",
            section,
            from_card.model_dump(mode="json"),
            ", or pass --tiers-from-config" if section == "tiers" else "",
        )
    return from_card


def build_base(
    data: ValidatedData, as_of: pd.Timestamp, features: FeatureConfig, label: LabelConfig
) -> Base:
    """One feature pass at ``as_of`` for every valid customer in the base (see module doc).

    ``counts``: ``lapsed_not_in_base`` = eligible customers outside the base (``inactivity``:
    no qualifying event at all before as_of); with ``inactivity`` also ``lapsed`` = base
    customers dropped by ``label.active_window_days``: they stay in ``features`` with
    ``lapsed`` True and become rejects with that reason, so base = scored + rejected, of which
    ``lapsed`` are the lapsed ones.
    """
    customers = data.customers

    def base_rows(grid: Grid) -> pd.DataFrame:
        frame = build_features_for_grid(grid, features)
        frame["owner"] = grid.customers["owner"].astype("str").to_numpy()
        frame["segment"] = grid.customers["segment"].astype("str").to_numpy()
        frame["last_activity_at"] = _timestamps(grid.index.last_before("last_active_us"))
        frame["has_events"] = ~np.isnan(grid.index.last_before("last_event_us"))
        frame["lapsed"] = lapsed(grid, label)
        frame["in_base"] = in_base(grid, label) | frame["lapsed"].to_numpy()
        return frame

    frame = map_partitions(
        data.store,
        customers,
        [as_of],
        label.qualifying_families,
        base_rows,
        until=as_of,
        lookback_days=lookback_days(label),
    )
    member = frame.pop("in_base").to_numpy()
    signup = customers["signup_at"].to_numpy("datetime64[us]")
    churned = customers["churned_at"].to_numpy("datetime64[us]")
    stamp = np.datetime64(as_of.to_datetime64(), "us")
    counts = {
        "customers_valid": len(customers),
        "not_yet_signed_up": int((signup >= stamp).sum()),
        "churned_before_as_of": int(((signup < stamp) & (churned < stamp)).sum()),
        "lapsed_not_in_base": int((~member).sum()),
        "base": int(member.sum()),
    }
    if label.definition == "inactivity":
        counts["lapsed"] = int(frame.loc[member, "lapsed"].sum())
    n_features = len(product_features(data.store))
    in_base_rows = with_bgnbd(frame[member].reset_index(drop=True), label.horizon_days)
    return Base(in_base_rows, counts, n_features, as_of)


def _timestamps(epoch_us: np.ndarray) -> np.ndarray:
    """Epoch microseconds (NaN = none) → naive UTC datetime64[us] (NaT = none)."""
    out = np.full(len(epoch_us), np.datetime64("NaT"), dtype="datetime64[us]")
    ok = ~np.isnan(epoch_us)
    out[ok] = epoch_us[ok].astype(np.int64).astype("datetime64[us]")
    return out


def reject_reasons(
    frame: pd.DataFrame, feature_names: list[str], onboarding_days: int
) -> pd.Series:
    """Why a base row cannot be scored, or missing when it can (first reason wins).

    - lapsed: no qualifying event within ``label.active_window_days`` (``frame["lapsed"]``);
    - no valid event before as_of although the customer is past onboarding: most often an id
      that does not match the log, and scoring it would read as extreme inactivity;
    - a numeric model feature that is NaN or infinite (the builders never produce one, so it
      means broken input; the model would silently treat it as missing), except NaN in the
      features that are NaN by design when undefined (``features.NAN_WHEN_UNDEFINED``).
    """
    reason = pd.Series(None, index=frame.index, dtype="str")
    if "lapsed" in frame:  # base rows the optional active window drops (``build_base``)
        reason[frame["lapsed"].to_numpy(dtype=bool)] = LAPSED
    quiet = ~frame["has_events"].to_numpy() & (frame["tenure_days"].to_numpy() >= onboarding_days)
    reason[quiet & reason.isna().to_numpy()] = NO_EVENTS.format(days=onboarding_days)
    for name in feature_names:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not isinstance(
            column.dtype, pd.CategoricalDtype
        ):
            values = column.to_numpy(dtype=np.float64)
            broken = np.isinf(values) if name in NAN_WHEN_UNDEFINED else ~np.isfinite(values)
            bad = broken & reason.isna().to_numpy()
            reason[bad] = NOT_FINITE.format(feature=name)
    return reason


def monthly_value(frame: pd.DataFrame, value: ValueConfig) -> np.ndarray:
    """Money per month per customer (see ``ValueConfig``): MRR; with ``monthly`` ``auto`` the
    spend history where a customer has no MRR; with ``spend`` always the spend history."""
    n = len(frame)
    mrr = np.nan_to_num(frame["mrr"].to_numpy(np.float64)) if "mrr" in frame else np.zeros(n)
    if value.monthly == "mrr":
        return mrr
    spend = annual_spend(frame) / 12.0
    return spend if value.monthly == "spend" else np.where(mrr > 0, mrr, spend)


def annual_spend(frame: pd.DataFrame) -> np.ndarray:
    """Spend over a year: ``spend_365d`` (or ``spend_90d`` when the log has no year of spend
    features), annualised over the customer's tenure when it is shorter than the window
    (tenure counted as at least 30 days); 0 without spend features."""
    n = len(frame)
    column, window = next(
        ((c, w) for c, w in (("spend_365d", 365.0), ("spend_90d", 90.0)) if c in frame),
        (None, 365.0),
    )
    if column is None:
        return np.zeros(n)
    spend = np.nan_to_num(frame[column].to_numpy(np.float64))
    tenure = (
        frame["tenure_days"].to_numpy(np.float64) if "tenure_days" in frame else np.full(n, window)
    )
    observed = np.clip(np.nan_to_num(tenure, nan=window), 30.0, window)
    return spend * 365.0 / observed


def customer_value(
    mrr: np.ndarray,
    probability: np.ndarray,
    value: ValueConfig,
    horizon_days: int,
    gross_margin: float = 1.0,
) -> np.ndarray:
    """Money at stake per customer from their monthly value (``monthly_value``: MRR, or spend
    history ÷ 12), in the currency of the log.

    ``mrr_months``: monthly value × ``value.months``. ``clv``: monthly value × gross margin ÷
    the base's monthly churn rate, where the monthly rate comes from the mean calibrated
    probability over the horizon (1 − (1 − p̄)^(months per horizon)⁻¹), capped at 120 months.
    """
    mrr = np.asarray(mrr, dtype=np.float64)
    if value.basis == "mrr_months":
        return mrr * value.months
    horizon_months = horizon_days / DAYS_PER_MONTH
    p_bar = float(np.clip(np.mean(probability), 1e-6, 1 - 1e-6)) if len(probability) else 0.5
    monthly = 1.0 - (1.0 - p_bar) ** (1.0 / horizon_months)
    return mrr * gross_margin * min(1.0 / monthly, 120.0)


def value_words(value: ValueConfig) -> str:
    """What the value column means, for headers and summaries ('12 months')."""
    return f"{value.months:g} months" if value.basis == "mrr_months" else "customer lifetime"


def previous_tiers(
    customer_id: pd.Series, previous: pd.DataFrame | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(tier, proposed tier) of each customer at the previous run (None where not scored then),
    from the previous run's scores (``tier_proposed`` falls back to ``tier`` for older runs)."""
    if previous is None:
        return None
    keyed = previous.drop_duplicates("customer_id").set_index("customer_id")
    proposed = keyed["tier_proposed"] if "tier_proposed" in keyed else keyed["tier"]
    tier = customer_id.map(keyed["tier"]).astype(object).to_numpy()
    return tier, customer_id.map(proposed).astype(object).to_numpy()


def score_frame(
    base: pd.DataFrame,
    bundle: ModelBundle,
    tiers: TierConfig,
    value: ValueConfig,
    top_k: int = 3,
    actions: dict[str, str] | None = None,
    explain_all: bool = False,
    horizon_days: int = 90,
    gross_margin: float = 1.0,
    previous: pd.DataFrame | None = None,
    compute: ComputeConfig | None = None,
) -> pd.DataFrame:
    """Probability, tier, value, reasons and action for every row of ``base`` (pure).

    ``base`` holds the model's features (checked against the card: a missing feature or a dtype
    of another kind raises ``FeatureMismatchError``), ``customer_id``, ``as_of``, ``owner``,
    ``segment`` and ``last_activity_at``. ``previous``: the previous run's scores (customer_id,
    tier, tier_proposed, churn_probability) for hysteresis and ``previous_probability``.
    Tiers from ``tier_policy`` (base rate: the card's ``base_rate``, else the mean probability);
    reasons for red and orange rows, or all with ``explain_all``; ``revenue_at_risk`` =
    ``expected_loss`` = probability × customer value. ``escalated_by`` says why escalation lifted
    a tier (the complaint is then reason 1).

    ``compute``: where the probabilities and the reasons are computed, in chunks of rows
    (``chunk_bounds``; None: in this process; a Dask engine without a scheduler starts a
    LocalCluster per map, ``scoring_runner`` keeps one for both). Tiers, references, signals
    present and everything else that looks at the whole base run here, after the chunks come
    back, so the frame is the same whatever the runner.
    """
    compute = scoring_compute(compute or ComputeConfig(n_jobs=1), len(base))
    p = predict_base(base, bundle, compute)
    monthly = monthly_value(base, value)
    money = customer_value(monthly, p, value, horizon_days, gross_margin)
    policy = tier_policy(tiers, bundle.card.get("base_rate"))
    owner = base["owner"].astype("str").to_numpy(dtype=object)
    flags = escalation_flags(base, tiers)
    result = policy.assign(p, money, flags, previous_tiers(base["customer_id"], previous), owner)
    tier = result.tier
    out = base[["customer_id", "as_of"]].copy()
    out["churn_probability"] = p
    out["tier"] = pd.Series(tier, index=base.index, dtype="str")
    out["tier_proposed"] = pd.Series(result.proposed, index=base.index, dtype="str")
    out["escalated_by"] = pd.Series(result.escalated_by, index=base.index, dtype="str")
    out["escalated"] = out["escalated_by"].notna()
    base_rate = policy.rate(p)
    references = reference_values(base, p < base_rate, bundle.features)
    rows = np.ones(len(base), dtype=bool) if explain_all else tier != "green"
    asked = ReasonAsk(references, signals_present(base, bundle.features), actions, top_k)
    explained = reasons_base(base, bundle, rows, tier, out["escalated"].to_numpy(), asked, compute)
    out = pd.concat([out, explained], axis=1)
    out["monthly_value"] = monthly
    out["customer_value"] = money
    out["revenue_at_risk"] = p * money
    out["expected_loss"] = p * money
    out["previous_probability"] = _previous_probability(base["customer_id"], previous)
    out["owner"] = base["owner"].astype("str")
    out["segment"] = base["segment"].astype("str")
    out["plan"] = (
        base["plan"].astype("str")
        if "plan" in base
        else pd.Series(None, index=base.index, dtype="str")
    )
    out["last_activity_at"] = base["last_activity_at"]
    out["upsell_candidate"] = upsell_candidates(base, tier, money, references)
    upsell = out["upsell_candidate"] & out["recommended_action"].isna()
    out.loc[upsell, "reason_family"] = "upsell"
    out.loc[upsell, "recommended_action"] = (actions or ExplainConfig().actions).get("upsell")
    out["model_version"] = str(bundle.card.get("model_version"))
    out["base_rate"] = base_rate
    out["horizon_days"] = horizon_days
    out["value_basis"] = value_words(value)
    out["tier_policy"] = policy.describe(base_rate)
    return out.reset_index(drop=True)


CHUNK_ROWS = 100_000
"""Rows per task when the base is split (at least one task per worker)."""


def scoring_compute(compute: ComputeConfig, rows: int) -> ComputeConfig:
    """``compute`` for scoring a base of ``rows`` customers: ``n_jobs: -1`` (every core) scores
    in this process, where LightGBM's prediction and TreeSHAP already use every core. On 2
    cores, 2 worker processes gave no dependable gain at 1M rows (``make bench``, two runs:
    0.84× and 1.24× the in-process time, the in-process run itself 6.5 and 8.4 s). An explicit
    ``n_jobs`` or the Dask engine is kept as configured: a cluster, or many cores and a
    sentence-heavy list, can pay for it."""
    if compute.engine == "local" and compute.n_jobs == -1:
        return compute.model_copy(update={"n_jobs": 1})
    return compute


def chunk_bounds(rows: int, compute: ComputeConfig) -> list[tuple[int, int]]:
    """Contiguous row ranges [lo, hi) of the base, one per task: one range in this process, else
    at least one per worker and at most ``CHUNK_ROWS`` rows each (never an empty one).

    Rows, not the event store's partitions: a partition is sized by its events, scoring costs
    per row, the reasons run on the red and orange rows only, and ``score_frame`` takes any
    frame (no store behind it)."""
    if compute.engine == "local" and workers(compute, max(rows, 1)) == 1:
        return [(0, rows)]
    n = min(max(rows, 1), max(workers(compute, max(rows, 1)), -(-rows // CHUNK_ROWS)))
    edges = np.linspace(0, rows, n + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def predict_chunk(frame: pd.DataFrame, bundle: ModelBundle) -> np.ndarray:
    """Task: calibrated probabilities of one chunk of the base (pure; pickles to a worker)."""
    return bundle.predict(frame)


def predict_base(base: pd.DataFrame, bundle: ModelBundle, compute: ComputeConfig) -> np.ndarray:
    """Calibrated probabilities of every row of ``base``, chunk by chunk on ``compute``."""
    bounds = chunk_bounds(len(base), compute)
    if len(bounds) == 1:
        return predict_chunk(base, bundle)  # ModelBundle.predict checks the features
    kinds = {f["name"]: f["kind"] for f in bundle.card["features"]}
    check_features(base, bundle.features, kinds)  # here, before a worker sees a chunk
    model_rows = base[bundle.features]  # one copy; the chunks are slices of it
    chunks = [model_rows.iloc[lo:hi] for lo, hi in bounds]
    log.debug("probabilities of %d rows in %d chunks (%s)", len(base), len(chunks), compute)
    return np.concatenate(run_tasks(predict_chunk, chunks, compute, bundle))


@dataclass(frozen=True)
class ReasonAsk:
    """What the reasons of every chunk share, judged on the whole base: the low-risk
    ``references`` (``reference_values``), the features whose signals occur (``present``,
    ``signals_present``), the action catalogue and the number of reasons."""

    references: pd.DataFrame
    present: set[str]
    actions: dict[str, str] | None
    top_k: int


@dataclass(frozen=True)
class ReasonChunk:
    """Rows to explain (model features, and ``lifecycle_stage``) and, per row, whether
    escalation lifted it and whether it must get a reason (red)."""

    frame: pd.DataFrame
    escalated: np.ndarray
    required: np.ndarray


def reasons_chunk(chunk: ReasonChunk, bundle: ModelBundle, asked: ReasonAsk) -> pd.DataFrame:
    """Task: TreeSHAP contributions, reasons and action for one chunk (pure; pickles)."""
    frame, names = chunk.frame, bundle.features
    contributions = (
        bundle.model.contributions(frame) if len(frame) else np.zeros((0, len(names) + 1))
    )
    return explain(
        frame,
        contributions,
        names,
        asked.references,
        asked.actions or ExplainConfig().actions,
        top_k=asked.top_k,
        escalated=chunk.escalated,
        required=chunk.required,
        present=asked.present,
    )


def reasons_base(
    base: pd.DataFrame,
    bundle: ModelBundle,
    rows: np.ndarray,
    tier: np.ndarray,
    escalated: np.ndarray,
    asked: ReasonAsk,
    compute: ComputeConfig,
) -> pd.DataFrame:
    """Reasons and action for the ``rows`` someone will read (red and orange, or everyone),
    chunk by chunk on ``compute``; the other rows empty. Same index as ``base``."""
    escalated, red = escalated[rows], tier[rows] == "red"
    bounds = chunk_bounds(int(rows.sum()), compute)
    if len(bounds) == 1:
        chunk = ReasonChunk(base[rows], escalated, red)
        return reasons_chunk(chunk, bundle, asked).reindex(base.index)
    stage = ["lifecycle_stage"] if "lifecycle_stage" in base else []
    chosen = base.loc[rows, list(dict.fromkeys([*bundle.features, *stage]))]  # what explain reads
    chunks = [ReasonChunk(chosen.iloc[lo:hi], escalated[lo:hi], red[lo:hi]) for lo, hi in bounds]
    log.debug("reasons of %d rows in %d chunks (%s)", len(chosen), len(chunks), compute)
    frames = run_tasks(reasons_chunk, chunks, compute, bundle, asked)
    return pd.concat(frames).reindex(base.index)


@contextmanager
def scoring_runner(compute: ComputeConfig, rows: int) -> Iterator[ComputeConfig]:
    """The runner for scoring a base of ``rows`` (``scoring_compute``). For the Dask engine
    without a scheduler, one LocalCluster serves both maps (probabilities, then reasons) and
    the yielded config points at it: ``run_tasks`` alone would start one per map."""
    compute = scoring_compute(compute, rows)
    n_tasks = len(chunk_bounds(rows, compute))
    if n_tasks == 1:
        yield compute
        return
    with shared_cluster(compute, workers(compute, n_tasks)) as shared:
        yield shared


def _previous_probability(customer_id: pd.Series, previous: pd.DataFrame | None) -> pd.Series:
    if previous is None or "churn_probability" not in previous:
        return pd.Series(np.nan, index=customer_id.index)
    keyed = previous.drop_duplicates("customer_id").set_index("customer_id")["churn_probability"]
    return customer_id.map(keyed).astype(np.float64)


def score_base(
    base: Base,
    bundle: ModelBundle,
    config: Config,
    features: FeatureConfig,
    tiers: TierConfig,
    horizon_days: int,
    explain_all: bool = False,
    previous: pd.DataFrame | None = None,
) -> ScoringResult:
    """Rejects, scores and the reconciled summary for one base (pure apart from logging).
    ``previous``: the previous distinct as_of's scores, for the tier policy's hysteresis."""
    frame = base.features
    reasons = reject_reasons(frame, bundle.features, features.onboarding_days)
    bad = reasons.notna().to_numpy()
    rejects = frame.loc[bad, [*KEYS, "owner", "segment"]].assign(reason=reasons[bad])
    empty = empty_reason(base.counts, int(bad.sum()), base.as_of) if bad.all() else None
    with warnings.catch_warnings(), scoring_runner(config.compute, int((~bad).sum())) as compute:
        if empty:  # medians of no rows: the empty outputs are the answer, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
        scores = score_frame(
            frame[~bad].reset_index(drop=True),
            bundle,
            tiers,
            config.value,
            top_k=config.explain.top_k,
            actions=config.explain.actions,
            explain_all=explain_all or config.explain.explain == "all",
            horizon_days=horizon_days,
            gross_margin=config.kpis.gross_margin,
            previous=previous,
            compute=compute,
        )
    summary = summarise(
        scores, rejects.reset_index(drop=True), base.counts, bundle, tiers, base.as_of
    )
    if empty:
        log.warning("%s", empty)
        summary["empty_reason"] = empty
    _warn_unknown_categories(frame[~bad], bundle)
    return ScoringResult(scores, rejects.reset_index(drop=True), summary)


def empty_reason(counts: dict[str, int], rejected: int, as_of: pd.Timestamp) -> str:
    """Why nobody was scored at ``as_of`` (written to the summary beside the empty files)."""
    day = pd.Timestamp(as_of).date()
    if counts["base"]:
        return f"nobody scored at as_of {day}: all {rejected} customers in the base were rejected"
    return (
        f"nobody to score at as_of {day}: of {counts['customers_valid']} valid customers,"
        f" {counts.get('not_yet_signed_up', 0)} signed up on or after it,"
        f" {counts.get('churned_before_as_of', 0)} churned before it and"
        f" {counts.get('lapsed_not_in_base', 0)} lapsed; empty scores written. Check --as-of"
        " (before every signup?) and the customers file (all churned?)"
    )


def summarise(
    scores: pd.DataFrame,
    rejects: pd.DataFrame,
    counts: dict[str, int],
    bundle: ModelBundle,
    tiers: TierConfig,
    as_of: pd.Timestamp,
) -> dict:
    """The run summary; raises when customers in base ≠ scored + rejected."""
    scored, rejected = len(scores), len(rejects)
    if counts["base"] != scored + rejected:
        raise RuntimeError(
            f"reconciliation failed: {counts['base']} customers in the base but {scored} scored"
            f" + {rejected} rejected"
        )
    by_tier = scores.groupby("tier", observed=True)
    tier_counts = {t: int(by_tier.size().get(t, 0)) for t in reversed(TIERS)}
    at_risk = by_tier["revenue_at_risk"].sum()
    return {
        "as_of": str(pd.Timestamp(as_of).date()),
        "model": {
            "name": bundle.card.get("model_name"),
            "version": str(bundle.card.get("model_version")),
            "mlflow_run_id": bundle.card.get("mlflow_run_id"),
            "sha256": bundle.card.get("model_sha256"),
            "size": bundle.card.get("size"),
        },
        "tier_policy": _policy_words(scores, tiers, bundle),
        "base_rate": round(float(scores["base_rate"].iloc[0]), 6) if scored else None,
        "escalated": int(scores["escalated_by"].notna().sum()) if scored else 0,
        "listed_per_owner_max": int(scores[scores["tier"] != "green"].groupby("owner").size().max())
        if (scores["tier"] != "green").any()
        else 0,
        "value_basis": scores["value_basis"].iloc[0] if scored else None,
        "customers": {**counts, "scored": scored, "rejected": rejected, "reconciled": True},
        "reject_reasons": {str(k): int(v) for k, v in rejects["reason"].value_counts().items()},
        "tiers": tier_counts,
        "revenue_at_risk": {
            "total": round(float(scores["revenue_at_risk"].sum()), 2),
            **{t: round(float(at_risk.get(t, 0.0)), 2) for t in ("red", "orange", "green")},
        },
        "explained": int(scores["reason_1_sentence"].notna().sum()) if scored else 0,
        "red_without_reason": int(
            ((scores["tier"] == "red") & scores["reason_1_sentence"].isna()).sum()
        ),
        "upsell_candidates": int(scores["upsell_candidate"].sum()) if scored else 0,
        "mean_churn_probability": round(float(scores["churn_probability"].mean()), 6)
        if scored
        else None,
    }


def _policy_words(scores: pd.DataFrame, tiers: TierConfig, bundle: ModelBundle) -> str:
    """The policy in words as the scores state it (with their base rate), or from the config."""
    if len(scores):
        return str(scores["tier_policy"].iloc[0])
    return tier_policy(tiers, bundle.card.get("base_rate")).describe()


def _warn_unknown_categories(frame: pd.DataFrame, bundle: ModelBundle) -> None:
    for column, known in (bundle.card.get("categories") or {}).items():
        if column in frame:
            unknown = frame[column].astype("str")[~frame[column].astype("str").isin(known)]
            if len(unknown):
                log.warning(
                    "%d customers have a '%s' the model never saw (%s); scored as missing",
                    len(unknown),
                    column,
                    sorted(unknown.unique())[:5],
                )


class ChampionError(ScoringError):
    """No usable champion for this project, or two that disagree; the message says the fix."""


def load_champion(config: Config, models_dir: Path | None = None) -> tuple[ModelBundle, str]:
    """This project's champion bundle and where it came from; never another project's model.

    The registry's ``<model_name>@champion`` when the tracking store is reachable (its bundle
    verified, and equal to the exported one in ``models/<project>/champion`` when that exists;
    a missing export is written from it), else the exported bundle. ``ChampionError`` when there
    is none, when a bundle fails its manifest, or when the registry and the export disagree.
    """
    folder = models_dir or paths.champion_dir(config)
    exported = _verified(folder, f"the exported bundle '{folder}'")
    tc = config.train
    if tracking.store_reachable(tc.tracking_uri):
        tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
        with tempfile.TemporaryDirectory() as tmp:
            found = _registry_download(config, Path(tmp))
            if found is not None:
                return _registry_champion(config, found, folder, exported)
        if exported is not None:
            raise ChampionError(
                f"project '{config.project}': the exported bundle '{folder}' holds"
                f" {_describe_bundle(exported[0])} but the registry ({tc.tracking_uri}) has no"
                f" '{tc.model_name}@champion'. Retrain (churn train --config ...) or point"
                " train.tracking_uri at the store that registered it"
            )
    if exported is None:
        raise ChampionError(
            f"project '{config.project}' has no champion model: no '{tc.model_name}@champion' in"
            f" the registry ({tc.tracking_uri}) and no exported bundle in '{folder}'. Train one"
            " first: churn train --config <this config>"
        )
    _same_project(exported[0], config, str(folder))
    return exported[0], f"exported bundle {folder}"


def _registry_download(config: Config, tmp: Path) -> tuple[Path, str, str] | None:
    """The registry champion's bundle folder, version and run id (None: no champion)."""
    tc = config.train
    try:
        return tracking.champion_bundle(tc.model_name, tmp)
    except Exception as error:  # a registry that answers but cannot serve it: say so, stop
        raise ChampionError(
            f"project '{config.project}': cannot read '{tc.model_name}@champion' from the"
            f" registry ({tc.tracking_uri}): {error}"
        ) from None


def _verified(folder: Path, what: str) -> tuple[ModelBundle, dict[str, str]] | None:
    """(bundle, manifest) of a folder, None when there is no bundle; ``ChampionError`` when
    its files do not match its manifest."""
    from pipeline.model import BUNDLE_MODEL, BundleError, verify_bundle

    if not (recover_dir(folder) / BUNDLE_MODEL).exists():
        return None
    try:
        return ModelBundle.load(folder), verify_bundle(folder)
    except BundleError as error:
        raise ChampionError(f"{what} is refused: {error}") from None


def _registry_champion(
    config: Config,
    found: tuple[Path, str, str],
    folder: Path,
    exported: tuple[ModelBundle, dict[str, str]] | None,
) -> tuple[ModelBundle, str]:
    """The registry champion, checked against the export (or exported when there is none)."""
    from pipeline.model import BUNDLE_FILES, export_bundle

    source_dir, version, run_id = found
    name = config.train.model_name
    bundle, digests = _verified(source_dir, f"the registry artifact of {name} v{version}")
    bundle.register(name, version, run_id)
    _same_project(bundle, config, f"registry {name} v{version}")
    if exported is None:
        export_bundle(source_dir, folder, bundle.registration)
        log.info("exported the registry champion %s v%s to %s", name, version, folder)
    elif exported[0].registration != bundle.registration or any(
        exported[1].get(f) != digests.get(f) for f in BUNDLE_FILES
    ):
        raise ChampionError(
            f"project '{config.project}': the registry champion {name} v{version} (run {run_id})"
            f" and the exported bundle '{folder}' ({_describe_bundle(exported[0])}) disagree."
            f" Remove '{folder}' to re-export the registry champion on the next score, or move"
            f" the alias: MlflowClient().set_registered_model_alias('{name}', 'champion', V)"
        )
    return bundle, f"registry {name}@champion (v{version}, run {run_id})"


def _describe_bundle(bundle: ModelBundle) -> str:
    reg = bundle.registration or {}
    return f"{reg.get('model_name')} v{reg.get('version')} (run {reg.get('run_id')})"


def _same_project(bundle: ModelBundle, config: Config, where: str) -> None:
    if bundle.card.get("model_name") != config.train.model_name:
        raise ChampionError(
            f"{where} holds model '{bundle.card.get('model_name')}', not this project's"
            f" '{config.train.model_name}' (project '{config.project}'): it was copied from"
            " another project. Remove it and train this project: churn train --config ..."
        )


def default_out(config: Config) -> Path:
    """The latest published scores of this project (what ``churn export`` reads by default)."""
    return paths.latest_scores(paths.output_dir(config))


def history_path(output_dir: Path, as_of: pd.Timestamp) -> Path:
    """The kept copy of the scores for one as_of (the export compares against these)."""
    return paths.history_path(output_dir, as_of)


def _run_files(scores: Path) -> dict[str, Path]:
    scores = Path(scores)
    return {
        "scores": scores,
        "rejects": scores.with_name(f"{scores.stem}_rejects.csv"),
        "summary": scores.with_name(f"{scores.stem}_summary.json"),
    }


def _write_set(result: ScoringResult, files: dict[str, Path], named: dict[str, Path]) -> None:
    """Scores, rejects (header only when none) and the summary (naming ``named``) to ``files``."""
    write_frame(result.scores, files["scores"])
    write_frame(result.rejects, files["rejects"])
    listed = {k: str(v) for k, v in named.items()}
    write_json(result.summary | {"files": listed}, files["summary"])


def write_outputs(result: ScoringResult, out: Path, output_dir: Path) -> dict[str, Path]:
    """Scores (Parquet) at the explicit path ``out``, rejects and summary beside it, each file
    atomic (the summary last), and the history copy. ``publish_run`` writes them as one set."""
    paths_ = _run_files(out)
    paths_["history"] = history_path(output_dir, pd.Timestamp(result.summary["as_of"]))
    _write_set(result, paths_, paths_)
    write_frame(result.scores, paths_["history"])
    return paths_


def publish_run(result: ScoringResult, output_dir: Path) -> dict[str, Path]:
    """Publish one run as a set: its files are written to a staging folder that replaces
    ``scores/<as_of>/`` in one rename, then the history copy and the ``scores/LATEST`` pointer
    (moved only forward in as_of: a backfill does not hide the newest run) are written, each
    atomically. A kill at any point leaves every published run whole."""
    as_of = pd.Timestamp(result.summary["as_of"])
    target = paths.run_dir(output_dir, as_of)
    final = _run_files(target / paths.SCORES_FILE)
    final["history"] = history_path(output_dir, as_of)
    with staged_dir(target) as staging:
        _write_set(result, _run_files(staging / paths.SCORES_FILE), final)
    write_frame(result.scores, final["history"])
    latest = paths.latest_run_dir(output_dir)
    if latest is None or latest.name <= str(as_of.date()):  # a backfill leaves LATEST as is
        write_text(f"{as_of.date()}\n", paths.latest_pointer(output_dir))
    return final


def run_scoring(
    config: Config,
    data: ValidatedData,
    as_of: pd.Timestamp | str | None = None,
    out: Path | None = None,
    explain_all: bool = False,
    tiers_from_config: bool = False,
) -> tuple[ScoringResult, dict[str, Path]]:
    """The whole scoring job (see module docstring). I/O: registry or models/, outputs, MLflow."""
    bundle, source = load_champion(config)
    log.info("model: %s v%s from %s", bundle.card.get("model_name"), _version(bundle), source)
    stamp = resolve_as_of(as_of, data.observed_until)
    feature_cfg, label_cfg, tier_cfg = model_settings(bundle.card, config, tiers_from_config)
    base = build_base(data, stamp, feature_cfg, label_cfg)
    check(base.features, FEATURES, "scoring features")
    output_dir = paths.output_dir(config)
    previous, _ = previous_scores(paths.history_dir(output_dir), stamp)
    result = score_base(
        base, bundle, config, feature_cfg, tier_cfg, label_cfg.horizon_days, explain_all, previous
    )
    result.summary["model"]["source"] = source
    result.features, result.bundle = base.features, bundle
    check(result.scores, SCORES, "scores")
    if out is None:
        files = publish_run(result, output_dir)
    else:
        files = write_outputs(result, out, output_dir)
    _track(config, result.summary, files)
    return result, files


def _version(bundle: ModelBundle) -> str:
    return str(bundle.card.get("model_version"))


def _track(config: Config, summary: dict, files: dict[str, Path]) -> None:
    """A scoring MLflow run linked to the model's run, when the tracking store is reachable."""
    tc = config.train
    if not tracking.store_reachable(tc.tracking_uri):
        log.info("tracking store not reachable: scoring run not logged to MLflow")
        return
    tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
    metrics = {f"tier_{t}": n for t, n in summary["tiers"].items()}
    metrics |= {f"revenue_at_risk_{k}": v for k, v in summary["revenue_at_risk"].items()}
    metrics |= {k: v for k, v in summary["customers"].items() if not isinstance(v, bool)}
    run_id = tracking.log_linked_run(
        "score",
        summary["model"]["mlflow_run_id"],
        summary["model"]["version"],
        params={
            "as_of": summary["as_of"],
            "model_source": summary["model"]["source"],
            "tier_policy": summary["tier_policy"],
            "scores_file": str(files["scores"]),
        },
        metrics=metrics,
        artifacts=[files["summary"]],
    )
    log.info(
        "MLflow scoring run %s (linked to model run %s)", run_id, summary["model"]["mlflow_run_id"]
    )


__all__ = [
    "Base",
    "ChampionError",
    "ScoringError",
    "ScoringResult",
    "build_base",
    "customer_value",
    "load_champion",
    "publish_run",
    "reject_reasons",
    "resolve_as_of",
    "run_scoring",
    "score_base",
    "score_frame",
]
