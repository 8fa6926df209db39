"""At-risk lists for CS teams, from a scores table (Parquet stays the record).

One export = a folder ``<out>/at_risk_<as_of>/`` holding either one XLSX workbook (a sheet per
owner or segment, each with an autofilter and a frozen header, plus a ``summary`` sheet first)
or one CSV / Parquet file per owner or segment plus ``summary``; and ``manifest.json`` with the
counts, the tier policy, the model version and a SHA-256 per file. Rows: the configured tiers
(red and orange by default), sorted by expected loss (highest first). Only the configured
columns (``ExportConfig.columns``) are written: personal-data minimisation.

``change`` compares each customer's tier with the previous scoring run, the kept scores of the
latest earlier as_of under ``<output_dir>/scores/history/``: ``new`` (not listed before: not
scored, or green), ``escalated`` (tier went up, e.g. orange → red), ``de-escalated`` (went
down), ``unchanged``.

Atomicity: everything is written into a temporary folder beside the target, the manifest last,
then the folder is renamed onto the target; an interrupted run leaves the previous export as it
was. Re-running with the same scores gives identical bytes (XLSX timestamps are pinned to as_of).
"""

from __future__ import annotations

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

from pipeline.config import Config, ExportConfig
from pipeline.tiers import TIER_RANK

log = logging.getLogger(__name__)

CHANGES = ("new", "escalated", "de-escalated", "unchanged")
SUMMARY = "summary"
SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
FILE_FORBIDDEN = re.compile(r"[^\w.-]+")
MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(<)")


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says what to change."""


def previous_scores(history_dir: Path, as_of: pd.Timestamp) -> tuple[pd.DataFrame | None, str]:
    """The kept scores of the latest as_of strictly before ``as_of`` (customer_id, tier), and
    that date ('' when there is none)."""
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
    return pd.read_parquet(dated[last], columns=["customer_id", "tier"]), str(last.date())


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


def at_risk_list(
    scores: pd.DataFrame,
    tiers: list[str],
    columns: list[str],
    previous: pd.DataFrame | None,
    order_by: str = "expected_loss",
) -> pd.DataFrame:
    """Rows of the listed ``tiers`` with ``change``, sorted by ``order_by`` (highest first; ties
    by customer_id). All columns stay (``split_by`` keeps the configured ones); raises
    ``ExportError`` for a configured column the scores lack."""
    listed = scores[scores["tier"].isin(tiers)].copy()
    listed["change"] = change_vs_previous(listed, previous)
    unknown = [c for c in columns if c not in listed.columns]
    if unknown:
        raise ExportError(
            f"export.columns {unknown} are not in the scores; available: {sorted(listed.columns)}"
        )
    listed = listed.sort_values([order_by, "customer_id"], ascending=[False, True], kind="stable")
    return listed.reset_index(drop=True)


def excel_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """tz-aware datetimes → naive UTC (Excel cannot hold a time zone); other columns as they are."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def split_by(frame: pd.DataFrame, by: str, columns: list[str]) -> dict[str, pd.DataFrame]:
    """One frame per value of ``by`` (sorted by name), or one ``at_risk`` frame for ``none``;
    each keeps the list's order and only ``columns``."""
    if by == "none":
        return {"at_risk": frame[columns]}
    return {
        str(name): part[columns].reset_index(drop=True)
        for name, part in frame.groupby(by, sort=True, observed=True)
    }


def summary_table(scores: pd.DataFrame, listed: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per owner / segment (or overall): customers per tier in the whole scored base, customers
    listed, and the listed customers' revenue at risk and expected loss; a ``total`` row last."""
    key = by if by != "none" else None
    base = scores.assign(_group=scores[key].astype("str") if key else "all")
    counts = (
        pd.crosstab(base["_group"], base["tier"]).reindex(columns=["red", "orange", "green"])
        if len(base)
        else pd.DataFrame(columns=["red", "orange", "green"])
    ).fillna(0)
    chosen = base[base["customer_id"].isin(listed["customer_id"])]
    money = chosen.groupby("_group")[["revenue_at_risk", "expected_loss"]].sum()
    table = counts.join(chosen.groupby("_group").size().rename("listed")).join(money)
    table = table.fillna(0).astype({"red": "int64", "orange": "int64", "green": "int64"})
    table["listed"] = table["listed"].astype("int64")
    table.loc["total"] = table.sum(numeric_only=True)
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
    return SHEET_FORBIDDEN.sub("_", name).strip("'")[:31]


def file_stem(name: str) -> str:
    """A file name stem: letters, digits, '.', '-', '_' only."""
    return FILE_FORBIDDEN.sub("_", name).strip("_.")[:100]


def write_workbook(
    path: Path, summary: pd.DataFrame, parts: dict[str, pd.DataFrame], about: dict, when: str
) -> dict[str, str]:
    """One XLSX: ``summary`` (table, then what made it) then one sheet per part, each with an
    autofilter, a frozen header and readable column widths. Returns part → sheet name."""
    names = dict(zip(parts, unique_names(list(parts), sheet_name, {SUMMARY}), strict=True))
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        summary.to_excel(writer, sheet_name=SUMMARY, index=False)
        facts = pd.DataFrame({"item": list(about), "value": [str(v) for v in about.values()]})
        facts.to_excel(writer, sheet_name=SUMMARY, index=False, startrow=len(summary) + 3)
        for part, frame in parts.items():
            excel_safe(frame).to_excel(writer, sheet_name=names[part], index=False)
        for sheet in writer.book.worksheets:
            _style(sheet, table_rows=len(summary) + 1 if sheet.title == SUMMARY else None)
        stamp = pd.Timestamp(when).to_pydatetime()
        writer.book.properties.created = stamp
        writer.book.properties.modified = stamp
    _pin_zip_times(path, pd.Timestamp(when))
    return names


def _style(sheet, table_rows: int | None = None) -> None:
    """Autofilter over the table, frozen header row, column widths from the content."""
    last_row = table_rows or sheet.max_row
    sheet.auto_filter.ref = f"A1:{sheet.cell(1, max(sheet.max_column, 1)).column_letter}{last_row}"
    sheet.freeze_panes = "A2"
    for cells in sheet.iter_cols(min_row=1, max_row=min(sheet.max_row, 200)):
        width = max((len(str(c.value)) for c in cells if c.value is not None), default=8)
        sheet.column_dimensions[cells[0].column_letter].width = min(max(width + 2, 8), 80)


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
    folder: Path, summary: pd.DataFrame, parts: dict[str, pd.DataFrame], fmt: str
) -> dict[str, str]:
    """One CSV or Parquet file per part plus ``summary``; returns part → file name."""
    stems = unique_names(list(parts), file_stem, {SUMMARY})
    names = {part: f"{stem}.{fmt}" for part, stem in zip(parts, stems, strict=True)}
    for part, frame in [(SUMMARY, summary), *parts.items()]:
        target = folder / (f"{SUMMARY}.{fmt}" if part == SUMMARY else names[part])
        if fmt == "csv":
            excel_safe(frame).to_csv(target, index=False)
        else:
            frame.to_parquet(target, index=False)
    return names


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
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame]:
    """(listed rows, one frame per owner / segment, summary table): pure."""
    by = by or config.by
    listed = at_risk_list(scores, list(config.tiers), list(config.columns), previous)
    parts = split_by(listed, by, list(config.columns))
    return listed, parts, summary_table(scores, listed, by)


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
    listed, parts, summary = build_export(scores, config, previous[0], by)
    if upsell and "upsell_candidate" in scores:
        cols = list(config.columns)
        chosen = at_risk_list(
            scores[scores["upsell_candidate"]], ["green"], cols, previous[0], "customer_value"
        )
        parts = parts | {"upsell_candidates": chosen[cols]}
    manifest = _manifest(scores, listed, parts, config, as_of, fmt, by, previous[1], facts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    target = out_dir / f"at_risk_{as_of}"
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=out_dir))
    try:
        if fmt == "xlsx":
            workbook = staging / f"at_risk_{as_of}.xlsx"
            about = {k: manifest[k] for k in ("as_of", "model_version", "tier_policy")}
            about |= {"previous_as_of": manifest["previous_as_of"] or "none"}
            sheets = write_workbook(workbook, summary, parts, about, as_of)
            manifest["sheets"] = {SUMMARY: SUMMARY, **sheets}
        else:
            manifest["part_files"] = write_tables(staging, summary, parts, fmt)
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


def _write_manifest(manifest: dict, path: Path) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def _manifest(
    scores: pd.DataFrame,
    listed: pd.DataFrame,
    parts: dict[str, pd.DataFrame],
    config: ExportConfig,
    as_of: str,
    fmt: str,
    by: str,
    previous_as_of: str,
    facts: dict | None,
) -> dict:
    chosen = scores[scores["tier"].isin(config.tiers)]
    return {
        "as_of": as_of,
        "format": fmt,
        "by": by,
        "tiers": list(config.tiers),
        "columns": list(config.columns),
        "sorted_by": "expected_loss, highest first",
        "model_version": str(scores["model_version"].iloc[0]),
        "tier_policy": str(scores["tier_policy"].iloc[0]),
        "previous_as_of": previous_as_of or None,
        "counts": {
            "scored": len(scores),
            "listed": len(listed),
            "per_tier": {t: int((chosen["tier"] == t).sum()) for t in config.tiers},
            "per_change": {c: int((listed["change"] == c).sum()) for c in CHANGES},
            "per_part": {name: len(frame) for name, frame in parts.items()},
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
    scores = pd.read_parquet(scores_path)
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
