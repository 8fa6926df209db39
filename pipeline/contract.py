"""The input contract: our column names, the user's names for them, and how values are written.

A user's files rarely use our names or our number and date formats. This module reads a file
literally (no glob expansion of its path), checks its header (duplicate names, missing mapped
columns), selects the contract's columns under our names (``columns`` config) beside an internal
row number under a name no user column can take, and builds the SQL that parses the user's
number formats (decimal comma, thousands separators), day-first dates and epoch times.

Nothing from the data or the config is spliced into SQL text: column names are quoted
identifiers (quotes doubled), paths and format characters are string literals from
``sql_literal`` (format characters come from a closed set the config validates).
"""

from __future__ import annotations

import atexit
import csv
import hashlib
import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

log = logging.getLogger(__name__)

EVENT_REQUIRED = ("customer_id", "occurred_at", "event_type")
EVENT_OPTIONAL = ("feature", "amount", "severity")
EVENT_COLUMNS = EVENT_REQUIRED + EVENT_OPTIONAL
CUSTOMER_REQUIRED = ("customer_id", "signup_at")
CUSTOMER_OPTIONAL = {
    "churned_at": "NULL",
    "plan": "'unknown'",
    "mrr": "0.0",
    "owner": "'unassigned'",
    "segment": "'unknown'",
}
CUSTOMER_COLUMNS = CUSTOMER_REQUIRED + tuple(CUSTOMER_OPTIONAL)
CONTRACT = {"events": EVENT_COLUMNS, "customers": CUSTOMER_COLUMNS}
"""Every column name of the contract, per input (declared once; the config checks against it)."""

ROW = "__churn_row"
"""The source row number as read (1-based data rows); no user column can take this name."""
EXTRA = "__churn_extra_"
"""Prefix of the internal names under which the customers file's other columns travel."""
MAX_MONEY = 1e12
"""Largest amount or mrr accepted; larger (or non-finite) values are rejected as absurd."""
CAP = 200
"""Characters of a user value quoted in a message or a log line."""
GLOB_CHARS = re.compile(r"[\[\]?*{}]")

DELIMITERS = (",", ";", "\t", "|")
DECIMALS = (".", ",")
THOUSANDS = (",", ".", " ", "'", "_")


class InputError(ValueError):
    """An input file that cannot be used as it is; the message names file, column and fix."""


def cap(value: object, limit: int = CAP) -> str:
    """``str(value)`` cut to ``limit`` characters with a trailing "…" when longer."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def cap_sql(expr: str, limit: int = CAP) -> str:
    """SQL for ``expr`` (text) cut to ``limit`` characters with "…" when longer."""
    return (
        f"CASE WHEN length({expr}) > {int(limit)} THEN left({expr}, {int(limit)}) || '…'"
        f" ELSE {expr} END"
    )


def sql_literal(value: str | Path) -> str:
    """A string (a path, a name) as a SQL string literal, quotes doubled: never spliced raw."""
    return "'" + str(value).replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """A column name as a quoted SQL identifier, quotes doubled."""
    return '"' + str(name).replace('"', '""') + '"'


@dataclass(frozen=True)
class Formats:
    """How the user's files write values (``data`` config keys; None = detect)."""

    delimiter: str | None = None
    decimal: str | None = None
    thousands: str | None = None
    dayfirst: bool = False
    epoch_unit: str | None = None

    @classmethod
    def of(cls, data: object) -> Formats:
        """The formats set in a ``DataConfig``."""
        return cls(*(getattr(data, k) for k in cls.__dataclass_fields__))


@dataclass
class Source:
    """One input, read literally, with the contract's columns under our names.

    ``sql`` is a FROM-clause expression with the columns ``_row`` and each contract column
    present (``types``: its DuckDB type); ``extras`` maps internal names (``EXTRA`` + n) to the
    user's names of the other columns (customers only).
    """

    name: str
    label: str
    raw_sql: str
    row_col: str
    """The raw relation's row number column; ``_row`` is it plus ``row_offset``."""
    row_offset: int
    selection: dict[str, str]
    types: dict[str, str]
    extras: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    delimiter: str | None = None

    @property
    def sql(self) -> str:
        return self.select()

    def select(self, only_rows: str | None = None) -> str:
        """The FROM-clause expression; ``only_rows`` (a relation with ``_row``) keeps those."""
        cols = [f"{quote_ident(u)} AS {c}" for c, u in self.selection.items()]
        cols += [f"{quote_ident(u)} AS {quote_ident(x)}" for x, u in self.extras.items()]
        cols.append(f"{self.row_col} + {self.row_offset} AS _row")
        # the filter names the row column unchanged so that read_parquet pushes it down
        where = (
            f" WHERE {self.row_col} IN (SELECT _row - {self.row_offset} FROM {only_rows})"
            if only_rows
            else ""
        )
        return f"(SELECT {', '.join(cols)} FROM {self.raw_sql}{where})"


# --- reading a file literally ----------------------------------------------------------------

_LINKS: dict[str, tempfile.TemporaryDirectory] = {}


def literal_path(path: Path) -> Path:
    """A path DuckDB reads as exactly this file: DuckDB expands ``[ ] ? * { }`` in paths as a
    glob, so a path holding them is read through a symbolic link with a plain name."""
    path = Path(path)
    if not GLOB_CHARS.search(str(path.resolve())):
        return path
    if "links" not in _LINKS:
        _LINKS["links"] = tempfile.TemporaryDirectory(prefix="churn-inputs-")
        atexit.register(_LINKS["links"].cleanup)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    link = Path(_LINKS["links"].name) / f"input-{digest}{path.suffix.lower()}"
    if not link.is_symlink():
        link.symlink_to(path.resolve())
    return link


def _check_parquet(path: Path, label: str) -> None:
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{label} is empty (0 bytes); write the data to it again")
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if head != b"PAR1" or tail != b"PAR1" or size < 12:
        kind = (
            "is damaged (truncated or overwritten)"
            if head == b"PAR1"
            else "looks like text (CSV?)"
            if _is_text(head)
            else "is damaged or not Parquet"
        )
        raise InputError(
            f"{label} is not a Parquet file: it {kind}; write it again as Parquet, or name it"
            " .csv if it is CSV"
        )


def _is_text(head: bytes) -> bool:
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _csv_header(path: Path, label: str, delimiter: str | None) -> tuple[list[str], str]:
    """The header names of a CSV file and its delimiter (given, or detected from the header)."""
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first.strip():
        raise InputError(f"{label} is empty (no header line); write the data to it again")
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InputError(
            f"{label}: the header line is not UTF-8 text; save the file as UTF-8 CSV"
        ) from None
    if delimiter is None:
        counts = {d: text.count(d) for d in DELIMITERS}
        delimiter = max(DELIMITERS, key=lambda d: (counts[d], -DELIMITERS.index(d)))
        if counts[delimiter] == 0:
            delimiter = ","
    names = next(csv.reader([text], delimiter=delimiter))
    return [n.strip() for n in names], delimiter


def _raw_file_sql(
    path: Path, label: str, delimiter: str | None, names: list[str]
) -> tuple[str, str, int, str | None]:
    """(FROM expression reading the whole file, its row-number column, the offset that makes
    it 1-based, the CSV delimiter) for one file."""
    quoted = sql_literal(literal_path(path))
    if path.suffix.lower() == ".csv":
        _, delim = _csv_header(path, label, delimiter)
        # No sniffing: the header we parsed gives the columns, so a ragged or non-UTF-8 row
        # is an error naming its line wherever it is (the sniffer reads the first 20,480
        # rows and, meeting one there, fails with a message about the dialect instead).
        columns = ", ".join(f"{sql_literal(n)}: 'VARCHAR'" for n in names)
        read = (
            f"read_csv({quoted}, header = true, auto_detect = false, delim = {sql_literal(delim)},"
            f" quote = '\"', escape = '\"', strict_mode = true, columns = {{{columns}}})"
        )
        return f"(SELECT *, row_number() OVER () AS {ROW} FROM {read})", ROW, 0, delim
    _check_parquet(path, label)
    if "file_row_number" in (n.lower() for n in names):
        # read_parquet cannot add its row number beside a user column of that name
        numbered = f"(SELECT *, row_number() OVER () AS {ROW} FROM read_parquet({quoted}))"
        return numbered, ROW, 0, None
    return f"read_parquet({quoted}, file_row_number = true)", "file_row_number", 1, None


def file_columns(path: Path, label: str, delimiter: str | None = None) -> list[str]:
    """The column names as the file writes them (duplicates included)."""
    if path.suffix.lower() == ".csv":
        return _csv_header(path, label, delimiter)[0]
    import pyarrow.parquet as pq

    _check_parquet(path, label)
    try:
        return list(pq.read_schema(literal_path(path)).names)
    except Exception as error:  # pyarrow raises several types for a damaged footer
        raise InputError(
            f"{label} is not a readable Parquet file ({cap(error)}); write it again"
        ) from None


def _check_names(names: list[str], label: str) -> None:
    seen: dict[str, str] = {}
    dupes = []
    for name in names:
        key = name.lower()  # DuckDB identifiers are case-insensitive
        if key in seen:
            dupes.append(name if name == seen[key] else f"{seen[key]}/{name}")
        seen.setdefault(key, name)
    if dupes:
        shown = ", ".join(repr(cap(d, 60)) for d in dupes[:10])
        raise InputError(
            f"{label}: duplicate column name(s) {shown} (names differing only in case count as"
            " the same); rename or remove the repeated column(s)"
        )
    internal = [n for n in names if n.lower().startswith("__churn_")]
    if internal:
        raise InputError(
            f"{label}: column name(s) {internal[:5]} start with '__churn_', which the pipeline"
            " keeps for itself; rename them"
        )


def open_source(
    con: duckdb.DuckDBPyConnection,
    source: Path | pd.DataFrame,
    name: str,
    mapping: Mapping[str, str] | None = None,
    formats: Formats | None = None,
    keep_extras: bool = False,
) -> Source:
    """Register ``source`` and select the contract's columns (mapped) under our names."""
    formats = formats or Formats()
    if isinstance(source, pd.DataFrame):
        label = name
        names = [str(c) for c in source.columns]
        _check_names(names, label)
        con.register(f"{name}_frame", source)
        raw = f"(SELECT *, row_number() OVER () AS {ROW} FROM {name}_frame)"
        row_col, offset, delim = ROW, 0, None
    else:
        path = Path(source)
        label = f"{name} file '{cap(path)}'"
        if not path.exists():
            raise InputError(f"{label} does not exist; check data.{name} in the config")
        if path.is_dir():
            raise InputError(f"{label} is a folder; set data.{name} to a .parquet or .csv file")
        names = file_columns(path, label, formats.delimiter)
        _check_names(names, label)
        raw, row_col, offset, delim = _raw_file_sql(path, label, formats.delimiter, names)
    types = _describe_raw(con, raw, label, row_col)
    source = Source(name, label, raw, row_col, offset, {}, {}, delimiter=delim)
    return _select(source, types, dict(mapping or {}), keep_extras)


def _describe_raw(
    con: duckdb.DuckDBPyConnection, raw: str, label: str, row_col: str
) -> dict[str, str]:
    with reading(label):
        rows = con.execute(f"DESCRIBE SELECT * FROM {raw}").fetchall()
    return {row[0]: row[1] for row in rows if row[0] != row_col}


def _select(
    source: Source, types: dict[str, str], mapping: dict[str, str], keep_extras: bool
) -> Source:
    """``source`` with the contract's columns picked (mapped names first, then ours)."""
    name, label = source.name, source.label
    by_lower = {c.lower(): c for c in types}
    missing = [(c, u) for c, u in mapping.items() if u.lower() not in by_lower]
    if missing:
        contract, user = missing[0]
        raise InputError(
            f"{label}: column '{cap(user, 80)}' (columns.{name}.{contract} in the config) is not"
            f" in the file; found {[cap(c, 60) for c in types][:50]}. Fix columns.{name}.{contract}"
        )
    selection = {}
    for column in CONTRACT[name]:
        user = by_lower.get(mapping.get(column, column).lower())
        if user is not None and (column in mapping or user.lower() not in _mapped(mapping)):
            selection[column] = user
    used = {u.lower() for u in selection.values()}
    others = [c for c in types if c.lower() not in used]
    extras = {f"{EXTRA}{i}": c for i, c in enumerate(others)} if keep_extras else {}
    source.selection, source.extras, source.unmapped = selection, extras, others
    source.types = {c: types[u] for c, u in selection.items()}
    return source


def _mapped(mapping: dict[str, str]) -> set[str]:
    """User names already taken by a mapping (a user column mapped elsewhere is not ours)."""
    return {u.lower() for u in mapping.values()}


def require(source: Source, required: tuple[str, ...], mapping: Mapping[str, str] | None) -> None:
    """Raise naming the missing contract columns, the columns found and the fix."""
    missing = [c for c in required if c not in source.types]
    if missing:
        found = sorted(cap(c, 60) for c in source.unmapped + list(source.selection.values()))
        raise InputError(
            f"{source.label}: missing required column(s) {missing}; found {found[:50]}."
            f" Map your names to ours in the config's columns.{source.name} section"
            f" (e.g. columns: {{{source.name}: {{{missing[0]}: your_column}}}}), or rename them"
            " to the input contract (README, 'Bring your own data')."
        )


def report_unmapped(source: Source) -> None:
    """Say once which columns of a file the pipeline does not read (names only)."""
    if source.unmapped and not source.extras:
        log.info(
            "%s: columns not used: %s (map them in columns.%s if they are ours)",
            source.label,
            [cap(c, 60) for c in source.unmapped[:50]],
            source.name,
        )
    elif source.extras:
        log.info(
            "%s: other columns kept for exports (export.columns): %s",
            source.label,
            [cap(c, 60) for c in source.extras.values()][:50],
        )


class reading:  # a context manager: `with reading(label):`
    """Turn a DuckDB error while reading ``label`` into an ``InputError`` of one line."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> reading:
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or not isinstance(error, duckdb.Error):
            return False
        raise InputError(read_error_message(self.label, error)) from None


def read_error_message(label: str, error: Exception) -> str:
    """One line naming the file, the line when DuckDB gives it, the cause and the fix."""
    text = str(error)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    where = f" at line {line.group(1)}" if line else ""
    if "not utf-8" in text.lower() or "invalid unicode" in text.lower():
        return f"{label}: not UTF-8 text{where}; save the file as UTF-8 (CSV UTF-8 in Excel)"
    found = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if found:
        return (
            f"{label}{where}: {found.group(2)} fields where the header has {found.group(1)};"
            " fix that row (quote values holding the delimiter) or remove it"
        )
    first = cap(text.splitlines()[0] if text else type(error).__name__)
    return f"{label}: cannot be read{where} ({first}); check the file's format and contents"


# --- number and date formats -------------------------------------------------------------------

GROUPED = {
    ".": r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$",
    " ": r"^[+-]?\d{1,3}( \d{3})+(,\d+)?$",
    ",": r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$",
}


def detect_number_format(values: list[str]) -> tuple[str, str | None]:
    """(decimal, thousands) that read ``values`` (distinct texts of a column).

    A decimal comma only when nothing in the column reads as a decimal point (a column that
    mixes both keeps the point, and the comma values are rejected as unparseable); "1,234" and
    "1.234" read both ways and decide nothing alone.
    """
    values = [v.strip() for v in values if v and v.strip()]
    point = sum(bool(re.match(r"^[+-]?\d*\.\d+$", v)) and not _grouped(v, ".") for v in values)
    comma = sum(bool(re.match(r"^[+-]?\d*,(\d{1,2}|\d{4,})$", v)) for v in values)
    dotted, spaced = sum(_grouped(v, ".") for v in values), sum(_grouped(v, " ") for v in values)
    if point == 0 and (comma or (dotted and any("," in v for v in values)) or spaced):
        return ",", ("." if dotted else " " if spaced else None)
    millions = r"^[+-]?\d{1,3}(,\d{3}){2,}$"
    if any((_grouped(v, ",") and "." in v) or re.match(millions, v) for v in values):
        return ".", ","
    return ".", None


def _grouped(value: str, separator: str) -> bool:
    return bool(re.match(GROUPED[separator], value))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def number_sql(column: str, decimal: str = ".", thousands: str | None = None) -> str:
    """SQL parsing the text ``column`` as a number written with these separators."""
    text = f"trim(CAST({column} AS VARCHAR))"
    if thousands:
        text = f"replace({text}, {sql_literal(thousands)}, '')"
    if decimal == ",":
        text = f"replace({text}, ',', '.')"
    return f"try_cast({text} AS DOUBLE)"


DAYFIRST_FORMATS = (
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d-%m-%Y %H:%M:%S",
    "%d-%m-%Y %H:%M",
    "%d-%m-%Y",
)
"""Day-first layouts read when ``data.dayfirst`` is true (ISO dates are read as well)."""


def dayfirst_sql(text: str) -> str:
    """SQL for a day-first date-time text (naive), NULL when it matches no layout."""
    layouts = ", ".join(sql_literal(f) for f in DAYFIRST_FORMATS)
    return f"try_strptime({text}, [{layouts}])"


def epoch_sql(column: str, unit: str) -> str:
    """SQL for a naive UTC timestamp from epoch seconds or milliseconds (number or text)."""
    per_unit = {"s": 1_000_000, "ms": 1_000}[unit]
    value = f"try_cast(trim(CAST({column} AS VARCHAR)) AS DOUBLE)"
    # make_timestamp rejects out-of-range values: keep 1900..2262 and leave the rest NULL
    return (
        f"CASE WHEN {value} * {per_unit} BETWEEN -2208988800000000 AND 9214646400000000"
        f" THEN make_timestamp(CAST(round({value} * {per_unit}) AS BIGINT)) END"
    )


def copy_columns(frame: pd.DataFrame, extras: dict[str, str], reserved: set[str]) -> pd.DataFrame:
    """Rename the internal extra columns to the user's names; a name that collides (case
    aside) with one of ours gets the suffix ``_customers_file``."""
    taken = {c.lower() for c in reserved}
    names = {}
    for internal, user in extras.items():
        safe = user if user.lower() not in taken else f"{user}_customers_file"
        taken.add(safe.lower())
        names[internal] = safe
    return frame.rename(columns=names)


def customer_column(name: str, mapping: Mapping[str, str], columns: list[str]) -> str | None:
    """The column of ``ValidatedData.customers`` that holds the customers file's column
    ``name`` (as ``export.columns`` may write it): our name when ``name`` is mapped to one of
    ours (``columns.customers``), the column itself when carried along, the
    ``_customers_file`` variant when it collided with one of ours; None when absent."""
    mapped = {u.lower(): c for c, u in mapping.items()}
    for candidate in (mapped.get(name.lower()), name, f"{name}_customers_file"):
        if candidate is not None and candidate in columns and candidate not in mapping.values():
            return candidate
    return None
