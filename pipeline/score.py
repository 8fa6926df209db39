"""Batch scoring: the whole customer base at one as_of → calibrated probability, tier, reasons.

Flow (``run_scoring``): champion bundle (registry alias ``champion`` when the tracking store is
reachable, else ``models/champion``) → validated inputs → one feature pass at as_of with the
builders, feature settings and label settings the model was trained with → rejects (rows that
cannot be scored honestly, each with a reason) → calibrated probability → value and revenue at
risk → tier under the model card's policy → reasons and action for red and orange (or everyone)
→ Parquet scores, rejects CSV, summary JSON (atomic; identical bytes for the same inputs).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.config import (
    Config,
    ExplainConfig,
    FeatureConfig,
    LabelConfig,
    TierConfig,
    ValueConfig,
)
from pipeline.events import InputError, ValidatedData
from pipeline.explain import explain, reference_values, upsell_candidates
from pipeline.features import KEYS, NAN_WHEN_UNDEFINED, build_features_for_grid, map_partitions
from pipeline.features.daily import product_features
from pipeline.features.grid import Grid, normalise_as_of
from pipeline.io import write_frame, write_json
from pipeline.labels import in_base, lapsed, lookback_days
from pipeline.model import ModelBundle
from pipeline.schemas import FEATURES, SCORES, check
from pipeline.tiers import assign_tiers, describe_policy, escalation_flags

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
    """Scores (one row per scored customer), rejects (one row per rejected one), run summary."""

    scores: pd.DataFrame
    rejects: pd.DataFrame
    summary: dict = field(default_factory=dict)


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
        data.con,
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
    n_features = len(product_features(data.con))
    return Base(frame[member].reset_index(drop=True), counts, n_features, as_of)


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


def customer_value(
    mrr: np.ndarray,
    probability: np.ndarray,
    value: ValueConfig,
    horizon_days: int,
    gross_margin: float = 1.0,
) -> np.ndarray:
    """Money at stake per customer, in the currency of ``mrr``.

    ``mrr_months``: MRR × ``value.months``. ``clv``: MRR × gross margin ÷ the base's monthly churn
    rate, where the monthly rate comes from the mean calibrated probability over the horizon
    (1 − (1 − p̄)^(months per horizon)⁻¹), capped at 120 months of lifetime.
    """
    mrr = np.asarray(mrr, dtype=np.float64)
    if value.basis == "mrr_months":
        return mrr * value.months
    horizon_months = horizon_days / DAYS_PER_MONTH
    p_bar = float(np.clip(np.mean(probability), 1e-6, 1 - 1e-6)) if len(probability) else 0.5
    monthly = 1.0 - (1.0 - p_bar) ** (1.0 / horizon_months)
    return mrr * gross_margin * min(1.0 / monthly, 120.0)


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
) -> pd.DataFrame:
    """Probability, tier, value, reasons and action for every row of ``base`` (pure).

    ``base`` holds the model's features (checked against the card: a missing feature or a dtype
    of another kind raises ``FeatureMismatchError``), ``customer_id``, ``as_of``, ``owner``,
    ``segment`` and ``last_activity_at``. Reasons for red and orange rows, or all with
    ``explain_all``; ``revenue_at_risk`` = ``expected_loss`` = probability × customer value.
    ``escalated``: the tier was lifted by the escalation rule (the complaint is then reason 1).
    """
    names = bundle.features
    p = bundle.predict(base)
    money = customer_value(base["mrr"].to_numpy(), p, value, horizon_days, gross_margin)
    tier = assign_tiers(p, tiers, money, escalation_flags(base, tiers))
    escalated = tier != assign_tiers(p, tiers, money)  # lifted by the escalation rule
    references = reference_values(base, tier == "green", names)
    rows = np.ones(len(base), dtype=bool) if explain_all else tier != "green"
    explained = explain(
        base[rows],
        bundle.model.contributions(base[rows]) if rows.any() else np.zeros((0, len(names) + 1)),
        names,
        references,
        actions or ExplainConfig().actions,
        top_k=top_k,
        escalated=escalated[rows],
        required=tier[rows] == "red",
    ).reindex(base.index)
    out = base[["customer_id", "as_of"]].copy()
    out["churn_probability"] = p
    out["tier"] = pd.Series(tier, index=base.index, dtype="str")
    out["escalated"] = escalated
    out = pd.concat([out, explained], axis=1)
    out["customer_value"] = money
    out["revenue_at_risk"] = p * money
    out["expected_loss"] = p * money
    out["owner"] = base["owner"].astype("str")
    out["segment"] = base["segment"].astype("str")
    out["last_activity_at"] = base["last_activity_at"]
    out["upsell_candidate"] = upsell_candidates(base, tier, money, references)
    out["model_version"] = str(bundle.card.get("model_version"))
    out["tier_policy"] = describe_policy(tiers)
    return out.reset_index(drop=True)


def score_base(
    base: Base,
    bundle: ModelBundle,
    config: Config,
    features: FeatureConfig,
    tiers: TierConfig,
    horizon_days: int,
    explain_all: bool = False,
) -> ScoringResult:
    """Rejects, scores and the reconciled summary for one base (pure apart from logging)."""
    frame = base.features
    reasons = reject_reasons(frame, bundle.features, features.onboarding_days)
    bad = reasons.notna().to_numpy()
    rejects = frame.loc[bad, [*KEYS, "owner", "segment"]].assign(reason=reasons[bad])
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
    )
    summary = summarise(
        scores, rejects.reset_index(drop=True), base.counts, bundle, tiers, base.as_of
    )
    _warn_unknown_categories(frame[~bad], bundle)
    return ScoringResult(scores, rejects.reset_index(drop=True), summary)


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
    tier_counts = {t: int(by_tier.size().get(t, 0)) for t in ("red", "orange", "green")}
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
        "tier_policy": describe_policy(tiers),
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


def load_champion(config: Config, models_dir: Path | None = None) -> tuple[ModelBundle, str]:
    """The champion bundle and where it came from: the registry alias when the tracking store is
    reachable and has a champion, else the exported bundle in ``models/champion``."""
    tc = config.train
    if tracking.store_reachable(tc.tracking_uri):
        try:
            tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
            with tempfile.TemporaryDirectory() as tmp:
                found = tracking.champion_bundle(tc.model_name, Path(tmp))
                if found is not None:
                    folder, version, run_id = found
                    source = f"registry {tc.model_name}@champion (v{version}, run {run_id})"
                    return ModelBundle.load(folder), source
            log.info("registry has no champion for '%s'", tc.model_name)
        except Exception as error:  # a broken registry must not stop scoring from the bundle
            log.warning("cannot load the champion from the registry: %s", error)
    folder = models_dir or config.models_dir / "champion"
    return ModelBundle.load(folder), f"exported bundle {folder}"


def default_out(config: Config) -> Path:
    """Where ``churn score`` writes the latest scores by default."""
    return config.data.output_dir / "scores" / "scores.parquet"


def history_path(output_dir: Path, as_of: pd.Timestamp) -> Path:
    """The kept copy of the scores for one as_of (the export compares against these)."""
    return Path(output_dir) / "scores" / "history" / f"scores_{pd.Timestamp(as_of).date()}.parquet"


def write_outputs(result: ScoringResult, out: Path, output_dir: Path) -> dict[str, Path]:
    """Scores (Parquet), their history copy, rejects (CSV, header only when none) and the
    summary (JSON), each written atomically; the summary last."""
    out = Path(out)
    paths = {
        "scores": out,
        "history": history_path(output_dir, pd.Timestamp(result.summary["as_of"])),
        "rejects": out.with_name(f"{out.stem}_rejects.csv"),
        "summary": out.with_name(f"{out.stem}_summary.json"),
    }
    write_frame(result.scores, paths["scores"])
    write_frame(result.scores, paths["history"])
    write_frame(result.rejects, paths["rejects"])
    write_json(result.summary | {"files": {k: str(v) for k, v in paths.items()}}, paths["summary"])
    return paths


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
    result = score_base(
        base, bundle, config, feature_cfg, tier_cfg, label_cfg.horizon_days, explain_all
    )
    result.summary["model"]["source"] = source
    check(result.scores, SCORES, "scores")
    paths = write_outputs(result, out or default_out(config), config.data.output_dir)
    _track(config, result.summary, paths)
    return result, paths


def _version(bundle: ModelBundle) -> str:
    return str(bundle.card.get("model_version"))


def _track(config: Config, summary: dict, paths: dict[str, Path]) -> None:
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
            "scores_file": str(paths["scores"]),
        },
        metrics=metrics,
        artifacts=[paths["summary"]],
    )
    log.info(
        "MLflow scoring run %s (linked to model run %s)", run_id, summary["model"]["mlflow_run_id"]
    )


__all__ = [
    "Base",
    "ScoringError",
    "ScoringResult",
    "build_base",
    "customer_value",
    "load_champion",
    "reject_reasons",
    "resolve_as_of",
    "run_scoring",
    "score_base",
    "score_frame",
]
