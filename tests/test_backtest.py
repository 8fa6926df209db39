"""The rolling-origin backtest: fold dates, short histories, out-of-fold calibration, the gate,
and the logs that cannot train a model (exit 2, no traceback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DatasetConfig
from pipeline.dataset import (
    DatasetError,
    Fold,
    as_of_schedule,
    backtest_folds,
    plan_backtest,
)
from pipeline.metrics import backtest_table, summarise_backtest
from pipeline.train import (
    FoldResult,
    decide_champion,
    fit_oof_calibrator,
    production_rounds,
)

pytestmark = pytest.mark.code

T = pd.Timestamp


def dates(*values: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(values)), name="as_of").as_unit("us")


# --- folds -----------------------------------------------------------------------------------


def test_the_folds_of_a_year_of_months_with_a_60_day_horizon() -> None:
    months = pd.date_range("2024-01-01", "2024-12-01", freq="MS")
    folds = backtest_folds(months, 60, n_folds=3)
    assert [f.test for f in folds] == list(dates("2024-10-01", "2024-11-01", "2024-12-01"))
    # 12-01: validation is the last date d with d + 60 days <= 12-01 (10-01; 10-02 + 60 = 12-01
    # would also do, but the schedule holds month starts), training ends 60 days before it.
    last = folds[-1]
    pd.testing.assert_index_equal(last.validation, dates("2024-10-01"))
    pd.testing.assert_index_equal(last.train, dates(*[f"2024-{m:02d}-01" for m in range(1, 9)]))
    pd.testing.assert_index_equal(folds[0].validation, dates("2024-08-01"))
    pd.testing.assert_index_equal(folds[0].train, dates(*[f"2024-{m:02d}-01" for m in range(1, 7)]))


@pytest.mark.parametrize("horizon", [7, 30, 60, 90, 180])
@pytest.mark.parametrize("frequency", ["monthly", "weekly"])
@pytest.mark.parametrize("validation_dates", [1, 2])
def test_no_fold_learns_from_a_label_window_that_reaches_its_later_slices(
    horizon: int, frequency: str, validation_dates: int
) -> None:
    config = DatasetConfig(frequency=frequency, validation_dates=validation_dates)
    schedule = as_of_schedule(T("2023-01-15 09:30"), T("2025-11-01"), config, horizon)
    folds = backtest_folds(schedule, horizon, 3, validation_dates)
    h = pd.Timedelta(days=horizon)
    assert [f.test for f in folds] == list(schedule[-3:])
    for fold in folds:
        assert (fold.validation + h <= fold.test).all()
        assert (fold.train + h <= fold.validation.min()).all()
        assert len(fold.validation) == validation_dates and len(fold.train) > 0
        assert set(fold.train) | set(fold.validation) <= set(schedule)
        # the expanding window: every date that respects the gap is used
        assert list(fold.train) == [d for d in schedule if d + h <= fold.validation.min()]


def test_origins_without_a_training_date_are_dropped() -> None:
    months = pd.date_range("2024-01-01", "2024-06-01", freq="MS")
    folds = backtest_folds(months, 60, n_folds=3)
    # 04-01: validation 02-01, and no date ends its label window by then
    assert [f.test for f in folds] == list(dates("2024-05-01", "2024-06-01"))
    assert backtest_folds(months[:4], 60, n_folds=3) == []


# --- short histories --------------------------------------------------------------------------


def test_a_year_of_monthly_data_with_a_90_day_horizon_falls_back_to_weekly_dates() -> None:
    plan = plan_backtest(T("2024-01-01 08:00"), T("2025-01-01"), DatasetConfig(), 90)
    assert plan.frequency == "weekly"
    assert plan.min_history_days == 30
    assert len(plan.folds) == 3
    assert set(plan.dates.day_of_week) == {0}
    # the production model trains on every labelled date, up to the last one
    assert plan.dates[-1] == T("2024-09-30")
    assert plan.dates[-1] + pd.Timedelta(days=90) <= T("2025-01-01")
    assert plan.dates[0] == T("2024-02-05")
    assert (
        "monthly as_of dates with min_history_days 90 give 1 of 3 backtest folds"
        in (plan.fallbacks[0])
    )
    assert "using weekly dates with min_history_days 30" in plan.fallbacks[0]


def test_a_long_history_keeps_the_configured_monthly_schedule_and_records_no_fallback() -> None:
    plan = plan_backtest(T("2024-01-01"), T("2026-11-01"), DatasetConfig(), 90)
    assert (plan.frequency, plan.min_history_days, plan.fallbacks) == ("monthly", 90, ())
    assert [f.test for f in plan.folds] == list(dates("2026-06-01", "2026-07-01", "2026-08-01"))
    assert plan.dates[-1] == T("2026-08-01")


def test_without_the_fallback_a_short_history_runs_fewer_folds_and_says_so() -> None:
    config = DatasetConfig(short_history_fallback=False)
    plan = plan_backtest(T("2024-01-01"), T("2025-01-01"), config, 90)
    assert (plan.frequency, len(plan.folds)) == ("monthly", 1)
    assert plan.fallbacks == ("backtest with 1 fold(s) instead of 3",)


def test_a_history_too_short_for_any_fold_raises_a_dataset_error_naming_the_fix() -> None:
    with pytest.raises(DatasetError, match=r"leave no backtest fold.*shorter label\.horizon_days"):
        plan_backtest(T("2024-01-01"), T("2024-08-01"), DatasetConfig(), 90)


# --- rounds and out-of-fold calibration -------------------------------------------------------


def fold_result(test: str, raw: list[float], churned: list[int], best: int, rows: int):
    day = T(test)
    predictions = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(len(raw))],
            "as_of": day,
            "churned": churned,
            "raw_probability": raw,
        }
    )
    return FoldResult(Fold(day, dates(test), dates(test)), predictions, best, rows)


def test_production_takes_the_median_of_the_folds_early_stopped_rounds_within_the_cap() -> None:
    folds = [
        fold_result("2024-06-01", [0.5], [1], best, rows)
        for best, rows in [(80, 1000), (120, 1000), (100, 2000)]
    ]
    assert production_rounds(folds, cap=600) == 100
    assert production_rounds(folds, cap=90) == 90
    assert production_rounds(folds[:2], cap=600) == 100


def test_the_production_calibrator_is_fitted_on_the_out_of_fold_predictions_only() -> None:
    from pipeline.model import ProbabilityCalibrator

    folds = [
        fold_result("2024-06-01", [0.1, 0.2, 0.6, 0.7], [0, 0, 1, 0], 50, 100),
        fold_result("2024-07-01", [0.15, 0.3, 0.5, 0.9], [0, 1, 0, 1], 60, 120),
    ]
    got = fit_oof_calibrator(folds, "sigmoid")
    want = ProbabilityCalibrator("sigmoid").fit(
        [0.1, 0.2, 0.6, 0.7, 0.15, 0.3, 0.5, 0.9], [0, 0, 1, 0, 0, 1, 0, 1]
    )
    assert got.to_dict() == want.to_dict()


# --- metrics over folds -----------------------------------------------------------------------


def test_the_backtest_table_has_one_row_per_fold_and_scorer_and_the_summary_its_spread() -> None:
    predictions = pd.DataFrame(
        {
            "fold": [1, 1, 1, 1, 2, 2, 2, 2],
            "as_of": [T("2024-06-01")] * 4 + [T("2024-07-01")] * 4,
            "churned": [0, 0, 1, 1, 0, 1, 0, 1],
            "churn_probability": [0.1, 0.2, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4],
            "rule_score": [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        }
    )
    table = backtest_table(predictions, {"model": "churn_probability", "rule": "rule_score"})
    assert list(table[["fold", "scorer"]].itertuples(index=False, name=None)) == [
        (1, "model"),
        (1, "rule"),
        (2, "model"),
        (2, "rule"),
    ]
    assert table["roc_auc"].tolist() == [1.0, 0.75, 0.75, 0.5]
    summary = summarise_backtest(table)
    assert summary["model_roc_auc"] == 0.875
    assert summary["model_roc_auc_min"] == 0.75
    assert summary["model_roc_auc_max"] == 1.0
    assert summary["model_roc_auc_std"] == pytest.approx(np.std([1.0, 0.75], ddof=1))
    assert summary["rule_roc_auc"] == 0.625


def test_one_fold_has_zero_spread() -> None:
    table = pd.DataFrame(
        [
            {
                "fold": 1,
                "scorer": "model",
                "roc_auc": 0.8,
                "pr_auc": 0.3,
                "log_loss": 0.2,
                "brier": 0.05,
                "ece": 0.01,
                "lift_top_decile": 3.0,
                "recall_top_decile": 0.3,
            }
        ]
    )
    summary = summarise_backtest(table)
    assert (summary["model_roc_auc"], summary["model_roc_auc_std"]) == (0.8, 0.0)


# --- the gate ---------------------------------------------------------------------------------


def test_a_model_that_trails_a_baseline_is_not_promoted_and_the_message_says_by_how_much():
    gate = decide_champion(0.770, {"rule_30d_inactive": 0.60, "logistic": 0.782}, None, 0.005)
    assert not gate.promoted
    assert gate.decision == "not promoted: trails logistic by 0.012 ROC-AUC (backtest mean)"
    assert gate.lost_to == {"logistic": pytest.approx(-0.012)}


def test_a_model_that_trails_two_baselines_names_both_worst_first():
    gate = decide_champion(0.70, {"logistic": 0.71, "bgnbd": 0.74}, 0.60, 0.005)
    assert not gate.promoted
    assert "trails bgnbd by 0.040 and logistic by 0.010 ROC-AUC" in gate.decision


def test_a_tie_with_a_baseline_is_not_a_win():
    assert not decide_champion(0.75, {"logistic": 0.75}, None, 0.005).promoted


def test_a_configured_baseline_tolerance_accepts_a_near_tie_and_says_so():
    aucs = {"logistic": 0.8689, "bgnbd": 0.8717}
    gate = decide_champion(0.8705, aucs, None, 0.005, baseline_tolerance=0.005)
    assert gate.promoted and gate.lost_to == {}
    assert gate.decision == (
        "promoted: beats logistic by 0.002, trails bgnbd by 0.001, within"
        " train.baseline_tolerance 0.005 ROC-AUC; no comparable champion"
    )
    beyond = decide_champion(0.8605, aucs, None, 0.005, baseline_tolerance=0.005)
    assert not beyond.promoted
    assert beyond.lost_to == {"bgnbd": pytest.approx(-0.0112), "logistic": pytest.approx(-0.0084)}


@pytest.mark.parametrize(
    ("champion", "same_rows", "promoted"),
    [
        (None, None, True),
        (0.80, None, True),
        (0.804, None, True),
        (0.81, None, False),
        (0.85, 0.848, True),
        (0.85, 0.84, False),
    ],
)
def test_a_model_that_beats_the_baselines_still_needs_the_champion_within_tolerance(
    champion, same_rows, promoted
):
    gate = decide_champion(0.80, {"logistic": 0.78}, champion, 0.005, same_rows)
    assert gate.promoted is promoted
    if not promoted:
        assert "trails the champion by" in gate.decision
        assert gate.lost_to["champion"] < -0.005


# --- logs that cannot train a model -----------------------------------------------------------


def write_project(tmp_path: Path, events: pd.DataFrame, customers: pd.DataFrame, **extra) -> Path:
    events.to_parquet(tmp_path / "events.parquet", index=False)
    customers.to_csv(tmp_path / "customers.csv", index=False)
    raw = {
        "data": {
            "events": str(tmp_path / "events.parquet"),
            "customers": str(tmp_path / "customers.csv"),
            "output_dir": str(tmp_path / "outputs"),
            "observed_until": "2025-01-01",
        },
        "event_types": {"login": ["login"]},
        "train": {
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_location": str(tmp_path / "mlruns"),
        },
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def weekly_logins(customers: list[str], until: str = "2024-12-25") -> pd.DataFrame:
    days = pd.date_range("2024-01-01 10:00", until, freq="7D")
    return pd.DataFrame(
        {
            "customer_id": np.repeat(customers, len(days)),
            "occurred_at": np.tile(days, len(customers)),
            "event_type": "app_open",
        }
    )


CUSTOMERS = pd.DataFrame({"customer_id": ["a", "b", "c"], "signup_at": "2023-12-01"})


def test_a_log_whose_event_types_are_all_unmapped_stops_training_with_exit_2(tmp_path):
    config = write_project(tmp_path, weekly_logins(["a", "b", "c"]), CUSTOMERS)
    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "no valid event maps to a signal family" in result.output
    assert "event_types" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_a_log_without_a_single_churner_stops_training_with_exit_2(tmp_path):
    events = weekly_logins(["a", "b", "c"]).assign(event_type="login")
    config = write_project(
        tmp_path, events, CUSTOMERS, label={"definition": "inactivity", "horizon_days": 30}
    )
    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "no churner (positive label)" in result.output
    assert "Traceback" not in result.output
