"""The HTML report: every section and figure present, self-contained, clear notes for gaps."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import demo_config as shared_demo_config

from pipeline.report import (
    SECTIONS,
    ReportInputs,
    backtest_dates,
    render_report,
    tier_outcomes,
    tier_stability,
    tier_transitions,
    top_at_risk,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = re.compile(r'<img src="data:image/png;base64,([^"]*)"')


def demo_config(root: Path, data_dir: Path):
    """The demo's config on a small log, with a fast model and a private store."""
    return shared_demo_config(root, data_dir, train={"n_estimators": 100})


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Train on a small demo, render the report before and after scoring; the two pages."""
    from pipeline.demo import write_demo_data
    from pipeline.events import load_inputs
    from pipeline.report import run_report
    from pipeline.score import run_scoring
    from pipeline.train import run_training

    data_dir = tmp_path_factory.mktemp("demo")
    write_demo_data(
        data_dir, n_customers=3000, seed=11
    )  # a log where the model beats both baselines
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        config = demo_config(root, data_dir)
        data = load_inputs(config)
        run_training(config, data=data)
        before = run_report(config, root / "before.html", data=data)
        run_scoring(config, data)
        after = run_report(config, data=data)
    assert after == root / "outputs" / "report.html"
    return {"before": before.read_text(), "after": after.read_text()}


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data, validate=True) for data in IMAGE.findall(page)]


@pytest.mark.model
def test_the_report_has_every_section_heading_in_page_order(reports):
    page = reports["after"]
    positions = [page.index(f"<h2>{title}</h2>") for title in SECTIONS.values()]
    assert positions == sorted(positions)
    for key in SECTIONS:
        assert f'<section id="{key}">' in page


@pytest.mark.model
def test_the_headline_names_the_model_its_auc_and_the_customers_at_risk_today(reports):
    page = reports["after"]
    for label in (
        "Champion model",
        "Backtest ROC-AUC (mean)",
        "Calibration error",
        "Red · orange today",
    ):
        assert label in page
    assert re.search(r"± 0\.\d{3} over folds, min 0\.\d{3}", page)
    assert "Revenue at risk (red + orange)" in page
    assert re.search(r"oracle 0\.\d{3}", page)
    assert "CRR" in page and "NDR" in page


@pytest.mark.model
def test_every_figure_is_an_embedded_png_of_real_size(reports):
    images = pngs(reports["after"])
    # KPI trends, cohorts, ROC/PR, calibration, gain, importance, tier mix, tier churn,
    # stability, tier moves
    assert len(images) == 10
    for png in images:
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) > 5_000


@pytest.mark.model
def test_the_report_is_self_contained(reports):
    for page in reports.values():
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
        assert "<link" not in page and "<script" not in page
        assert "@import" not in page and "url(" not in page


@pytest.mark.model
def test_a_missing_scores_file_gives_a_clear_note_instead_of_a_crash(reports):
    page = reports["before"]
    assert "No scores yet" in page and "make score" in page
    assert all(f"<h2>{title}</h2>" in page for title in SECTIONS.values())
    assert len(pngs(page)) == 10  # everything else is still there


@pytest.mark.model
def test_the_at_risk_list_shows_customers_with_reasons_and_actions(reports):
    section = reports["after"].split('<section id="at-risk">')[1]
    assert "No scores yet" not in section
    assert section.count('<span class="pill ') >= 1
    assert "<li>" in section and "→ " in section


@pytest.mark.model
def test_the_tiers_backtest_marks_which_dates_the_training_used(reports):
    section = reports["after"].split('<section id="tiers">')[1].split("</section>")[0]
    assert "backtest test date (then in the production fit)" in section
    assert "training (in-sample)" in section


# --- pure functions on hand-made frames ---------------------------------------------------------


def backtest_rows(rows: list[tuple[str, str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["customer_id", "as_of", "tier", "churned", "churn_probability"]
    ).assign(as_of=lambda f: pd.to_datetime(f["as_of"]))


@pytest.mark.code
def test_backtest_dates_are_month_starts_whose_whole_outcome_window_is_observed():
    dates = backtest_dates(pd.Timestamp("2026-11-01"), 90, 3)
    assert list(dates.strftime("%Y-%m-%d")) == ["2026-06-01", "2026-07-01", "2026-08-01"]
    assert (dates + pd.Timedelta(days=90) <= pd.Timestamp("2026-11-01")).all()


@pytest.mark.code
def test_tier_stability_counts_ups_and_downs_among_customers_scored_at_both_dates():
    frame = backtest_rows(
        [
            ("a", "2026-01-01", "green", 0, 0.1),
            ("b", "2026-01-01", "orange", 0, 0.3),
            ("c", "2026-01-01", "red", 1, 0.6),
            ("d", "2026-01-01", "green", 0, 0.1),
            ("a", "2026-02-01", "red", 1, 0.7),  # up
            ("b", "2026-02-01", "green", 0, 0.1),  # down
            ("d", "2026-02-01", "green", 0, 0.1),  # same; c left in between
            ("e", "2026-02-01", "orange", 0, 0.3),  # new: not counted
        ]
    )
    row = tier_stability(frame).iloc[0]
    assert (row["customers"], row["changed"], row["escalated"], row["de_escalated"]) == (3, 2, 1, 1)
    assert row["changed_share"] == pytest.approx(2 / 3)
    moves = tier_transitions(frame)
    assert moves.loc["green", "red"] == pytest.approx(0.5)
    assert moves.loc["orange", "green"] == pytest.approx(1.0)
    assert np.isnan(moves.loc["red", "red"])  # the only red customer left


@pytest.mark.code
def test_tier_outcomes_give_the_observed_churn_rate_and_lift_per_tier():
    frame = backtest_rows(
        [
            ("a", "2026-01-01", "red", 1, 0.6),
            ("b", "2026-01-01", "red", 0, 0.6),
            ("c", "2026-01-01", "green", 0, 0.1),
            ("d", "2026-01-01", "green", 0, 0.1),
        ]
    )
    table = tier_outcomes(frame, by_date=False).set_index("tier")
    assert list(table.index) == ["green", "red"]
    assert table.loc["red", "churn_rate"] == pytest.approx(0.5)
    assert table.loc["red", "lift"] == pytest.approx(2.0)  # 0.5 vs 0.25 overall
    assert table.loc["green", "mean_probability"] == pytest.approx(0.1)


@pytest.mark.code
def test_the_at_risk_list_is_red_and_orange_by_expected_loss():
    scores = pd.DataFrame(
        {
            "customer_id": ["g", "o", "r", "o2"],
            "tier": ["green", "orange", "red", "orange"],
            "expected_loss": [900.0, 300.0, 200.0, 400.0],
        }
    )
    assert list(top_at_risk(scores, 2)["customer_id"]) == ["o2", "o"]


@pytest.mark.code
def test_a_report_with_only_kpis_says_what_to_run_and_renders_the_same_bytes_twice():
    kpis = pd.DataFrame(
        {
            "period_start": pd.date_range("2026-01-01", periods=3, freq="MS"),
            "S": [100, 110, 120],
            "N": [20, 20, 20],
            "lost": [10, 10, 12],
            "E": [110, 120, 128],
            "crr_pct": [90.0, 90.9, 90.0],
            "churn_rate": [0.1, 0.091, 0.1],
            "ndr": [0.98, 1.01, 0.99],
            "arpa": [50.0, 51.0, 52.0],
            "clv": [500.0, 560.0, 520.0],
            "ndr_basis": ["current_mrr_only"] * 3,
        }
    )
    cohorts = pd.DataFrame(
        {
            "cohort_month": pd.to_datetime(["2026-01-01", "2026-01-01", "2026-02-01"]),
            "months_since_signup": [1, 2, 1],
            "retention": [0.9, 0.8, 0.95],
        }
    )
    inputs = ReportInputs(kpis, cohorts, "month", pd.Timestamp("2026-04-01"), 90)
    page = render_report(inputs)
    assert "run <code>make train</code>" in page
    assert "No backtest predictions yet" in page and "No backtest" in page
    assert "No scores yet" in page and "make score" in page
    assert "NDR = GRR" in page  # the approximation is stated
    assert len(pngs(page)) == 2
    assert render_report(inputs) == page
