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
    group_quality,
    kpi_window,
    margin_phrase,
    render_report,
    tier_cutoffs,
    tier_outcomes,
    tier_stability,
    tier_transitions,
    top_at_risk,
)
from pipeline.report_render import CATCH_ROWS

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
    # KPI trends, cohorts, ROC/PR, calibration, gain, importance, score distribution,
    # calibration over the whole range, tier mix, tier churn, stability, tier moves
    # (monitoring and contributions come with `churn run`: see test_run.py)
    assert len(images) == 12
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
    assert len(pngs(page)) == 11  # everything but the score distribution is still there


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


@pytest.mark.model
def test_the_tiers_section_says_what_the_list_catches(reports):
    section = reports["after"].split('<section id="tiers">')[1].split("</section>")[0]
    for label, _ in CATCH_ROWS.values():
        assert label.replace("÷", "&divide;") in section or label in section, label


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
    inputs = ReportInputs(
        kpis, cohorts, "month", pd.Timestamp("2026-04-01"), 90, kpi_start=pd.Timestamp("2026-01-01")
    )
    page = render_report(inputs)
    assert "run <code>make train</code>" in page
    assert "No backtest predictions yet" in page and "No backtest" in page
    assert "No scores yet" in page and "make score" in page
    assert "NDR = GRR" in page  # the approximation is stated
    assert len(pngs(page)) == 2
    assert render_report(inputs) == page


def hostile_scores() -> pd.DataFrame:
    hostile = '<script>alert("x")</script>'
    return pd.DataFrame(
        {
            "customer_id": [hostile, "c2"],
            "as_of": pd.to_datetime(["2026-11-01"] * 2),
            "churn_probability": [0.7, 0.1],
            "tier": ["red", "green"],
            "expected_loss": [700.0, 10.0],
            "revenue_at_risk": [700.0, 10.0],
            "owner": ["<b>owner</b>", "ann"],
            "segment": ["smb & co", "smb"],
            "reason_1_sentence": ["<img src=x onerror=alert(1)> logins fell", None],
            "recommended_action": ["call <now>", None],
            "last_activity_at": pd.to_datetime(["2026-10-01", "2026-10-20"]),
            "model_version": ["7", "7"],
        }
    )


@pytest.mark.code
def test_jinja2_autoescapes_a_hostile_customer_name_owner_and_reason():
    kpis = pd.DataFrame(columns=["period_start", "S", "crr_pct", "ndr_basis"])
    inputs = ReportInputs(kpis, pd.DataFrame(), "month", pd.Timestamp("2026-11-01"), 90)
    inputs.scores = hostile_scores()
    page = render_report(inputs)
    section = page.split('<section id="at-risk">')[1].split("</section>")[0]
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in section
    assert "&lt;b&gt;owner&lt;/b&gt;" in section and "smb &amp; co" in section
    assert "&lt;img src=x onerror=alert(1)&gt; logins fell" in section
    assert "→ call &lt;now&gt;" in section
    assert "<script" not in page and "<b>owner" not in page and "<img src=x" not in page


@pytest.mark.code
def test_margins_read_beats_or_trails_never_a_negative_beat():
    assert margin_phrase("logistic regression", 0.0123) == "beats logistic regression by 0.012"
    assert margin_phrase("logistic regression", -0.009) == "trails logistic regression by 0.009"
    assert margin_phrase("the rule", 0.0001) == "ties with the rule"


@pytest.mark.code
def test_kpi_charts_start_one_year_after_the_first_period_with_customers_unless_configured():
    kpis = pd.DataFrame(
        {"period_start": pd.date_range("2025-01-01", periods=15, freq="MS"), "S": [0] + [5] * 14}
    )
    shown = kpi_window(kpis)
    assert shown["period_start"].iloc[0] == pd.Timestamp("2026-02-01")
    assert len(kpi_window(kpis, pd.Timestamp("2025-06-01"))) == 10


@pytest.mark.code
def test_quality_per_group_notes_a_group_too_small_for_a_roc_auc():
    frame = pd.DataFrame(
        {
            "plan": ["pro"] * 4 + ["basic"] * 2,
            "churned": [1, 0, 0, 1, 1, 0],
            "churn_probability": [0.9, 0.2, 0.1, 0.6, 0.5, 0.5],
            "tier": ["red", "green", "green", "red", "orange", "orange"],
        }
    )
    table = group_quality(frame, "plan", min_size=3).set_index("group")
    assert table.loc["pro", "roc_auc"] == 1.0 and table.loc["pro", "note"] == ""
    assert table.loc["pro", "churn_red"] == 1.0 and table.loc["pro", "churn_green"] == 0.0
    assert (table.loc["pro", "n_red"], table.loc["basic", "n_orange"]) == (2, 2)
    assert np.isnan(table.loc["basic", "roc_auc"])
    assert table.loc["basic", "note"] == "too small (n < 3)"
    assert table.loc["basic", "customers"] == 2


@pytest.mark.code
def test_tier_cutoffs_come_from_the_policy_or_from_todays_tiers():
    policy = {"policy": "thresholds", "red_threshold": 0.5, "orange_threshold": 0.2}
    assert tier_cutoffs(policy, None) == {"orange": 0.2, "red": 0.5}
    scores = pd.DataFrame(
        {
            "churn_probability": [0.9, 0.6, 0.3, 0.05, 0.1],
            "tier": ["red", "red", "orange", "orange", "green"],
            "escalated": [False, False, False, True, False],
        }
    )
    assert tier_cutoffs({"policy": "capacity"}, scores) == {"orange": 0.3, "red": 0.6}


@pytest.mark.code
def test_a_run_without_a_reference_profile_says_retrain_in_the_monitoring_section():
    from pipeline import monitoring
    from pipeline.config import MonitorConfig

    scores = hostile_scores()
    features = scores[["customer_id"]].assign(logins_30d=[1.0, 2.0])
    payload = monitoring.build_monitor(
        pd.Timestamp("2026-11-01"), features, scores, {"model_version": "7"}, MonitorConfig()
    )
    kpis = pd.DataFrame(columns=["period_start", "S", "crr_pct", "ndr_basis"])
    inputs = ReportInputs(kpis, pd.DataFrame(), "month", pd.Timestamp("2026-11-01"), 90)
    inputs.monitor, inputs.scores = payload, scores
    section = render_report(inputs).split('<section id="monitoring">')[1].split("</section>")[0]
    assert "no reference profile in the model card (retrain)" in section
    assert "No alerts." in section and "Expected quality today" in section
    assert "No earlier runs yet" in section
