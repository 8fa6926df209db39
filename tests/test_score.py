"""Batch scoring: reconciliation, feature checks, reasons for red customers, atomic outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import FeatureConfig, LabelConfig, TierConfig, parse_config
from pipeline.events import ValidatedData
from pipeline.model import (
    ChurnModel,
    FeatureMismatchError,
    ModelBundle,
    ProbabilityCalibrator,
    dtype_kind,
)
from pipeline.score import (
    NO_EVENTS,
    Base,
    ScoringError,
    build_base,
    customer_value,
    resolve_as_of,
    score_base,
    score_frame,
    write_outputs,
)

pytestmark = pytest.mark.model

AS_OF = pd.Timestamp("2025-06-01")
FEATURES = ["days_since_last_login", "events_30d", "mrr", "tenure_days", "serious_complaints_30d"]


def tiny_bundle(n: int = 3000, seed: int = 0) -> ModelBundle:
    """A small calibrated model on synthetic rows: churn when no login for more than 30 days."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "days_since_last_login": rng.uniform(0, 60, n),
            "events_30d": rng.integers(0, 40, n).astype("int64"),
            "mrr": rng.uniform(10, 200, n),
            "tenure_days": rng.uniform(0, 900, n),
            "serious_complaints_30d": rng.integers(0, 2, n).astype("int64"),
        }
    )
    y = ((X["days_since_last_login"] > 30).to_numpy() ^ (rng.random(n) < 0.05)).astype(int)
    model = ChurnModel(n_estimators=30, num_leaves=4, min_child_samples=20, n_jobs=1).fit(X, y)
    calibrator = ProbabilityCalibrator("isotonic").fit(model.raw_proba(X), y)
    card = {
        "model_name": "tiny",
        "model_version": "7",
        "mlflow_run_id": "run-7",
        "features": [{"name": c, "kind": dtype_kind(X[c])} for c in X.columns],
    }
    return ModelBundle(model, calibrator, card)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return tiny_bundle()


def base_frame(days: list[float], complaints: list[int] | None = None) -> pd.DataFrame:
    n = len(days)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "as_of": [AS_OF] * n,
            "days_since_last_login": np.asarray(days, dtype=np.float64),
            "events_30d": np.full(n, 10, dtype="int64"),
            "mrr": np.full(n, 100.0),
            "tenure_days": np.full(n, 400.0),
            "serious_complaints_30d": np.asarray(complaints or [0] * n, dtype="int64"),
            "owner": ["ann"] * n,
            "segment": ["SMB"] * n,
            "last_activity_at": [AS_OF - pd.Timedelta(days=d) for d in days],
            "has_events": np.ones(n, dtype=bool),
        }
    )


def config(tmp_path: Path):
    return parse_config(
        {
            "data": {
                "events": "e.parquet",
                "customers": "c.csv",
                "output_dir": str(tmp_path / "outputs"),
            },
            "event_types": {"login": ["login"], "complaint": ["complaint"]},
        }
    )


def test_scores_reconcile_with_the_base_and_reject_silent_customers(
    validate: Callable[..., ValidatedData], bundle: ModelBundle
) -> None:
    customers = pd.DataFrame(
        {
            "customer_id": ["active", "silent", "new", "gone", "later"],
            "signup_at": ["2024-01-01", "2024-01-01", "2025-05-20", "2024-01-01", "2025-07-01"],
            "churned_at": [None, None, None, "2025-03-01", None],
            "mrr": [100.0, 50.0, 20.0, 80.0, 10.0],
            "owner": ["ann", "bob", "ann", "bob", "ann"],
        }
    )
    events = pd.DataFrame(
        {
            "customer_id": ["active", "active", "gone", "later"],
            "occurred_at": ["2025-05-30", "2025-04-01", "2025-01-01", "2025-06-20"],
            "event_type": ["login", "login", "login", "login"],
        }
    )
    data = validate(events, customers, observed_until=pd.Timestamp("2025-07-01"))
    base = build_base(data, AS_OF, FeatureConfig(), LabelConfig(qualifying_families=["login"]))
    result = score_base(base, bundle, config(Path(".")), FeatureConfig(), TierConfig(), 90)
    counts = result.summary["customers"]
    assert counts == {
        "customers_valid": 5,
        "not_yet_signed_up": 1,
        "churned_before_as_of": 1,
        "lapsed_not_in_base": 0,
        "base": 3,
        "scored": 2,
        "rejected": 1,
        "reconciled": True,
    }
    assert list(result.scores["customer_id"]) == ["active", "new"]
    assert result.rejects[["customer_id", "reason"]].to_dict("records") == [
        {"customer_id": "silent", "reason": NO_EVENTS.format(days=90)}
    ]
    assert result.scores.loc[0, "last_activity_at"] == pd.Timestamp("2025-05-30")
    assert pd.isna(result.scores.loc[1, "last_activity_at"])


def test_a_missing_feature_is_an_error_not_silent_zeros(bundle: ModelBundle) -> None:
    frame = base_frame([5.0, 40.0]).drop(columns=["events_30d"])
    with pytest.raises(FeatureMismatchError, match=r"lack \['events_30d'\]"):
        score_frame(frame, bundle, TierConfig(), config(Path(".")).value)


def test_a_feature_of_another_dtype_kind_is_an_error(bundle: ModelBundle) -> None:
    frame = base_frame([5.0, 40.0]).astype({"events_30d": "float64"})
    with pytest.raises(FeatureMismatchError, match="'events_30d' is float here but was integer"):
        score_frame(frame, bundle, TierConfig(), config(Path(".")).value)


def test_every_red_customer_has_a_reason_and_an_action(bundle: ModelBundle) -> None:
    days = [1.0, 2.0, 5.0, 35.0, 45.0, 59.0, 3.0]
    frame = base_frame(days, complaints=[0, 0, 0, 0, 0, 0, 1])
    policy = TierConfig(policy="thresholds")  # red ≥ 0.5, orange ≥ 0.2
    # a training base rate of 1 %: the complaint of a customer at ~5 % risk escalates
    rated = ModelBundle(bundle.model, bundle.calibrator, {**bundle.card, "base_rate": 0.01})
    scores = score_frame(frame, rated, policy, config(Path(".")).value)
    assert list(scores["tier"]) == ["green", "green", "green", "red", "red", "red", "orange"]
    red = scores[scores["tier"] == "red"]
    assert red["reason_1_sentence"].notna().all() and red["recommended_action"].notna().all()
    assert set(red["reason_1_feature"]) == {"days_since_last_login"}
    assert scores["reason_1_sentence"].iloc[3].startswith("no login for 35 days")
    escalated = scores.iloc[6]
    assert escalated["escalated"] and escalated["reason_1_feature"] == "serious_complaints_30d"
    assert escalated["escalated_by"] == "serious complaint in the last 30 days"
    assert escalated["recommended_action"] == "Call now to resolve the complaint"
    assert scores.loc[scores["tier"] == "green", "reasons"].isna().all()
    np.testing.assert_allclose(scores["revenue_at_risk"], scores["churn_probability"] * 1200.0)


def test_explain_all_explains_green_customers_too(bundle: ModelBundle) -> None:
    frame = base_frame([1.0, 10.0, 25.0, 45.0])
    value = config(Path(".")).value
    at_risk = score_frame(frame, bundle, TierConfig(), value)
    everyone = score_frame(frame, bundle, TierConfig(), value, explain_all=True)
    green = at_risk["tier"] == "green"
    assert at_risk.loc[green, "reasons"].isna().all()
    has_push = (bundle.model.contributions(frame)[:, :-1] > 0).any(axis=1)
    assert list(everyone["reasons"].notna()) == list(has_push)
    assert everyone.loc[~green, "reasons"].equals(at_risk.loc[~green, "reasons"])


def test_customer_value_is_mrr_times_months_or_a_clv() -> None:
    cfg = config(Path(".")).value
    np.testing.assert_allclose(customer_value(np.array([10.0]), np.array([0.5]), cfg, 90), [120.0])
    clv = cfg.model_copy(update={"basis": "clv"})
    # p̄ = 0.25 over 90 days → monthly churn 1 − 0.75^(1 / 2.957) ≈ 0.0927 → lifetime ≈ 10.8 months
    value = customer_value(np.array([10.0]), np.array([0.25]), clv, 90, gross_margin=0.5)
    months = 90 / (365.25 / 12)
    np.testing.assert_allclose(value, [10.0 * 0.5 / (1 - 0.75 ** (1 / months))])


def test_as_of_defaults_to_the_end_of_the_log_and_may_not_pass_it() -> None:
    end = pd.Timestamp("2025-07-01")
    assert resolve_as_of(None, end) == end
    assert resolve_as_of("2025-06-01", end) == pd.Timestamp("2025-06-01")
    with pytest.raises(ScoringError, match="after the end of the log"):
        resolve_as_of("2025-07-02", end)


def _result(bundle: ModelBundle, tmp_path: Path):
    frame = base_frame([1.0, 45.0, 3.0])
    counts = {"customers_valid": 3, "base": 3}
    base = Base(frame, counts, n_product_features=0, as_of=AS_OF)
    return score_base(base, bundle, config(tmp_path), FeatureConfig(), TierConfig(), 90)


def test_rerunning_the_same_as_of_writes_identical_files(
    bundle: ModelBundle, tmp_path: Path
) -> None:
    first = write_outputs(_result(bundle, tmp_path), tmp_path / "a" / "s.parquet", tmp_path)
    second = write_outputs(_result(bundle, tmp_path), tmp_path / "b" / "s.parquet", tmp_path)
    for key in ("scores", "rejects"):
        assert first[key].read_bytes() == second[key].read_bytes()
    assert first["history"] == tmp_path / "scores" / "history" / "scores_2025-06-01.parquet"


def test_a_failure_mid_write_leaves_the_previous_scores_and_no_partial_file(
    bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "scores" / "scores.parquet"
    write_outputs(_result(bundle, tmp_path), out, tmp_path)
    before = out.read_bytes()

    def half_written(self: pd.DataFrame, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(_result(bundle, tmp_path), out, tmp_path)
    assert out.read_bytes() == before
    assert not [p for p in out.parent.rglob("*") if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    assert len(pd.read_parquet(out)) == 3
