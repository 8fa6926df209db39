"""Configuration: typos and bad values are errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (
    Config,
    ConfigError,
    FeatureConfig,
    LabelConfig,
    TierConfig,
    load_config,
    parse_config,
)

pytestmark = pytest.mark.code

ROOT = Path(__file__).resolve().parents[1]
MINIMAL_YAML = """\
data:
  events: data/events.parquet
  customers: data/customers.csv
event_types:
  login: [login, sign_in]
  feature_use: [feature_used]
  complaint: [complaint]
"""


def minimal(**sections: dict) -> dict:
    """The smallest valid config mapping, with ``sections`` added or replaced."""
    return {
        "data": {"events": "data/events.parquet", "customers": "data/customers.csv"},
        "event_types": {"login": ["login"]},
        **sections,
    }


def test_the_minimal_example_config_parses_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL_YAML)
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.data.events == Path("data/events.parquet")
    assert config.data.customers == Path("data/customers.csv")
    assert config.data.output_dir == Path("outputs/config")  # outputs/<project>: the stem
    assert config.data.observed_until is None
    assert config.event_types.mapping() == {
        "login": "login",
        "sign_in": "login",
        "feature_used": "feature_use",
        "complaint": "complaint",
    }
    assert config.validation.max_reject_share == 0.01
    assert config.label == LabelConfig()
    assert (config.label.definition, config.label.horizon_days) == ("cancellation", 90)
    assert config.features == FeatureConfig()
    assert config.dataset.frequency == "monthly"
    assert config.tiers == TierConfig()
    assert (config.tiers.policy, config.tiers.relative_capacity.red_per_owner) == (
        "relative_capacity",
        10,
    )


def test_the_demo_config_parses() -> None:
    config = load_config(ROOT / "configs" / "demo.yaml")
    assert config.label.definition == "cancellation"
    assert config.event_types.mapping()["invoice_paid"] == "payment"


def test_an_unknown_key_is_an_error_that_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'label\.horizon_day': unknown key; check the spelling"):
        parse_config(minimal(label={"horizon_day": 30}), source="cfg.yaml")


def test_an_unknown_top_level_section_is_an_error_that_names_it() -> None:
    with pytest.raises(
        ConfigError, match=r"cfg\.yaml: invalid configuration\n  - 'labels': unknown"
    ):
        parse_config(minimal(labels={"horizon_days": 30}), source="cfg.yaml")


def test_a_bad_literal_names_the_allowed_values() -> None:
    with pytest.raises(
        ConfigError,
        match=r"'label\.definition': got 'weekly'; allowed values: 'cancellation' or 'inactivity'",
    ):
        parse_config(minimal(label={"definition": "weekly"}))


def test_an_event_type_listed_under_two_families_is_an_error_naming_both() -> None:
    with pytest.raises(
        ConfigError,
        match=r"event type 'paid' is listed under both 'purchase' and 'payment'; list it under one",
    ):
        parse_config(minimal(event_types={"purchase": ["paid"], "payment": ["paid"]}))


def test_an_unknown_family_in_event_types_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'event_types\.logins': unknown key"):
        parse_config(minimal(event_types={"logins": ["login"]}))


def test_missing_required_sections_are_named() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({}, source="cfg.yaml")
    assert str(error.value) == (
        "cfg.yaml: invalid configuration\n"
        "  - 'data': required key is missing\n"
        "  - 'event_types': required key is missing"
    )


def test_an_input_file_that_is_neither_parquet_nor_csv_is_an_error() -> None:
    data = {"events": "data/events.json", "customers": "data/customers.csv"}
    with pytest.raises(ConfigError, match=r"'data\.events': .*must end in \.parquet or \.csv"):
        parse_config(minimal(data=data))


def test_an_out_of_range_number_names_the_key_and_the_value() -> None:
    with pytest.raises(ConfigError, match=r"'label\.horizon_days': .*\(got 0\)"):
        parse_config(minimal(label={"horizon_days": 0}))


def test_an_unknown_qualifying_family_is_an_error_listing_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown families \['logins'\]; allowed: \['login'"):
        parse_config(minimal(label={"qualifying_families": ["logins"]}))


def test_lifecycle_stages_out_of_order_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"mature_after_days \(90\) must exceed onboarding_days"):
        parse_config(minimal(features={"onboarding_days": 90, "mature_after_days": 90}))


def test_tier_thresholds_out_of_order_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"orange_threshold \(0\.5\) must be below red_threshold"):
        parse_config(minimal(tiers={"thresholds": {"orange_threshold": 0.5, "red_threshold": 0.5}}))


def test_a_top_level_list_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"expected a YAML mapping at the top level"):
        parse_config(["data"])  # type: ignore[arg-type]


def test_a_missing_config_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(path)


def test_an_empty_config_file_names_the_missing_sections(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(
        ConfigError, match=r"empty\.yaml: invalid configuration\n  - 'data': required"
    ):
        load_config(path)


def test_observed_until_is_read_as_a_date() -> None:
    data = {
        "events": "e.parquet",
        "customers": "c.parquet",
        "observed_until": "2026-11-01",
    }
    config = parse_config(minimal(data=data))
    assert str(config.data.observed_until) == "2026-11-01"
