"""`churn init`: a starter config guessed from a sample of the user's two files.

The guess is a starting point that the user checks: the column mapping from names (and types
for timestamps), the number and date formats from the values, and the event types with their
counts, the obvious ones mapped to signal families and the rest left commented. Every value
written comes from the files, so it is written as a JSON string (a valid YAML scalar that
cannot break the file), and comments are cleaned of control characters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.contract import (
    CONTRACT,
    CUSTOMER_REQUIRED,
    EVENT_REQUIRED,
    Formats,
    Source,
    cap,
    detect_number_format,
    open_source,
    quote_ident,
    reading,
    require,
)

SAMPLE_ROWS = 200_000
"""Rows of each file read to guess formats and count event types."""

SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "events": {
        "customer_id": ("customer_id", "user_id", "userid", "client_id", "account_id",
                        "member_id", "cust_id", "customer", "user", "uid", "id"),
        "occurred_at": ("occurred_at", "ts", "timestamp", "event_time", "event_timestamp",
                        "time", "datetime", "date", "event_date", "created_at", "when", "at"),
        "event_type": ("event_type", "action", "event", "event_name", "type", "activity",
                       "kind", "name", "what"),
        "feature": ("feature", "product_area", "feature_name", "area", "module", "page",
                    "screen", "component"),
        "amount": ("amount", "value", "revenue", "price", "total", "sum"),
        "severity": ("severity", "priority", "urgency", "level"),
    },
    "customers": {
        "customer_id": ("customer_id", "id", "user_id", "client_id", "account_id", "customer",
                        "uid"),
        "signup_at": ("signup_at", "created", "created_at", "signup", "signed_up_at",
                      "signup_date", "registered_at", "joined_at", "joined", "start_date",
                      "since"),
        "churned_at": ("churned_at", "cancelled_on", "canceled_on", "cancelled_at",
                       "canceled_at", "churn_date", "cancellation_date", "ended_at", "end_date"),
        "plan": ("plan", "plan_name", "tier", "subscription", "package", "product"),
        "mrr": ("mrr", "monthly_fee", "monthly_revenue", "monthly_price", "fee", "price"),
        "owner": ("owner", "csm", "cs_owner", "account_manager", "success_manager", "manager",
                  "am", "rep"),
        "segment": ("segment", "industry", "size", "region"),
    },
}  # fmt: skip
"""Common names for each contract column, most specific first."""

FAMILY_RULES: tuple[tuple[str, str], ...] = (
    ("payment_failed", r"(fail|declin|dunning|bounced|chargeback)"),
    ("login", r"(log_?in|logged_?in|sign_?in|signed_?in|logon|session_start)"),
    ("complaint", r"complain"),
    ("support_ticket", r"(ticket|support|help_request|case_open)"),
    ("purchase", r"(purchase|order|checkout|buy)"),
    ("payment", r"(payment|invoice|paid|charge|renewal|billing)"),
    ("feature_use", r"feature"),
)
"""Event type name patterns (on the lower-cased name) → signal family, first match wins; a
payment word only counts as a failed payment with a failure word (see the first rule)."""


@dataclass
class Guess:
    """What `churn init` guessed from the two files."""

    columns: dict[str, dict[str, str]]
    formats: dict[str, object]
    event_counts: dict[str, int]
    families: dict[str, list[str]]
    checks: list[str] = field(default_factory=list)

    @property
    def unmapped(self) -> list[str]:
        mapped = {t for types in self.families.values() for t in types}
        return [t for t in self.event_counts if t not in mapped]


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def guess_columns(name: str, types: dict[str, str]) -> dict[str, str]:
    """Contract column → the file's column, by common names, then by type for timestamps."""
    by_normal = {_normal(c): c for c in types}
    chosen: dict[str, str] = {}
    for column, names in SYNONYMS[name].items():
        found = next((by_normal[n] for n in names if n in by_normal), None)
        if found is not None and found not in chosen.values():
            chosen[column] = found
    if "occurred_at" in SYNONYMS[name] and "occurred_at" not in chosen:
        stamps = [c for c, t in types.items() if t.startswith(("TIMESTAMP", "DATE"))]
        if stamps and stamps[0] not in chosen.values():
            chosen["occurred_at"] = stamps[0]
    return chosen


def family_of(event_type: str) -> str | None:
    """The obvious signal family of a raw event type name, or None."""
    text = _normal(event_type)
    for family, pattern in FAMILY_RULES:
        if re.search(pattern, text):
            return family
    return None


def _sample(con: duckdb.DuckDBPyConnection, src: Source, column: str) -> list[str]:
    """Distinct non-blank texts of one raw column among the first ``SAMPLE_ROWS`` rows."""
    text = f"NULLIF(trim(CAST({quote_ident(column)} AS VARCHAR)), '')"
    with reading(src.label):
        rows = con.execute(
            f"SELECT DISTINCT v FROM (SELECT {text} AS v FROM {src.raw_sql}"
            f" LIMIT {SAMPLE_ROWS}) WHERE v IS NOT NULL LIMIT 2000"
        ).fetchall()
    return [r[0] for r in rows]


UNITS = {"s": "seconds", "ms": "milliseconds"}
DATE_LIKE = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-]\d{4}")


def guess_dayfirst(values: list[str], checks: list[str], what: str) -> bool | None:
    """True when slash/dot dates put the day first (a first part above 12), False when the
    month comes first, None when no such dates or it cannot tell (recorded in ``checks``)."""
    parts = [m.groups() for v in values if (m := DATE_LIKE.match(v))]
    if not parts:
        return None
    if any(int(b) > 12 for _, b in parts):
        checks.append(
            f"{what}: dates put the month first (e.g. {cap(values[0], 40)}); the"
            " pipeline reads ISO or day-first dates: convert them to ISO 8601"
        )
        return False
    if not any(int(a) > 12 for a, _ in parts):
        checks.append(
            f"{what}: dates like {cap(values[0], 40)} could be day or month first;"
            " data.dayfirst: true assumes day first"
        )
    return True  # fmt: skip


def guess_epoch(values: list[str]) -> str | None:
    """'s' or 'ms' when the values are whole numbers of epoch seconds or milliseconds."""
    numbers = [int(v) for v in values if re.fullmatch(r"\d{9,13}", v)]
    if not numbers or len(numbers) < len(values):
        return None
    return "ms" if min(numbers) >= 10**11 else "s"


def guess(events: Path, customers: Path) -> Guess:
    """Read a sample of both files and guess the mapping, the formats and the families."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    sources = {
        "events": open_source(con, events, "events", keep_extras=True),
        "customers": open_source(con, customers, "customers", keep_extras=True),
    }
    columns, checks, raw_types = {}, [], {}
    for name, src in sources.items():
        raw_types[name] = _raw_types(con, src)
        columns[name] = guess_columns(name, raw_types[name])
        missing = [c for c in CONTRACT[name][:3] if c in SYNONYMS[name] and c not in columns[name]]
        for column in missing if name == "events" else [c for c in missing if c != "event_type"]:
            checks.append(f"{name}: no column found for {column}; set columns.{name}.{column}")
    formats = _guess_formats(con, sources, columns, raw_types, checks)
    counts = _event_counts(con, sources["events"], columns["events"].get("event_type"))
    families: dict[str, list[str]] = {}
    for event_type in counts:
        family = family_of(event_type)
        if family:
            families.setdefault(family, []).append(event_type)
    return Guess(columns, formats, counts, families, checks)


def _raw_types(con: duckdb.DuckDBPyConnection, src: Source) -> dict[str, str]:
    with reading(src.label):
        rows = con.execute(f"DESCRIBE SELECT * FROM {src.raw_sql}").fetchall()
    return {r[0]: r[1] for r in rows if r[0] != src.row_col}


def _guess_formats(
    con: duckdb.DuckDBPyConnection,
    sources: dict[str, Source],
    columns: dict[str, dict[str, str]],
    raw_types: dict[str, dict[str, str]],
    checks: list[str],
) -> dict[str, object]:
    formats: dict[str, object] = {}
    delimiters = {s.delimiter for s in sources.values() if s.delimiter}
    if delimiters - {","}:
        formats["delimiter"] = sorted(delimiters - {","})[0]
    money = [
        v
        for name, column in (("events", "amount"), ("customers", "mrr"))
        if column in columns[name] and raw_types[name][columns[name][column]] == "VARCHAR"
        for v in _sample(con, sources[name], columns[name][column])
    ]
    decimal, thousands = detect_number_format(money)
    if decimal != ".":
        formats["decimal"] = decimal
    if thousands:
        formats["thousands"] = thousands
    dates = []
    for name, column in (("events", "occurred_at"), ("customers", "signup_at")):
        if column in columns[name] and raw_types[name][columns[name][column]] == "VARCHAR":
            dates.append((name, column, _sample(con, sources[name], columns[name][column])))
    for name, column, values in dates:
        if name == "events" and (unit := guess_epoch(values)):
            formats["epoch_unit"] = unit
            checks.append(f"events: {column} read as epoch {UNITS[unit]} since 1970 (UTC)")
            continue
        if guess_dayfirst(values, checks, f"{name}.{columns[name][column]}"):
            formats["dayfirst"] = True
    occurred = columns["events"].get("occurred_at")
    if (
        occurred
        and raw_types["events"][occurred] not in ("VARCHAR",)
        and not (raw_types["events"][occurred].startswith(("TIMESTAMP", "DATE")))
    ):
        unit = guess_epoch([str(v) for v in _sample(con, sources["events"], occurred)])
        if unit:
            formats["epoch_unit"] = unit
    return formats


def _event_counts(
    con: duckdb.DuckDBPyConnection, src: Source, column: str | None
) -> dict[str, int]:
    if column is None:
        return {}
    text = f"NULLIF(trim(CAST({quote_ident(column)} AS VARCHAR)), '')"
    with reading(src.label):
        rows = con.execute(
            f"SELECT v, count(*) AS n FROM (SELECT {text} AS v FROM {src.raw_sql}"
            f" LIMIT {SAMPLE_ROWS}) WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 500"
        ).fetchall()
    return {str(v): int(n) for v, n in rows}


# --- writing the config ------------------------------------------------------------------------


def _scalar(value: object) -> str:
    """A YAML scalar that reads back as ``value`` whatever it holds (JSON is YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _comment(text: str) -> str:
    return cap(re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", " ", text), 80)


def render(g: Guess, events: Path, customers: Path, project: str) -> str:
    """The starter config's YAML text, with comments saying what to check."""
    lines = [
        "# Written by `churn init` from a sample of your files: check every line, then run",
        "#   churn validate --config <this file>",
        "data:",
        f"  events: {_scalar(str(events))}",
        f"  customers: {_scalar(str(customers))}",
        f"  output_dir: {_scalar(f'outputs/{project}')}",
    ]
    lines += [f"  {key}: {_scalar(value)}" for key, value in g.formats.items()]
    lines += ["", "columns:                              # our name: your column"]
    for name in ("events", "customers"):
        differing = {c: u for c, u in g.columns[name].items() if c != u}
        body = ", ".join(f"{c}: {_scalar(u)}" for c, u in differing.items())
        lines.append(f"  {name}: {{{body}}}")
    lines += ["", "event_types:                          # your event types → signal families"]
    for family, types in g.families.items():
        lines.append(f"  {family}: [{', '.join(_scalar(t) for t in types)}]")
    if not g.families:
        lines.append("  login: []                           # map at least one family")
    if g.unmapped:
        lines.append("  # not mapped (counted as generic activity); add them to a family above:")
        lines += [f"  #   {_comment(t)}  ({g.event_counts[t]} events in the sample)"
                  for t in g.unmapped[:50]]  # fmt: skip
        if len(g.unmapped) > 50:
            lines.append(f"  #   … and {len(g.unmapped) - 50} more")
    definition = "cancellation" if "churned_at" in g.columns["customers"] else "inactivity"
    lines += ["", "label:", f"  definition: {definition}", "  horizon_days: 90", ""]
    return "\n".join(lines)


def default_out(events: Path) -> Path:
    """``configs/<name of the events file's folder>.yaml`` (``configs/my_data.yaml`` at top)."""
    folder = _normal(Path(events).resolve().parent.name) or "my_data"
    return Path("configs") / f"{folder}.yaml"


def check_headers(config: object) -> None:
    """Open both configured files with the config's mapping and formats and check that every
    required column is there (``InputError`` naming the file and the fix when not)."""
    con = duckdb.connect(":memory:")
    data, columns = config.data, config.columns
    for name, path, mapping, required in (
        ("events", data.events, columns.events, EVENT_REQUIRED),
        ("customers", data.customers, columns.customers, CUSTOMER_REQUIRED),
    ):
        require(open_source(con, path, name, mapping, Formats.of(data)), required, mapping)
