"""`churn init`: guesses from names, types and values; a config that is safe whatever the data
holds; never overwrites a file unasked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.init import family_of, guess, guess_columns, guess_dayfirst, guess_epoch, render

pytestmark = pytest.mark.code
runner = CliRunner()


def test_columns_are_guessed_from_common_names_and_only_once() -> None:
    types = dict.fromkeys(["user_id", "ts", "action", "product_area", "value", "id"], "VARCHAR")
    assert guess_columns("events", types) == {
        "customer_id": "user_id",
        "occurred_at": "ts",
        "event_type": "action",
        "feature": "product_area",
        "amount": "value",
    }
    customers = ["id", "created", "cancelled_on", "plan", "monthly_fee", "csm", "email"]
    assert guess_columns("customers", dict.fromkeys(customers, "VARCHAR")) == {
        "customer_id": "id",
        "signup_at": "created",
        "churned_at": "cancelled_on",
        "plan": "plan",
        "mrr": "monthly_fee",
        "owner": "csm",
    }


def test_a_timestamp_column_with_an_unknown_name_is_taken_as_occurred_at() -> None:
    types = {"who": "VARCHAR", "happened": "TIMESTAMP WITH TIME ZONE", "event": "VARCHAR"}
    assert guess_columns("events", types)["occurred_at"] == "happened"


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("login", "login"),
        ("User Signed In", "login"),
        ("failed payment", "payment_failed"),
        ("payment_declined", "payment_failed"),
        ("invoice.paid", "payment"),
        ("Complaint", "complaint"),
        ("ticket", "support_ticket"),
        ("order_placed", "purchase"),
        ("feature_used", "feature_use"),
        ("report_viewed", None),
        ("newsletter_opened", None),
    ],
)
def test_obvious_event_types_get_their_family_and_others_none(name: str, family: str) -> None:
    assert family_of(name) == family


def test_epoch_units_are_told_apart_by_magnitude() -> None:
    assert guess_epoch(["1735725600", "1735812000"]) == "s"
    assert guess_epoch(["1735725600000", "1735812000123"]) == "ms"
    assert guess_epoch(["2025-01-01", "1735725600"]) is None


def test_day_first_is_guessed_from_a_day_above_12_and_doubts_are_reported() -> None:
    checks: list[str] = []
    assert guess_dayfirst(["25/03/2025", "04/03/2025"], checks, "events.ts") is True
    assert checks == []
    assert guess_dayfirst(["04/03/2025"], checks, "events.ts") is True
    assert "could be day or month first" in checks[0]
    assert guess_dayfirst(["03/25/2025"], checks, "events.ts") is False
    assert "month first" in checks[1]
    assert guess_dayfirst(["2025-03-04"], checks, "events.ts") is None


def test_epoch_milliseconds_are_guessed_and_the_written_config_reads_them(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("uid;when;what\nc1;1735725600000;login\nc1;1735812000000;ticket\n")
    customers = tmp_path / "customers.csv"
    customers.write_text("id;created\nc1;01.12.2024\n")
    found = guess(events, customers)
    assert found.formats == {"delimiter": ";", "epoch_unit": "ms", "dayfirst": True}
    assert found.families == {"login": ["login"], "support_ticket": ["ticket"]}
    out = tmp_path / "c.yaml"
    out.write_text(render(found, events, customers, "c"))
    from pipeline.events import load_inputs

    data = load_inputs(load_config(out))
    times = data.con.execute("SELECT occurred_at FROM events ORDER BY 1").fetchall()
    assert [t[0] for t in times] == [
        pd.Timestamp("2025-01-01 10:00"),
        pd.Timestamp("2025-01-02 10:00"),
    ]
    assert data.customers["signup_at"].tolist() == [pd.Timestamp("2024-12-01")]


def test_hostile_event_type_names_are_written_as_plain_values(tmp_path: Path) -> None:
    hostile = ["login: *x\nevent_types: {}", "'; DROP TABLE x; --", "&a [1]", "ticket #1"]
    events = pd.DataFrame(
        {
            "customer_id": ["c1"] * 4,
            "occurred_at": ["2025-01-02"] * 4,
            "event_type": hostile,
        }
    )
    events.to_parquet(tmp_path / "events.parquet")
    pd.DataFrame({"customer_id": ["c1"], "signup_at": ["2024-01-01"]}).to_csv(
        tmp_path / "customers.csv", index=False
    )
    found = guess(tmp_path / "events.parquet", tmp_path / "customers.csv")
    text = render(found, tmp_path / "events.parquet", tmp_path / "customers.csv", "h")
    raw = yaml.safe_load(text)
    mapped = [t for types in raw["event_types"].values() for t in types]
    assert sorted(mapped) == sorted(found.families["login"] + found.families["support_ticket"])
    assert set(mapped) <= set(hostile)
    assert "DROP TABLE" in text.split("# not mapped")[1]  # listed, commented out
    assert all(line.startswith("  #") for line in text.splitlines() if "DROP" in line)


def test_init_refuses_to_overwrite_an_existing_config(tmp_path: Path) -> None:
    out = tmp_path / "mine.yaml"
    out.write_text("keep me")
    result = runner.invoke(
        app, ["init", "--events", "e.csv", "--customers", "c.csv", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "exists; pass --force" in result.output
    assert out.read_text() == "keep me"


def test_init_on_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "init",
            "--events",
            str(tmp_path / "nope.csv"),
            "--customers",
            str(tmp_path / "c.csv"),
            "--out",
            str(tmp_path / "x.yaml"),
        ],
    )
    assert result.exit_code == 2
    assert f"events file '{tmp_path / 'nope.csv'}' does not exist" in result.output


def test_init_says_which_column_it_could_not_find_and_keeps_the_config(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("uid,when,zzz\nc1,2025-01-02,login\n")
    customers = tmp_path / "customers.csv"
    customers.write_text("id,created\nc1,2024-01-01\n")
    out = tmp_path / "x.yaml"
    args = ["init", "--events", str(events), "--customers", str(customers), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "no column found for event_type; set columns.events.event_type" in result.output
    assert f"wrote '{out}', but it needs a fix" in " ".join(result.output.split())
    assert "missing required column(s) ['event_type']" in " ".join(result.output.split())
    assert out.exists()


def test_a_parquet_log_in_epoch_seconds_gets_epoch_unit_s_and_validates(tmp_path: Path) -> None:
    pd.DataFrame(
        {"user_id": ["c1", "c2"], "ts": [1735725600, 1735812000], "action": ["login", "x"]}
    ).to_parquet(tmp_path / "events.parquet")
    pd.DataFrame({"id": ["c1", "c2"], "created": ["2024-01-01", "2024-02-01"]}).to_parquet(
        tmp_path / "customers.parquet"
    )
    out = tmp_path / "p.yaml"
    args = ["--events", str(tmp_path / "events.parquet"), "--customers"]
    result = runner.invoke(
        app, ["init", *args, str(tmp_path / "customers.parquet"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    raw = yaml.safe_load(out.read_text())
    assert raw["data"]["epoch_unit"] == "s"
    assert raw["columns"]["events"] == {
        "customer_id": "user_id",
        "occurred_at": "ts",
        "event_type": "action",
    }
    from pipeline.events import load_inputs

    data = load_inputs(load_config(out))
    assert (data.report.events_valid, data.report.naive_timestamps) == (2, 0)
