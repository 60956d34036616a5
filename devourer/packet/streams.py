"""Capture streams: pipes and compressed files, read forward only, in large blocks.

A pipe (``-r -``) or a compressed capture (gzip, zstd, xz, bzip2; recognized by
their first bytes, not their names) cannot be read at an offset or twice.
``Stream`` gives its decompressed bytes (no temporary file) and counts the bytes
of the file or pipe itself consumed (a compressed file's progress is its own
size); ``StreamWindow`` keeps a window of those bytes that only moves forward,
refilled with large reads. ``StreamReader`` indexes classic pcap and pcapng in
that window (``packet.chunks.index_records``, ``packet.capfile.index_pcapng``),
so their packets are decoded where they lie, as a file's are, instead of a
packet at a time through libpcap.

A pipe hands on what it has: the window waits for the bytes the next record
needs, not for a full window, and a stop request ends the wait. A stream that
breaks (a truncated or corrupt compressed file, a read error) ends like a
damaged file: every complete packet before the break is counted, and
``damage()`` says what broke.
"""

import bz2
import fcntl
import gzip
import io
import lzma
import os
import select
import stat
import struct
import zlib

import numpy as np
import zstandard

from devourer.packet.capfile import (MAX_INTERFACES, MAX_RECORD_BYTES, NANOSECOND_MAGICS, PCAP_MAGICS, PCAPNG_SHB,
                                     ST_DAMAGED, ST_EOF, ST_MORE, WINDOW_BYTES, Interface,
                                     block_head, describe_pcapng, index_pcapng)
from devourer.packet.chunks import MAX_SNAPLEN, index_records

COMPRESSIONS = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))
#: what a broken stream raises while it is read (each decompressor its own)
STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)
WAIT_SLICE_S = 0.2  # a pipe with nothing to read is waited on in slices this long, asking whether to stop


def compression_of(head: bytes) -> str | None:
    """The compression whose magic bytes start ``head``, or None."""
    for magic, name in COMPRESSIONS:
        if head.startswith(magic):
            return name
    return None


def is_stream(path: str) -> bool:
    """Whether ``path`` is read as a stream: stdin, a pipe or other non-regular file, or a compressed file."""
    if path == "-" or not os.path.isfile(path):
        return True
    with open(path, "rb") as f:
        return compression_of(f.read(6)) is not None


class Stream:
    """One opened capture stream: ``readinto`` gives the decompressed bytes; ``consumed()`` how many bytes of
    the file or pipe itself have been read. An uncompressed pipe is read straight from its descriptor (no
    buffer of ours in between), so ``wait_readable`` can tell whether a read would wait."""

    def __init__(self, path: str):
        self.path = path
        self._raw = os.fdopen(os.dup(0), "rb", buffering=0) if path == "-" else open(path, "rb", buffering=0)
        try:
            pipe = not stat.S_ISREG(os.fstat(self._raw.fileno()).st_mode)
            self._consumed = 0
            head = b""
            while len(head) < 6:
                chunk = self._raw.read(6 - len(head))
                if not chunk:
                    break
                head += chunk
            self._prefix = head  # read to recognize the stream, served first
            self.compression = compression_of(head)
            self.pollable = pipe and self.compression is None
            if pipe:
                _widen_pipe(self._raw.fileno())
            self._source = self._raw if pipe else io.BufferedReader(self._raw, 1 << 20)
            counted = _Counted(self)
            if self.compression == "gzip":
                self.reader = gzip.GzipFile(fileobj=counted, mode="rb")
            elif self.compression == "zstd":
                self.reader = zstandard.ZstdDecompressor().stream_reader(counted, read_across_frames=True)
            elif self.compression == "xz":
                self.reader = lzma.LZMAFile(counted)
            elif self.compression == "bzip2":
                self.reader = bz2.BZ2File(counted)
            else:
                self.reader = counted
        except BaseException:
            self._raw.close()
            raise

    def consumed(self) -> int:
        return self._consumed

    def wait_readable(self, timeout_s: float) -> bool:
        """Whether a read would return now; only an uncompressed pipe can be asked (the others: always)."""
        return not self.pollable or bool(select.select([self._raw.fileno()], [], [], timeout_s)[0])

    def readinto(self, view) -> int:
        """Some decompressed bytes into ``view`` (at most one read of the file or pipe); 0 at the end."""
        return self.reader.readinto1(view) if hasattr(self.reader, "readinto1") else self.reader.readinto(view)

    def _read_raw(self, view) -> int:
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
        elif isinstance(self._source, io.BufferedReader):
            n = self._source.readinto1(view)
        else:
            n = self._source.readinto(view) or 0
        self._consumed += n
        return n

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self._raw.close()


F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), not named by Python 3.11's fcntl
PIPE_BYTES = 1 << 20


def _widen_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (Linux's default is 64 KiB): the writer and we then take turns 16 times less
    often. Where it is refused (not a pipe, over /proc/sys/fs/pipe-max-size) the pipe stays as it is."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass


class _Counted(io.RawIOBase):
    """The file's own bytes as the decompressor reads them (counted, after the few read to recognize it)."""

    def __init__(self, owner: Stream):
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._owner._read_raw(memoryview(b).cast("B"))

    readinto1 = readinto


class StreamWindow:
    """A window of a stream that only moves forward: ``capfile.FileWindow``'s interface for bytes that cannot
    be read at an offset."""

    def __init__(self, stream: Stream, stopped=lambda: False, window_bytes: int = WINDOW_BYTES):
        self.stream = stream
        self.stopped = stopped
        self.buf = np.empty(window_bytes, np.uint8)
        self.base, self.len = 0, 0
        self.eof = False
        self.stop_seen = False  # a stop request ended a wait: the stream is left where it is
        self.error: str | None = None  # what broke the stream, if it broke

    def fill(self, pos: int, need: int = 0) -> None:
        """Make the window start at ``pos`` (>= where it starts now) and hold at least ``need`` bytes, or the
        rest of the stream; then whatever else can be read without waiting, up to the window's size."""
        if pos < self.base:
            raise ValueError("a stream window cannot move back")
        skip = pos - (self.base + self.len)
        keep = max(0, -skip)
        size = max(self.buf.shape[0], need)
        at = pos - self.base
        if size > self.buf.shape[0]:
            grown = np.empty(size, np.uint8)
            grown[:keep] = self.buf[at:at + keep]
            self.buf = grown
        elif keep:
            self.buf[:keep] = self.buf[at:at + keep].copy()
        self.base, self.len = pos, keep
        while skip > 0 and not self.eof:  # never asked for: the walkers only move through what they read
            self.len = 0
            self._read(min(skip, size))
            skip -= self.len
            self.len = 0
        need = max(need, 1)
        while self.len < size and not self.eof:
            if self.len >= need and not self.stream.wait_readable(0):
                break  # enough for the next record, and a pipe has no more now: hand on what there is
            while self.len < need and not self.stream.wait_readable(WAIT_SLICE_S):
                if self.stopped():
                    self.stop_seen = True
                    return
            self._read(size)

    def _read(self, size: int) -> None:
        try:
            n = self.stream.readinto(memoryview(self.buf)[self.len:size])
        except STREAM_ERRORS as e:
            self.error = f"{e.__class__.__name__}: {e}" if str(e) else e.__class__.__name__
            n = 0
        if not n:
            self.eof = True
        self.len += n

    def args(self):
        """(bytes held, their stream offset, whether they reach the end of the stream)."""
        return self.buf[:self.len], self.base, self.eof

    def read_at(self, pos: int, n: int) -> bytes:
        """Up to n bytes at ``pos`` (>= the window's start), the window moved there if it must."""
        if pos + n > self.base + self.len:
            self.fill(pos, n)
        at = pos - self.base
        return self.buf[at:at + n].tobytes()


class StreamReader:
    """Batches of a classic pcap or pcapng stream as the decoder takes them: ``next()`` gives (window, meta,
    wire, interfaces: each packet's pcapng interface index, None for classic pcap) or None at its end (then
    ``damage()`` says whether it ended in damage)."""

    def __init__(self, stream: Stream, batch: int, stopped=lambda: False, window_bytes: int = WINDOW_BYTES):
        self.window = StreamWindow(stream, stopped, window_bytes)
        self.stream = stream
        head = self.window.read_at(0, 24)
        self.meta = np.zeros((batch, 4), np.uint32)
        self.wire = np.zeros(batch, np.uint32)
        self.iface = np.zeros(batch, np.uint16)
        self.interfaces: list[Interface] = []  # pcapng: those described before the first packet
        self._batch = batch
        self.status = ST_MORE
        self.unkeyable = 0  # packets whose time does not fit (pcapng: past 2106): counted as malformed
        if head[:4] in PCAP_MAGICS:
            self.pcapng = False
            self.swapped = PCAP_MAGICS[head[:4]]
            self.nanoseconds = head[:4] in NANOSECOND_MAGICS
            fields = struct.unpack(">II" if self.swapped else "<II", head[16:24])
            self.snap = fields[0] if 0 < fields[0] <= MAX_SNAPLEN else MAX_SNAPLEN
            self.datalink = fields[1] & 0x0FFFFFFF
            self.pos = 24
        elif head[:4] == PCAPNG_SHB:
            self.pcapng = True
            self.ifaces = np.zeros((MAX_INTERFACES, 3), np.int64)  # link type, ticks per second, snaplen
            self.state = np.zeros(4, np.int64)  # swapped, interfaces, link type of the first, unkeyable
            self.state[2] = -1
            self.pos = 0
            self.interfaces = describe_pcapng(self.window.read_at)
            if not self.interfaces:
                raise ValueError("no interface description before the first packet")
            self.datalink = self.interfaces[0].link_type
            self.snap = MAX_SNAPLEN
        else:
            raise ValueError("not a pcap or pcapng capture" if len(head) >= 4 else "empty")

    def next(self):
        while True:
            if self.window.stop_seen:
                self.status = ST_EOF
                return None
            win, base, at_eof = self.window.args()
            if not base <= self.pos < base + len(win):
                if at_eof and self.pos >= base + len(win):
                    self.status = ST_EOF if self.pos == base + len(win) else ST_DAMAGED
                    return None
                self.window.fill(self.pos, 16)
                continue
            if self.pcapng:
                n, status, pos = index_pcapng(win, base, at_eof, self.pos, self._batch, self.meta, self.wire,
                                              self.iface, self.ifaces, self.state)
                self.unkeyable = int(self.state[3])
            else:
                n, status, pos = index_records(win, base, at_eof, self.pos, 1 << 62, self.swapped, self.nanoseconds,
                                               self.snap, self._batch, self.meta, self.wire)
            if n:
                self.pos = pos
                return win, self.meta[:n], self.wire[:n], self.iface[:n] if self.pcapng else None
            if status == ST_MORE:  # the next record runs past the window: read on from its start
                self.pos = pos
                self.window.fill(self.pos, self._record_size(self.pos))
                continue
            self.status = status
            self.pos = pos
            return None

    def _record_size(self, pos: int) -> int:
        head = self.window.read_at(pos, 16)
        if len(head) < 16:
            return 16
        if self.pcapng:
            size = block_head(head[:12], bool(self.state[0]))[1]
            return max(12, min(size, MAX_RECORD_BYTES))
        return 16 + min(int.from_bytes(head[8:12], "big" if self.swapped else "little"), MAX_RECORD_BYTES)

    @property
    def position(self) -> int:
        """Bytes of the file or pipe consumed so far (compressed bytes for a compressed file)."""
        return self.stream.consumed()

    @property
    def offset(self) -> int:
        """Where the next record starts in the (decompressed) stream."""
        return self.pos

    def damage(self) -> str | None:
        """Once ``next()`` gave None: why the packets ended before the end of the stream, or None."""
        if self.window.error is not None:
            what = f"the {self.stream.compression} data breaks" if self.stream.compression else "reading it failed"
            return f"{what}: {self.window.error}"
        if self.status != ST_DAMAGED:
            return None
        return "the stream ends inside a record, or a header is impossible"

    def close(self) -> None:
        self.stream.close()
