"""The XLSX a CS team opens: formats, fills, frozen bold header, reason columns, the summary,
"new this week" and "left the list" sheets, history per as_of and byte-identical re-runs."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from pipeline.config import ExportConfig
from pipeline.export import export_lists, history_dir, previous_scores

pytestmark = pytest.mark.data

AS_OF = pd.Timestamp("2025-06-01")
BOOK = "at_risk_2025-06-01/at_risk_2025-06-01.xlsx"


def scores(as_of: pd.Timestamp = AS_OF, tiers=("red", "orange", "green", "orange")) -> pd.DataFrame:
    """Four scored customers of two owners, with every default export column."""
    p = np.array([0.45, 0.2, 0.02, 0.15])
    monthly = np.array([1000.0, 250.0, 80.0, 40.0])
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "as_of": as_of,
            "owner": ["ann", "ann", "bob", "bob"],
            "segment": "SMB",
            "plan": ["pro", "basic", "basic", "pro"],
            "tier": list(tiers),
            "churn_probability": p,
            "monthly_value": monthly,
            "customer_value": monthly * 12,
            "revenue_at_risk": p * monthly * 12,
            "expected_loss": p * monthly * 12,
            "reason_1_sentence": ["no login for 34 days", "renewal in 49 days", None, "x"],
            "reason_2_sentence": ["2 complaints in the last 90 days", None, None, None],
            "reason_3_sentence": [None] * 4,
            "recommended_action": ["Send a re-engagement message", "Hold a renewal", None, "Y"],
            "last_activity_at": pd.to_datetime(["2025-05-31 23:30"] * 4),
            "escalated_by": [None, None, None, "serious complaint in the last 30 days"],
            "upsell_candidate": False,
            "model_version": "3",
            "tier_policy": "relative capacity: …",
            "base_rate": 0.05,
            "horizon_days": 90,
            "value_basis": "12 months",
        }
    )


def headers(sheet) -> list[str]:
    return [c.value for c in sheet[1]]


@pytest.fixture
def book(tmp_path: Path):
    export_lists(scores(), ExportConfig(time_zone="Europe/Paris"), tmp_path)
    return openpyxl.load_workbook(tmp_path / BOOK)


def test_the_workbook_has_a_summary_a_sheet_per_owner_and_new_and_left_sheets(book) -> None:
    assert book.sheetnames == ["summary", "ann", "bob", "new this week", "left the list"]


def test_headers_say_horizon_value_period_and_time_zone(book) -> None:
    assert headers(book["ann"]) == [
        "customer",
        "owner",
        "segment",
        "plan",
        "tier",
        "90-day churn risk",
        "change since last run",
        "risk at last run",
        "value per month (MRR or spend)",
        "revenue at risk (12 months)",
        "reason 1",
        "reason 2",
        "reason 3",
        "recommended action",
        "last activity (Europe/Paris)",
        "escalated by",
    ]


def test_cells_are_typed_and_formatted_for_people(book) -> None:
    ann = book["ann"]
    row = {h: ann.cell(2, j) for j, h in enumerate(headers(ann), start=1)}
    assert row["90-day churn risk"].number_format == "0.0%"
    assert row["90-day churn risk"].value == pytest.approx(0.45)
    assert row["revenue at risk (12 months)"].number_format == "#,##0"
    assert row["value per month (MRR or spend)"].number_format == "#,##0"
    assert row["last activity (Europe/Paris)"].number_format == "yyyy-mm-dd"
    # 23:30 UTC on 31 May is 1 June in Paris
    assert row["last activity (Europe/Paris)"].value == dt.datetime(2025, 6, 1)
    assert row["reason 1"].value == "no login for 34 days"
    assert row["reason 2"].value == "2 complaints in the last 90 days"
    assert row["reason 1"].alignment.wrap_text


def test_tier_cells_are_filled_and_rows_are_red_first(book) -> None:
    ann = book["ann"]
    assert [ann.cell(i, 5).value for i in (2, 3)] == ["red", "orange"]
    assert ann.cell(2, 5).fill.start_color.rgb == "00FFC7CE"
    assert ann.cell(3, 5).fill.start_color.rgb == "00FFE0B2"


def test_the_header_is_bold_and_frozen_and_the_filter_covers_the_table_only(book) -> None:
    for name in ("ann", "bob", "new this week"):
        sheet = book[name]
        assert sheet.freeze_panes == "A2"
        assert all(c.font.b for c in sheet[1])
    assert book["ann"].auto_filter.ref == "A1:P3"
    assert book["summary"].auto_filter.ref == "A1:K4"  # ann, bob, total; not the facts below
    assert book["ann"].column_dimensions["K"].width > 10


def test_the_summary_states_the_policy_and_what_changed(book) -> None:
    facts = {
        row[0]: row[1]
        for row in book["summary"].iter_rows(min_row=6, values_only=True)
        if row[0] is not None
    }
    assert facts["tier policy"] == "relative capacity: …"
    assert facts["revenue at risk"] == "churn risk × value over 12 months"
    assert facts["changed since last run"] == "new 3, escalated 0, de-escalated 0, unchanged 0"


def test_change_new_and_left_sheets_read_the_previous_distinct_as_of(tmp_path: Path) -> None:
    history = history_dir(tmp_path)
    history.mkdir(parents=True)
    before = scores(pd.Timestamp("2025-05-01"), ("orange", "orange", "red", "green"))
    before.to_parquet(history / "scores_2025-05-01.parquet")
    scores().to_parquet(history / "scores_2025-06-01.parquet")  # this run's own copy: ignored
    previous = previous_scores(history, AS_OF)
    assert previous[1] == "2025-05-01"
    _, manifest = export_lists(scores(), ExportConfig(), tmp_path / "out", previous)
    book = openpyxl.load_workbook(tmp_path / "out" / BOOK)
    assert [row[0] for row in book["new this week"].iter_rows(min_row=2, values_only=True)] == [
        "a",
        "d",
    ]
    left = list(book["left the list"].iter_rows(min_row=2, values_only=True))
    assert [(r[0], r[-1]) for r in left] == [("c", "saved")]
    ann = book["ann"]
    assert [ann.cell(i, 7).value for i in (2, 3)] == ["escalated", "unchanged"]
    assert ann.cell(2, 8).value == pytest.approx(0.45) and ann.cell(2, 8).number_format == "0.0%"
    assert manifest["counts"]["per_change"] == {
        "new": 1,
        "escalated": 1,
        "de-escalated": 0,
        "unchanged": 1,
    }
    assert manifest["counts"]["left_the_list"] == {"churned": 0, "saved": 1, "de-escalated": 0}


def test_re_running_the_same_as_of_gives_byte_identical_files(tmp_path: Path) -> None:
    first, _ = export_lists(scores(), ExportConfig(), tmp_path / "one")
    time.sleep(1.1)  # the save time must not leak into the bytes
    second, _ = export_lists(scores(), ExportConfig(), tmp_path / "two")
    for name in ("at_risk_2025-06-01.xlsx", "manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_contact_columns_come_from_the_customers_file_only_when_configured(
    tmp_path: Path,
) -> None:
    from pipeline.config import parse_config
    from pipeline.export import ExportError, with_contacts

    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,contact_email,phone\na,ann@example.com,=1+1\nb,b@x.org,2\n")

    def config(**export):
        return parse_config(
            {
                "data": {"events": "e.parquet", "customers": str(customers)},
                "event_types": {"login": ["login"]},
                "export": export,
            }
        )

    assert "contact_email" not in with_contacts(scores(), config())
    joined = with_contacts(scores(), config(contact_columns=["contact_email"]))
    assert list(joined["contact_email"].fillna("-")) == ["ann@example.com", "b@x.org", "-", "-"]
    columns = ["customer_id", "contact_email", "tier"]
    cfg = config(contact_columns=["contact_email"], columns=columns)
    export_lists(joined, cfg.export, tmp_path / "out")
    ann = openpyxl.load_workbook(tmp_path / "out" / BOOK)["ann"]
    assert headers(ann) == ["customer", "contact email", "tier"]
    assert ann.cell(2, 2).value == "ann@example.com"
    with pytest.raises(ExportError, match=r"contact_columns \['mobile'\] are not columns"):
        with_contacts(scores(), config(contact_columns=["mobile"]))
