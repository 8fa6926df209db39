"""`churn`: the command line. Thin: read the config once, call the stage, say where results went."""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pipeline.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from pipeline.init import Guess

app = typer.Typer(
    help="Churn-risk pipeline: activity log → features → calibrated model → tiers → CS lists.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
log = logging.getLogger("pipeline")

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file (see README, 'Config').")
]
DEFAULT_CONFIG = Path("configs/demo.yaml")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Set up logging once for every command."""
    if not console.is_terminal:  # make, CI, cron: don't wrap log lines at 80 columns
        console.width = 160
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "git", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        _fail(str(error))


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    from pipeline.contract import cap

    console.print(
        f"[bold red]error:[/] {escape(cap(message, 4000))}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors(scoring: bool = False, scores: Path | None = None) -> Iterator[None]:
    """Turn the pipeline's own input errors into a clear message and exit code 2; with
    ``scoring``, also scoring and export errors (no model, feature mismatch, bad export).
    Operating-system errors (a folder that is a file, no permission, a full disk) become a
    message naming the path and the fix; with ``scores`` (export), a file that is not a
    scores table is named as such."""
    from pipeline.dataset import DatasetError
    from pipeline.events import InputError

    expected: tuple[type[Exception], ...] = (InputError, DatasetError, ConfigError)
    if scoring:
        from pipeline.export import ExportError
        from pipeline.model import FeatureMismatchError

        expected += (FeatureMismatchError, ExportError, FileNotFoundError)
    try:
        yield
    except expected as error:
        _fail(str(error))
    except OSError as error:
        _fail(_os_message(error))
    except Exception as error:
        if scores is None or not _unreadable_table(error):
            raise
        _fail(
            f"'{scores}' is not a scores table written by `churn score` ({_short(error)});"
            " pass --scores a scores .parquet file, or run `churn score` first"
        )


def _short(error: BaseException) -> str:
    from pipeline.contract import cap

    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return cap(f"{type(error).__name__}: {text}", 160)


def _unreadable_table(error: Exception) -> bool:
    """A Parquet file that is not one, or one that lacks a column read by name."""
    import pyarrow as pa

    return isinstance(error, pa.ArrowException | KeyError)


OS_FIXES = {
    errno.ENOSPC: "no space left on the device; free space or set data.output_dir to another disk",
    errno.EDQUOT: "disk quota exceeded; free space or set data.output_dir to another disk",
    errno.EACCES: "permission denied; make it writable or set data.output_dir to another folder",
    errno.EPERM: "operation not permitted; make it writable or choose another folder",
    errno.EROFS: "read-only file system; set data.output_dir to a writable folder",
    errno.ENOTDIR: "a file stands where a folder is needed; set data.output_dir to a folder",
    errno.EEXIST: "a file stands where a folder is needed; set data.output_dir to a folder",
    errno.EISDIR: "a folder stands where a file is needed; pass a file name",
}


def _os_message(error: OSError) -> str:
    """One line: the path, what the system said, and the fix."""
    from pipeline.contract import cap

    where = f"'{cap(error.filename)}'" if error.filename else "a file"
    fix = OS_FIXES.get(error.errno or -1)
    if fix is None:
        return f"cannot use {where}: {cap(error.strerror or error)}"
    return f"cannot write {where}: {fix}" if error.errno != errno.EISDIR else f"{where}: {fix}"


def _check_out(out: Path | None, suffixes: tuple[str, ...]) -> None:
    if out is not None and Path(out).suffix.lower() not in suffixes:
        _fail(f"--out '{out}': use a file name ending in {' or '.join(suffixes)}")


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """A spinner while a step runs, then its wall time in the log."""
    start = time.perf_counter()
    with console.status(f"[bold]{name}…", spinner="dots"):
        yield
    log.info("%s done in %.1f s", name, time.perf_counter() - start)


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _dates(values: list[str] | None) -> list[datetime] | None:
    if not values:
        return None
    try:
        return [datetime.strptime(v, "%Y-%m-%d") for v in values]
    except ValueError:
        _fail(f"--as-of {values}: use dates as YYYY-MM-DD")


@app.command("demo-data")
def demo_data(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder to write the files to (default data/demo; data/retail for retail)."
        ),
    ] = None,
    customers: Annotated[int, typer.Option(min=10, help="Number of customers.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed ⇒ same bytes.")] = 42,
    business: Annotated[
        Literal["subscription", "retail"],
        typer.Option(help="subscription: activity log with cancellations; retail: purchases."),
    ] = "subscription",
) -> None:
    """Write a simulated business (events, customers, the true hazard or purchase intensity)
    in the input contract."""
    out = out or Path("data/retail" if business == "retail" else "data/demo")
    if business == "retail":
        from pipeline.demo_retail import write_retail_data

        with step("simulating a retail purchase log"):
            summary = write_retail_data(out, n_customers=customers, seed=seed)
        log.info(
            "retail demo data: %d customers, %d purchases, %d dropped out (latent) → %s",
            summary.n_customers,
            summary.n_events,
            summary.n_churned,
            summary.out_dir,
        )
        return
    from pipeline.demo import write_demo_data

    with progress_bar() as bar:
        task = bar.add_task("simulating customers", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = write_demo_data(out, n_customers=customers, seed=seed, progress=advance)
    log.info(
        "demo data: %d customers, %d events, %d churned → %s",
        summary.n_customers,
        summary.n_events,
        summary.n_churned,
        summary.out_dir,
    )


@app.command()
def validate(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate the configured inputs; write rejects files and print the counts."""
    from pipeline.events import load_inputs

    cfg = _config(config)
    with _errors(), step("validating inputs"):
        data = load_inputs(cfg)
    console.print_json(data=data.report.as_dict())


@app.command()
def features(
    config: ConfigOption = DEFAULT_CONFIG,
    as_of: Annotated[
        list[str] | None,
        typer.Option("--as-of", help="Snapshot date YYYY-MM-DD (UTC); repeat for many."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")] = Path(
        "outputs/features.parquet"
    ),
) -> None:
    """Point-in-time features for every eligible customer at each --as-of date, in one pass."""
    from pipeline.features import features_for_dates
    from pipeline.io import write_frame

    cfg = _config(config)
    dates = _dates(as_of)
    with _errors():
        with step("validating inputs"):
            from pipeline.events import load_inputs

            data = load_inputs(cfg)
        dates = dates or [data.observed_until]
        with step("building features"):
            frame = features_for_dates(
                data.store, data.customers, dates, cfg.features, cfg.label.qualifying_families
            )
        write_frame(frame, out)
    log.info("wrote %d rows × %d features to %s", len(frame), frame.shape[1] - 2, out)


@app.command("run")
def daily_run(
    config: ConfigOption = DEFAULT_CONFIG,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Snapshot date YYYY-MM-DD (UTC); default: end of the log."),
    ] = None,
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit 3 when a monitoring alert fired.")
    ] = False,
) -> None:
    """The daily job: validate → score → export → monitor → report into one run folder
    (<output_dir>/runs/<as_of>/). Exit 0 done, 2 bad input or config, 3 alert (--fail-on-alert)."""
    from pipeline.events import load_inputs
    from pipeline.run import EXIT_ALERT, run_daily

    cfg = _config(config)
    date = _dates([as_of])[0] if as_of else None
    with _errors(scoring=True):
        with step("validating inputs"):
            data = load_inputs(cfg)
        with step("daily run"):
            done = run_daily(cfg, data, date, config_path=str(config))
    for alert in done.alerts:
        log.warning("alert: %s", alert)
    typer.echo(done.line())
    if fail_on_alert and done.alerts:
        raise typer.Exit(EXIT_ALERT)


@app.command()
def train(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Rolling-origin backtest beside the baselines, production refit on every labelled date
    with out-of-fold calibration; track in MLflow; gate and export the champion."""
    from pipeline.events import load_inputs
    from pipeline.train import run_training

    cfg = _config(config)
    with _errors():
        with step("validating inputs"):
            data = load_inputs(cfg)
        with progress_bar() as bar:
            task = bar.add_task("boosting trees (backtest folds, then production)", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = run_training(cfg, on_iteration=advance, data=data)
    where = (
        f"champion bundle in {result.bundle_dir}"
        if (result.bundle_dir / "card.json").exists()
        else "no champion yet, so `churn score` has no model for this project"
    )
    log.info(
        "MLflow run %s, model %s v%s (%s); %s; `make mlflow-ui` to browse",
        result.run_id,
        cfg.train.model_name,
        result.version,
        "champion" if result.promoted else result.decision,
        where,
    )


@app.command()
def kpis(
    config: ConfigOption = DEFAULT_CONFIG,
    period: Annotated[str | None, typer.Option(help="month or quarter (default: config)")] = None,
    out: Annotated[Path | None, typer.Option(help="Output .csv or .parquet")] = None,
) -> None:
    """Retention KPIs per period (CRR, churn rate, NDR, GRR, ARPA, CLV) and cohort retention."""
    from pipeline.events import load_inputs
    from pipeline.kpis import run_kpis

    cfg = _config(config)
    if period not in (None, "month", "quarter"):
        _fail(f"--period {period!r}: use month or quarter")
    out = out or cfg.data.output_dir / "kpis" / f"kpis_{period or cfg.kpis.period}.csv"
    with _errors():
        with step("validating inputs"):
            data = load_inputs(cfg)
        with step("computing KPIs"):
            table, _, metrics = run_kpis(cfg, data, out=out, period=period)
    _log_to_active_run(metrics)
    _print_kpis(table.tail(6))
    log.info("wrote %d periods to %s (cohorts beside it)", len(table), out)


def _print_kpis(table) -> None:
    from rich.table import Table

    view = Table(title="Retention KPIs (latest periods)")
    columns = {
        "period_start": "period",
        "S": "S",
        "N": "N",
        "lost": "lost",
        "E": "E",
        "crr_pct": "CRR %",
        "churn_rate": "churn",
        "ndr": "NDR",
        "clv": "CLV",
    }
    for title in columns.values():
        view.add_column(title, justify="right")
    for row in table.itertuples(index=False):
        values = row._asdict()
        view.add_row(
            str(values["period_start"])[:10],
            *(f"{values[c]:,.0f}" for c in ("S", "N", "lost", "E")),
            f"{values['crr_pct']:.2f}",
            f"{values['churn_rate']:.2%}",
            f"{values['ndr']:.3f}",
            f"{values['clv']:,.0f}",
        )
    console.print(view)


def _log_to_active_run(metrics: dict[str, float]) -> None:
    """Log KPI metrics to MLflow when a run is active (e.g. inside a scheduled job)."""
    from pipeline import tracking

    if tracking.active_run_id():
        tracking.log_metrics(metrics)


@app.command()
def score(
    config: ConfigOption = DEFAULT_CONFIG,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Snapshot date YYYY-MM-DD (UTC); default: end of the log."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Scores file (.parquet); default: a run folder <output_dir>/scores/<as_of>/"
            " published as a set, named by <output_dir>/scores/LATEST."
        ),
    ] = None,
    explain_all: Annotated[
        bool, typer.Option("--explain-all", help="Reasons for every customer, not only at risk.")
    ] = False,
    tiers_from_config: Annotated[
        bool,
        typer.Option(
            "--tiers-from-config", help="Use the config's tier policy instead of the model card's."
        ),
    ] = False,
) -> None:
    """Score the whole customer base at as_of with the champion: probability, tier, reasons."""
    from pipeline.events import load_inputs
    from pipeline.score import run_scoring

    cfg = _config(config)
    date = _dates([as_of])[0] if as_of else None
    _check_out(out, (".parquet", ".csv"))
    with _errors(scoring=True):
        with step("validating inputs"):
            data = load_inputs(cfg)
        with step("scoring"):
            result, paths = run_scoring(
                cfg, data, date, out, explain_all=explain_all, tiers_from_config=tiers_from_config
            )
    s = result.summary
    c = s["customers"]
    log.info(
        "as_of %s, model v%s (%s): %d in base = %d scored + %d rejected %s",
        s["as_of"],
        s["model"]["version"],
        s["model"]["source"],
        c["base"],
        c["scored"],
        c["rejected"],
        s["reject_reasons"] or "",
    )
    log.info(
        "tiers %s; revenue at risk %.0f (red %.0f, orange %.0f); %d explained; %d upsell",
        s["tiers"],
        s["revenue_at_risk"]["total"],
        s["revenue_at_risk"]["red"],
        s["revenue_at_risk"]["orange"],
        s["explained"],
        s["upsell_candidates"],
    )
    log.info(
        "scores → %s; rejects → %s; summary → %s",
        paths["scores"],
        paths["rejects"],
        paths["summary"],
    )


@app.command()
def export(
    config: ConfigOption = DEFAULT_CONFIG,
    scores: Annotated[
        Path | None,
        typer.Option(help="Scores file; default: the run named by <output_dir>/scores/LATEST."),
    ] = None,
    format_: Annotated[
        str | None, typer.Option("--format", help="xlsx, csv or parquet; default: export.format.")
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="owner, segment or none; default: export.by.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the exports; default: <output_dir>/export.")
    ] = None,
    upsell: Annotated[
        bool, typer.Option("--upsell", help="Also list green upsell / referral candidates.")
    ] = False,
) -> None:
    """At-risk lists per CS owner (red and orange by default) with a summary and a manifest."""
    from pipeline.export import run_export
    from pipeline.score import default_out

    cfg = _config(config)
    if format_ not in (None, "xlsx", "csv", "parquet"):
        _fail(f"--format {format_!r}: use xlsx, csv or parquet")
    if by not in (None, "owner", "segment", "none"):
        _fail(f"--by {by!r}: use owner, segment or none")
    with _errors(scoring=True, scores=scores or default_out(cfg)), step("exporting"):
        folder, manifest = run_export(
            cfg, scores or default_out(cfg), out, format_, by, upsell=upsell
        )
    counts = manifest["counts"]
    log.info(
        "as_of %s, model v%s: %d listed %s, changes %s vs %s; revenue at risk listed %.0f",
        manifest["as_of"],
        manifest["model_version"],
        counts["listed"],
        counts["per_tier"],
        counts["per_change"],
        manifest["previous_as_of"] or "no previous run",
        manifest["revenue_at_risk_listed"],
    )
    log.info("%d lists → %s (manifest.json last)", len(counts["per_part"]), folder)


@app.command()
def report(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[
        Path | None, typer.Option(help="HTML file; default: <output_dir>/report.html.")
    ] = None,
    backtest_dates: Annotated[
        int, typer.Option(min=1, help="Monthly as_of dates with known outcomes for the tiers.")
    ] = 6,
    top: Annotated[int, typer.Option(min=1, help="Rows of the at-risk list to show.")] = 25,
) -> None:
    """One self-contained HTML report: KPIs, model quality, tiers backtest, at-risk list."""
    from pipeline.events import load_inputs
    from pipeline.report import run_report

    cfg = _config(config)
    with _errors():
        with step("validating inputs"):
            data = load_inputs(cfg)
        with step("building the report"):
            path = run_report(
                cfg, out, data=data, n_dates=backtest_dates, top=top, config_path=str(config)
            )
    log.info("report → %s (self-contained; open it in a browser)", path)


@app.command()
def init(
    events: Annotated[Path, typer.Option("--events", help="Your events file (.csv/.parquet).")],
    customers: Annotated[
        Path, typer.Option("--customers", help="Your customers file (.csv/.parquet).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Config to write; default: configs/<events folder name>.yaml."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Write a starter config from a sample of your files: column mapping, formats, event
    types (obvious ones mapped, the rest commented); check it, then `churn validate`."""
    from pipeline.init import check_headers, default_out, guess, render
    from pipeline.io import write_atomic

    out = out or default_out(events)
    _check_out(out, (".yaml", ".yml"))
    if out.exists() and not force:
        _fail(f"'{out}' exists; pass --force to overwrite it or --out another file")
    with _errors():
        found = guess(events, customers)
        text = render(found, events, customers, project=out.stem)
        write_atomic(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    _log_guess(found, out)
    try:
        check_headers(load_config(out))
    except (ConfigError, ValueError) as error:  # InputError is a ValueError
        _fail(f"wrote '{out}', but it needs a fix before `churn validate`: {error}")


def _log_guess(found: Guess, out: Path) -> None:
    from pipeline.contract import cap

    for name, mapping in found.columns.items():
        log.info("%s columns: %s", name, {k: cap(v, 60) for k, v in mapping.items()})
    log.info("formats: %s", found.formats or "defaults (ISO dates, decimal point, commas)")
    for event_type, n in list(found.event_counts.items())[:20]:
        family = next((f for f, ts in found.families.items() if event_type in ts), None)
        log.info("  %-30s %8d  %s", cap(event_type, 30), n, family or "(not mapped: check)")
    for check in found.checks:
        log.warning("check: %s", check)
    log.info("wrote %s; check it, then run: churn validate --config %s", out, out)
