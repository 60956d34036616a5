"""Writes JSON lines to a file (``-o file -w PATH``), appending, whole lines only,
with optional rotation (``--rotate-size``, ``--rotate-interval``, ``--rotate-keep``).

Rotation renames the file to ``PATH.<UTC time of the rotation>`` (e.g.
``flows.jsonl.20261123T120000Z``; ``-1``, ``-2``... when that name is taken) and
starts a new one; a thread compresses the old file to ``.gz`` beside it
(written as ``.gz.tmp``, renamed when complete, then the plain file is removed),
so the exporter never waits for gzip. The exporter hands over whole batches of
lines, so a file always ends at the end of a line; a write that fails part way
(disk full) keeps every whole line that fitted and cuts the file back to the end
of the last one (``PartialWrite`` says how many lines of the batch are in the
file; the exporter counts the rest as lost). What a killed process leaves
half done is finished at the next start: rotated files not yet compressed are
compressed, stray ``.gz.tmp`` files removed.

Interval rotation follows the wall clock at multiples of the interval since the
epoch (``1h``: on the hour; ``1d``: at midnight UTC); an empty file is not rotated.
"""

import datetime
import gzip
import os
import queue
import re
import shutil
import threading
import time

from devourer.outputs import FlowBatch, PartialWrite, open_private

COMPRESS_LEVEL = 6
BUFFER_BYTES = 1 << 20


class JsonFileSink:
    def __init__(self, path: str, rotate_bytes: int = 0, rotate_interval_s: float = 0.0, keep: int = 0,
                 report=None, clock=time.time):
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.rotate_interval_s = rotate_interval_s
        self.keep = keep
        self.report = report or (lambda text, level="warning": None)
        self.clock = clock
        self._lines_out = 0  # lines handed over since the last flush that are in a file (a rotated one too)
        self._open()
        self._period_end = self._next_boundary() if rotate_interval_s else None
        self._compress_queue: queue.Queue | None = None
        self._compressor: threading.Thread | None = None
        if rotate_bytes or rotate_interval_s:
            self._finish_leftovers()

    @property
    def rotating(self) -> bool:
        return bool(self.rotate_bytes or self.rotate_interval_s)

    def _open(self) -> None:
        self._fd = open_private(self.path)
        self._size = self._on_disk = os.fstat(self._fd).st_size  # size: with what is buffered
        self._buffer = bytearray()

    def _next_boundary(self) -> float:
        now = self.clock()
        return (now // self.rotate_interval_s + 1) * self.rotate_interval_s

    # ---- writing
    def write(self, batch: FlowBatch) -> None:
        self.write_lines(batch.lines())

    def unsettled(self) -> int:
        return 0  # in the file, or in the buffer that ``flush`` writes before the exporter frees the rows

    def write_lines(self, lines: bytes) -> None:
        if self.rotate_bytes and self._size and self._size + len(lines) > self.rotate_bytes:
            self.rotate()
        elif self._period_end is not None and self.clock() >= self._period_end:
            self._rotate_on_time()
        self._buffer += lines
        self._size += len(lines)
        if len(self._buffer) >= BUFFER_BYTES:
            self._write_out()

    def tick(self) -> None:
        """Called by the exporter a few times a second: interval rotation also happens while no flow ends."""
        if self._period_end is not None and self.clock() >= self._period_end:
            self._rotate_on_time()

    def flush(self) -> None:
        """Write what is buffered; the file then ends at the end of the last line handed over."""
        self._write_out()
        self._lines_out = 0

    def reopen(self) -> None:
        """SIGHUP: write what is buffered and open the path anew (logrotate moved the file away)."""
        self.flush()
        old = self._fd
        self._open()  # raises before touching self._fd: where the path cannot be opened, writing goes on to old
        os.close(old)

    def _write_out(self) -> None:
        done = 0
        try:
            with memoryview(self._buffer) as view:  # released before the buffer is cleared
                while done < len(view):
                    done += os.write(self._fd, view[done:])
        except OSError as e:
            # disk full (or gone): keep the whole lines that fitted, cut the file back to the end of the last
            # one, so it never ends inside a line; the exporter counts the lines that are not in the file as lost
            keep = self._buffer.rfind(b"\n", 0, done) + 1
            lines = self._lines_out + self._buffer.count(b"\n", 0, keep)
            self._buffer.clear()
            self._size = self._on_disk = self._on_disk + keep
            self._lines_out = 0
            try:
                os.ftruncate(self._fd, self._on_disk)
            except OSError:
                pass
            raise PartialWrite(e, lines) from None
        self._on_disk += len(self._buffer)
        self._lines_out += self._buffer.count(b"\n")
        self._buffer.clear()

    def close(self) -> None:
        try:
            self._write_out()
        finally:
            os.close(self._fd)
        if self._compressor is not None:
            self._compress_queue.put(None)
            self._compressor.join()

    # ---- rotation
    def _rotate_on_time(self) -> None:
        self._period_end = self._next_boundary()
        if self._size:
            self.rotate()

    def rotate(self) -> None:
        """Close the current file, rename it, open a new one, and have the old one compressed."""
        self._write_out()
        os.close(self._fd)
        stamp = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        target = f"{self.path}.{stamp}"
        n = 0
        while os.path.exists(target) or os.path.exists(target + ".gz"):
            n += 1
            target = f"{self.path}.{stamp}-{n}"
        os.rename(self.path, target)
        self._open()
        self._compress_later(target)

    def _compress_later(self, path: str) -> None:
        if self._compressor is None:
            self._compress_queue = queue.Queue()
            self._compressor = threading.Thread(target=self._compress_loop, name="compress", daemon=True)
            self._compressor.start()
        self._compress_queue.put(path)

    def _compress_loop(self) -> None:
        while (path := self._compress_queue.get()) is not None:
            try:
                compress(path)
                self._prune()
            except OSError as e:
                self.report(f"cannot compress rotated output {path}: {e.strerror or e}", "error")

    def _rotated(self) -> tuple[list[str], list[str]]:
        """(compressed, not yet compressed) rotated files of this output, oldest first."""
        folder = os.path.dirname(self.path) or "."
        pattern = re.compile(re.escape(os.path.basename(self.path)) + r"\.(\d{8}T\d{6}Z)(?:-(\d+))?(\.gz)?$")
        found = []
        for name in os.listdir(folder):
            if m := pattern.match(name):
                found.append(((m.group(1), int(m.group(2) or 0)), os.path.join(folder, name), bool(m.group(3))))
        found.sort()
        return [p for _, p, gz in found if gz], [p for _, p, gz in found if not gz]

    def _prune(self) -> None:
        if not self.keep:
            return
        compressed, _ = self._rotated()
        for path in compressed[:max(0, len(compressed) - self.keep)]:
            os.unlink(path)

    def _finish_leftovers(self) -> None:
        folder = os.path.dirname(self.path) or "."
        base = os.path.basename(self.path) + "."
        for name in os.listdir(folder):
            if name.startswith(base) and name.endswith(".gz.tmp"):
                os.unlink(os.path.join(folder, name))
        _, plain = self._rotated()
        for path in plain:
            self._compress_later(path)


def compress(path: str) -> None:
    """path -> path.gz (complete or absent), then path is removed."""
    tmp = path + ".gz.tmp"
    # created private (never readable by others while it is written), given the plain file's mode once complete
    with open(path, "rb") as src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600),
                                       "wb") as raw:
        with gzip.GzipFile(filename=os.path.basename(path), mode="wb", compresslevel=COMPRESS_LEVEL,
                           fileobj=raw) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())  # the plain file is removed next: the .gz must be on disk first
    shutil.copymode(path, tmp)
    os.rename(tmp, path + ".gz")
    os.unlink(path)
