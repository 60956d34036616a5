"""Output adapters: the ``Sink`` protocol every output implements, and where the setting picks one.

The exporter is the only process that writes output; it drives its sink through ``Sink`` alone (no output
is asked what it can do). A sink gets flows as a ``FlowBatch`` and takes them in the form it stores: JSON
lines (stdout, a file), record dicts (BigQuery) or columns (the flow store, ``outputs.columns``).
``open_sink`` is the one place that maps the ``--output`` setting to a sink, ``check_output`` the one place
that tries it before capture starts.
"""

import os
import stat
from typing import TYPE_CHECKING, Protocol

from devourer.errors import SourceError
from devourer.privileges import acting_as
from devourer.settings import Settings

if TYPE_CHECKING:
    import numpy as np


OUTPUT_MODE = 0o640  # flow records name who talked to whom: not for every local user


class PartialWrite(OSError):
    """A write failed (disk full) after ``lines`` whole lines of what was handed over since the last flush were
    in the file; the file ends at the end of the last of them."""

    def __init__(self, error: OSError, lines: int):
        super().__init__(error.errno, error.strerror)
        self.lines = lines


class FlowBatch:
    """Flows for a sink (up to READ_ROWS flow rows and the name map to name them), formatted on demand: as
    JSON lines or as record dicts (``outputs.format.RecordFormatter``)."""

    __slots__ = ("formatter", "rows", "names")

    def __init__(self, formatter, rows: "np.ndarray", names=None):
        self.formatter, self.rows, self.names = formatter, rows, names

    def __len__(self) -> int:
        return len(self.rows)

    def lines(self) -> bytes:
        return self.formatter.lines(self.rows, self.names)

    def records(self) -> list[dict]:
        return self.formatter.records(self.rows, self.names)


class Sink(Protocol):
    """What the exporter asks of an output. ``write`` and ``flush`` raise OSError when the output fails
    (``PartialWrite`` when some of the lines are in it all the same)."""

    def write(self, batch: FlowBatch) -> None:
        """Take these flows (buffered or sent at the sink's pace)."""

    def flush(self) -> None:
        """What was written is in the output now, or (BigQuery) on its way at the sink's pace."""

    def tick(self) -> None:
        """Called a few times a second, also while no flow ends: time-bound work (rotation by time, batches by
        age, the spool's replay)."""

    def unsettled(self) -> int:
        """How many of the rows handed over last are held only in memory: the exporter frees them in the
        flow rings only once they are out (an exporter that dies then loses none)."""

    def reopen(self) -> None:
        """SIGHUP: open the output's path anew (logrotate moved the file)."""

    def close(self) -> None:
        """The end of the run: everything out, or in the spool."""


def open_sink(settings: Settings, report=None, counters=None) -> Sink:
    if settings.output == "bigquery":
        from devourer.outputs.bigquery import BigQuerySink

        return BigQuerySink(settings, report or (lambda text: None), counters)
    if settings.output == "parquet":
        from devourer.outputs.store import ParquetStoreSink

        return ParquetStoreSink(settings.store_dir, settings.store_flush_interval_s, report,
                                retention_s=settings.store_retention_s)
    if settings.output == "file":
        from devourer.outputs.jsonfile import JsonFileSink

        return JsonFileSink(settings.write_file, settings.rotate_bytes, settings.rotate_interval_s,
                            settings.rotate_keep, report)
    from devourer.outputs.stdout import StdoutSink

    return StdoutSink()


def check_output(settings: Settings, warn) -> None:
    """Fail early (before any capture) when the output cannot be used; with --user, as that user."""
    if settings.output == "bigquery":
        from devourer.outputs import bigquery
        from devourer.outputs.spool import Spool

        _try_as_user(settings, f"cannot use --spool-dir {settings.spool_dir}", Spool.prepare, settings.spool_dir)
        bigquery.prepare(settings, warn)
    if settings.output == "parquet":
        from devourer.outputs import store

        _try_as_user(settings, f"cannot use --store {settings.store_dir}", store.prepare, settings.store_dir)
    if settings.output == "file":
        _try_as_user(settings, f"cannot open output file {settings.write_file}",
                     lambda path: os.close(open_private(path)), settings.write_file)


def _try_as_user(settings: Settings, what: str, action, path: str) -> None:
    """``action(path)`` with --user's rights; an OSError becomes one line: ``what``, who tried, and why."""
    try:
        with acting_as(settings.run_as):
            action(path)
    except OSError as e:
        as_user = f" as user {settings.run_as[2]} (--user)" if settings.run_as and os.geteuid() == 0 else ""
        raise SourceError(f"{what}{as_user}: {e.strerror}") from None


def open_private(path: str, mode: int = OUTPUT_MODE) -> int:
    """Open (creating) a file devourer appends to; a regular file of ours is left at most ``mode`` whatever the
    umask and whatever it had (a file of others' flows is never readable by every local user). Devices and FIFOs
    (``-w /dev/null``, a pipe to another program) are written as they are."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode and st.st_uid == os.geteuid():
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & mode)
    except BaseException:
        os.close(fd)
        raise
    return fd
