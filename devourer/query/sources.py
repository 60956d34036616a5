"""Where ``devourer query`` reads flows: the flow store (``--store``), JSON-lines files (``-r``) or BigQuery
(``--bigquery``). Each gives the compiled query's answer as plain rows.

The store and JSON lines are read by DuckDB in this process. From the store only the hour partitions
that overlap the window are read (the file list is made here: names that start with a dot, such as files
still being written, are not flow files, and nothing but regular files is read). JSON lines, plain or
gzip- or zstd-compressed (known by their bytes), are read with the record's own schema and presented as the
``flow_logs`` columns, exactly as ``outputs.bigquery.row_of`` maps a record. BigQuery runs the same
statement in its own dialect on the table ``-o bigquery`` fills, with the capture's connection flags.
"""

import datetime
import os
from typing import Protocol

from devourer.errors import SourceError, UsageError
from devourer.outputs.store_upkeep import flow_files, hour_folders
from devourer.query.spec import Query, Window
from devourer.query.sql import compile_query

HOUR = datetime.timedelta(hours=1)


class Source(Protocol):
    def answer(self, query: Query) -> list[tuple]:
        """The rows of ``sql.compile_query``'s statement for ``query``."""


def store_files(directory: str, window: Window) -> list[str]:
    """The Parquet files of the store's hour folders that overlap ``window``."""
    if not os.path.isdir(directory):
        raise UsageError(f"--store {directory}: no flow store there (not a folder; -o parquet --store DIR "
                         "makes one)")
    files = []
    for start, folder in hour_folders(directory):
        if start + HOUR <= window.first or start > window.last:
            continue
        try:
            files += [os.path.join(folder, n) for n in flow_files(folder)]
        except FileNotFoundError:
            pass  # removed by retention meanwhile
    return files


def store_span(directory: str) -> tuple[datetime.datetime, datetime.datetime] | None:
    """The start of the store's first hour folder and the end of its last, or None for an empty store."""
    hours = [start for start, _ in hour_folders(directory)]
    return (hours[0], hours[-1] + HOUR) if hours else None


def _duckdb():
    import duckdb

    from devourer.query.conditions import register

    connection = duckdb.connect(config={"preserve_insertion_order": False})
    register(connection)
    return connection


class StoreSource:
    def __init__(self, directory: str):
        self.directory = directory

    def answer(self, query: Query) -> list[tuple]:
        import duckdb

        for _ in range(3):
            files = store_files(self.directory, query.window)
            if not files:
                return []
            sql, params = compile_query(query, "read_parquet(?, union_by_name = true)", [files], "duckdb")
            try:
                return _duckdb().execute(sql, params).fetchall()
            except duckdb.IOException:  # a file compacted or expired between the listing and the read: again
                pass
        raise SourceError(f"--store {self.directory}: its files kept changing under the query")


_ENDPOINT = "STRUCT(addr VARCHAR, port INTEGER, hw_addr VARCHAR, names VARCHAR[])"
RECORD_COLUMNS = {  # docs/architecture.md §4
    "id": "VARCHAR", "community_id": "VARCHAR", "protocol": "VARCHAR", "src": _ENDPOINT, "dst": _ENDPOINT,
    "first_seen_at": "TIMESTAMPTZ",
    "last_seen_at": "TIMESTAMPTZ", "src_stat": "STRUCT(bytes BIGINT, packets BIGINT)",
    "dst_stat": "STRUCT(bytes BIGINT, packets BIGINT)", "status": "VARCHAR", "end_reason": "VARCHAR",
    "vlan": "INTEGER", "src_tcp_flags": "INTEGER", "dst_tcp_flags": "INTEGER", "icmp_type": "INTEGER",
    "icmp_code": "INTEGER",
    "tunnel": "STRUCT(type VARCHAR, id BIGINT, src_id BIGINT, dst_id BIGINT, src VARCHAR, dst VARCHAR, depth INTEGER)",
    "interface": "JSON", "sensor": "VARCHAR",  # interface: a name, or a pcapng interface index (a number)
}
_AS_FLOW_LOGS = ", ".join([
    "id", "community_id", "protocol", "src.addr AS src_addr", "dst.addr AS dst_addr", "src.port AS src_port",
    "dst.port AS dst_port",
    "src.hw_addr AS src_hw_addr", "dst.hw_addr AS dst_hw_addr", "src.names AS src_names", "dst.names AS dst_names",
    "first_seen_at", "last_seen_at", "src_stat.bytes AS src_bytes", "dst_stat.bytes AS dst_bytes",
    "src_stat.packets AS src_packets", "dst_stat.packets AS dst_packets", "status", "end_reason", "vlan",
    "src_tcp_flags", "dst_tcp_flags", "icmp_type", "icmp_code", "sensor",
    *(f"tunnel.{k} AS tunnel_{k}" for k in ("type", "id", "src_id", "dst_id", "src", "dst", "depth")),
    "interface->>'$' AS interface"])


class JsonLinesSource:
    def __init__(self, files: list[str]):
        for path in files:
            if not os.path.isfile(path):
                raise UsageError(f"-r/--read-file {path}: {'a folder' if os.path.isdir(path) else 'no such file'}")
            if not os.access(path, os.R_OK):
                raise UsageError(f"-r/--read-file {path}: not readable")
        self.files = files

    def answer(self, query: Query) -> list[tuple]:
        import duckdb

        by_kind: dict[str, list[str]] = {}
        for path in self.files:
            by_kind.setdefault(_compression(path), []).append(path)
        parts = [f"SELECT {_AS_FLOW_LOGS} FROM read_json(?, columns = ?, format = 'newline_delimited', "
                 f"compression = '{kind}')" for kind in by_kind]
        source_params = [p for files in by_kind.values() for p in (files, RECORD_COLUMNS)]
        sql, params = compile_query(query, f"({' UNION ALL '.join(parts)})", source_params, "duckdb")
        try:
            return _duckdb().execute(sql, params).fetchall()
        except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.IOException) as e:
            first = str(e).splitlines()[0]
            raise SourceError(f"-r/--read-file: not flow records as -o file writes them ({first})") from None


def _compression(path: str) -> str:
    """gzip, zstd or none, by the file's first bytes (a rotated file's name need not end in .gz)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    return "gzip" if magic[:2] == b"\x1f\x8b" else "zstd" if magic == b"\x28\xb5\x2f\xfd" else "none"


class BigQuerySource:
    """``settings``: a ``Settings`` with the BigQuery connection (project, dataset, table, key, endpoint)."""

    def __init__(self, settings):
        self.settings = settings

    def answer(self, query: Query) -> list[tuple]:
        from devourer.outputs.bigquery import run_query, table_id

        sql, params = compile_query(query, f"`{table_id(self.settings)}`", [], "bigquery")
        return run_query(self.settings, sql, params)
