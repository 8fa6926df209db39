"""Where every artefact lives: the one module that knows the layout (see DESIGN §1).

Everything that persists is namespaced by the config's ``project``:

```
models/<project>/champion/            exported champion bundle (model.txt, calibrator.json,
                                      card.json, registration.json, manifest.json)
<output_dir>/                         default outputs/<project>/ (config ``data.output_dir``)
    scores/<as_of>/                   one scoring run, published as a set:
        scores.parquet                  scores_rejects.csv  scores_summary.json
    scores/LATEST                     pointer: the newest as_of published
    scores/history/scores_<as_of>.parquet   the copy the export compares against
    runs/<as_of>/                     one daily `churn run` (scores, export, monitor, report)
    export/  train/  rejects/  report.html
MLflow                                experiment ``train.experiment``, registered model
                                      ``train.model_name`` (both default: the project)
```
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pipeline.config import Config

MODELS_ROOT = Path("models")
CHAMPION = "champion"
SCORES = "scores"
LATEST = "LATEST"
SCORES_FILE = "scores.parquet"


def models_dir(config: Config) -> Path:
    """``models/<project>/``: every model file of this project, and nothing of another's."""
    return MODELS_ROOT / config.project


def champion_dir(config: Config) -> Path:
    """``models/<project>/champion/``: the exported champion bundle scoring falls back to."""
    return models_dir(config) / CHAMPION


def output_dir(config: Config) -> Path:
    """The project's output folder (``data.output_dir``, default ``outputs/<project>``)."""
    return Path(config.data.output_dir)


def experiment_name(config: Config) -> str:
    """The MLflow experiment of this project (``train.experiment``, default the project)."""
    return config.train.experiment


def model_name(config: Config) -> str:
    """The MLflow registered model of this project (``train.model_name``, default the project)."""
    return config.train.model_name


def scores_root(out: Path) -> Path:
    return Path(out) / SCORES


def run_dir(out: Path, as_of: pd.Timestamp | str) -> Path:
    """``<output_dir>/scores/<as_of>/``: the published files of one scoring run."""
    return scores_root(out) / str(pd.Timestamp(as_of).date())


def runs_dir(out: Path) -> Path:
    """``<output_dir>/runs/``: one folder per as_of written by the daily ``churn run``."""
    return Path(out) / "runs"


def latest_pointer(out: Path) -> Path:
    """The file naming the newest published scoring run (its as_of, one line)."""
    return scores_root(out) / LATEST


def latest_run_dir(out: Path) -> Path | None:
    """The latest published run folder, or None when nothing was published yet."""
    pointer = latest_pointer(out)
    if not pointer.is_file():
        return None
    return run_dir(out, pointer.read_text().strip())


def latest_scores(out: Path) -> Path:
    """The latest published scores file (a path under ``scores/LATEST``'s run; when nothing
    was published yet, a path that does not exist, so readers say 'run churn score first')."""
    folder = latest_run_dir(out)
    return (folder or scores_root(out) / "none-published-yet") / SCORES_FILE


def history_dir(out: Path) -> Path:
    """Where each scoring run keeps a copy of its scores per as_of (the export reads these)."""
    return scores_root(out) / "history"


def history_path(out: Path, as_of: pd.Timestamp | str) -> Path:
    return history_dir(out) / f"scores_{pd.Timestamp(as_of).date()}.parquet"


def export_dir(out: Path) -> Path:
    return Path(out) / "export"


def train_dir(out: Path) -> Path:
    return Path(out) / "train"


def report_path(out: Path) -> Path:
    return Path(out) / "report.html"
