"""The local flow store (``-o parquet --store DIR``): flow records as Parquet files a query can read while
devourer writes, partitioned so that a time window reads only its files.

Layout: ``DIR/date=YYYY-MM-DD/hour=HH/<staging file's name>.parquet`` by the UTC hour of each flow's
``first_seen_at`` (Hive-style names: DuckDB and pyarrow read the partitions as columns), zstd, with the
columns of BigQuery's ``flow_logs`` (``outputs.columns``): names as lists of strings, times as
timestamps in microseconds, addresses as text. The sensor is a column, not a directory: a sensor id is any
UTF-8 text, and a path made of it would be a path a sender of ``--sensor-id`` controls.

Durable before acknowledged. Each batch the exporter hands over is appended to a staging file
(``DIR/.staging/<pid>-<n>.arrows``, an Arrow IPC stream) and the rows count as unsettled until it is fsynced
(at the exporter's next tick, so a batch costs no fsync of its own); only then may the exporter free them in
the flow rings. Every ``--store-flush-interval`` and at the end of the run the staging file becomes Parquet:
one file per hour partition (several for a big one, written in parallel), each written under a hidden
temporary name (readers skip names that start with a dot), fsynced, renamed into place, its directory fsynced;
then the staging file is removed. A staging file that a killed run left behind is turned into Parquet the same
way at the next start; its last batch, if the kill tore it, was never acknowledged and is dropped. So ``kill
-9`` loses nothing that was acknowledged, a reader never sees a partial file, and a row is in the store once:
the partition files are written before the staging file is removed, and a leftover staging file is only
converted once (the Parquet names derive from its name, so a second conversion overwrites, never adds).

Upkeep (``store_upkeep``): an hour folder that has collected ``COMPACT_AT`` files has its small ones
merged into one, swapped in atomically; ``--store-retention`` removes hours older than it, at start and
hourly.
"""

import datetime
import os
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from devourer.outputs import FlowBatch
from devourer.outputs import store_upkeep
from devourer.outputs.columns import flow_table

FOLDER_MODE = 0o750
FILE_MODE = 0o640  # flow records name who talked to whom: not for every local user
STAGING = ".staging"
STAGING_NAME = re.compile(r"^(\d+)-(\d+)\.arrows$")
COMPRESSION = "zstd"
PIECE_ROWS = 1 << 18  # an hour's rows of one publish are written as files of at most this many, in parallel
ROW_GROUP_ROWS = 1 << 17  # DuckDB reads a file's row groups in parallel
MAX_STAGED_ROWS = 1 << 20  # a staging file is published at this many rows too (the memory its tables take)
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


def _write_file(path: str, table: pa.Table) -> None:
    """One Parquet file, complete on disk before its name appears."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        pq.write_table(table, f, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _write_parquet(directory: str, stem: str, table: pa.Table) -> list[str]:
    """``table`` as Parquet files, one per hour partition of ``first_seen_at``, each complete on disk before
    its name appears; returns the hour folders written to."""
    if table.num_rows == 0:
        return []
    folders = []
    table = table.combine_chunks()  # row groups of ROW_GROUP_ROWS rather than one per batch
    hours = pc.floor_temporal(table["first_seen_at"], unit="hour")
    distinct = pc.unique(hours).to_pylist()
    for hour in distinct:
        part = table if len(distinct) == 1 else table.filter(pc.equal(hours, pa.scalar(hour, hours.type)))
        date_dir, hour_dir = _partition(hour)
        folder = os.path.join(directory, date_dir, hour_dir)
        _folder(os.path.join(directory, date_dir))
        _folder(folder)
        pieces = -(-part.num_rows // PIECE_ROWS)  # by the row count alone: a second conversion names the same files
        names = [f"{stem}.parquet"] if pieces == 1 else [f"{stem}-{i}.parquet" for i in range(pieces)]
        step = -(-part.num_rows // pieces)
        jobs = [(os.path.join(folder, n), part.slice(i * step, step)) for i, n in enumerate(names)]
        if len(jobs) == 1:
            _write_file(*jobs[0])
        else:  # zstd Parquet is the run's last long step; pyarrow lets go of the GIL, so the cores share it
            with ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
                list(pool.map(lambda job: _write_file(*job), jobs))
        store_upkeep.fsync_dir(folder)
        folders.append(folder)
    return folders


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
        self._recover()
        self._expired_at = None
        self._expire()
        self._seq = 0
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._file = None
        self._path: str | None = None
        self._unsynced = 0  # rows in the staging file not yet fsynced: unsettled
        self._staged = 0  # rows in the staging file
        self._tables: list[pa.Table] = []
        self._opened_at = clock()

    # ---- the staging file
    def _open_staging(self, schema: pa.Schema) -> None:
        self._seq += 1
        name = f"{time.time_ns()}-{self._seq}.arrows"
        self._path = os.path.join(self.staging_dir, name)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        self._file = os.fdopen(fd, "wb")
        self._writer = ipc.new_stream(self._file, schema, options=STAGING_OPTIONS)
        self._opened_at = self.clock()

    def write(self, batch: FlowBatch) -> None:
        table = flow_table(batch.formatter, batch.rows, batch.names)
        if self._writer is None:
            self._open_staging(table.schema)
        self._writer.write_table(table)
        self._tables.append(table)  # what the staging file holds, for its Parquet (not read back)
        self._unsynced += table.num_rows
        self._staged += table.num_rows
        if self._staged >= MAX_STAGED_ROWS:
            self._publish()

    def unsettled(self) -> int:
        return self._unsynced

    def _sync(self) -> None:
        if self._unsynced and self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            if self._staged == self._unsynced:  # a new file: its name is durable too
                store_upkeep.fsync_dir(self.staging_dir)
            self._unsynced = 0

    def flush(self) -> None:
        pass  # fsynced at the next tick (one fsync for every batch of a tick) or at the end

    def tick(self) -> None:
        self._sync()
        if self._writer is not None and self.clock() - self._opened_at >= self.flush_interval_s:
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
                store_upkeep.compact(folder, FILE_MODE, COMPRESSION, ROW_GROUP_ROWS)
            except OSError as e:
                self._compacting = False  # e.g. a file system without RENAME_EXCHANGE: files stay as written
                self.report(f"flow store: compaction off for this run ({e.strerror or e})", "warning")

    def _publish(self) -> None:
        """The staging file as Parquet in the partitions, then gone."""
        if self._writer is None:
            return
        self._sync()
        self._writer.close()
        self._file.close()
        path, self._writer, self._file, self._path, self._staged = self._path, None, None, None, 0
        tables, self._tables = self._tables, []
        self._convert(path, pa.concat_tables(tables))

    def _convert(self, path: str, table: pa.Table | None) -> None:
        stem = os.path.basename(path).removesuffix(".arrows")
        folders = [] if table is None else _write_parquet(self.directory, stem, table)
        os.unlink(path)
        store_upkeep.fsync_dir(self.staging_dir)
        self._compact(folders)

    def _recover(self) -> None:
        """Staging files a killed run left: into the partitions, once."""
        left = sorted(n for n in os.listdir(self.staging_dir) if STAGING_NAME.match(n)
                      and stat.S_ISREG(os.lstat(os.path.join(self.staging_dir, n)).st_mode))
        for name in left:
            path = os.path.join(self.staging_dir, name)
            self._convert(path, _read_staging(path))
        if left:
            self.report(f"flow store: {len(left)} staging file(s) of an earlier run written to the store", "info")

    def reopen(self) -> None:
        pass  # no path to open anew: files are made per interval

    def close(self) -> None:
        self._publish()
