"""Issue 13 defect 2: user values never execute. Formulas are text in XLSX (no <f> element) and
neutralised in CSV; control characters are stripped; cells are capped at 32,767 characters."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from pipeline.config import ExportConfig
from pipeline.export import MAX_CELL, TRUNCATED, csv_safe, export_lists, safe_text

pytestmark = pytest.mark.data

HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
]
COLUMNS = ["customer_id", "owner", "segment", "tier", "reason_1", "recommended_action"]


def hostile_scores() -> pd.DataFrame:
    n = len(HOSTILE)
    return pd.DataFrame(
        {
            "customer_id": HOSTILE,
            "as_of": pd.Timestamp("2025-06-01"),
            "owner": ["ann\x01", *HOSTILE[1:]],
            "segment": HOSTILE,
            "tier": "red",
            "churn_probability": 0.5,
            "revenue_at_risk": 10.0,
            "expected_loss": 10.0,
            "customer_value": 20.0,
            "reason_1_sentence": ["=1+1", "x" * 40_000, *HOSTILE[2:]],
            "recommended_action": HOSTILE[::-1],
            "model_version": "=cmd",
            "tier_policy": "@policy",
            "upsell_candidate": [False] * n,
        }
    )


def test_hostile_values_are_text_in_the_workbook_never_a_formula(tmp_path: Path) -> None:
    folder, _ = export_lists(hostile_scores(), ExportConfig(columns=COLUMNS), tmp_path)
    path = folder / "at_risk_2025-06-01.xlsx"
    with zipfile.ZipFile(path) as book:
        sheets = [n for n in book.namelist() if n.startswith("xl/worksheets/")]
        xml = b"".join(book.read(n) for n in sheets)
    assert sheets and not re.search(rb"<f[ >]", xml)
    loaded = openpyxl.load_workbook(path)
    texts = {c.value for s in loaded.worksheets for row in s.iter_rows() for c in row}
    assert HOSTILE[0] in texts and "=1+1" in texts
    assert "ann" in loaded.sheetnames  # the \x01 is stripped, not a crash


def test_cells_are_capped_at_excels_limit_with_a_marker(tmp_path: Path) -> None:
    folder, _ = export_lists(hostile_scores(), ExportConfig(columns=COLUMNS), tmp_path)
    loaded = openpyxl.load_workbook(folder / "at_risk_2025-06-01.xlsx")
    longest = max(
        (c.value for s in loaded.worksheets for row in s.iter_rows() for c in row),
        key=lambda v: len(v) if isinstance(v, str) else 0,
    )
    assert len(longest) == MAX_CELL and longest.endswith(TRUNCATED)


def test_hostile_values_are_neutralised_in_csv(tmp_path: Path) -> None:
    config = ExportConfig(columns=COLUMNS, format="csv", by="none")
    folder, _ = export_lists(hostile_scores(), config, tmp_path)
    table = pd.read_csv(folder / "at_risk.csv", dtype="str", keep_default_na=False)
    for column in ("customer", "segment", "recommended action"):
        assert all(v.startswith("'") for v in table[column]), column
    row = table[table["owner"] == "ann"].iloc[0]  # the \x01 stripped
    assert row["reason 1"] == "'=1+1"
    raw = (folder / "at_risk.csv").read_text()
    assert "\x01" not in raw


def test_safe_text_and_csv_safe_on_literal_values() -> None:
    values = pd.Series(["ok", "a\x01b\x1fc", "=x", "-1", "\tx", "plain -1", None])
    assert list(safe_text(values).fillna("<NA>")) == [
        "ok",
        "abc",
        "=x",
        "-1",
        "\tx",
        "plain -1",
        "<NA>",
    ]
    assert list(csv_safe(values).fillna("<NA>")) == [
        "ok",
        "abc",
        "'=x",
        "'-1",
        "'\tx",
        "plain -1",
        "<NA>",
    ]
