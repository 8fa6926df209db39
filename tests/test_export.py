"""CS exports: change since the last run, order, configured columns only, atomic folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from pipeline.config import ExportConfig
from pipeline.export import (
    at_risk_list,
    change_vs_previous,
    export_lists,
    left_the_list,
    previous_scores,
)

pytestmark = pytest.mark.data

COLUMNS = ["customer_id", "owner", "tier", "change", "revenue_at_risk", "last_activity_at"]
HEADERS = [
    "customer",
    "owner",
    "tier",
    "change since last run",
    "revenue at risk (12 months)",
    "last activity (UTC)",
]


def scores_frame() -> pd.DataFrame:
    """Six scored customers of two owners; ``contact_email`` must never leave the pipeline."""
    p = np.array([0.9, 0.3, 0.6, 0.05, 0.25, 0.7])
    value = np.array([100.0, 1000.0, 10.0, 500.0, 40.0, 300.0])
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f"],
            "as_of": pd.Timestamp("2025-06-01"),
            "churn_probability": p,
            "tier": ["red", "orange", "red", "green", "orange", "red"],
            "revenue_at_risk": p * value,
            "expected_loss": p * value,
            "customer_value": value,
            "owner": ["ann", "bob", "ann", "bob", "ann", "bob/x"],
            "segment": "SMB",
            "last_activity_at": pd.to_datetime(["2025-05-30 10:00"] * 6).tz_localize("UTC"),
            "upsell_candidate": [False, False, False, True, False, False],
            "model_version": "7",
            "tier_policy": "thresholds: red ≥ 0.5, orange ≥ 0.2",
            "contact_email": "someone@example.com",
        }
    )


def test_change_compares_tiers_with_the_previous_run() -> None:
    current = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "tier": ["red", "red", "orange", "red", "orange"],
        }
    )
    previous = pd.DataFrame(
        {"customer_id": ["a", "b", "c", "e"], "tier": ["orange", "red", "red", "green"]}
    )
    change = change_vs_previous(current, previous)
    assert list(change) == ["escalated", "unchanged", "de-escalated", "new", "new"]
    assert list(change_vs_previous(current, None)) == ["new"] * 5


def test_the_list_holds_red_first_then_orange_each_sorted_by_expected_loss() -> None:
    listed = at_risk_list(scores_frame(), ["red", "orange"], COLUMNS, None)
    assert list(listed["customer_id"]) == ["f", "a", "c", "b", "e"]  # 210, 90, 6 | 300, 10


def test_left_the_list_says_churned_saved_or_de_escalated() -> None:
    scores = scores_frame().assign(base_rate=0.2)  # d: green at p 0.05; e: orange
    previous = pd.DataFrame(
        {
            "customer_id": ["d", "gone", "b", "x"],
            "tier": ["red", "orange", "orange", "green"],
            "churn_probability": [0.6, 0.5, 0.4, 0.9],
            "owner": ["bob", "ann", "bob", "ann"],
        }
    )
    scores.loc[scores["customer_id"] == "b", "tier"] = "green"  # still at 0.3 ≥ base rate
    left = left_the_list(scores, previous, ["red", "orange"], 0.2)
    assert left[["customer_id", "why"]].to_dict("records") == [
        {"customer_id": "gone", "why": "churned"},
        {"customer_id": "b", "why": "de-escalated"},
        {"customer_id": "d", "why": "saved"},
    ]


def test_an_unknown_configured_column_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"export.columns \['phone'\] are not in the scores"):
        at_risk_list(scores_frame(), ["red"], ["customer_id", "phone"], None)


def test_the_workbook_has_one_sheet_per_owner_a_summary_and_only_configured_columns(
    tmp_path: Path,
) -> None:
    config = ExportConfig(columns=COLUMNS)
    folder, manifest = export_lists(scores_frame(), config, tmp_path, fmt="xlsx", by="owner")
    assert folder == tmp_path / "at_risk_2025-06-01"
    assert sorted(p.name for p in folder.iterdir()) == ["at_risk_2025-06-01.xlsx", "manifest.json"]
    book = openpyxl.load_workbook(folder / "at_risk_2025-06-01.xlsx")
    assert book.sheetnames == ["summary", "ann", "bob", "bob_x", "new this week", "left the list"]
    for name in ("ann", "bob", "bob_x"):
        sheet = book[name]
        assert [c.value for c in sheet[1]] == HEADERS
        assert sheet.freeze_panes == "A2"
        assert sheet.auto_filter.ref.startswith("A1:F")
    ann = [row[0] for row in book["ann"].iter_rows(min_row=2, values_only=True)]
    assert ann == ["a", "c", "e"]
    summary = list(book["summary"].iter_rows(min_row=1, max_row=5, values_only=True))
    assert summary[0] == (
        "owner",
        "red",
        "orange",
        "green",
        "listed",
        "revenue at risk (12 months)",
        "expected loss (12 months)",
        "new",
        "escalated",
        "de-escalated",
        "left the list",
    )
    assert summary[1] == ("ann", 2, 1, 0, 3, 106.0, 106.0, 3, 0, 0, 0)
    assert summary[4] == ("total", 3, 2, 1, 5, 616.0, 616.0, 5, 0, 0, 0)
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["counts"]["per_tier"] == {"red": 3, "orange": 2}
    assert manifest["counts"]["per_part"] == {"ann": 3, "bob": 1, "bob/x": 1}
    assert manifest["model_version"] == "7" and manifest["tier_policy"].startswith("thresholds")


def test_csv_export_writes_one_file_per_owner_with_configured_columns(tmp_path: Path) -> None:
    config = ExportConfig(columns=COLUMNS, format="csv")
    folder, _ = export_lists(scores_frame(), config, tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "ann.csv",
        "bob.csv",
        "bob_x.csv",
        "left_the_list.csv",
        "manifest.json",
        "new_this_week.csv",
        "summary.csv",
    ]
    ann = pd.read_csv(folder / "ann.csv")
    assert list(ann.columns) == HEADERS
    assert list(ann["last activity (UTC)"]) == ["2025-05-30"] * 3


def test_the_same_scores_export_to_identical_bytes(tmp_path: Path) -> None:
    config = ExportConfig(columns=COLUMNS)
    first, _ = export_lists(scores_frame(), config, tmp_path / "one")
    time.sleep(1.1)  # the workbook's save time must not leak into the bytes
    second, _ = export_lists(scores_frame(), config, tmp_path / "two")
    for name in ("at_risk_2025-06-01.xlsx", "manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_an_interrupted_export_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    config = ExportConfig(columns=COLUMNS, format="csv")
    folder, _ = export_lists(scores_frame(), config, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(stage: str) -> None:
        raise KeyboardInterrupt(stage)

    changed = scores_frame().assign(tier="red")
    with pytest.raises(KeyboardInterrupt):
        export_lists(changed, config, tmp_path, fail_after=crash)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["at_risk_2025-06-01"]


def test_the_previous_run_is_the_latest_earlier_as_of(tmp_path: Path) -> None:
    for day, tier in (("2025-04-01", "green"), ("2025-05-01", "orange"), ("2025-06-01", "red")):
        frame = pd.DataFrame({"customer_id": ["a"], "tier": [tier]})
        frame.to_parquet(tmp_path / f"scores_{day}.parquet")
    previous, when = previous_scores(tmp_path, pd.Timestamp("2025-06-01"))
    assert when == "2025-05-01" and list(previous["tier"]) == ["orange"]
    assert previous_scores(tmp_path, pd.Timestamp("2025-04-01")) == (None, "")


def test_upsell_candidates_get_their_own_list_only_when_asked(tmp_path: Path) -> None:
    config = ExportConfig(columns=COLUMNS, format="csv")
    folder, manifest = export_lists(scores_frame(), config, tmp_path, upsell=True)
    assert list(pd.read_csv(folder / "upsell_candidates.csv")["customer"]) == ["d"]
    assert manifest["counts"]["per_part"]["upsell_candidates"] == 1
