"""Output adapters: each takes JSON-lines bytes from the exporter and stores them.

Every sink has ``write(lines: bytes)``, ``flush()``, ``reopen()`` (SIGHUP) and ``close()``; ``open_sink``
is the one place that maps the ``--output`` setting to a sink."""

import os
import stat

from devourer.errors import SourceError
from devourer.privileges import acting_as
from devourer.settings import Settings


OUTPUT_MODE = 0o640  # flow records name who talked to whom: not for every local user


class PartialWrite(OSError):
    """A write failed (disk full) after ``lines`` whole lines of what was handed over since the last flush were
    in the file; the file ends at the end of the last of them."""

    def __init__(self, error: OSError, lines: int):
        super().__init__(error.errno, error.strerror)
        self.lines = lines


def open_sink(settings: Settings, report=None, counters=None):
    if settings.output == "bigquery":
        from devourer.outputs.bigquery import BigQuerySink

        return BigQuerySink(settings, report or (lambda text: None), counters)
    if settings.output == "file":
        from devourer.outputs.jsonfile import JsonFileSink

        return JsonFileSink(settings.write_file, settings.rotate_bytes, settings.rotate_interval_s,
                            settings.rotate_keep, report)
    from devourer.outputs.stdout import StdoutSink

    return StdoutSink()


def check_output(settings: Settings, warn) -> None:
    """Fail early (before any capture) when the output cannot be used; with --user, as that user."""
    as_user = f" as user {settings.run_as[2]} (--user)" if settings.run_as and os.geteuid() == 0 else ""
    if settings.output == "bigquery":
        from devourer.outputs import bigquery
        from devourer.outputs.spool import Spool

        try:
            with acting_as(settings.run_as):
                Spool.prepare(settings.spool_dir)
        except OSError as e:
            raise SourceError(f"cannot use --spool-dir {settings.spool_dir}{as_user}: {e.strerror}") from None
        bigquery.prepare(settings, warn)
    if settings.output == "file":
        try:
            with acting_as(settings.run_as):
                os.close(open_private(settings.write_file))
        except OSError as e:
            raise SourceError(f"cannot open output file {settings.write_file}{as_user}: {e.strerror}") from None


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
