"""The local flow store (``-o parquet --store DIR``): flow records as Parquet files a query can read while
devourer writes, partitioned so that a time window reads only its files.

Layout: ``DIR/date=YYYY-MM-DD/hour=HH/<staging file's name>.parquet`` by the UTC hour of each flow's
``first_seen_at`` (Hive-style names: DuckDB and pyarrow read the partitions as columns), zstd, with the
columns of BigQuery's ``flow_logs`` (``outputs.columns``): names as lists of strings, times as
timestamps in microseconds, addresses as text. The sensor is a column, not a directory: a sensor id is any
UTF-8 text, and a path made of it would be a path a sender of ``--sensor-id`` controls.

Durable before acknowledged. The rows the exporter hands over wait in memory (their names already taken)
and count as unsettled; at the exporter's next tick (a quarter second, sooner once ``EARLY_TICK_ROWS`` wait)
they are made into columns in one call, appended to a staging file (``DIR/.staging/<ns>-<n>.arrows``, an
Arrow IPC stream) and fsynced; only then may the exporter free them in the flow rings. The same columns go on
into Parquet at once: per hour partition, each ``PIECE_ROWS`` rows make a file, written in the background under
a hidden name (readers skip names that start with a dot) and fsynced. Every ``--store-flush-interval`` and at
the end of the run the rest of the staging file's rows are written the same way, every file is renamed into
place, its directory fsynced, and the staging file is removed. A staging file that a killed run left behind is
turned into Parquet the same way at the next start; its last batch, if the kill tore it, was never
acknowledged and is dropped. So ``kill -9`` loses nothing that was acknowledged, a reader never sees a partial
file, and a row is in the store once: the partition files are in place before the staging file is removed,
and a leftover staging file is only converted once (the Parquet names derive from its name and the rows'
order in it, so a second conversion overwrites, never adds). A failed write or fsync drops the rows not yet
synced (the exporter counts them as lost), cuts the staging file back to its synced rows and leaves it for the
next start.

Upkeep (``store_upkeep``): an hour folder that has collected ``COMPACT_AT`` files has its small ones
merged into one, swapped in atomically; ``--store-retention`` removes hours older than it, at start and
hourly.
"""

import datetime
import os
import re
import stat
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from devourer.outputs import FlowBatch
from devourer.outputs import store_upkeep
from devourer.outputs.columns import flow_table, name_columns

FOLDER_MODE = 0o750
FILE_MODE = 0o640  # flow records name who talked to whom: not for every local user
STAGING = ".staging"
STAGING_NAME = re.compile(r"^(\d+)-(\d+)\.arrows$")
COMPRESSION = "zstd"
PIECE_ROWS = 1 << 18  # an hour's rows of one publish are written as files of at most this many, in parallel
ROW_GROUP_ROWS = 1 << 17  # DuckDB reads a file's row groups in parallel
MAX_STAGED_ROWS = 1 << 20  # a staging file is published at this many rows too (the memory its tables take)
#: columns of few distinct values, dictionary-encoded; for the others (ids, addresses) the dictionary only costs
DICTIONARY_COLUMNS = ["protocol", "src_names", "dst_names", "status", "end_reason", "sensor", "tunnel_type",
                      "interface"]
STAGING_OPTIONS = ipc.IpcWriteOptions()  # uncompressed: lz4 cost 0.5 µs of CPU a flow, fsync of the larger file less


def _folder(path: str) -> None:
    """Make ``path`` (a folder of the store) unless it is one; a link or a file there is refused."""
    try:
        os.mkdir(path, FOLDER_MODE)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise NotADirectoryError(20, "not a folder", path) from None


def prepare(directory: str) -> None:
    """Make the store's folder and its staging folder; raises OSError where they cannot be used."""
    os.makedirs(directory, FOLDER_MODE, exist_ok=True)
    _folder(os.path.join(directory, STAGING))


def _partition(hour: datetime.datetime) -> tuple[str, str]:
    return f"date={hour:%Y-%m-%d}", f"hour={hour:%H}"


def _write_hidden(path: str, table: pa.Table) -> str:
    """One Parquet file, complete on disk under a hidden name beside ``path``; returns that name."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        pq.write_table(table, f, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS,
                       use_dictionary=DICTIONARY_COLUMNS)
        f.flush()
        os.fsync(f.fileno())
    return temporary


def _by_hour(table: pa.Table) -> list[tuple[datetime.datetime, pa.Table]]:
    """``table``'s rows by the UTC hour of ``first_seen_at``, each hour's in their order."""
    if table.num_rows == 0:
        return []
    hours = pc.floor_temporal(table["first_seen_at"], unit="hour")
    low, high = pc.min_max(hours).values()
    if low == high:  # a batch is nearly always within one hour
        return [(low.as_py(), table)]
    return [(hour, table.filter(pc.equal(hours, pa.scalar(hour, hours.type)))) for hour in pc.unique(hours).to_pylist()]


class _Pieces:
    """The Parquet files one staging file becomes. Per hour partition of ``first_seen_at``, its rows in the
    order they came are cut into pieces of ``PIECE_ROWS``; the k-th is ``<stem>-<k>.parquet``, so converting
    the same staging file again names the same files. A full piece is written at once, in the background
    (pyarrow lets go of the GIL: capture goes on meanwhile) under a hidden name; ``finish`` writes the rest,
    waits for them all and renames them into place."""

    def __init__(self, directory: str, stem: str, pool: ThreadPoolExecutor):
        self.directory, self.stem, self.pool = directory, stem, pool
        self._open: dict[datetime.datetime, list[pa.Table]] = {}  # an hour's rows not yet in a piece
        self._counts: dict[datetime.datetime, int] = {}  # pieces begun, per hour
        self._written: list[tuple[Future, str]] = []  # (the write, which returns the hidden name; the final path)

    def add(self, table: pa.Table) -> None:
        for hour, part in _by_hour(table):
            tables = self._open.setdefault(hour, [])
            tables.append(part)
            rows = sum(t.num_rows for t in tables)
            if rows >= PIECE_ROWS:
                joined = pa.concat_tables(tables)
                while rows >= PIECE_ROWS:
                    self._piece(hour, joined.slice(0, PIECE_ROWS))
                    joined, rows = joined.slice(PIECE_ROWS), rows - PIECE_ROWS
                self._open[hour] = [joined] if rows else []

    def _piece(self, hour: datetime.datetime, table: pa.Table) -> None:
        date_dir, hour_dir = _partition(hour)
        folder = os.path.join(self.directory, date_dir, hour_dir)
        if hour not in self._counts:
            _folder(os.path.join(self.directory, date_dir))
            _folder(folder)
        k = self._counts.get(hour, 0)
        self._counts[hour] = k + 1
        path = os.path.join(folder, f"{self.stem}-{k}.parquet")
        self._written.append((self.pool.submit(_write_hidden, path, table), path))

    def finish(self) -> list[str]:
        """Every row in a file in its partition; returns the hour folders written to."""
        for hour, tables in self._open.items():
            if tables:
                self._piece(hour, pa.concat_tables(tables))
        self._open = {}
        hidden = [(job.result(), path) for job, path in self._written]  # a failed write raises here
        folders = list(dict.fromkeys(os.path.dirname(path) for _, path in hidden))
        for temporary, path in hidden:
            os.replace(temporary, path)
        for folder in folders:
            store_upkeep.fsync_dir(folder)
        return folders

    def abandon(self) -> None:
        """Wait for the writes under way and remove what they wrote (a failed publish; the staging file stays)."""
        for job, _ in self._written:
            try:
                os.unlink(job.result())
            except Exception:  # noqa: BLE001 - the write failed, or its file is gone: nothing to remove
                pass
        self._written = []


def _read_staging(path: str) -> pa.Table | None:
    """The whole batches of a staging file (a torn last one is left out: it was never acknowledged), or None
    when not even its schema was written."""
    batches: list[pa.RecordBatch] = []
    schema = None
    try:
        with open(path, "rb") as f:
            reader = ipc.open_stream(f)
            schema = reader.schema
            for batch in reader:
                batches.append(batch)
    except (pa.ArrowInvalid, OSError):
        pass  # torn where the kill came
    return None if schema is None else pa.Table.from_batches(batches, schema)


class ParquetStoreSink:
    def __init__(self, directory: str, flush_interval_s: float = 10.0, report=None, clock=time.monotonic,
                 retention_s: float = 0.0, wall_clock=time.time):
        self.directory = directory
        self.flush_interval_s = flush_interval_s
        self.report = report or (lambda text, level="warning": None)
        self.clock = clock
        self.retention_s = retention_s
        self.wall_clock = wall_clock
        self._compacting = True
        prepare(directory)
        self.staging_dir = os.path.join(directory, STAGING)
        store_upkeep.remove_leftovers(directory)
        self._pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="store")
        self._recover()
        self._expired_at = None
        self._expire()
        self._seq = 0
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._file = None
        self._path: str | None = None
        self._pending: list[tuple[np.ndarray, tuple[pa.Array, pa.Array]]] = []  # rows not yet staged, names
        self._formatter = None
        self._unsynced = 0  # rows handed over and not yet fsynced in the staging file: unsettled
        self._staged = 0  # rows in the staging file
        self._synced_bytes = 0  # the staging file's length at its last fsync
        self._broken = False  # a write failed: the exporter stops, nothing more is written
        self._pieces: _Pieces | None = None  # what the open staging file becomes
        self._opened_at = clock()

    # ---- the staging file
    def _open_staging(self, schema: pa.Schema) -> None:
        self._seq += 1
        name = f"{time.time_ns()}-{self._seq}.arrows"
        self._path = os.path.join(self.staging_dir, name)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        self._file = os.fdopen(fd, "wb")
        self._writer = ipc.new_stream(self._file, schema, options=STAGING_OPTIONS)
        self._synced_bytes = 0
        self._pieces = _Pieces(self.directory, name.removesuffix(".arrows"), self._pool)
        self._opened_at = self.clock()

    def write(self, batch: FlowBatch) -> None:
        # the rows wait for the next tick to be staged: a staging call costs about 1 ms beside its rows, and a
        # tick gathers many batches. Names are taken now, from the name map as it is now, as -o file does.
        self._formatter = batch.formatter
        self._pending.append((batch.rows, name_columns(batch.formatter, batch.rows, batch.names)))
        self._unsynced += len(batch.rows)

    def unsettled(self) -> int:
        """Rows handed over and not yet fsynced: those a failure of ``tick`` or ``close`` loses."""
        return self._unsynced

    def _stage(self) -> None:
        """The pending rows into the staging file (and on into Parquet pieces)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        rows = np.concatenate([r for r, _ in pending]) if len(pending) > 1 else pending[0][0]
        named = tuple(pa.concat_arrays([n[side] for _, n in pending]) for side in (0, 1))
        table = flow_table(self._formatter, rows, named=named)
        if self._writer is None:
            self._open_staging(table.schema)
        self._writer.write_table(table)
        self._pieces.add(table)  # what the staging file holds, for its Parquet (not read back)
        self._staged += table.num_rows

    def _sync(self) -> None:
        self._stage()
        if self._unsynced and self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            if self._staged == self._unsynced:  # a new file: its name is durable too
                store_upkeep.fsync_dir(self.staging_dir)
            self._synced_bytes = self._file.tell()
        self._unsynced = 0

    def _failed(self) -> None:
        """After a failed write or fsync: the rows not yet synced are dropped (``unsettled`` still counts them,
        for the exporter to count as lost); the staging file is cut back to its synced rows and left for the
        next start, which converts it."""
        self._pending = []
        self._broken = True
        if self._file is not None:
            try:
                self._file.truncate(self._synced_bytes)
                os.fsync(self._file.fileno())
            except (OSError, ValueError):
                pass
            try:
                self._file.close()
            except OSError:
                pass
        if self._pieces is not None:
            self._pieces.abandon()
        self._writer = self._file = self._path = self._pieces = None

    def flush(self) -> None:
        pass  # staged and fsynced at the next tick (one fsync for every batch of a tick) or at the end

    def tick(self) -> None:
        """Stage and fsync what came since the last tick; publish every flush interval or at MAX_STAGED_ROWS."""
        if self._broken:
            return
        try:
            self._sync()
        except OSError:
            self._failed()
            raise
        if self._writer is not None and (self.clock() - self._opened_at >= self.flush_interval_s
                                         or self._staged >= MAX_STAGED_ROWS):
            self._publish()
        self._expire()

    def _expire(self) -> None:
        """--store-retention: the hours older than it removed, at start and then hourly."""
        now = self.wall_clock()
        if not self.retention_s or (self._expired_at is not None and now - self._expired_at < 3600):
            return
        self._expired_at = now
        before = datetime.datetime.fromtimestamp(now - self.retention_s, datetime.timezone.utc)
        removed = store_upkeep.expire(self.directory, before)
        if removed:
            self.report(f"flow store: {removed} hour(s) older than --store-retention removed", "info")

    def _compact(self, folders: list[str]) -> None:
        for folder in dict.fromkeys(folders) if self._compacting else ():
            try:
                store_upkeep.compact(folder, FILE_MODE, COMPRESSION, ROW_GROUP_ROWS, DICTIONARY_COLUMNS)
            except OSError as e:
                self._compacting = False  # e.g. a file system without RENAME_EXCHANGE: files stay as written
                self.report(f"flow store: compaction off for this run ({e.strerror or e})", "warning")

    def _publish(self) -> None:
        """The staging file as Parquet in the partitions, then gone."""
        if self._writer is None:
            return
        self._writer.close()
        self._file.close()
        path, self._writer, self._file, self._path, self._staged = self._path, None, None, None, 0
        pieces, self._pieces = self._pieces, None
        self._convert(path, pieces)

    def _convert(self, path: str, pieces: _Pieces) -> None:
        try:
            folders = pieces.finish()
        except BaseException:
            pieces.abandon()
            raise
        os.unlink(path)
        store_upkeep.fsync_dir(self.staging_dir)
        self._compact(folders)

    def _recover(self) -> None:
        """Staging files a killed run left: into the partitions, once."""
        left = sorted(n for n in os.listdir(self.staging_dir) if STAGING_NAME.match(n)
                      and stat.S_ISREG(os.lstat(os.path.join(self.staging_dir, n)).st_mode))
        for name in left:
            path = os.path.join(self.staging_dir, name)
            pieces = _Pieces(self.directory, name.removesuffix(".arrows"), self._pool)
            table = _read_staging(path)
            if table is not None:
                pieces.add(table)
            self._convert(path, pieces)
        if left:
            self.report(f"flow store: {len(left)} staging file(s) of an earlier run written to the store", "info")

    def reopen(self) -> None:
        pass  # no path to open anew: files are made per interval

    def close(self) -> None:
        try:
            if not self._broken:
                try:
                    self._sync()
                except OSError:
                    self._failed()
                    raise
                self._publish()
        finally:
            self._pool.shutdown()
