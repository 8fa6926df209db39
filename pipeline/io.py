"""File I/O at the pipeline's edges: reading inputs, atomic writes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A failure inside the block removes the temporary file, so readers never see a partial file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(target: Path, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_frame(frame: pd.DataFrame, target: Path) -> Path:
    """Write a frame as Parquet or CSV (by suffix), atomically."""
    target = Path(target)
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        return write_atomic(target, lambda tmp: frame.to_parquet(tmp, index=False))
    if suffix == ".csv":
        return write_atomic(target, lambda tmp: frame.to_csv(tmp, index=False))
    raise ValueError(f"cannot write '{target}': use a .parquet or .csv file name")


def write_json(payload: dict, target: Path) -> Path:
    """Write JSON (sorted keys, stable bytes) atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    return write_atomic(target, lambda tmp: Path(tmp).write_text(text))
