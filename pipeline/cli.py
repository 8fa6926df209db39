"""`churn`: the command line. Thin: read the config once, call the stage, say where results went."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pipeline.config import Config, ConfigError, load_config

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
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors(scoring: bool = False) -> Iterator[None]:
    """Turn the pipeline's own input errors into a clear message and exit code 2; with
    ``scoring``, also scoring and export errors (no model, feature mismatch, bad export)."""
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
                data.con, data.customers, dates, cfg.features, cfg.label.qualifying_families
            )
        write_frame(frame, out)
    log.info("wrote %d rows × %d features to %s", len(frame), frame.shape[1] - 2, out)


def run() -> None:  # pragma: no cover - console entry for debugging
    sys.exit(app())


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
    log.info(
        "MLflow run %s, model %s v%s (%s); champion bundle in %s; `make mlflow-ui` to browse",
        result.run_id,
        cfg.train.model_name,
        result.version,
        "champion" if result.promoted else result.decision,
        result.bundle_dir,
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
        typer.Option(help="Scores file (.parquet); default: <output_dir>/scores/scores.parquet."),
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
        typer.Option(help="Scores file; default: <output_dir>/scores/scores.parquet."),
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
    with _errors(scoring=True), step("exporting"):
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
