"""Where the event store lives: a local folder, or a URL on any fsspec filesystem.

A local folder is a plain ``pathlib.Path``, read and written exactly as before (no fsspec
layer). A URL (``memory://churn``, ``s3://bucket/prefix`` with s3fs installed) is a
``RemotePath``: the few ``Path`` methods the store uses, on the URL's fsspec filesystem; DuckDB
reads and writes it through the same filesystem registered on its connection
(``register_filesystems``). ``file://`` URLs are local folders.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract import cap

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
"""A URL's protocol prefix (``s3://``); a local path has none."""
LOCAL_PROTOCOLS = frozenset({"file", "local"})


def protocol_of(name: str | Path) -> str | None:
    """The protocol of a URL (``s3``), None for a local path."""
    found = URL.match(str(name)) if isinstance(name, str) else None
    return found.group(1).lower() if found else None


def check_protocol(url: str) -> str:
    """The URL's protocol when fsspec has a filesystem for it; else a ValueError naming the
    value and the fix (an unknown protocol, or one whose package is not installed)."""
    import fsspec

    protocol = protocol_of(url)
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise ValueError(
            f"'{cap(url)}': fsspec knows no filesystem '{protocol}'; use a local folder or a"
            " URL such as file:///data/churn, memory://churn or s3://bucket/prefix"
            " (s3fs, gcsfs, adlfs installed)"
        ) from None
    except ImportError as error:
        raise ValueError(
            f"'{cap(url)}': fsspec needs a package for '{protocol}' ({error}); install it"
            " where the pipeline and its workers run, or use a local folder"
        ) from None
    return protocol


@dataclass(frozen=True, order=True)
class RemotePath:
    """A file or folder on an fsspec filesystem, named by its URL, with the ``pathlib.Path``
    methods the event store uses."""

    url: str

    def __post_init__(self) -> None:
        protocol, rest = check_protocol(self.url), self.url.split("://", 1)[1]
        object.__setattr__(self, "url", f"{protocol}://{rest.rstrip('/')}")

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{str(name).strip('/')}")

    @property
    def protocol(self) -> str:
        return str(protocol_of(self.url))

    @property
    def fs(self) -> AbstractFileSystem:
        """The filesystem (fsspec caches one instance per protocol and options)."""
        import fsspec

        return fsspec.filesystem(self.protocol)

    @property
    def path(self) -> str:
        """The path on ``fs`` (the URL without its protocol, as fsspec writes it)."""
        return self.fs._strip_protocol(self.url)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.url.rsplit("/", 1)[0])

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.fs.makedirs(self.path, exist_ok=True)

    def glob(self, pattern: str) -> list[RemotePath]:
        base = self.path.rstrip("/")
        found = self.fs.glob(f"{base}/{pattern}")
        return [self / p[len(base) + 1 :] for p in found]

    def relative_to(self, other: RemotePath) -> str:
        if not self.url.startswith(other.url + "/"):
            raise ValueError(f"'{self.url}' is not under '{other.url}'")
        return self.url[len(other.url) + 1 :]

    def read_text(self, encoding: str = "utf-8") -> str:
        with self.fs.open(self.path, "r", encoding=encoding) as file:
            return file.read()

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        with self.fs.open(self.path, "w", encoding=encoding) as file:
            file.write(text)


Location = Path | RemotePath
"""A folder or file of the event store: local, or on an fsspec filesystem."""


def location(value: str | Path | RemotePath) -> Location:
    """A store location from a config value: a URL on a filesystem fsspec knows, a
    ``file://`` URL (a local folder) or a local path."""
    if isinstance(value, Path | RemotePath):
        return value
    protocol = protocol_of(value)
    if protocol is None:
        return Path(value)
    if protocol in LOCAL_PROTOCOLS:
        return Path(URL.sub("", value, count=1) or "/")
    return RemotePath(value)


def remove_tree(where: Location) -> None:
    """Remove a folder and everything under it; nothing when it is not there."""
    if isinstance(where, Path):
        shutil.rmtree(where, ignore_errors=True)
    elif where.exists():
        where.fs.rm(where.path, recursive=True)


def read_table(where: Location, columns: list[str]) -> pa.Table:
    """``columns`` of one Parquet file."""
    if isinstance(where, Path):
        return pq.read_table(where, columns=columns)
    return pq.read_table(where.path, columns=columns, filesystem=where.fs)


def register_filesystems(con: duckdb.DuckDBPyConnection, names: Iterable[str | Location]) -> None:
    """Register on ``con`` the fsspec filesystem of every URL among ``names`` (once per
    protocol), so that DuckDB reads and writes them; local paths need none."""
    protocols = {protocol_of(str(n)) for n in names if isinstance(n, str | RemotePath)}
    for protocol in sorted(protocols - {None} - LOCAL_PROTOCOLS):
        import fsspec

        fs = fsspec.filesystem(check_protocol(f"{protocol}://"))
        name = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if not con.filesystem_is_registered(name):
            con.register_filesystem(fs)


class TemporaryRemote:
    """``tempfile.TemporaryDirectory`` on an fsspec filesystem: a new folder under ``parent``,
    removed by ``cleanup()`` or when this object is collected."""

    def __init__(self, parent: RemotePath, prefix: str) -> None:
        self.location = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
        self.name = str(self.location)
        self.location.mkdir(parents=True)
        self._finalizer = weakref.finalize(self, _remove_quietly, self.location)

    def cleanup(self) -> None:
        self._finalizer()


def _remove_quietly(where: RemotePath) -> None:
    try:
        remove_tree(where)
    except Exception as error:  # cleanup must not fail the run
        log.warning("could not remove the temporary event store %s: %s", where, error)


def temporary_folder(
    parent: Path | str | None, prefix: str
) -> tuple[Location, tempfile.TemporaryDirectory | TemporaryRemote]:
    """A new folder under ``parent`` (default: the system's temporary folder) and the object
    whose collection removes it."""
    where = None if parent is None else location(parent)
    if isinstance(where, RemotePath):
        keep = TemporaryRemote(where, prefix)
        return keep.location, keep
    if where is not None:
        where.mkdir(parents=True, exist_ok=True)
    folder = tempfile.TemporaryDirectory(prefix=prefix, dir=where)
    return Path(folder.name), folder


__all__ = ["Location", "RemotePath", "location", "register_filesystems", "temporary_folder"]
