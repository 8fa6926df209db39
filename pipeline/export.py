"""At-risk lists for CS teams, from a scores table (Parquet stays the record).

One export = a folder ``<out>/at_risk_<as_of>/`` holding either one XLSX workbook or one CSV /
Parquet file per part, and ``manifest.json`` with the counts, the tier policy, the model version
and a SHA-256 per file. Only the configured columns (``ExportConfig.columns``) leave the
pipeline: personal-data minimisation; contact columns come from the customers file only when
named in ``export.contact_columns``.

The workbook is made for people: a ``summary`` sheet (customers per tier and owner, revenue at
risk, the policy in words, what changed since the last run), one sheet per owner (or segment),
``new this week`` (newly red or orange) and ``left the list`` (who dropped off and why). Headers
say what a number means ("90-day churn risk", "revenue at risk (12 months)", "last activity
(UTC)"); probabilities are percentages, money has thousands separators, dates are dates, the
header is bold and frozen, the autofilter covers the table only, reasons wrap in their own
columns, tier cells are filled red / orange / green; rows are red first, then by expected loss.

``change`` compares each customer's tier with the previous scoring run, the kept scores of the
latest earlier as_of under ``<output_dir>/scores/history/`` (one file per as_of; re-scoring an
as_of replaces that file only): ``new`` (not listed before: not scored, or green), ``escalated``
(tier went up), ``de-escalated`` (went down), ``unchanged``; ``previous_probability`` is the
risk at that run. ``left the list``: listed then, not now — ``churned`` (no longer in the scored
base), ``saved`` (green now, risk below the base rate) or ``de-escalated`` (green now, risk
still at or above the base rate: others took the places).

User values never execute: text is written as text in XLSX (never a formula), and CSV cells that
start with ``=``, ``+``, ``-``, ``@``, tab or CR get a leading ``'`` (OWASP); control characters
Excel refuses are stripped and text is capped at 32,767 characters with a marker.

Atomicity: everything is written into a temporary folder beside the target, the manifest last,
then the folder is renamed onto the target; an interrupted run leaves the previous export as it
was. Re-running with the same scores gives identical bytes (XLSX timestamps pinned to as_of).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font, PatternFill

from pipeline.config import Config, ExportConfig
from pipeline.tiers import TIER_RANK

log = logging.getLogger(__name__)

CHANGES = ("new", "escalated", "de-escalated", "unchanged")
LEFT = ("churned", "saved", "de-escalated")
SUMMARY, NEW, GONE = "summary", "new this week", "left the list"
SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
FILE_FORBIDDEN = re.compile(r"[^\w.-]+")
MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(<)")
MAX_CELL = 32_767
TRUNCATED = " […truncated]"
RISKY_START = ("=", "+", "-", "@", "\t", "\r")
SOURCE = {f"reason_{i}": f"reason_{i}_sentence" for i in range(1, 11)}
"""Export column → scores column where the names differ."""
PERCENT = frozenset({"churn_probability", "previous_probability", "base_rate"})
MONEY = frozenset(
    {
        "monthly_value",
        "customer_value",
        "revenue_at_risk",
        "expected_loss",
        "mrr",
        "previous_revenue_at_risk",
    }
)
DATES = frozenset({"last_activity_at"})
WRAP = frozenset({*SOURCE, "recommended_action", "reasons", "why"})
FILLS = {"red": "FFC7CE", "orange": "FFE0B2", "green": "C6EFCE"}
HEADERS = {
    "customer_id": "customer",
    "churn_probability": "{horizon}-day churn risk",
    "change": "change since last run",
    "previous_probability": "risk at last run",
    "monthly_value": "value per month (MRR or spend)",
    "customer_value": "value ({value})",
    "revenue_at_risk": "revenue at risk ({value})",
    "expected_loss": "expected loss ({value})",
    "recommended_action": "recommended action",
    "last_activity_at": "last activity ({zone})",
    "escalated_by": "escalated by",
    "previous_tier": "tier at last run",
    "why": "why",
}


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says what to change."""


def safe_text(values: pd.Series) -> pd.Series:
    """Text a spreadsheet keeps as it is: control characters Excel refuses stripped, capped at
    32,767 characters with a marker (vectorised)."""
    text = values.astype("str").str.replace(ILLEGAL_CHARACTERS_RE, "", regex=True)
    long = text.str.len() > MAX_CELL
    if long.any():
        text = text.where(~long, text.str.slice(0, MAX_CELL - len(TRUNCATED)) + TRUNCATED)
    return text


def csv_safe(values: pd.Series) -> pd.Series:
    """OWASP CSV injection rule: a cell starting with = + - @ tab or CR gets a leading '."""
    text = safe_text(values)
    risky = text.str.startswith(RISKY_START).fillna(False).astype(bool)
    return text.where(~risky, "'" + text)


def previous_scores(history_dir: Path, as_of: pd.Timestamp) -> tuple[pd.DataFrame | None, str]:
    """The kept scores of the latest as_of strictly before ``as_of`` (customer_id, tier and,
    where kept, tier_proposed, churn_probability, owner, segment, revenue_at_risk), and that
    date ('' when there is none)."""
    dated = {}
    for path in Path(history_dir).glob("scores_*.parquet"):
        try:
            dated[pd.Timestamp(path.stem.removeprefix("scores_"))] = path
        except ValueError:
            continue
    earlier = [d for d in dated if d < pd.Timestamp(as_of)]
    if not earlier:
        return None, ""
    last = max(earlier)
    wanted = ("customer_id", "tier", "tier_proposed", "churn_probability", "owner", "segment",
              "revenue_at_risk")  # fmt: skip
    frame = pd.read_parquet(dated[last])
    return frame[[c for c in wanted if c in frame]], str(last.date())


def change_vs_previous(current: pd.DataFrame, previous: pd.DataFrame | None) -> pd.Series:
    """``new`` / ``escalated`` / ``de-escalated`` / ``unchanged`` per row of ``current``.

    ``new``: not in the previous run, or green there while listed now (not green).
    """
    if previous is None:
        return pd.Series("new", index=current.index, dtype="str")
    before = current["customer_id"].map(previous.set_index("customer_id")["tier"])
    now_rank = current["tier"].map(TIER_RANK).to_numpy()
    before_rank = before.map(TIER_RANK).to_numpy(dtype=np.float64)
    change = np.select(
        [
            np.isnan(before_rank) | ((before_rank == 0) & (now_rank > 0)),
            now_rank > before_rank,
            now_rank < before_rank,
        ],
        ["new", "escalated", "de-escalated"],
        default="unchanged",
    )
    return pd.Series(change, index=current.index, dtype="str")


def with_export_columns(scores: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Scores plus the export's own columns: ``change``, ``previous_probability``,
    ``previous_tier`` and ``reason_1``… (the reason sentences under their export names)."""
    out = scores.copy()
    out["change"] = change_vs_previous(out, previous)
    keyed = previous.set_index("customer_id") if previous is not None else None
    for name, column in (("previous_probability", "churn_probability"), ("previous_tier", "tier")):
        known = keyed is not None and column in keyed
        mapped = out["customer_id"].map(keyed[column]) if known else pd.Series(index=out.index)
        out[name] = mapped.astype("float64" if name == "previous_probability" else "str")
    for name, column in SOURCE.items():
        if column in out:
            out[name] = out[column]
    return out


def at_risk_list(
    scores: pd.DataFrame,
    tiers: list[str],
    columns: list[str],
    previous: pd.DataFrame | None,
    order_by: str = "expected_loss",
) -> pd.DataFrame:
    """Rows of the listed ``tiers`` with the export's columns, red first then by ``order_by``
    (highest first; ties by customer_id). Raises ``ExportError`` for a configured column the
    scores lack."""
    listed = with_export_columns(scores[scores["tier"].isin(tiers)], previous)
    unknown = [c for c in columns if c not in listed.columns]
    if unknown:
        raise ExportError(
            f"export.columns {unknown} are not in the scores; available: {sorted(listed.columns)}"
        )
    listed["_rank"] = listed["tier"].map(TIER_RANK)
    listed = listed.sort_values(
        ["_rank", order_by, "customer_id"], ascending=[False, False, True], kind="stable"
    )
    return listed.drop(columns="_rank").reset_index(drop=True)


def left_the_list(
    scores: pd.DataFrame, previous: pd.DataFrame | None, tiers: list[str], base_rate: float
) -> pd.DataFrame:
    """Customers listed at the previous run and not now, and why (see the module docstring)."""
    columns = ["customer_id", "owner", "segment", "previous_tier", "previous_probability",
               "churn_probability", "why"]  # fmt: skip
    if previous is None or "tier" not in previous:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in columns})
    was = previous[previous["tier"].isin(tiers)]
    now = scores.set_index("customer_id")
    gone = was[~was["customer_id"].isin(scores.loc[scores["tier"].isin(tiers), "customer_id"])]
    p_now = gone["customer_id"].map(now["churn_probability"])
    why = np.where(p_now.isna(), "churned", np.where(p_now < base_rate, "saved", "de-escalated"))
    out = pd.DataFrame(
        {
            "customer_id": gone["customer_id"].to_numpy(),
            "owner": _from(gone, now, "owner"),
            "segment": _from(gone, now, "segment"),
            "previous_tier": gone["tier"].to_numpy(),
            "previous_probability": gone.get(
                "churn_probability", pd.Series(np.nan, index=gone.index)
            ).to_numpy(),
            "churn_probability": p_now.to_numpy(),
            "why": why,
        }
    )
    return out.sort_values(["owner", "customer_id"], kind="stable").reset_index(drop=True)


def _from(gone: pd.DataFrame, now: pd.DataFrame, column: str) -> np.ndarray:
    """A column from the previous scores, else from the current ones."""
    if column in gone:
        return gone[column].astype("str").to_numpy()
    return gone["customer_id"].map(now[column]).astype("str").to_numpy()


def split_by(frame: pd.DataFrame, by: str, columns: list[str]) -> dict[str, pd.DataFrame]:
    """One frame per value of ``by`` (sorted by name), or one ``at_risk`` frame for ``none``;
    each keeps the list's order and only ``columns``."""
    if by == "none":
        return {"at_risk": frame[columns]}
    return {
        str(name): part[columns].reset_index(drop=True)
        for name, part in frame.groupby(by, sort=True, observed=True)
    }


def summary_table(
    scores: pd.DataFrame, listed: pd.DataFrame, by: str, left: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per owner / segment (or overall): customers per tier in the whole scored base, customers
    listed, the listed customers' revenue at risk and expected loss, how many are new,
    escalated or de-escalated since the last run and how many left the list; ``total`` last."""
    key = by if by != "none" else None
    base = scores.assign(_group=scores[key].astype("str") if key else "all")
    counts = (
        pd.crosstab(base["_group"], base["tier"]).reindex(columns=["red", "orange", "green"])
        if len(base)
        else pd.DataFrame(columns=["red", "orange", "green"])
    ).fillna(0)
    listed = listed.assign(_group=listed[key].astype("str") if key else "all")
    money = listed.groupby("_group")[["revenue_at_risk", "expected_loss"]].sum()
    table = counts.join(listed.groupby("_group").size().rename("listed")).join(money)
    changes = pd.crosstab(listed["_group"], listed["change"]).reindex(columns=list(CHANGES[:3]))
    table = table.join(changes)
    if left is not None and len(left):
        gone = left.assign(_group=left[key].astype("str") if key else "all")
        table = table.join(gone.groupby("_group").size().rename("left the list"), how="outer")
    else:
        table["left the list"] = 0
    table = table.fillna(0)
    whole = [c for c in table.columns if c not in ("revenue_at_risk", "expected_loss")]
    table[whole] = table[whole].astype("int64")
    table.loc["total"] = table.sum(numeric_only=True)
    table[whole] = table[whole].astype("int64")
    table.index.name = by if key else "group"
    return table.reset_index().round({"revenue_at_risk": 2, "expected_loss": 2})


def unique_names(names: list[str], clean: Callable[[str], str], reserved: set[str]) -> list[str]:
    """Sheet or file names, cleaned and made unique (case-insensitively) with ``_2``, ``_3``…"""
    seen = {r.lower() for r in reserved}
    out = []
    for name in names:
        base = clean(name) or "blank"
        candidate, n = base, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{clean(base)[: 31 - len(str(n)) - 1]}_{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def sheet_name(name: str) -> str:
    """An Excel sheet name: no []:*?/\\, at most 31 characters."""
    return SHEET_FORBIDDEN.sub("_", ILLEGAL_CHARACTERS_RE.sub("", name)).strip("'")[:31]


def file_stem(name: str) -> str:
    """A file name stem: letters, digits, '.', '-', '_' only."""
    return FILE_FORBIDDEN.sub("_", name).strip("_.")[:100]


def header(column: str, context: dict) -> str:
    """The header people read for an export column (horizon, value period and zone filled in)."""
    text = HEADERS.get(column, column.replace("_", " "))
    return text.format(**context) if "{" in text else text


def cell_values(frame: pd.DataFrame, zone: str) -> list[list]:
    """Rows of Python values for openpyxl: text made safe, NaN → empty, datetimes → dates in
    ``zone`` (Excel holds no time zone)."""
    columns = []
    for name in frame.columns:
        column = frame[name]
        if name in DATES or pd.api.types.is_datetime64_any_dtype(column):
            stamps = pd.to_datetime(column)
            if stamps.dt.tz is None:
                stamps = stamps.dt.tz_localize("UTC")
            local = stamps.dt.tz_convert(zone).dt.tz_localize(None).dt.normalize()
            values = [None if pd.isna(v) else v.date() for v in local]
        elif pd.api.types.is_bool_dtype(column):
            values = column.tolist()
        elif pd.api.types.is_numeric_dtype(column):
            values = column.astype("float64").replace([np.inf, -np.inf], np.nan).tolist()
            values = [None if v != v else v for v in values]
        else:
            text = safe_text(column)
            values = text.where(text.notna(), None).tolist()
        columns.append(values)
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def write_sheet(book: Workbook, title: str, frame: pd.DataFrame, context: dict) -> None:
    """One formatted table: human headers, typed cells, tier fills (see the module docstring)."""
    sheet = book.create_sheet(title)
    names = list(frame.columns)
    sheet.append([header(c, context) for c in names])
    for row in cell_values(frame, context["zone"]):
        sheet.append(row)
    for j, name in enumerate(names, start=1):
        _format_column(sheet, j, name, len(frame))
    _frame_table(sheet, len(names), len(frame))


def _format_column(sheet, j: int, name: str, n: int) -> None:
    """Number format, wrapping, fills and text type of one column's cells."""
    fmt = "0.0%" if name in PERCENT else "#,##0" if name in MONEY else None
    fmt = "yyyy-mm-dd" if name in DATES else fmt
    wrap = Alignment(wrap_text=True, vertical="top") if name in WRAP else None
    for (cell,) in sheet.iter_rows(min_row=2, max_row=n + 1, min_col=j, max_col=j):
        if isinstance(cell.value, str):
            cell.data_type = "s"  # text stays text: never a formula
        if fmt:
            cell.number_format = fmt
        if wrap:
            cell.alignment = wrap
        if name in ("tier", "previous_tier") and cell.value in FILLS:
            cell.fill = PatternFill("solid", start_color=FILLS[cell.value])
    width = max([len(str(sheet.cell(1, j).value))] + [_shown_width(c, name) for c in
                (sheet.cell(i, j) for i in range(2, min(n, 500) + 2))])  # fmt: skip
    letter = sheet.cell(1, j).column_letter
    sheet.column_dimensions[letter].width = min(width + 2, 50 if name in WRAP else 40)


def _shown_width(cell, name: str) -> int:
    if cell.value is None:
        return 0
    if name in PERCENT:
        return 6
    if name in MONEY:
        return len(f"{cell.value:,.0f}")
    return 10 if name in DATES else len(str(cell.value))


def _frame_table(sheet, n_columns: int, n_rows: int) -> None:
    """Bold frozen header; autofilter over the table only."""
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.data_type = "s"
    sheet.freeze_panes = "A2"
    last = sheet.cell(1, max(n_columns, 1)).column_letter
    sheet.auto_filter.ref = f"A1:{last}{n_rows + 1}"


def write_facts(book: Workbook, start_row: int, facts: dict) -> None:
    """'what made this list' lines under the summary table (text cells)."""
    sheet = book[SUMMARY]
    for i, (key, value) in enumerate(facts.items()):
        for j, text in enumerate((key, value), start=1):
            cell = sheet.cell(start_row + i, j, safe_text(pd.Series([str(text)])).iloc[0])
            cell.data_type = "s"
            cell.font = Font(bold=j == 1)
    sheet.column_dimensions["B"].width = max(sheet.column_dimensions["B"].width or 8, 12)


def write_workbook(
    path: Path,
    summary: pd.DataFrame,
    parts: dict[str, pd.DataFrame],
    about: dict,
    when: str,
    context: dict | None = None,
    extra: dict[str, pd.DataFrame] | None = None,
) -> dict[str, str]:
    """One XLSX: ``summary`` (table, then what made it), one sheet per part, then the ``extra``
    sheets (new this week, left the list). Returns part → sheet name."""
    context = {"horizon": 90, "value": "12 months", "zone": "UTC"} | (context or {})
    extra = extra or {}
    names = dict(zip(parts, unique_names(list(parts), sheet_name, {SUMMARY, *extra}), strict=True))
    book = Workbook()
    book.remove(book.active)
    write_sheet(book, SUMMARY, summary, context)
    write_facts(book, len(summary) + 4, about)
    for part, frame in parts.items():
        write_sheet(book, names[part], frame, context)
    for title, frame in extra.items():
        write_sheet(book, title, frame, context)
    stamp = pd.Timestamp(when).to_pydatetime()
    book.properties.created = stamp
    book.properties.modified = stamp
    book.save(path)
    _pin_zip_times(path, pd.Timestamp(when))
    return names


def _pin_zip_times(path: Path, when: pd.Timestamp) -> None:
    """Rewrite a zip container with every entry (and the workbook's 'modified' property) dated
    ``when``: same content ⇒ same bytes."""
    stamp = (when.year, when.month, when.day, 0, 0, 0)
    iso = when.strftime("%Y-%m-%dT00:00:00Z").encode()
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info.filename)) for info in src.infolist()]
    tmp = path.with_name(path.name + ".pin")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, data in entries:
            if info.filename == "docProps/core.xml":  # openpyxl stamps the save time here
                data = MODIFIED.sub(rb"\g<1>" + iso + rb"\g<2>", data)
            pinned = zipfile.ZipInfo(info.filename, date_time=stamp)
            pinned.compress_type = zipfile.ZIP_DEFLATED
            pinned.external_attr = info.external_attr
            dst.writestr(pinned, data)
    os.replace(tmp, path)


def write_tables(
    folder: Path,
    summary: pd.DataFrame,
    parts: dict[str, pd.DataFrame],
    fmt: str,
    context: dict | None = None,
    extra: dict[str, pd.DataFrame] | None = None,
) -> dict[str, str]:
    """One CSV or Parquet file per part plus ``summary`` and the ``extra`` tables; returns
    part → file name. CSV: human headers, text neutralised (``csv_safe``), dates in the zone;
    Parquet: the columns as they are (the record)."""
    context = {"horizon": 90, "value": "12 months", "zone": "UTC"} | (context or {})
    extra = {file_stem(k.replace(" ", "_")): v for k, v in (extra or {}).items()}
    stems = unique_names(list(parts), file_stem, {SUMMARY, *extra})
    names = {part: f"{stem}.{fmt}" for part, stem in zip(parts, stems, strict=True)}
    files = {f"{SUMMARY}.{fmt}": summary} | {names[k]: v for k, v in parts.items()}
    for name, frame in (files | {f"{k}.{fmt}": v for k, v in extra.items()}).items():
        if fmt == "csv":
            csv_frame(frame, context).to_csv(
                folder / name, index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC
            )
        else:
            frame.to_parquet(folder / name, index=False)
    return names


def csv_frame(frame: pd.DataFrame, context: dict) -> pd.DataFrame:
    """Human headers, dates in the zone, every text cell neutralised against injection."""
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        column = frame[name]
        if name in DATES or pd.api.types.is_datetime64_any_dtype(column):
            stamps = pd.to_datetime(column)
            stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps
            column = stamps.dt.tz_convert(context["zone"]).dt.strftime("%Y-%m-%d")
        elif not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            column = csv_safe(column)
        out[header(name, context)] = column
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def publish(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` folder onto ``target``, replacing an older export.

    Both renames are atomic; between them the target is briefly absent, never partial.
    """
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_stale(out_dir: Path) -> None:
    """Remove temporary folders an interrupted export left behind."""
    for stale in list(out_dir.glob(".tmp-at_risk_*")) + list(out_dir.glob(".old-at_risk_*")):
        shutil.rmtree(stale, ignore_errors=True)


def build_export(
    scores: pd.DataFrame,
    config: ExportConfig,
    previous: pd.DataFrame | None,
    by: str | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame, dict[str, pd.DataFrame]]:
    """(listed rows, one frame per owner / segment, summary table, extra sheets): pure."""
    by = by or config.by
    columns = list(config.columns)
    listed = at_risk_list(scores, list(config.tiers), columns, previous)
    parts = split_by(listed, by, columns)
    left = left_the_list(scores, previous, list(config.tiers), _base_rate(scores))
    new = listed[listed["change"].isin(["new", "escalated"])]
    extra = {NEW: new[columns].reset_index(drop=True), GONE: left}
    return listed, parts, summary_table(scores, listed, by, left), extra


def _base_rate(scores: pd.DataFrame) -> float:
    if "base_rate" in scores and len(scores):
        return float(scores["base_rate"].iloc[0])
    return float(scores["churn_probability"].mean()) if len(scores) else 0.0


def header_context(scores: pd.DataFrame, config: ExportConfig) -> dict:
    """What the headers say: the horizon, the value period, the time zone."""
    first = scores.iloc[0] if len(scores) else {}
    horizon = int(first["horizon_days"]) if "horizon_days" in scores and len(scores) else 90
    value = str(first["value_basis"]) if "value_basis" in scores and len(scores) else "12 months"
    return {"horizon": horizon, "value": value, "zone": config.time_zone}


def export_lists(
    scores: pd.DataFrame,
    config: ExportConfig,
    out_dir: Path,
    previous: tuple[pd.DataFrame | None, str] = (None, ""),
    fmt: str | None = None,
    by: str | None = None,
    facts: dict | None = None,
    upsell: bool = False,
    fail_after: Callable[[str], None] | None = None,
) -> tuple[Path, dict]:
    """Write one export folder (see module docstring); returns (folder, manifest).

    ``facts``: what made the scores (scores file, model run id…), copied into the manifest.
    ``upsell``: also list green upsell / referral candidates (``upsell_candidates`` file or
    sheet). ``fail_after`` is called after each file is written (tests use it to interrupt).
    """
    fmt, by = fmt or config.format, by or config.by
    if scores.empty:
        raise ExportError("the scores table is empty: nothing to export")
    as_of = str(pd.Timestamp(scores["as_of"].iloc[0]).date())
    listed, parts, summary, extra = build_export(scores, config, previous[0], by)
    if upsell and "upsell_candidate" in scores:
        cols = list(config.columns)
        chosen = at_risk_list(
            scores[scores["upsell_candidate"]], ["green"], cols, previous[0], "customer_value"
        )
        parts = parts | {"upsell_candidates": chosen[cols]}
    manifest = _manifest(scores, listed, parts, extra, config, as_of, fmt, by, previous[1], facts)
    context = header_context(scores, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    target = out_dir / f"at_risk_{as_of}"
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=out_dir))
    try:
        if fmt == "xlsx":
            workbook = staging / f"at_risk_{as_of}.xlsx"
            sheets = write_workbook(
                workbook, summary, parts, _about(manifest, context), as_of, context, extra
            )
            manifest["sheets"] = {SUMMARY: SUMMARY, **sheets, NEW: NEW, GONE: GONE}
        else:
            manifest["part_files"] = write_tables(staging, summary, parts, fmt, context, extra)
        if fail_after:
            fail_after("data")
        manifest["files"] = {p.name: sha256(p) for p in sorted(staging.iterdir())}
        staging.chmod(0o755)
        _write_manifest(manifest, staging / "manifest.json")
        publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target, manifest


def _about(manifest: dict, context: dict) -> dict:
    """The summary sheet's facts: the run, the policy in words, what changed."""
    counts = manifest["counts"]
    changed = ", ".join(f"{k} {v}" for k, v in counts["per_change"].items())
    left = ", ".join(f"{k} {v}" for k, v in counts["left_the_list"].items())
    return {
        "as of": manifest["as_of"],
        "previous run": manifest["previous_as_of"] or "none (everyone listed is new)",
        "model version": manifest["model_version"],
        "tier policy": manifest["tier_policy"],
        "churn risk": f"probability of churning within {context['horizon']} days",
        "revenue at risk": f"churn risk × value over {context['value']}",
        "dates": f"in {context['zone']}",
        "changed since last run": changed,
        "left the list": left or "nobody",
    }


def _write_manifest(manifest: dict, path: Path) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def _manifest(
    scores: pd.DataFrame,
    listed: pd.DataFrame,
    parts: dict[str, pd.DataFrame],
    extra: dict[str, pd.DataFrame],
    config: ExportConfig,
    as_of: str,
    fmt: str,
    by: str,
    previous_as_of: str,
    facts: dict | None,
) -> dict:
    chosen = scores[scores["tier"].isin(config.tiers)]
    left = extra[GONE]
    return {
        "as_of": as_of,
        "format": fmt,
        "by": by,
        "tiers": list(config.tiers),
        "columns": list(config.columns),
        "time_zone": config.time_zone,
        "sorted_by": "tier (red first), then expected loss, highest first",
        "model_version": str(scores["model_version"].iloc[0]),
        "tier_policy": str(scores["tier_policy"].iloc[0]),
        "base_rate": round(_base_rate(scores), 6),
        "previous_as_of": previous_as_of or None,
        "counts": {
            "scored": len(scores),
            "listed": len(listed),
            "per_tier": {t: int((chosen["tier"] == t).sum()) for t in config.tiers},
            "per_change": {c: int((listed["change"] == c).sum()) for c in CHANGES},
            "per_part": {name: len(frame) for name, frame in parts.items()},
            "escalated": int(listed["escalated_by"].notna().sum())
            if "escalated_by" in listed
            else 0,
            "new_this_week": len(extra[NEW]),
            "left_the_list": {w: int((left["why"] == w).sum()) for w in LEFT},
        },
        "revenue_at_risk_listed": round(float(chosen["revenue_at_risk"].sum()), 2),
        "expected_loss_listed": round(float(chosen["expected_loss"].sum()), 2),
        **(facts or {}),
    }


def history_dir(output_dir: Path) -> Path:
    """Where ``churn score`` keeps one scores file per as_of (see ``score.history_path``)."""
    from pipeline import paths

    return paths.history_dir(output_dir)


def _default_target(config: Config) -> Path:
    """``<output_dir>/export`` of this project (``pipeline.paths``)."""
    from pipeline import paths

    return paths.export_dir(paths.output_dir(config))


def run_export(
    config: Config,
    scores_path: Path,
    out_dir: Path | None = None,
    fmt: str | None = None,
    by: str | None = None,
    upsell: bool = False,
) -> tuple[Path, dict]:
    """The export job: read the scores, find the previous run, write the folder, track it."""
    scores_path = Path(scores_path)
    if not scores_path.exists():
        raise ExportError(f"no scores at '{scores_path}'; run `make score` first or pass --scores")
    scores = with_contacts(pd.read_parquet(scores_path), config)
    as_of = pd.Timestamp(scores["as_of"].iloc[0]) if len(scores) else None
    previous = previous_scores(history_dir(config.data.output_dir), as_of) if len(scores) else None
    summary_path = scores_path.with_name(f"{scores_path.stem}_summary.json")
    model_run = None
    if summary_path.exists():
        model_run = json.loads(summary_path.read_text()).get("model", {}).get("mlflow_run_id")
    facts = {
        "scores_file": str(scores_path),
        "scores_sha256": sha256(scores_path),
        "model_run_id": model_run,
    }
    target, manifest = export_lists(
        scores,
        config.export,
        out_dir or _default_target(config),
        previous or (None, ""),
        fmt,
        by,
        facts,
        upsell,
    )
    _track(config, manifest, target)
    return target, manifest


def with_contacts(scores: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Scores joined with the ``export.contact_columns`` of the customers file (by customer_id);
    the scores as they are when none is configured."""
    wanted = list(config.export.contact_columns)
    if not wanted:
        return scores
    path = Path(config.data.customers)
    if path.suffix.lower() == ".parquet":
        available = pd.read_parquet(path).columns
    else:
        available = pd.read_csv(path, nrows=0).columns
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ExportError(
            f"export.contact_columns {missing} are not columns of '{path}';"
            f" available: {sorted(map(str, available))}"
        )
    cols = ["customer_id", *wanted]
    if path.suffix.lower() == ".parquet":
        contacts = pd.read_parquet(path, columns=cols)
    else:
        contacts = pd.read_csv(path, usecols=cols, dtype="str", keep_default_na=False)
    contacts = contacts.astype("str").drop_duplicates("customer_id")
    return scores.merge(contacts, on="customer_id", how="left", suffixes=("", "_contact"))


def _track(config: Config, manifest: dict, target: Path) -> None:
    """An export MLflow run linked to the model's run, when the tracking store is reachable."""
    from pipeline import tracking

    tc = config.train
    if not tracking.store_reachable(tc.tracking_uri):
        log.info("tracking store not reachable: export run not logged to MLflow")
        return
    tracking.configure(tc.tracking_uri, tc.experiment, tc.artifact_location)
    counts = manifest["counts"]
    metrics = {
        "listed": counts["listed"],
        "revenue_at_risk_listed": manifest["revenue_at_risk_listed"],
    }
    metrics |= {f"tier_{k}": v for k, v in counts["per_tier"].items()}
    metrics |= {f"change_{k.replace('-', '_')}": v for k, v in counts["per_change"].items()}
    run_id = tracking.log_linked_run(
        "export",
        manifest.get("model_run_id"),
        manifest["model_version"],
        params={k: manifest[k] for k in ("as_of", "format", "by", "tier_policy", "previous_as_of")}
        | {"folder": str(target)},
        metrics=metrics,
        artifacts=[target / "manifest.json"],
    )
    log.info("MLflow export run %s", run_id)
