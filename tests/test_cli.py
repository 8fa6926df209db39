"""Code tests: the `churn` command line as a user runs it (exit codes, messages, files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import DEMO_EVENT_TYPES
from typer.testing import CliRunner

from pipeline.cli import app

pytestmark = pytest.mark.code
runner = CliRunner()


def write_config(path: Path, data_dir: Path, **extra: dict) -> Path:
    raw = {
        "data": {
            "events": str(data_dir / "events.parquet"),
            "customers": str(data_dir / "customers.csv"),
            "output_dir": str(path.parent / "outputs"),
            "observed_until": "2026-11-01",
        },
        "event_types": DEMO_EVENT_TYPES,
        **extra,
    }
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.demo import write_demo_data

    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, n_customers=300, seed=9)
    return out


def test_a_misspelt_config_key_exits_2_and_names_the_key(tmp_path, demo):
    config = write_config(tmp_path / "c.yaml", demo, label={"horizon_day": 90})
    result = runner.invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 2
    assert "label.horizon_day" in result.output
    assert "unknown key" in result.output


def test_a_missing_config_file_exits_2_and_says_how_to_pass_one(tmp_path):
    result = runner.invoke(app, ["features", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_features_for_two_dates_are_written_in_one_call(tmp_path, demo):
    config = write_config(tmp_path / "c.yaml", demo)
    out = tmp_path / "f.parquet"
    result = runner.invoke(
        app,
        [
            "features",
            "--config",
            str(config),
            "--as-of",
            "2026-01-01",
            "--as-of",
            "2026-06-01",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert sorted(frame["as_of"].dt.strftime("%Y-%m-%d").unique()) == ["2026-01-01", "2026-06-01"]
    assert not frame.duplicated(["customer_id", "as_of"]).any()


def test_a_bad_as_of_date_exits_2_with_the_expected_format(tmp_path, demo):
    config = write_config(tmp_path / "c.yaml", demo)
    result = runner.invoke(app, ["features", "--config", str(config), "--as-of", "01/06/2026"])
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output


def test_too_many_rejected_rows_exit_2_and_name_the_rejects_file(tmp_path, demo):
    events = pd.read_parquet(demo / "events.parquet")
    events.loc[events.index[:50], "customer_id"] = "nobody"
    events.to_parquet(tmp_path / "events.parquet", index=False)
    (tmp_path / "customers.csv").write_bytes((demo / "customers.csv").read_bytes())
    config = write_config(tmp_path / "c.yaml", tmp_path, validation={"max_reject_share": 0.0001})
    result = runner.invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 2
    assert "customer_id not in customers table" in result.output
    assert (tmp_path / "outputs/rejects/events_rejected.csv").exists()
