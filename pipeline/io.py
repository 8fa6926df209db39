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


def write_text(text: str, target: Path) -> Path:
    """Write a small text file (e.g. a pointer) atomically."""
    return write_atomic(target, lambda tmp: Path(tmp).write_text(text))


def staging_dir(target: Path) -> Path:
    """A fresh empty folder beside ``target`` (same file system, so ``publish_dir`` can rename
    it onto ``target``); hidden by its ``.tmp-`` prefix until published."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}.", dir=target.parent))


def _aside(target: Path) -> Path:
    return target.with_name(f".old-{target.name}")


def recover_dir(target: Path) -> Path:
    """Finish a swap that a kill interrupted: when ``target`` is missing but its previous
    version was set aside by ``publish_dir``, put that back. Returns ``target``."""
    target, old = Path(target), _aside(Path(target))
    if not target.exists() and old.is_dir():
        os.replace(old, target)
    return target


def publish_dir(staging: Path, target: Path) -> Path:
    """Replace the folder ``target`` by the complete folder ``staging`` as one set.

    The previous ``target`` stays whole until the new one is complete: it is renamed aside
    (``.old-<name>``), ``staging`` renamed onto ``target``, and only then the old one deleted.
    Each rename is atomic; a kill between the two leaves the old folder aside, which
    ``recover_dir`` (called here and by readers) puts back. Readers never see a mix of files.
    """
    import shutil

    staging, target = Path(staging), recover_dir(target)
    old = _aside(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        recover_dir(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; publish it onto ``target`` (``publish_dir``) when the
    block succeeds, delete it when the block fails (``target`` then stays as it was)."""
    import shutil

    staging = staging_dir(target)
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        publish_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
