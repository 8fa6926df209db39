"""The event store: the one seam between validation and everything downstream.

Validation (``pipeline.events``) writes the valid events once, compact and partitioned by
customer, as Parquet under one folder, with a small JSON manifest (``manifest.json``): the
partitions with their customer code ranges, files and row counts, the dictionaries of event
types, families and product features, the ``kind`` bit layout, observed_until and the inputs'
fingerprints. ``EventStore`` is what downstream code receives; it answers the queries the
pipeline needs (``partitions``, ``product_features``, ``events_frame``, ``event_range``, ...),
and ``open_partition`` reads one partition on a short-lived connection of its own, so that
the per-partition work runs the same in this process, a joblib worker or a Dask task.

Only this module names the DuckDB relations over the store: ``events_compact``,
``events_stored``, ``events`` (views), ``customer_codes``, ``_event_types``, ``_features``,
``_partitions`` (tables). ``EventStore.con`` (the validation connection holding them) stays for
callers not yet moved to the store's methods.

The folder is local or on any fsspec filesystem (``compute.store_dir`` a URL such as
``s3://bucket/prefix``; see ``pipeline.storepath``): every read and write here goes through a
``Location``, and each DuckDB connection over the store registers the URL's filesystem.

Layout of a store folder::

    manifest.json
    customers.parquet             customer_id, code (position in id order)
    compact/part=N/*.parquet      code, ts (epoch µs), kind, amount, _row
    duplicates/part=N/*.parquet   _row of the exact duplicates set aside (when any)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipeline.config import FAMILY_CODES, ComputeConfig
from pipeline.contract import sql_literal
from pipeline.storepath import (
    Location,
    TemporaryRemote,
    location,
    read_table,
    register_filesystems,
    remove_tree,
    temporary_folder,
)

MANIFEST = "manifest.json"
STORE_FORMAT = "churn-event-store/1"
US_PER_DAY = 86_400_000_000

COMPACT_COLUMNS = (
    "code INTEGER, ts BIGINT, etc INTEGER, fc TINYINT, ftc INTEGER,"
    " amount DOUBLE, severity TINYINT, _row BIGINT, part INTEGER, kind BIGINT"
)


@dataclass(frozen=True)
class KindLayout:
    """How the event type, family, feature and severity codes share the store's one integer
    column ``kind``: from the low bits, severity (0 = none), family code, feature code + 1
    (0 = none), event type code. Four small columns cost 0.6–0.85 s more to write than one at
    40M rows (the Parquet writer's per-column work); readers unpack them with shifts."""

    ftc_bits: int
    etc_bits: int

    SEVERITY_BITS = 3
    FAMILY_BITS = max(FAMILY_CODES.values()).bit_length()

    @classmethod
    def for_dictionaries(cls, con: duckdb.DuckDBPyConnection) -> KindLayout:
        (n_types,) = con.execute("SELECT count(*) FROM _event_types").fetchall()[0]
        (n_features,) = con.execute("SELECT count(*) FROM _features").fetchall()[0]
        return cls(
            ftc_bits=int(n_features).bit_length(),
            etc_bits=max(int(n_types) - 1, 0).bit_length(),
        )

    @property
    def ftc_shift(self) -> int:
        return self.SEVERITY_BITS + self.FAMILY_BITS

    @property
    def etc_shift(self) -> int:
        return self.ftc_shift + self.ftc_bits

    @property
    def sql_type(self) -> str:
        return "INTEGER" if self.etc_shift + self.etc_bits <= 31 else "BIGINT"

    def pack_sql(self) -> str:
        """``kind`` from the columns ``etc``, ``fc``, ``ftc`` and ``severity``."""
        return (
            f"CAST((CAST(etc AS BIGINT) << {self.etc_shift})"
            f" | (CAST(coalesce(ftc + 1, 0) AS BIGINT) << {self.ftc_shift})"
            f" | (CAST(fc AS BIGINT) << {self.SEVERITY_BITS})"
            f" | coalesce(severity, 0) AS {self.sql_type})"
        )

    def unpack(self, kind: np.ndarray) -> dict[str, np.ndarray]:
        """``unpack_sql`` in numpy: ``etc``, ``fc``, ``ftc`` (−1 where none), ``severity``
        (0 where none); for a reader that fetches ``kind`` itself (a third faster than
        unpacking in the query)."""
        kind = np.asarray(kind, dtype=np.int64)
        return {
            "etc": (kind >> self.etc_shift).astype(np.int32),
            "fc": ((kind >> self.SEVERITY_BITS) & ((1 << self.FAMILY_BITS) - 1)).astype(np.int8),
            "ftc": ((kind >> self.ftc_shift) & ((1 << self.ftc_bits) - 1)) - 1,
            "severity": (kind & ((1 << self.SEVERITY_BITS) - 1)).astype(np.int8),
        }

    def unpack_sql(self) -> dict[str, str]:
        """SQL for ``etc``, ``fc``, ``ftc`` and ``severity`` (NULL where none) from ``kind``."""
        family_mask, feature_mask = (1 << self.FAMILY_BITS) - 1, (1 << self.ftc_bits) - 1
        return {
            "etc": f"CAST(kind >> {self.etc_shift} AS INTEGER)",
            "fc": f"CAST((kind >> {self.SEVERITY_BITS}) & {family_mask} AS TINYINT)",
            "ftc": f"CAST(NULLIF((kind >> {self.ftc_shift}) & {feature_mask}, 0) - 1 AS INTEGER)",
            "severity": f"CAST(NULLIF(kind & {(1 << self.SEVERITY_BITS) - 1}, 0) AS TINYINT)",
        }


CLEAN_SQL = "NULLIF(trim(CAST(raw AS VARCHAR)), '')"
"""A raw id, type or feature value as the pipeline reads it: trimmed, blank as missing."""


def encode_values(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Number the log's distinct cleaned values and map every raw value to its code.

    Creates the dictionaries ``_event_types`` (``etc``, name, family, family code ``fc``: 0 when
    unmapped) and ``_features`` (``ftc``, name), so that the event store holds small integers
    instead of strings (a third of its write time), and the per-row code tables
    ``_customer_value_codes`` (``raw``, ``code``: NULL when not in ``customer_codes``,
    ``missing``), ``_type_value_codes`` (``raw``, ``etc``, ``fc``) and ``_feature_value_codes``
    (``raw``, ``ftc``). A raw value that is NULL matches no row of its table.
    ``relation`` has the columns ``customer_raw``, ``type_raw`` and ``feature_raw``.
    """
    for name, column in (
        ("customer", "customer_raw"),
        ("type", "type_raw"),
        ("feature", "feature_raw"),
    ):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _{name}_values AS SELECT raw, {CLEAN_SQL} AS clean"
            f" FROM (SELECT DISTINCT {column} AS raw FROM {relation})"
        )
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _event_types AS
        SELECT (row_number() OVER (ORDER BY t.event_type) - 1)::INTEGER AS etc, t.event_type,
               f.family, coalesce(f.fc, 0)::TINYINT AS fc
        FROM (SELECT DISTINCT clean AS event_type FROM _type_values WHERE clean IS NOT NULL) t
        LEFT JOIN _event_families f USING (event_type)
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _features AS
        SELECT (row_number() OVER (ORDER BY feature) - 1)::INTEGER AS ftc, feature
        FROM (SELECT DISTINCT clean AS feature FROM _feature_values WHERE clean IS NOT NULL)
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _customer_value_codes AS
        SELECT v.raw, k.code, v.clean IS NULL AS missing
        FROM _customer_values v LEFT JOIN customer_codes k ON k.customer_id = v.clean
        WHERE v.raw IS NOT NULL
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _type_value_codes AS
        SELECT v.raw, t.etc, t.fc
        FROM _type_values v JOIN _event_types t ON t.event_type = v.clean
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _feature_value_codes AS
        SELECT v.raw, f.ftc FROM _feature_values v JOIN _features f ON f.feature = v.clean
    """)
    con.execute("DROP TABLE _customer_values; DROP TABLE _type_values; DROP TABLE _feature_values")


def number_customers(con: duckdb.DuckDBPyConnection, src: str, check_customers: bool) -> None:
    """``customer_codes``: each valid customer's position in id order (the store's ``code``)."""
    base = (
        "customers"
        if check_customers
        else f"(SELECT DISTINCT NULLIF(trim(CAST(customer_id AS VARCHAR)), '') AS customer_id"
        f" FROM {src})"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE customer_codes AS
        SELECT customer_id, (row_number() OVER (ORDER BY customer_id) - 1)::INTEGER AS code
        FROM {base} WHERE customer_id IS NOT NULL
    """)


FLUSH_ROWS = 131_072
"""Rows a writer thread buffers across partitions before flushing them to the event store."""


def write_partitions(
    con: duckdb.DuckDBPyConnection, store_dir: Location, size: int, layout: KindLayout
) -> list[int]:
    """Write the valid events, compact and partitioned by customer code, to ``store_dir``.

    One streaming pass: ``code`` is the customer's position in the sorted customers table,
    ``ts`` epoch microseconds (UTC), ``kind`` the type, family, feature and severity codes
    (``KindLayout``); partition ``part`` holds the customers with ``code // size == part``.
    Returns the partition numbers written.
    Parquet V2 (delta encodings), without a compression codec or dictionary pages: the store is
    temporary and read back several times, so write and read speed count, not size. Measured
    at 40M rows: V2 wrote 0.4 s faster than V1 and read back twice as fast; leaving out the
    codec and dictionary pages saved ~0.35 s more (317 MB instead of 250 MB on disk).
    """
    remove_tree(store_dir)
    store_dir.mkdir(parents=True)
    register_filesystems(con, [store_dir])
    # Each writer thread flushes its partition buffers every 131,072 rows instead of 524,288:
    # peak memory of the write 0.95 -> 0.6 GB (1.65 -> 0.75 GB for a log in time order, whose
    # rows touch every partition at once), same speed.
    con.execute(f"SET partitioned_write_flush_threshold = {FLUSH_ROWS}")
    con.execute(
        f"""
        COPY (
            SELECT code, epoch_us(occurred_at) AS ts, {layout.pack_sql()} AS kind, amount,
                   _row::BIGINT AS _row, (code // {int(size)})::INTEGER AS part
            FROM events_parsed WHERE reason IS NULL
        ) TO {sql_literal(store_dir)}
        (FORMAT parquet, PARQUET_VERSION V2, COMPRESSION uncompressed, DICTIONARY_SIZE_LIMIT 1,
         PARTITION_BY (part), OVERWRITE_OR_IGNORE)
        """
    )
    return sorted(int(p.name.split("=", 1)[1]) for p in store_dir.glob("part=*"))


def part_glob(store_dir: Location, part: int | None = None) -> str:
    folder = "part=*" if part is None else f"part={int(part)}"
    return sql_literal(store_dir / folder / "*.parquet")


def create_views(
    con: duckdb.DuckDBPyConnection,
    store_dir: Location,
    parts: list[int],
    duplicates: int,
    size: int,
    layout: KindLayout,
) -> None:
    """``events_compact`` (codes, for the feature pass) and ``events`` (names, for everyone)."""
    if parts:
        codes = layout.unpack_sql()
        source = (
            f"(SELECT code, ts, {codes['etc']} AS etc, {codes['fc']} AS fc,"
            f" {codes['ftc']} AS ftc, amount, {codes['severity']} AS severity, _row, part, kind"
            f" FROM read_parquet({part_glob(store_dir)}, hive_partitioning = true))"
        )
    else:
        columns = ", ".join(
            f"CAST(NULL AS {c.split()[1]}) AS {c.split()[0]}" for c in COMPACT_COLUMNS.split(",")
        )
        source = f"(SELECT {columns} LIMIT 0)"
    keep = "WHERE _row NOT IN (SELECT _row FROM _duplicate_rows)" if duplicates else ""
    n_codes = con.execute("SELECT count(*) FROM customer_codes").fetchall()[0][0]
    bounds = pd.DataFrame({"part": np.arange(max(1, -(-n_codes // size)), dtype=np.int32)})
    bounds["lo"] = bounds["part"] * size
    bounds["hi"] = np.minimum(bounds["lo"] + size, n_codes).astype(np.int32)
    con.register("_partition_frame", bounds)
    con.execute("CREATE OR REPLACE TEMP TABLE _partitions AS SELECT * FROM _partition_frame")
    con.unregister("_partition_frame")
    con.execute(
        "DROP VIEW IF EXISTS events_compact; DROP VIEW IF EXISTS events;"
        " DROP VIEW IF EXISTS events_stored"
    )
    con.execute(f"CREATE TEMP VIEW events_stored AS SELECT * FROM {source}")
    con.execute(f"CREATE TEMP VIEW events_compact AS SELECT * FROM events_stored {keep}")
    families = pd.DataFrame({"fc": list(FAMILY_CODES.values()), "family": list(FAMILY_CODES)})
    con.register("_family_code_frame", families.astype({"fc": "int8", "family": "str"}))
    con.execute("CREATE OR REPLACE TEMP TABLE _family_codes AS SELECT * FROM _family_code_frame")
    con.unregister("_family_code_frame")
    con.execute("""
        CREATE TEMP VIEW events AS
        SELECT c.customer_id, make_timestamp(e.ts) AS occurred_at, t.event_type, f.family,
               ft.feature, e.amount, e.severity
        FROM events_compact e JOIN customer_codes c USING (code)
        JOIN _event_types t USING (etc)
        LEFT JOIN _features ft USING (ftc)
        LEFT JOIN _family_codes f ON f.fc = e.fc
    """)


def signups_after_first_event(
    con: duckdb.DuckDBPyConnection, first_events: pd.DataFrame | None
) -> list[str]:
    """Ids of customers whose signup_at comes after their own first valid event.

    Such a customer (a re-signup, a migrated account, a typo) is outside the base for every
    as_of before signup_at although the log shows activity then: counted and named in the log
    (flagged, not changed) so that the user can check signup_at."""
    if first_events is None or first_events.empty:
        return []
    con.register("_first_event_frame", first_events)
    rows = con.execute("""
        SELECT k.customer_id FROM _first_event_frame f JOIN customer_codes k USING (code)
        JOIN customers c USING (customer_id) WHERE c.signup_at > make_timestamp(f.ts)
        ORDER BY 1
    """).fetchall()
    con.unregister("_first_event_frame")
    return [r[0] for r in rows]


@dataclass(frozen=True)
class Partition:
    """One customer partition: customer codes [lo, hi), its Parquet files and the files listing
    the source rows set aside as exact duplicates (read with an anti-join)."""

    part: int
    lo: int
    hi: int
    files: tuple[str, ...]
    duplicates: tuple[str, ...] = ()


PARTITION_VIEW = "partition_events"
"""The relation ``open_partition`` defines: ``code`` (relative to the partition's first code),
``ts`` (epoch µs), ``kind``, ``amount``, ``fc``, ``severity``."""
EMPTY_ROWS = (
    "(SELECT 0 AS code, 0::BIGINT AS ts, 0::BIGINT AS kind, 0.0 AS amount, 0::BIGINT AS _row"
    " LIMIT 0)"
)
"""A relation with the stored columns and no row (a partition without files or duplicates)."""
RAW_VIEW = "partition_rows"
"""``open_partition``'s relation over every stored row of the partition, exact duplicates
included, with ``_row``: cheaper to scan than ``partition_events`` (no anti-join, which made
each scan about three times slower). A reader of it drops the rows whose ``_row`` is in
``DUPLICATES_VIEW`` itself."""
DUPLICATES_VIEW = "partition_duplicates"
"""``open_partition``'s relation of the source row numbers (``_row``) of the partition's exact
duplicates (the rows set aside); empty when there are none."""


@contextmanager
def open_partition(
    partition: Partition, layout: KindLayout, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived in-memory DuckDB connection with the view ``partition_events`` over one
    partition's files (duplicates removed); closed on exit. No shared state: safe in a worker
    process, a Dask task or a thread."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        register_filesystems(con, partition.files + partition.duplicates)
        codes = layout.unpack_sql()
        columns = f"code - {int(partition.lo)} AS code, ts, kind, amount"
        columns += f", {codes['fc']} AS fc, {codes['severity']} AS severity"
        if partition.files:
            files = ", ".join(sql_literal(f) for f in partition.files)
            source = f"read_parquet([{files}])"
        else:
            source = EMPTY_ROWS
        dup_source = EMPTY_ROWS
        keep = ""
        if partition.duplicates:
            dups = ", ".join(sql_literal(f) for f in partition.duplicates)
            dup_source = f"read_parquet([{dups}])"
            keep = f" WHERE _row NOT IN (SELECT _row FROM {dup_source})"
        con.execute(f"CREATE TEMP VIEW {PARTITION_VIEW} AS SELECT {columns} FROM {source}{keep}")
        con.execute(f"CREATE TEMP VIEW {RAW_VIEW} AS SELECT {columns}, _row FROM {source}")
        con.execute(f"CREATE TEMP VIEW {DUPLICATES_VIEW} AS SELECT _row FROM {dup_source}")
        yield con
    finally:
        con.close()


@dataclass
class EventStore:
    """The validated events (see the module docstring): a folder with a manifest, local or
    on an fsspec filesystem.

    ``con`` is the validation connection that holds the store's views (None for a store opened
    from its folder alone, e.g. on a worker); ``compute`` the runner settings that partition
    maps use by default. The temporary folder (``keep``) lives as long as this object."""

    directory: Location
    manifest: dict
    con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    keep: tempfile.TemporaryDirectory | TemporaryRemote | None = field(default=None, repr=False)
    _ids: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, source: EventStore | duckdb.DuckDBPyConnection) -> EventStore:
        """The store itself, or the store whose views a validation connection holds."""
        if isinstance(source, EventStore):
            return source
        rows = source.execute("SELECT directory, compute FROM _event_store").fetchall()
        directory, compute = rows[0]
        store = cls.open(location(directory), con=source)
        store.compute = ComputeConfig.model_validate_json(compute)
        return store

    @classmethod
    def open(
        cls, directory: Location | str, con: duckdb.DuckDBPyConnection | None = None
    ) -> EventStore:
        """The store in ``directory`` (a local folder or an fsspec URL; its manifest read)."""
        directory = location(directory)
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != STORE_FORMAT:
            raise ValueError(f"{directory}: not an event store of format {STORE_FORMAT}")
        return cls(directory, manifest, con)

    # --- the manifest ---------------------------------------------------------------------
    @property
    def layout(self) -> KindLayout:
        return KindLayout(**self.manifest["layout"])

    def partitions(self) -> list[tuple[int, int, int]]:
        """(partition, first code, end code) of every customer partition."""
        return [(p["part"], p["lo"], p["hi"]) for p in self.manifest["partitions"]]

    def partition(self, part: int) -> Partition:
        (entry,) = [p for p in self.manifest["partitions"] if p["part"] == int(part)]
        return Partition(
            entry["part"],
            entry["lo"],
            entry["hi"],
            tuple(str(self.directory / f) for f in entry["files"]),
            tuple(str(self.directory / f) for f in entry["duplicates"]),
        )

    def whole(self) -> Partition:
        """Every partition at once (customer codes [0, customers))."""
        entries = self.manifest["partitions"]
        files = [str(self.directory / f) for p in entries for f in p["files"]]
        dups = [str(self.directory / f) for p in entries for f in p["duplicates"]]
        return Partition(-1, 0, self.manifest["customers"], tuple(files), tuple(dups))

    def product_features(self) -> dict[str, int]:
        """Product features used (feature-use events), sorted by name, with the UTC day (days
        since 1970) anyone first used each."""
        return {f["feature"]: f["first_day"] for f in self.manifest["product_features"]}

    def feature_codes(self) -> dict[str, int]:
        """Every feature name in the log and its code in the store."""
        return {f["feature"]: f["ftc"] for f in self.manifest["features"]}

    def customer_ids(self) -> np.ndarray:
        """The customer ids in code order (position = the store's ``code``)."""
        if self._ids is None:
            table = read_table(self.directory / "customers.parquet", ["customer_id"])
            self._ids = np.asarray(table.column("customer_id").to_pylist(), dtype=object)
        return self._ids

    # --- queries over the validation connection's views -----------------------------------
    def _con(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            raise ValueError("this event store was opened without its validation connection")
        return self.con

    def events_frame(self) -> pd.DataFrame:
        """Every valid event by name: customer_id, occurred_at (naive UTC), event_type, family,
        feature, amount, severity."""
        return self._con().execute("SELECT * FROM events").df()

    def event_range(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """(first, last) occurred_at of the valid log; (None, None) when empty."""
        first, last = (
            self._con()
            .execute("SELECT min(occurred_at), max(occurred_at) FROM events")
            .fetchall()[0]
        )
        return (
            None if first is None else pd.Timestamp(first),
            None if last is None else pd.Timestamp(last),
        )

    def mapped_counts(self, qualifying: list[str]) -> tuple[int, int]:
        """(valid events whose type maps to a signal family, those of them in ``qualifying``)."""
        mapped, wanted = (
            self._con()
            .execute(
                "SELECT count(family), count(*) FILTER (WHERE list_contains(?, family))"
                " FROM events",
                [list(qualifying)],
            )
            .fetchall()[0]
        )
        return int(mapped), int(wanted)

    def first_event(self) -> pd.Timestamp | None:
        """The earliest valid event's occurred_at (None when the log is empty)."""
        return self.event_range()[0]

    def unknown_event_types(self) -> dict[str, int]:
        """Counts of valid events whose type the config maps to no family, most first."""
        return {t["event_type"]: t["rows"] for t in self.manifest["unknown_event_types"]}

    def active_customers_at(
        self, instants: list[pd.Timestamp], families: list[str], active_days: int
    ) -> pd.DataFrame:
        """(at, customer_id) for each instant and customer with an event of ``families`` in
        the ``active_days`` before it (month grain: a month's last event counts), sorted."""
        return (
            self._con()
            .execute(
                """
            WITH bounds AS (SELECT unnest(CAST(? AS TIMESTAMP[])) AS instant),
            months AS (
                SELECT customer_id, date_trunc('month', occurred_at) AS month,
                       max(occurred_at) AS last_at
                FROM events WHERE list_contains(CAST(? AS VARCHAR[]), family)
                GROUP BY ALL
            )
            SELECT DISTINCT bounds.instant AS "at", months.customer_id
            FROM months JOIN bounds
              ON months.month < bounds.instant
             AND months.last_at >= bounds.instant - to_days(CAST(? AS INTEGER))
            ORDER BY 1, 2
            """,
                [[t.to_pydatetime() for t in instants], list(families), int(active_days)],
            )
            .df()
        )

    def payments(self) -> pd.DataFrame:
        """(customer_id, occurred_at, amount) of payment events with an amount, by time."""
        return (
            self._con()
            .execute(
                "SELECT customer_id, occurred_at, amount FROM events"
                " WHERE family = 'payment' AND amount IS NOT NULL"
                " ORDER BY occurred_at, customer_id"
            )
            .df()
        )

    def signups_after_first_event(self, first_events: pd.DataFrame | None) -> list[str]:
        return signups_after_first_event(self._con(), first_events)

    def finish(
        self, observed_until: pd.Timestamp | None, inputs: dict, compute: ComputeConfig
    ) -> None:
        """Record observed_until, the inputs' fingerprints and the runner settings."""
        self.manifest["observed_until"] = None if observed_until is None else str(observed_until)
        self.manifest["inputs"] = inputs
        self.compute = compute
        self._write_manifest()
        self._register()

    def _register(self) -> None:
        """Leave the folder and runner settings in the validation connection, so that
        ``EventStore.of(con)`` finds this store again."""
        if self.con is not None:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE _event_store AS SELECT ? AS directory, ? AS compute",
                [str(self.directory), self.compute.model_dump_json()],
            )

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=True, ensure_ascii=False)
        (self.directory / MANIFEST).write_text(text + "\n", encoding="utf-8")


def create_store(
    con: duckdb.DuckDBPyConnection,
    directory: Location,
    parts: list[int],
    duplicates: int,
    size: int,
    layout: KindLayout,
) -> EventStore:
    """Finish the store validation wrote under ``directory/compact``: the views, the duplicate
    lists per partition, the customer ids, the dictionaries and the manifest."""
    compact = directory / "compact"
    register_filesystems(con, [directory])
    create_views(con, compact, parts, duplicates, size, layout)
    if duplicates:
        remove_tree(directory / "duplicates")
        con.execute(
            "COPY (SELECT _row, part FROM _duplicate_rows ORDER BY _row)"
            f" TO {sql_literal(directory / 'duplicates')} (FORMAT parquet, PARTITION_BY (part))"
        )
    con.execute(
        "COPY (SELECT customer_id, code FROM customer_codes ORDER BY code)"
        f" TO {sql_literal(directory / 'customers.parquet')} (FORMAT parquet)"
    )
    store = EventStore(directory, _manifest(con, directory, size, layout), con)
    store._write_manifest()
    store._register()
    return store


def _relative(directory: Location, folder: str, part: int) -> list[str]:
    found = sorted((directory / folder / f"part={part}").glob("*.parquet"))
    return [str(p.relative_to(directory)) for p in found]


def _most(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _kind_counts(con: duckdb.DuckDBPyConnection, layout: KindLayout, parts: bool) -> pd.DataFrame:
    """Per stored ``kind`` (type, family, feature, severity): its valid rows (duplicates set
    aside) and first time, unpacked (``etc``, ``fc``, ``ftc``). One narrow scan of the store
    answers both the product features' first use and the unmapped types' counts."""
    columns = {"kind": [], "n": [], "first_us": []}
    if parts:
        stored = con.execute(
            "SELECT kind, count(*) AS n, min(ts) AS first_us FROM events_stored GROUP BY 1"
        ).df()
        repeated = con.execute("SELECT kind, count(*) AS d FROM _duplicate_rows GROUP BY 1").df()
        stored = stored.merge(repeated, on="kind", how="left")
        stored["n"] = stored["n"] - stored["d"].fillna(0).astype("int64")
        columns = stored[["kind", "n", "first_us"]].to_dict("list")
    frame = pd.DataFrame(columns)
    unpacked = layout.unpack(frame["kind"].to_numpy(np.int64))
    return frame.assign(etc=unpacked["etc"], fc=unpacked["fc"], ftc=unpacked["ftc"])


def _manifest(
    con: duckdb.DuckDBPyConnection, directory: Location, size: int, layout: KindLayout
) -> dict:
    rows: dict[int, int] = {}
    if any((directory / "compact").glob("part=*")):
        # Row counts from the Parquet footers, less the duplicates set aside: no scan.
        stored = con.execute(
            "SELECT file_name, num_rows FROM parquet_file_metadata("
            f"{part_glob(directory / 'compact')})"
        ).fetchall()
        for name, n in stored:
            part = int(Path(name).parent.name.split("=", 1)[1])
            rows[part] = rows.get(part, 0) + int(n)
        dups = con.execute("SELECT part, count(*) FROM _duplicate_rows GROUP BY 1").fetchall()
        for part, n in dups:
            rows[int(part)] -= int(n)
    partitions = [
        {
            "part": int(p),
            "lo": int(lo),
            "hi": int(hi),
            "rows": int(rows.get(p, 0)),
            "files": _relative(directory, "compact", p),
            "duplicates": _relative(directory, "duplicates", p),
        }
        for p, lo, hi in con.execute("SELECT * FROM _partitions ORDER BY 1").fetchall()
    ]
    types = con.execute("SELECT etc, event_type, family, fc FROM _event_types ORDER BY 1").df()
    features = con.execute("SELECT ftc, feature FROM _features ORDER BY 1").fetchall()
    kinds = _kind_counts(con, layout, parts=any((directory / "compact").glob("part=*")))
    names = dict(features)
    use = kinds[(kinds["fc"] == FAMILY_CODES["feature_use"]) & (kinds["ftc"] >= 0)]
    first_use = use.groupby("ftc")["first_us"].min() // US_PER_DAY
    used = sorted((names[int(c)], int(d)) for c, d in first_use.items())
    unmapped = kinds[kinds["fc"] == 0].groupby("etc")["n"].sum()
    type_names = dict(zip(types["etc"], types["event_type"], strict=True))
    unknown = sorted(((type_names[int(c)], int(n)) for c, n in unmapped.items() if n), key=_most)
    (n_customers,) = con.execute("SELECT count(*) FROM customer_codes").fetchall()[0]
    return {
        "format": STORE_FORMAT,
        "partition_customers": int(size),
        "layout": {"ftc_bits": layout.ftc_bits, "etc_bits": layout.etc_bits},
        "customers": int(n_customers),
        "rows": int(sum(p["rows"] for p in partitions)),
        "partitions": partitions,
        "families": dict(FAMILY_CODES),
        "event_types": [
            {
                "etc": int(r.etc),
                "event_type": str(r.event_type),
                "fc": int(r.fc),
                "family": None if pd.isna(r.family) else str(r.family),
            }
            for r in types.itertuples()
        ],
        "features": [{"ftc": int(c), "feature": str(n)} for c, n in features],
        "product_features": [{"feature": str(n), "first_day": int(d)} for n, d in used],
        "unknown_event_types": [{"event_type": str(n), "rows": n_rows} for n, n_rows in unknown],
        "observed_until": None,
        "inputs": {},
    }


def fingerprint(source: Path | pd.DataFrame | str) -> dict:
    """What identifies an input cheaply: a file's path, size and modification time; a frame's
    shape and content hash."""
    if isinstance(source, pd.DataFrame):
        digest = int(pd.util.hash_pandas_object(source, index=False).sum()) & (2**64 - 1)
        return {"frame": list(source.shape), "hash": f"{digest:016x}"}
    stat = os.stat(source)
    return {"path": str(source), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def temporary_store(
    store_dir: Path | str | None,
) -> tuple[Location, tempfile.TemporaryDirectory | TemporaryRemote]:
    """A new folder for one run's event store under ``store_dir`` (``compute.store_dir``: a
    local folder, an fsspec URL, or None for the system's temporary folder), and the object
    to keep in ``EventStore.keep``: the folder is removed when it is collected."""
    return temporary_folder(store_dir, "churn-events-")


__all__ = ["EventStore", "KindLayout", "Partition", "open_partition", "temporary_store"]
