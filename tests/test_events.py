"""Input validation: each kind of bad input gives an exact error or an exact reject reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import EventTypes
from pipeline.contract import Formats
from pipeline.events import (
    InputError,
    KindLayout,
    RejectsExceeded,
    ValidatedData,
    connect,
    load_and_validate,
)
from pipeline.io import write_frame

pytestmark = pytest.mark.data

T = pd.Timestamp
OBSERVED_UNTIL = T("2025-03-01")
FUTURE = "occurred_at in the future (at or after 2025-03-01 00:00:00)"
DUPLICATE = (
    "duplicate event (same customer, time, type, feature, amount and severity as an earlier row)"
)
UNKNOWN_SEVERITY = "unknown severity (use low, medium, high, critical or 1-4)"

Validate = Callable[..., ValidatedData]


def customers(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(ids), "signup_at": ["2024-01-01"] * len(ids)})


def events(rows: list[tuple], columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Events from (customer_id, occurred_at, event_type, *optional columns) tuples."""
    return pd.DataFrame(rows, columns=["customer_id", "occurred_at", "event_type", *columns])


def reasons(rejects: pd.DataFrame) -> pd.DataFrame:
    """The (row, reason) pairs of a rejects frame, with plain dtypes."""
    return rejects[["row", "reason"]].astype({"row": "int64", "reason": "str"})


def expected_reasons(*pairs: tuple[int, str]) -> pd.DataFrame:
    return pd.DataFrame({"row": [p[0] for p in pairs], "reason": [p[1] for p in pairs]}).astype(
        {"row": "int64", "reason": "str"}
    )


def valid_events(data: ValidatedData) -> pd.DataFrame:
    """The valid events table, ordered by time then type, as plain columns."""
    return (
        data.con.execute(
            "SELECT customer_id, occurred_at, event_type, family FROM events"
            " ORDER BY occurred_at, event_type"
        )
        .df()
        .astype({"customer_id": "str", "event_type": "str", "family": "object"})
    )


@pytest.fixture
def validate(validate: Validate) -> Validate:
    """The shared loader with this module's observed_until."""

    def _validate(events: pd.DataFrame, customers: pd.DataFrame, **kwargs) -> ValidatedData:
        kwargs.setdefault("observed_until", OBSERVED_UNTIL)
        return validate(events, customers, **kwargs)

    return _validate


# --- errors that stop the run --------------------------------------------------------------


def test_a_missing_required_column_raises_an_input_error_naming_the_column(
    validate: Validate,
) -> None:
    frame = pd.DataFrame({"customer_id": ["c1"], "occurred_at": ["2025-01-01"]})
    with pytest.raises(InputError, match=r"events: missing required column\(s\) \['event_type'\]"):
        validate(frame, customers("c1"))


def test_a_missing_required_customer_column_raises_an_input_error_naming_the_column(
    validate: Validate,
) -> None:
    frame = events([("c1", "2025-01-01", "login")])
    table = pd.DataFrame({"customer_id": ["c1"], "signed_up": ["2024-01-01"]})
    with pytest.raises(
        InputError, match=r"customers: missing required column\(s\) \['signup_at'\]"
    ):
        validate(frame, table)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_missing_column_in_a_file_raises_an_input_error_naming_the_file_and_column(
    tmp_path: Path, event_types: EventTypes, suffix: str
) -> None:
    path = tmp_path / f"events{suffix}"
    frame = pd.DataFrame({"customer_id": ["c1"], "occurred": ["2025-01-01"], "event_type": ["x"]})
    write_frame(frame, path)
    with pytest.raises(InputError) as error:
        load_and_validate(path, customers("c1"), event_types, observed_until=OBSERVED_UNTIL)
    assert str(path) in str(error.value)
    assert "missing required column(s) ['occurred_at']" in str(error.value)


def test_a_missing_input_file_raises_an_input_error_naming_the_file(
    tmp_path: Path, event_types: EventTypes
) -> None:
    path = tmp_path / "nope.parquet"
    with pytest.raises(InputError, match=r"events file '.*nope\.parquet' does not exist"):
        load_and_validate(path, customers("c1"), event_types, observed_until=OBSERVED_UNTIL)


def test_a_numeric_timestamp_column_raises_an_input_error_naming_its_type(
    validate: Validate,
) -> None:
    frame = events([("c1", 1735725600, "login")])
    with pytest.raises(
        InputError,
        match=r"events: column 'occurred_at' has type BIGINT; expected a timestamp or an ISO-8601",
    ):
        validate(frame, customers("c1"))


def test_a_numeric_signup_column_raises_an_input_error_naming_its_type(
    validate: Validate,
) -> None:
    table = pd.DataFrame({"customer_id": ["c1"], "signup_at": [20240101.0]})
    with pytest.raises(InputError, match=r"customers: column 'signup_at' has type DOUBLE"):
        validate(events([("c1", "2025-01-01", "login")]), table)


# --- rejected event rows -------------------------------------------------------------------


def test_null_and_blank_customer_ids_are_rejected_as_missing(validate: Validate) -> None:
    frame = events(
        [
            ("c1", "2025-01-01", "login"),
            (None, "2025-01-01", "login"),
            ("  ", "2025-01-02", "login"),
        ]
    )
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects),
        expected_reasons((2, "missing customer_id"), (3, "missing customer_id")),
    )
    assert data.report.event_rejects == {"missing customer_id": 2}
    assert (data.report.events_in, data.report.events_valid) == (3, 1)


def test_unparseable_and_missing_timestamps_are_rejected_with_their_reason(
    validate: Validate,
) -> None:
    frame = events(
        [
            ("c1", "2025-01-01", "login"),
            ("c1", "yesterday", "login"),
            ("c1", "2025-02-30 10:00", "login"),
            ("c1", "", "login"),
            ("c1", None, "login"),
        ]
    )
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects),
        expected_reasons(
            (2, "unparseable occurred_at"),
            (3, "unparseable occurred_at"),
            (4, "missing occurred_at"),
            (5, "missing occurred_at"),
        ),
    )


def test_a_missing_event_type_is_rejected(validate: Validate) -> None:
    frame = events([("c1", "2025-01-01", "login"), ("c1", "2025-01-02", " ")])
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects), expected_reasons((2, "missing event_type"))
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_padded_and_integer_customer_ids_match_their_customers_in_files_of_either_format(
    tmp_path: Path, event_types: EventTypes, suffix: str
) -> None:
    for ids, name in ((["101", " 101", "102 ", " "], "text"), ([101, 101, 102, 103], "integer")):
        frame = events([(i, f"2025-01-0{n + 1}", "login") for n, i in enumerate(ids)])
        path = tmp_path / f"events_{name}{suffix}"
        write_frame(frame, path)
        data = load_and_validate(
            path,
            customers("101", "102"),
            event_types,
            observed_until=OBSERVED_UNTIL,
            max_reject_share=1.0,
        )
        last = "missing customer_id" if name == "text" else "customer_id not in customers table"
        pd.testing.assert_frame_equal(reasons(data.event_rejects), expected_reasons((4, last)))
        kept = data.con.execute(
            "SELECT customer_id, count(*) FROM events GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert kept == [("101", 2), ("102", 1)]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_padded_event_types_and_features_are_trimmed_in_files_of_either_format(
    tmp_path: Path, event_types: EventTypes, suffix: str
) -> None:
    frame = events(
        [
            ("c1", "2025-01-01", " feature_used ", " reports"),
            ("c1", "2025-01-02", "feature_used", "reports  "),
            ("c1", "2025-01-03", "login", " "),
            ("c1", "2025-01-04", "  ", "reports"),
        ],
        columns=("feature",),
    )
    path = tmp_path / f"events{suffix}"
    write_frame(frame, path)
    data = load_and_validate(
        path, customers("c1"), event_types, observed_until=OBSERVED_UNTIL, max_reject_share=1.0
    )
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects), expected_reasons((4, "missing event_type"))
    )
    kept = data.con.execute(
        "SELECT event_type, family, feature FROM events ORDER BY occurred_at"
    ).fetchall()
    assert kept == [
        ("feature_used", "feature_use", "reports"),
        ("feature_used", "feature_use", "reports"),
        ("login", "login", None),
    ]


def test_a_naive_timestamp_is_read_as_utc(validate: Validate) -> None:
    frame = events(
        [("c1", "2025-01-01 10:00:00", "login"), ("c2", "2025-01-01T12:00:00+02:00", "login")]
    )
    data = validate(frame, customers("c1", "c2"))
    expected = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "occurred_at": pd.to_datetime(["2025-01-01 10:00", "2025-01-01 10:00"]).as_unit("us"),
        }
    ).astype({"customer_id": "str"})
    got = valid_events(data)[["customer_id", "occurred_at"]]
    pd.testing.assert_frame_equal(got.sort_values("customer_id", ignore_index=True), expected)
    assert data.report.naive_timestamps == 1


def test_a_date_without_a_time_is_midnight_utc_and_counted_as_naive(validate: Validate) -> None:
    frame = events([("c1", "2025-01-02", "login"), ("c1", "2025-01-03T00:00:00Z", "login")])
    data = validate(frame, customers("c1"))
    assert list(valid_events(data)["occurred_at"]) == [T("2025-01-02"), T("2025-01-03")]
    assert data.report.naive_timestamps == 1


@pytest.mark.parametrize(
    ("raw", "utc"),
    [
        ("2025-01-01T23:30:00-05:00", "2025-01-02 04:30:00"),
        ("2025-01-01T01:15:00+0530", "2024-12-31 19:45:00"),
        ("2025-01-01T10:00:00Z", "2025-01-01 10:00:00"),
        ("2025-01-01 10:00:00.000001+01:00", "2025-01-01 09:00:00.000001"),
    ],
)
def test_a_timestamp_with_an_offset_is_converted_to_utc(
    validate: Validate, raw: str, utc: str
) -> None:
    data = validate(events([("c1", raw, "login")]), customers("c1"))
    assert list(valid_events(data)["occurred_at"]) == [T(utc)]
    assert data.report.naive_timestamps == 0


def test_a_time_zone_aware_timestamp_column_is_converted_to_utc(validate: Validate) -> None:
    stamps = pd.Series(pd.to_datetime(["2025-01-01 10:00", "2025-07-01 10:00"])).dt.tz_localize(
        "Europe/Paris"
    )
    frame = pd.DataFrame({"customer_id": ["c1", "c1"], "occurred_at": stamps, "event_type": "x"})
    data = validate(frame, customers("c1"), observed_until=T("2025-08-01"))
    assert list(valid_events(data)["occurred_at"]) == [T("2025-01-01 09:00"), T("2025-07-01 08:00")]
    assert data.report.naive_timestamps == 0


def test_a_naive_datetime_column_is_read_as_utc_and_counted(validate: Validate) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c1"],
            "occurred_at": pd.to_datetime(["2025-01-01 10:00", "2025-01-02 11:00"]),
            "event_type": ["login", "login"],
        }
    )
    data = validate(frame, customers("c1"))
    assert list(valid_events(data)["occurred_at"]) == [T("2025-01-01 10:00"), T("2025-01-02 11:00")]
    assert data.report.naive_timestamps == 2


def test_events_at_or_after_observed_until_are_rejected_as_in_the_future(
    validate: Validate,
) -> None:
    frame = events(
        [
            ("c1", "2025-02-28 23:59:59.999999", "login"),
            ("c1", "2025-03-01 00:00:00", "login"),
            ("c1", "2025-03-01T00:30:00+01:00", "login"),
            ("c1", "2026-01-01", "login"),
        ]
    )
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects), expected_reasons((2, FUTURE), (4, FUTURE))
    )
    assert list(valid_events(data)["occurred_at"]) == [
        T("2025-02-28 23:30"),
        T("2025-02-28 23:59:59.999999"),
    ]


@pytest.mark.parametrize("key_bits", [62, 8], ids=["one_integer_key", "two_sort_keys"])
@pytest.mark.parametrize("partition_customers", [10_000, 1])
def test_an_exact_duplicate_event_keeps_the_first_row_and_rejects_the_later_ones(
    validate: Validate, monkeypatch: pytest.MonkeyPatch, key_bits: int, partition_customers: int
) -> None:
    monkeypatch.setattr("pipeline.events.KEY_BITS", key_bits)
    frame = events(
        [
            ("c1", "2025-01-01 10:00", "feature_used", "reports"),
            ("c1", "2025-01-01 10:00", "feature_used", "exports"),
            ("c1", "2025-01-01 10:00", "feature_used", "reports"),
            ("c1", "2025-01-01 10:00:01", "feature_used", "reports"),
            ("c2", "2025-01-01 10:00", "feature_used", "reports"),
            ("c1", "2025-01-01 10:00", "feature_used", "reports"),
        ],
        columns=("feature",),
    )
    data = validate(frame, customers("c1", "c2", "c3"), partition_customers=partition_customers)
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects), expected_reasons((3, DUPLICATE), (6, DUPLICATE))
    )
    kept = data.con.execute(
        "SELECT customer_id, feature FROM events ORDER BY customer_id, occurred_at, feature"
    ).df()
    assert kept.values.tolist() == [
        ["c1", "exports"],
        ["c1", "reports"],
        ["c1", "reports"],
        ["c2", "reports"],
    ]
    assert (data.report.events_valid, data.report.customers_without_events) == (4, 1)
    # Only duplicates: the rejects still carry the row's values as read.
    assert (
        data.event_rejects[["customer_id", "event_type", "feature"]].values.tolist()
        == [["c1", "feature_used", "reports"]] * 2
    )
    assert data.report.event_rejects == {DUPLICATE: 2}


def test_an_unknown_event_type_is_counted_and_kept_with_no_family(validate: Validate) -> None:
    frame = events(
        [
            ("c1", "2025-01-01", "login"),
            ("c1", "2025-01-02", "newsletter_opened"),
            ("c1", "2025-01-03", "newsletter_opened"),
            ("c1", "2025-01-04", "Login"),
        ]
    )
    data = validate(frame, customers("c1"))
    assert data.event_rejects.empty
    assert data.report.unknown_event_types == {"newsletter_opened": 2, "Login": 1}
    expected = pd.DataFrame(
        {
            "customer_id": ["c1"] * 4,
            "occurred_at": pd.to_datetime(
                ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]
            ).as_unit("us"),
            "event_type": ["login", "newsletter_opened", "newsletter_opened", "Login"],
            "family": ["login", None, None, None],
        }
    ).astype({"customer_id": "str", "event_type": "str", "family": "object"})
    pd.testing.assert_frame_equal(valid_events(data), expected)


def test_a_negative_amount_is_rejected(validate: Validate) -> None:
    frame = events(
        [("c1", "2025-01-01", "purchase", -0.01), ("c1", "2025-01-02", "purchase", 0.0)],
        columns=("amount",),
    )
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects), expected_reasons((1, "negative amount"))
    )


def test_an_unparseable_amount_in_a_csv_file_is_rejected(
    tmp_path: Path, event_types: EventTypes
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,occurred_at,event_type,amount\n"
        "c1,2025-01-01,purchase,12.50\n"
        'c1,2025-01-02,purchase,"12,50"\n'
        "c1,2025-01-03,purchase,twelve\n"
        "c1,2025-01-04,purchase,\n"
    )
    data = load_and_validate(
        path, customers("c1"), event_types, max_reject_share=1.0, observed_until=OBSERVED_UNTIL
    )
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects),
        expected_reasons((2, "unparseable amount"), (3, "unparseable amount")),
    )
    amounts = data.con.execute("SELECT amount FROM events ORDER BY occurred_at").df()["amount"]
    assert amounts.tolist()[0] == 12.5
    assert pd.isna(amounts.tolist()[1])


@pytest.mark.parametrize(
    ("values", "kept"),
    [
        (["High", "urgent", "4", "5", None, " low "], [3, 4, pd.NA, 1]),  # a text column
        ([3, 0, None, 2.5], [3, pd.NA]),  # a numeric column
    ],
    ids=["text", "numeric"],
)
def test_an_unknown_severity_is_rejected_and_known_ones_become_ordinals(
    validate: Validate, values: list, kept: list
) -> None:
    frame = events(
        [("c1", f"2025-01-0{i + 1}", "complaint", v) for i, v in enumerate(values)],
        columns=("severity",),
    )
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects),
        expected_reasons((2, UNKNOWN_SEVERITY), (4, UNKNOWN_SEVERITY)),
    )
    severity = data.con.execute("SELECT severity FROM events ORDER BY occurred_at").df()
    assert severity["severity"].tolist() == kept


def test_an_integer_amount_column_is_read_as_money_and_negatives_are_rejected(
    validate: Validate,
) -> None:
    frame = events(
        [("c1", "2025-01-01", "purchase", 12), ("c1", "2025-01-02", "purchase", -3)],
        columns=("amount",),
    ).astype({"amount": "int64"})
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects), expected_reasons((2, "negative amount"))
    )
    assert data.con.execute("SELECT amount FROM events").fetchall() == [(12.0,)]


def test_events_of_a_customer_missing_from_the_customers_table_are_rejected(
    validate: Validate,
) -> None:
    frame = events([("c1", "2025-01-01", "login"), ("c9", "2025-01-01", "login")])
    data = validate(frame, customers("c1"))
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects), expected_reasons((2, "customer_id not in customers table"))
    )


def test_customers_without_any_event_are_counted_not_rejected(validate: Validate) -> None:
    frame = events([("c2", "2025-01-01", "login")])
    data = validate(frame, customers("c1", "c2", "c3"))
    assert data.report.customers_without_events == 2
    assert data.report.customers_valid == 3
    assert data.customer_rejects.empty


# --- rejected customer rows ----------------------------------------------------------------


def test_bad_customer_rows_are_rejected_with_their_reason(validate: Validate) -> None:
    table = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c1", "c3", "c4", "c5", "c6", None, "c7"],
            "signup_at": [
                "2024-01-01",
                "2024-01-01",
                "2024-02-01",
                "31/12/2023x",
                "2024-05-01",
                "2024-01-01",
                "2024-01-01",
                "2024-01-01",
                "",
            ],
            "churned_at": [None, None, None, None, "2024-04-30", "later", None, None, None],
            "mrr": ["10", "0", "10", "10", "10", "10", "-5", "10", "10"],
        }
    )
    data = validate(events([("c1", "2025-01-01", "login")]), table)
    pd.testing.assert_frame_equal(
        reasons(data.customer_rejects),
        expected_reasons(
            (3, "duplicate customer_id"),
            (4, "unparseable signup_at '31/12/2023x'"),
            (5, "churned_at before signup_at"),
            (6, "unparseable churned_at 'later'"),
            (7, "negative mrr"),
            (8, "missing customer_id"),
            (9, "missing signup_at"),
        ),
    )
    assert data.customers["customer_id"].tolist() == ["c1", "c2"]
    assert data.customers["signup_at"].tolist() == [T("2024-01-01"), T("2024-01-01")]
    assert data.report.customer_rejects == {
        "duplicate customer_id": 1,
        "unparseable signup_at": 1,
        "churned_at before signup_at": 1,
        "unparseable churned_at": 1,
        "negative mrr": 1,
        "missing customer_id": 1,
        "missing signup_at": 1,
    }


def test_a_churn_at_the_signup_instant_is_valid(validate: Validate) -> None:
    table = pd.DataFrame(
        {"customer_id": ["c1"], "signup_at": ["2024-01-01"], "churned_at": ["2024-01-01"]}
    )
    data = validate(events([("c1", "2023-12-31", "login")]), table)
    assert data.customer_rejects.empty


def test_optional_customer_columns_get_their_defaults(validate: Validate) -> None:
    data = validate(events([("c1", "2025-01-01", "login")]), customers("c1"))
    row = data.customers.iloc[0]
    assert (row["plan"], row["mrr"], row["owner"], row["segment"]) == (
        "unknown",
        0.0,
        "unassigned",
        "unknown",
    )
    assert pd.isna(row["churned_at"])


# --- reject share and rejects files --------------------------------------------------------


def test_a_reject_share_above_the_limit_raises_naming_the_share_and_the_rejects_file(
    tmp_path: Path, event_types: EventTypes
) -> None:
    frame = events(
        [
            ("c1", "2025-01-01", "login"),
            ("c1", "2025-01-02", "login"),
            ("c1", "2025-01-03", "login"),
            ("c9", "2025-01-04", "login"),
        ]
    )
    rejects = tmp_path / "rejects"
    with pytest.raises(RejectsExceeded) as error:
        load_and_validate(
            frame,
            customers("c1"),
            event_types,
            max_reject_share=0.2,
            observed_until=OBSERVED_UNTIL,
            rejects_dir=rejects,
        )
    message = str(error.value)
    assert "1 of 4 events rows rejected (25.00%)" in message
    assert "validation.max_reject_share = 20.00%" in message
    assert str(rejects / "events_rejected.csv") in message


def test_a_reject_share_at_the_limit_passes(validate: Validate) -> None:
    frame = events(
        [
            ("c1", "2025-01-01", "login"),
            ("c1", "2025-01-02", "login"),
            ("c1", "2025-01-03", "login"),
            ("c9", "2025-01-04", "login"),
        ]
    )
    data = validate(frame, customers("c1"), max_reject_share=0.25)
    assert data.report.events_rejected == 1


def test_a_customer_reject_share_above_the_limit_raises(validate: Validate) -> None:
    table = pd.DataFrame({"customer_id": ["c1", "c1"], "signup_at": ["2024-01-01", "2024-01-01"]})
    with pytest.raises(
        RejectsExceeded, match=r"1 of 2 customers rows rejected \(50\.00%\).*duplicate customer_id"
    ):
        validate(events([("c1", "2025-01-01", "login")]), table, max_reject_share=0.1)


def test_rejects_csv_files_hold_row_numbers_and_a_reason_column(
    tmp_path: Path, validate: Validate
) -> None:
    frame = events(
        [
            ("c1", "2025-01-01", "login"),
            ("c1", "soon", "login"),
            ("c1", "2025-01-01", "login"),
        ]
    )
    table = pd.DataFrame({"customer_id": ["c1", "c2"], "signup_at": ["2024-01-01", "never"]})
    data = validate(frame, table, rejects_dir=tmp_path)
    assert data.report.rejects_files == [
        str(tmp_path / "events_rejected.csv"),
        str(tmp_path / "customers_rejected.csv"),
    ]
    written = pd.read_csv(tmp_path / "events_rejected.csv", dtype=str, keep_default_na=False)
    expected = pd.DataFrame(
        {
            "row": ["2", "3"],
            "reason": ["unparseable occurred_at", DUPLICATE],
            "customer_id": ["c1", "c1"],
            "occurred_at": ["soon", "2025-01-01"],
            "event_type": ["login", "login"],
            "feature": ["", ""],
            "amount": ["", ""],
            "severity": ["", ""],
        }
    )
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    written = pd.read_csv(tmp_path / "customers_rejected.csv", dtype=str, keep_default_na=False)
    assert written.columns.tolist()[:2] == ["row", "reason"]
    assert written[["row", "reason", "signup_at"]].values.tolist() == [
        ["2", "unparseable signup_at 'never'", "never"]
    ]


def test_a_clean_run_removes_rejects_files_left_by_an_earlier_run(
    tmp_path: Path, validate: Validate
) -> None:
    validate(events([("c1", "soon", "login")]), customers("c1"), rejects_dir=tmp_path)
    assert (tmp_path / "events_rejected.csv").exists()
    data = validate(events([("c1", "2025-01-01", "login")]), customers("c1"), rejects_dir=tmp_path)
    assert data.report.rejects_files == []
    assert not (tmp_path / "events_rejected.csv").exists()


# --- the same checks from files ------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_files_give_the_same_rejects_and_valid_events(
    tmp_path: Path, event_types: EventTypes, suffix: str
) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "", "c1", "c1", "c1", "c9", "c1", "c1", "c2"],
            "occurred_at": [
                "2025-01-01 10:00:00",
                "2025-01-01",
                "not a time",
                "2025-03-01",
                "2025-01-01 10:00:00",
                "2025-01-05",
                "2025-01-06T12:00:00+02:00",
                "2025-01-07",
                "2025-01-08",
            ],
            "event_type": [
                "login",
                "login",
                "login",
                "login",
                "login",
                "login",
                "purchase",
                "complaint",
                "newsletter_opened",
            ],
            "amount": ["", "", "", "", "", "", "-1", "", ""],
            "severity": ["", "", "", "", "", "", "", "bad", ""],
        }
    )
    table = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3"],
            "signup_at": ["2024-01-01", "2024-02-01T00:00:00Z", "2024-13-01"],
            "mrr": ["10.5", "", "1"],
        }
    )
    events_path, customers_path = tmp_path / f"events{suffix}", tmp_path / f"customers{suffix}"
    write_frame(frame, events_path)
    write_frame(table, customers_path)
    data = load_and_validate(
        events_path,
        customers_path,
        event_types,
        max_reject_share=1.0,
        observed_until=OBSERVED_UNTIL,
        rejects_dir=tmp_path / "rejects",
    )
    pd.testing.assert_frame_equal(
        reasons(data.event_rejects),
        expected_reasons(
            (2, "missing customer_id"),
            (3, "unparseable occurred_at"),
            (4, FUTURE),
            (5, DUPLICATE),
            (6, "customer_id not in customers table"),
            (7, "negative amount"),
            (8, UNKNOWN_SEVERITY),
        ),
    )
    pd.testing.assert_frame_equal(
        reasons(data.customer_rejects), expected_reasons((3, "unparseable signup_at '2024-13-01'"))
    )
    expected = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "occurred_at": pd.to_datetime(["2025-01-01 10:00", "2025-01-08 00:00"]).as_unit("us"),
            "event_type": ["login", "newsletter_opened"],
            "family": ["login", None],
        }
    ).astype({"customer_id": "str", "event_type": "str", "family": "object"})
    pd.testing.assert_frame_equal(valid_events(data), expected)
    assert data.customers["mrr"].tolist() == [10.5, 0.0]
    assert data.report.unknown_event_types == {"newsletter_opened": 1}
    assert data.report.customers_without_events == 0
    assert (tmp_path / "rejects" / "events_rejected.csv").exists()


def test_observed_until_defaults_to_the_day_after_the_last_valid_event(
    event_types: EventTypes,
) -> None:
    frame = events([("c1", "2025-01-01 10:00", "login"), ("c1", "2025-02-03 23:59", "login")])
    data = load_and_validate(frame, customers("c1"), event_types)
    assert data.observed_until == T("2025-02-04")


@pytest.mark.parametrize(
    ("layout", "sql_type"),
    [
        (KindLayout(ftc_bits=4, etc_bits=4), "INTEGER"),
        (KindLayout(ftc_bits=20, etc_bits=20), "BIGINT"),
    ],
)
def test_the_store_packs_type_family_feature_and_severity_into_one_column_and_back(
    layout: KindLayout, sql_type: str
) -> None:
    big_etc, big_ftc = (1 << layout.etc_bits) - 1, (1 << layout.ftc_bits) - 2
    rows = pd.DataFrame(
        {
            "etc": [0, 3, big_etc],
            "fc": pd.array([0, 7, 2], dtype="Int8"),
            "ftc": pd.array([None, 0, big_ftc], dtype="Int32"),
            "severity": pd.array([None, 4, 1], dtype="Int8"),
        }
    )
    con = connect()
    con.register("rows", rows)
    codes = layout.unpack_sql()
    back = con.execute(
        f"SELECT {', '.join(f'{sql} AS {name}' for name, sql in codes.items())},"
        f" typeof(kind) AS type FROM (SELECT {layout.pack_sql()} AS kind FROM rows)"
    ).fetchall()
    assert back == [
        (0, 0, None, None, sql_type),
        (3, 7, 0, 4, sql_type),
        (big_etc, 2, big_ftc, 1, sql_type),
    ]
    kind = con.execute(f"SELECT {layout.pack_sql()} AS kind FROM rows").fetchnumpy()["kind"]
    in_numpy = layout.unpack(kind)
    assert {name: values.tolist() for name, values in in_numpy.items()} == {
        "etc": [0, 3, big_etc],
        "fc": [0, 7, 2],
        "ftc": [-1, 0, big_ftc],
        "severity": [0, 4, 1],
    }


# --- the user's formats (data.decimal, thousands, delimiter, dayfirst, epoch_unit) ----------


def test_epoch_seconds_and_milliseconds_are_read_as_utc_and_not_naive(
    event_types: EventTypes,
) -> None:
    for unit, scale in (("s", 1), ("ms", 1000)):
        frame = events([("c1", 1735725600 * scale, "login"), ("c1", "x", "login")])
        data = load_and_validate(
            frame.astype({"occurred_at": "str"}),
            customers("c1"),
            event_types,
            max_reject_share=1.0,
            observed_until=OBSERVED_UNTIL,
            formats=Formats(epoch_unit=unit),
        )
        assert valid_events(data)["occurred_at"].tolist() == [T("2025-01-01 10:00")]
        assert data.report.naive_timestamps == 0
        assert data.report.event_rejects == {"unparseable occurred_at": 1}


def test_day_first_dates_are_read_when_configured_and_hinted_when_not(
    event_types: EventTypes,
) -> None:
    table = pd.DataFrame({"customer_id": ["c1"], "signup_at": ["04/03/2024 09:30"]})
    frame = events([("c1", "25.12.2024", "login")])
    kwargs = {"observed_until": OBSERVED_UNTIL, "max_reject_share": 1.0}
    data = load_and_validate(frame, table, event_types, formats=Formats(dayfirst=True), **kwargs)
    assert data.customers["signup_at"].tolist() == [T("2024-03-04 09:30")]
    assert valid_events(data)["occurred_at"].tolist() == [T("2024-12-25")]
    plain = load_and_validate(frame, table, event_types, **kwargs)
    assert plain.customer_rejects["reason"].tolist() == [
        "unparseable signup_at (day-first date? set data.dayfirst: true) '04/03/2024 09:30'"
    ]


@pytest.mark.parametrize(
    ("formats", "text", "detected"),
    [
        (Formats(), "1.234,50", {"customers.mrr": "decimal ',', thousands '.'"}),
        (Formats(), "1 234,50", {"customers.mrr": "decimal ',', thousands ' '"}),
        (Formats(), "1,234.50", {"customers.mrr": "decimal '.', thousands ','"}),
        (Formats(decimal=",", thousands="'"), "1'234,50", {}),
    ],
)
def test_money_in_text_reads_with_configured_or_detected_separators(
    tmp_path: Path, event_types: EventTypes, formats: Formats, text: str, detected: dict
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(f'customer_id;signup_at;mrr\nc1;2024-01-01;"{text}"\nc2;2024-01-01;"7,00"\n')
    if "." in text.replace(",", "")[-3:]:  # decimal point: the second value too
        path.write_text(f'customer_id;signup_at;mrr\nc1;2024-01-01;"{text}"\nc2;2024-01-01;7.00\n')
    data = load_and_validate(
        events([("c1", "2025-01-01", "login")]),
        path,
        event_types,
        observed_until=OBSERVED_UNTIL,
        formats=formats,
    )
    assert data.customers["mrr"].tolist() == [1234.5, 7.0]
    assert data.report.formats == detected


def test_a_configured_delimiter_splits_the_rows_and_others_stay_in_values(
    tmp_path: Path, event_types: EventTypes
) -> None:
    path = tmp_path / "events.csv"
    path.write_text("customer_id|occurred_at|event_type\nc1|2025-01-01|a;b,c\n")
    data = load_and_validate(
        path,
        customers("c1"),
        event_types,
        observed_until=OBSERVED_UNTIL,
        formats=Formats(delimiter="|"),
    )
    assert valid_events(data)["event_type"].tolist() == ["a;b,c"]
