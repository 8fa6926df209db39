"""Typed configuration, read once by the CLI and passed down.

Every section forbids unknown keys, so a typo such as ``horizon_day`` is an error that names the
key and the allowed ones instead of a silently ignored setting. Relative paths in a config file
are resolved against the current working directory (the project root when run through make).
"""

from __future__ import annotations

import re
import types
import typing
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.contract import CAP, CONTRACT, DECIMALS, DELIMITERS, THOUSANDS, cap

FAMILIES: tuple[str, ...] = (
    "login",
    "feature_use",
    "complaint",
    "support_ticket",
    "payment_failed",
    "purchase",
    "payment",
)
"""Signal families that raw ``event_type`` values map to (see ``EventTypes``)."""
FAMILY_CODES: dict[str, int] = {family: code for code, family in enumerate(FAMILIES, start=1)}
"""Small integer per signal family in the compact event store (0 = an unmapped event type)."""


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: object, info: ValidationInfo) -> object:
        """Numbers and booleans as written: ``horizon_days: true`` is not 1 day, ``"90"`` is
        not 90 and ``yes``/``1`` are not booleans unless YAML reads them as such."""
        kind = _scalar_kind(cls.model_fields[info.field_name].annotation)
        if kind == "number" and isinstance(value, bool | str):
            raise ValueError(f"expected a number, got {cap(repr(value))}")
        if kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {cap(repr(value))}")
        return value


def _scalar_kind(annotation: object) -> str | None:
    """'number' for int/float fields, 'bool' for booleans (optional or not), else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = {_scalar_kind(a) for a in args if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if typing.get_origin(annotation) is Annotated:
        return _scalar_kind(args[0])
    if annotation is bool:
        return "bool"
    return "number" if annotation in (int, float) else None


class DataConfig(_Section):
    """Where the user's data lives. ``events`` and ``customers`` may be Parquet or CSV."""

    events: Path
    customers: Path
    hazard: Path | None = None
    """Demo only: the simulator's true hazard, used to report an oracle score beside the model."""
    output_dir: Path = Path("outputs")
    observed_until: date | None = None
    """End of the observed log (exclusive, UTC midnight). Events at or after it are rejected as
    'in the future'; labels whose window runs past it are unknown. Default: the day after the
    last valid event."""
    delimiter: Literal[DELIMITERS] | None = None
    """CSV field separator; default: detected from the header line (``,`` ``;`` tab ``|``)."""
    decimal: Literal[DECIMALS] | None = None
    """Decimal mark of amount and mrr in text files (``"."`` or ``","``); default: detected
    from the values and reported."""
    thousands: Literal[THOUSANDS] | None = None
    """Thousands separator in text numbers (e.g. ``"."`` in 1.234,50); default: detected."""
    dayfirst: bool = False
    """Dates written day first (04/03/2025 is 4 March); ISO dates are read either way."""
    epoch_unit: Literal["s", "ms"] | None = None
    """``occurred_at`` holds epoch seconds (``s``) or milliseconds (``ms``) since 1970, UTC."""

    @field_validator("events", "customers")
    @classmethod
    def _known_suffix(cls, path: Path) -> Path:
        if path.suffix.lower() not in {".parquet", ".csv"}:
            raise ValueError(f"'{cap(path)}' must end in .parquet or .csv")
        return path

    @field_validator("observed_until")
    @classmethod
    def _plausible_date(cls, day: date | None) -> date | None:
        if day is not None and not date(1971, 1, 1) <= day <= date(2261, 12, 31):
            raise ValueError(f"{day} is out of range; use a date between 1971 and 2261")
        return day

    @model_validator(mode="after")
    def _distinct_separators(self) -> DataConfig:
        if self.decimal and self.thousands == self.decimal:
            raise ValueError(
                f"decimal and thousands are both {self.decimal!r}; set different separators"
            )
        return self


class ColumnsConfig(_Section):
    """The user's column names for ours, only where they differ (``contract name: user name``).

    ``events``: customer_id, occurred_at, event_type, feature, amount, severity;
    ``customers``: customer_id, signup_at, churned_at, plan, mrr, owner, segment.
    """

    events: dict[str, str] = {}
    customers: dict[str, str] = {}

    @field_validator("events", "customers")
    @classmethod
    def _contract_names(cls, mapping: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        allowed = CONTRACT[info.field_name]
        unknown = [cap(k, 60) for k in mapping if k not in allowed]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; allowed: {list(allowed)}")
        blank = [k for k, v in mapping.items() if not v.strip()]
        if blank:
            raise ValueError(f"{blank} mapped to an empty name; give the file's column name")
        users = [v.lower() for v in mapping.values()]
        twice = sorted({cap(v, 60) for v in mapping.values() if users.count(v.lower()) > 1})
        if twice:
            raise ValueError(f"column(s) {twice} mapped to more than one of ours; map each once")
        return mapping


class EventTypes(_Section):
    """Which raw ``event_type`` values belong to which signal family.

    Absent families are simply not used. Values not listed anywhere are kept as generic activity,
    counted and reported as unknown types.
    """

    login: list[str] = []
    feature_use: list[str] = []
    complaint: list[str] = []
    support_ticket: list[str] = []
    payment_failed: list[str] = []
    purchase: list[str] = []
    payment: list[str] = []
    """Successful recurring payments (invoices); their ``amount`` is the period's charge and
    gives the MRR history."""

    @model_validator(mode="after")
    def _each_type_in_one_family(self) -> EventTypes:
        seen: dict[str, str] = {}
        for family in FAMILIES:
            for raw in getattr(self, family):
                if raw in seen:
                    raise ValueError(
                        f"event type '{raw}' is listed under both '{seen[raw]}' and '{family}';"
                        " list it under one family only"
                    )
                seen[raw] = family
        return self

    def mapping(self) -> dict[str, str]:
        """Raw event type → family."""
        return {raw: family for family in FAMILIES for raw in getattr(self, family)}


class ValidationConfig(_Section):
    max_reject_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    """The run fails when rejected rows exceed this share of the input."""
    partition_customers: Annotated[int, Field(ge=1000)] = 10_000
    """Customers per partition of the compact event store; features are built one partition
    at a time, so memory stays bounded whatever the size of the log."""


class DaskConfig(_Section):
    scheduler: str | None = None
    """Address of a running scheduler (``tcp://host:8786``); unset: a LocalCluster here."""
    n_workers: Annotated[int, Field(ge=1)] | None = None
    """Workers of the LocalCluster (default ``compute.n_jobs``); unused with ``scheduler``."""
    processes: bool = True
    """LocalCluster workers as processes (true) or threads of this process (false)."""
    distributed_training: bool = False
    """Fit the production model with ``lightgbm.dask`` across the cluster's workers instead of
    on this machine (needs ``compute.engine: dask``). For a training set too large for one
    machine; the backtest stays local (it needs early stopping) and chooses the rounds. The
    model differs slightly from a local fit (README, "Distributed training")."""


class ComputeConfig(_Section):
    engine: Literal["local", "dask"] = "local"
    """Where the partitions of the event store are processed: ``local`` (joblib processes on
    this machine) or ``dask`` (dask.distributed; ``pip install .[dask]``)."""
    n_jobs: Annotated[int, Field(ge=-1)] = -1
    """Worker processes for ``engine: local``: -1 = every core (a log under 1M events runs in
    this process, where starting workers would cost more than they save), 1 = in this
    process. Results are the same bytes whatever the number."""
    dask: DaskConfig = DaskConfig()
    store_dir: str | Path | None = None
    """Folder under which validation writes the event store (removed after the run); with a
    remote Dask scheduler, a folder every worker can read at the same path (a shared mount), or
    any fsspec URL they can all read (``s3://bucket/prefix`` with s3fs installed).
    Default: the system's temporary folder."""

    @field_validator("store_dir")
    @classmethod
    def _known_filesystem(cls, value: str | Path | None) -> str | Path | None:
        """A local folder (``file://`` URLs too) as a Path; another URL kept as text once
        fsspec knows its protocol."""
        from pipeline.storepath import location

        where = None if value is None else location(value)
        return where if where is None or isinstance(where, Path) else str(where)

    @field_validator("n_jobs")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("n_jobs must be -1 (every core) or a number of processes >= 1")
        return value

    @model_validator(mode="after")
    def _distributed_training_on_dask(self) -> ComputeConfig:
        if self.dask.distributed_training and self.engine != "dask":
            raise ValueError(
                f"compute.dask.distributed_training: true needs compute.engine: dask (got"
                f" {self.engine!r}); set compute.engine: dask or distributed_training: false"
            )
        return self


class LabelConfig(_Section):
    definition: Literal["cancellation", "inactivity"] = "cancellation"
    horizon_days: Annotated[int, Field(gt=0, le=730)] = 90
    qualifying_families: list[str] = ["login", "feature_use", "purchase"]
    """Events of these families count as use of the product: the ``inactivity`` label, the
    ``days_since_last_activity`` feature and the "30 days inactive" rule read them."""
    active_window_days: Annotated[int, Field(gt=0)] | None = None
    """For ``inactivity``: every customer with a qualifying event before as_of is in the base.
    When set, it narrows the base to a qualifying event in [as_of − active_window_days, as_of):
    the others are ``lapsed``, not trained on and listed as scoring rejects with that reason."""

    @field_validator("qualifying_families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        bad = sorted(set(families) - set(FAMILIES))
        if bad:
            raise ValueError(f"unknown families {bad}; allowed: {list(FAMILIES)}")
        return families


class FeatureConfig(_Section):
    onboarding_days: Annotated[int, Field(gt=0)] = 90
    """Customers with tenure below this are in the ``onboarding`` lifecycle stage."""
    mature_after_days: Annotated[int, Field(gt=0)] = 365
    """Tenure from which a customer is ``mature``; in between the stage is ``renewal``."""
    serious_severity: Annotated[int, Field(ge=1, le=4)] = 3
    """Severity (1 low, 2 medium, 3 high, 4 critical) from which a complaint counts as serious."""

    @model_validator(mode="after")
    def _stages_ordered(self) -> FeatureConfig:
        if self.mature_after_days <= self.onboarding_days:
            raise ValueError(
                f"mature_after_days ({self.mature_after_days}) must exceed onboarding_days"
                f" ({self.onboarding_days})"
            )
        return self


class DatasetConfig(_Section):
    """Which as_of dates make the training set, and the rolling-origin backtest over them."""

    first_as_of: date | None = None
    """Default: the first month start at least ``min_history_days`` after the first event."""
    last_as_of: date | None = None
    """Default: the last month start whose label window is fully observed."""
    frequency: Literal["monthly", "weekly"] = "monthly"
    min_history_days: Annotated[int, Field(ge=0)] = 90
    backtest_folds: Annotated[int, Field(ge=1)] = 3
    """Backtest origins: the last N labelled as_of dates, each scored by a model fitted only on
    dates whose label windows end before it (see ``pipeline.dataset.backtest_folds``)."""
    validation_dates: Annotated[int, Field(ge=1)] = 1
    """How many as_of dates form each fold's early-stopping (and calibration) slice."""
    short_history_fallback: bool = True
    """When the schedule cannot give ``backtest_folds`` folds, try weekly as_of dates, then a
    30-day ``min_history_days``, then fewer folds (logged and recorded in the model card);
    off: fewer folds only."""


class TrainConfig(_Section):
    seed: int = 42
    model_name: str = "churn-risk"
    """MLflow registered model; default (in a config): the project's name."""
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "churn-risk"
    """MLflow experiment; default (in a config): the project's name."""
    artifact_location: str = "mlruns"
    n_estimators: Annotated[int, Field(gt=0)] = 600
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.05
    num_leaves: Annotated[int, Field(ge=2)] = 15
    min_child_samples: Annotated[int, Field(ge=1)] = 100
    subsample: Annotated[float, Field(gt=0, le=1)] = 0.8
    colsample_bytree: Annotated[float, Field(gt=0, le=1)] = 0.8
    reg_lambda: Annotated[float, Field(ge=0)] = 1.0
    early_stopping_rounds: Annotated[int, Field(gt=0)] = 50
    calibration: Literal["isotonic", "sigmoid"] = "sigmoid"
    """``sigmoid`` (Platt scaling: two parameters, strictly monotone, so ranking and ROC-AUC stay
    as they are) suits a few hundred churners per calibration set; ``isotonic`` needs more
    data and ties scores into steps (measured on the demo: lower PR-AUC, higher log loss).
    Backtest folds calibrate on their validation date; the production model on the folds'
    out-of-fold predictions."""
    champion_tolerance: Annotated[float, Field(ge=0)] = 0.005
    """The champion alias moves when the new model beats every baseline on the backtest's mean
    ROC-AUC and is not below the current champion's (same rows) by more than this."""
    baseline_tolerance: Annotated[float, Field(ge=0, le=0.05)] = 0.0
    """The model must beat every baseline's backtest ROC-AUC; with a tolerance t > 0 a model that
    trails a baseline by less than t still counts as not losing (and the run says by how much it
    trails). Keep 0 unless a baseline is known to be the data's own generating model (the retail
    simulator is a BG/NBD process, so BG/NBD is the best score there and a tie is the ceiling)."""
    n_jobs: Annotated[int, Field(ge=1)] = 1
    """LightGBM threads. 1 by default: a backtest fits seven small models, and OpenMP threads
    spin-wait when the CPU is shared (100 trees on 134k rows: 35 s with 2 threads, 4.2 s with 1,
    on 2 busy cores); raise it on a machine of your own."""

    @field_validator("model_name")
    @classmethod
    def _registrable(cls, name: str) -> str:
        """MLflow's rules for a registered model name, checked before any training."""
        bad = [c for c in ("/", ":", "\\") if c in name]
        if not name.strip() or name != name.strip() or bad or name in {".", ".."}:
            raise ValueError(
                f"model name {name!r} cannot be registered in MLflow (no '/', ':' or '\\',"
                " not blank, no surrounding spaces); use e.g. 'retail-churn'"
            )
        if len(name) > 256:
            raise ValueError(f"model name of {len(name)} characters: use at most 256")
        return name

    @field_validator("experiment")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name.strip() or len(name) > 500:
            raise ValueError(f"experiment {name[:40]!r}: use 1 to 500 characters")
        return name


class ThresholdsPolicy(_Section):
    """``thresholds``: red when p ≥ red_threshold, orange when p ≥ orange_threshold."""

    red_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    orange_threshold: Annotated[float, Field(gt=0, le=1)] = 0.2

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> ThresholdsPolicy:
        if self.orange_threshold >= self.red_threshold:
            raise ValueError(
                f"orange_threshold ({self.orange_threshold}) must be below red_threshold"
                f" ({self.red_threshold})"
            )
        return self


class CapacityPolicy(_Section):
    """``capacity``: red = the ``red`` highest expected losses of the whole base, orange = the
    next ``orange``."""

    red: Annotated[int, Field(ge=0)] = 200
    orange: Annotated[int, Field(ge=0)] = 800


class ExpectedValuePolicy(_Section):
    """``expected_value``: orange when p × value × save_rate > contact_cost; red when that saving
    is at least ``red_value_multiple`` × contact_cost."""

    save_rate: Annotated[float, Field(ge=0, le=1)] = 0.3
    contact_cost: Annotated[float, Field(ge=0)] = 50.0
    red_value_multiple: Annotated[float, Field(ge=1)] = 3.0


class RelativeCapacityPolicy(_Section):
    """``relative_capacity`` (the default): a list each owner can work, whatever the base rate.

    Red: the ``red_per_owner`` highest expected losses (p × value) of each owner among customers
    whose risk is at least ``red_risk_ratio`` × the base rate; orange: the next
    ``orange_per_owner`` among those at least ``orange_risk_ratio`` × the base rate. For a high
    base rate the floor ``k × base rate`` is capped so that the chance of staying is at most the
    base's ÷ k (``1 − (1 − base rate) / k``): a retail log with 75 % "churn" still has a red."""

    red_per_owner: Annotated[int, Field(ge=0)] = 10
    orange_per_owner: Annotated[int, Field(ge=0)] = 30
    red_risk_ratio: Annotated[float, Field(ge=1)] = 3.0
    orange_risk_ratio: Annotated[float, Field(ge=1)] = 1.5


class TierConfig(_Section):
    """Which tier policy, its settings (one section per policy), escalation and hysteresis."""

    policy: Literal["relative_capacity", "thresholds", "capacity", "expected_value"] = (
        "relative_capacity"
    )
    relative_capacity: RelativeCapacityPolicy = RelativeCapacityPolicy()
    thresholds: ThresholdsPolicy = ThresholdsPolicy()
    capacity: CapacityPolicy = CapacityPolicy()
    expected_value: ExpectedValuePolicy = ExpectedValuePolicy()
    escalate_serious_complaints: bool = True
    """A serious complaint or ticket (severity ≥ features.serious_severity) in the last 30 days
    lifts a customer whose risk is at least the base rate to orange (to red when the risk also
    clears the red floor); marked in ``escalated_by``."""
    escalations_per_owner: Annotated[int, Field(ge=0)] | None = 15
    """At most this many escalated customers per owner (highest expected loss first), on top
    of the policy's list; None: no cap."""
    hysteresis_margin: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """A customer changes tier only when their score clears the cut-off by this share of it, or
    when the new tier was proposed two runs in a row."""


class ValueConfig(_Section):
    """What a customer is worth, for revenue at risk and expected loss.

    ``basis``: ``mrr_months`` = monthly value × ``months``; ``clv`` = monthly value × gross
    margin × expected lifetime. The monthly value is the customer's MRR; with ``monthly``
    ``auto`` (default) a customer without MRR is valued from spend history instead:
    ``spend_365d`` annualised over their tenure when shorter than a year, ÷ 12.
    """

    basis: Literal["mrr_months", "clv"] = "mrr_months"
    months: Annotated[float, Field(gt=0)] = 12.0
    monthly: Literal["auto", "mrr", "spend"] = "auto"


ACTIONS: dict[str, str] = {
    "inactivity": "Send a re-engagement message and offer a check-in call",
    "narrow_use": "Offer training on the features they do not use yet",
    "complaint": "Call now to resolve the complaint",
    "support": "Review open tickets with support and follow up personally",
    "payment": "Ask the customer to update their payment details",
    "onboarding": "Offer onboarding help: book a setup session",
    "renewal": "Hold a renewal conversation before the anniversary",
    "value": "Review plan fit and pricing with the customer",
    "upsell": "Propose an upsell or ask for a referral",
    "other": "Review the account",
}
"""Reason family → recommended action (``ExplainConfig.actions``)."""


class ExplainConfig(_Section):
    top_k: Annotated[int, Field(ge=1, le=10)] = 3
    explain: Literal["at_risk", "all"] = "at_risk"
    """``at_risk`` explains red and orange customers only (TreeSHAP is costly); ``all`` everyone."""
    actions: dict[str, str] = ACTIONS
    """Reason family → action; the action shown is the one of the first reason shown."""

    @field_validator("actions")
    @classmethod
    def _every_family(cls, actions: dict[str, str]) -> dict[str, str]:
        missing = sorted(set(ACTIONS) - set(actions))
        unknown = sorted(set(actions) - set(ACTIONS))
        if unknown:
            raise ValueError(f"unknown reason families {unknown}; allowed: {sorted(ACTIONS)}")
        return ACTIONS | actions if missing else actions


EXPORT_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "owner",
    "segment",
    "plan",
    "tier",
    "churn_probability",
    "change",
    "previous_probability",
    "monthly_value",
    "revenue_at_risk",
    "reason_1",
    "reason_2",
    "reason_3",
    "recommended_action",
    "last_activity_at",
    "escalated_by",
)


class ExportConfig(_Section):
    format: Literal["xlsx", "csv", "parquet"] = "xlsx"
    by: Literal["owner", "segment", "none"] = "owner"
    tiers: list[Literal["red", "orange", "green"]] = ["red", "orange"]
    columns: list[str] = list(EXPORT_COLUMNS)
    """Only these columns leave the pipeline (personal-data minimisation). Scores columns, or
    columns of the customers file (e.g. a contact e-mail) named in ``contact_columns``."""
    contact_columns: list[str] = []
    """Columns read from the customers file and joined by customer_id (e.g. contact_email);
    list them in ``columns`` too, where they should appear."""
    time_zone: str = "UTC"
    """Dates (last activity) are written in this IANA zone, stated in the header."""

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        from zoneinfo import available_timezones

        if zone != "UTC" and zone not in available_timezones():
            raise ValueError(
                f"unknown time zone '{zone[:60]}'; use an IANA name such as Europe/Paris"
            )
        return zone


class KpiConfig(_Section):
    period: Literal["month", "quarter"] = "month"
    gross_margin: Annotated[float, Field(gt=0, le=1)] = 1.0
    retention_cost: Annotated[float, Field(ge=0)] | None = None
    active_days: Annotated[int, Field(gt=0)] = 90
    """Non-contractual (``inactivity``) businesses: active = a qualifying event in this window."""


PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_PROJECT = "default"


class MonitorConfig(_Section):
    """Daily-run monitoring (``churn run``): drift thresholds, quality margin, report groups."""

    psi_warn: Annotated[float, Field(gt=0)] = 0.1
    psi_alert: Annotated[float, Field(gt=0)] = 0.2
    roc_auc_margin: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Alert when the expected ROC-AUC today is more than this below the model's backtest."""
    min_group_size: Annotated[int, Field(ge=1)] = 100
    """Segments, plans or stages with fewer customers are shown with a 'too small' note."""
    kpi_start: date | None = None
    """First period of the report's KPI charts; None: after the first full cohort year."""

    @model_validator(mode="after")
    def _ordered(self) -> MonitorConfig:
        if self.psi_alert < self.psi_warn:
            raise ValueError(f"psi_alert {self.psi_alert} must be ≥ psi_warn {self.psi_warn}")
        return self


class Config(_Section):
    project: str = DEFAULT_PROJECT
    """Namespaces everything that persists (DESIGN §1, ``pipeline.paths``): the MLflow
    experiment and registered model (unless ``train.experiment``/``train.model_name`` are set),
    ``models/<project>/``, ``outputs/<project>/`` (unless ``data.output_dir`` is set). Default:
    the config file's stem."""
    data: DataConfig
    event_types: EventTypes
    columns: ColumnsConfig = ColumnsConfig()
    validation: ValidationConfig = ValidationConfig()
    compute: ComputeConfig = ComputeConfig()
    label: LabelConfig = LabelConfig()
    features: FeatureConfig = FeatureConfig()
    dataset: DatasetConfig = DatasetConfig()
    train: TrainConfig = TrainConfig()
    tiers: TierConfig = TierConfig()
    value: ValueConfig = ValueConfig()
    explain: ExplainConfig = ExplainConfig()
    export: ExportConfig = ExportConfig()
    kpis: KpiConfig = KpiConfig()
    monitor: MonitorConfig = MonitorConfig()

    @field_validator("project")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not PROJECT.fullmatch(name) or name in {".", ".."}:
            raise ValueError(
                f"project {name[:80]!r} must be 1-64 letters, digits, '_', '.' or '-' starting"
                " with a letter or digit (it names folders and the MLflow model); set `project:`"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _project_defaults(cls, raw: object) -> object:
        """Fill what the project namespaces: output folder, experiment, registered model."""
        if not isinstance(raw, dict):
            return raw
        project = raw.get("project", DEFAULT_PROJECT)
        if not isinstance(project, str):
            return raw
        raw = dict(raw)
        if isinstance(raw.get("data"), dict):
            raw["data"] = {"output_dir": f"outputs/{project}", **raw["data"]}
        train = raw.get("train", {})
        if isinstance(train, dict):
            raw["train"] = {"model_name": project, "experiment": project, **train}
        return raw

    @property
    def models_dir(self) -> Path:
        """``models/<project>/`` (see ``pipeline.paths``, which owns the layout)."""
        from pipeline import paths

        return paths.models_dir(self)


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{cap(source)}: invalid configuration"]
    for item in error.errors():
        key = cap(".".join(str(part) for part in item["loc"]), 120)
        got = cap(repr(item.get("input")))
        if item["type"] == "extra_forbidden":
            lines.append(f"  - '{key}': unknown key; check the spelling (see README, 'Config')")
        elif item["type"] == "literal_error":
            allowed = item.get("ctx", {}).get("expected", "")
            lines.append(f"  - '{key}': got {got}; allowed values: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"  - '{key}': required key is missing")
        else:
            lines.append(f"  - '{key}': {cap(item['msg'])} (got {got})")
    return "\n".join(lines)


def parse_config(raw: dict, source: str = "<config>", project: str | None = None) -> Config:
    """Validate a config mapping; raise ``ConfigError`` naming each bad key. ``project`` is the
    default project name (``load_config`` passes the file's stem) when the mapping has none."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{cap(source)}: expected a YAML mapping at the top level, got {type(raw)}"
        )
    if project is not None and "project" not in raw:
        raw = {"project": project, **raw}
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: ``&a``/``*a`` can expand a few lines into gigabytes
    (an "alias bomb"), and a config never needs them."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases"
                f" (&{cap(event.anchor, 40)} / *{cap(event.anchor, 40)}) are not allowed in a"
                " config; write the values out"
            )
        return super().compose_node(parent, index)


def read_yaml(text: str, source: str) -> object:
    """Parse config YAML text (no anchors or aliases); errors name ``source``."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except ConfigError as error:
        raise ConfigError(f"{cap(source)}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{cap(source)}: not valid YAML: {cap(error, 2 * CAP)}") from None


def load_config(path: Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{cap(path)}' does not exist; pass --config PATH")
    if path.is_dir():
        raise ConfigError(f"config path '{cap(path)}' is a folder; pass a YAML file (--config)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"config file '{cap(path)}' cannot be read: {reason}") from None
    raw = read_yaml(text, str(path))
    return parse_config(raw or {}, source=str(path), project=path.stem)
