"""Classic pcap files read straight from the file (no libpcap), whole or in packet-aligned chunks.

``ChunkReader`` reads the records of a file, or of a byte range of it, in batches, and the decoder works on the
packets where they lie in a window of the file (no copy), with libpcap's rules for such files (records longer
than the file's snaplen are handed on cut to it, a captured length over 262144 is damage, nanoseconds are
truncated to microseconds). One reader reads each file whole this way.

With ``--readers N`` the supervisor first walks each file's record headers (``plan``) and cuts the files into
chunks of about ``chunk_packets`` packets; reader ``k`` then reads chunks ``k, k + N, k + 2N, ...``. Workers take
the chunks in order (``ipc.ordered``), so every worker sees its packets in the order one reader would give them.

What a single reader would carry from one chunk into the next is made good here:

- the capture clock (running maximum of packet time): each chunk starts at 0 and the consumer folds in the
  maximum of the chunks before (``ipc.ordered``);
- the fragment table (first fragments that later ones join): the planner runs the decoder's fragment-only mode
  over the whole file and hands each chunk the table's entries that can still match one of its packets (an
  entry older than the chunk's earliest packet by more than the fragment lifetime never matches again, and is
  equivalent to a free slot).

Only classic pcap files (either byte order, micro- or nanoseconds) are read here; pcapng and pipes go through
libpcap, with one reader (``chunkable`` says why). Where a file ends in damage, ``plan`` yields a ``Damage`` after
the chunks that hold every complete record before it.
"""

import os
from dataclasses import dataclass

import numba
import numpy as np

from devourer import counters as CN
from devourer.packet import layout as L
from devourer.packet.capfile import (MAX_RECORD_BYTES, NANOSECOND_MAGICS, PCAP_MAGICS, ST_DAMAGED, ST_EOF,
                                      ST_MORE, ST_OK, FileWindow, _u32)
from devourer.packet.decode import FRAG_TTL_US, TN_WORDS, decode_batch, new_fragment_table

WINDOW_BYTES = 8 << 20
_NO_IFACES = np.zeros(0, np.uint16)  # planning keys nothing: the interface does not matter
MAX_SNAPLEN = 262144  # libpcap's max_snaplen_for_dlt() for every link type we decode


@numba.njit(cache=True)
def index_records(win, base, at_eof, pos, limit, swapped, nanoseconds, snap, want, meta, wire):
    """Up to ``want`` complete classic-pcap records from file position ``pos`` (< ``limit``), as the decoder takes
    them: meta rows (sec, usec, offset in ``win``, caplen) and wire lengths. ``win`` holds the file from ``base``.
    Returns (count, status, next position)."""
    end = min(base + win.shape[0], limit)
    n = 0
    while n < want:
        if pos >= limit or (pos == end and at_eof):
            return n, ST_EOF, pos
        if pos + 16 > end:
            return n, ST_DAMAGED if at_eof else ST_MORE, pos
        q = pos - base
        caplen = _u32(win, q + 8, swapped)
        if caplen > MAX_SNAPLEN:  # libpcap: "invalid packet capture length"
            return n, ST_DAMAGED, pos
        if pos + 16 + caplen > end:
            return n, ST_DAMAGED if at_eof or pos + 16 + caplen > limit else ST_MORE, pos
        frac = _u32(win, q + 4, swapped)
        meta[n, 0] = _u32(win, q, swapped)
        meta[n, 1] = frac // 1000 if nanoseconds else frac
        meta[n, 2] = q + 16
        meta[n, 3] = min(caplen, snap)  # libpcap hands on at most the file's snaplen of a longer record
        wire[n] = _u32(win, q + 12, swapped)  # what was on the wire, also where it is less than was captured
        pos += 16 + caplen
        n += 1
    return n, ST_OK, pos


@dataclass
class Chunk:
    """A byte range of one file holding whole records, and the fragment-table entries it starts with."""

    source: int  # index into the run's sources
    start: int
    end: int
    packets: int
    frag_slots: np.ndarray  # slot indexes of the fragment table ...
    frag_rows: np.ndarray  # ... and their contents


def _header(fd: int):
    """(swapped, nanoseconds, snap) of a classic pcap file, or None."""
    head = os.pread(fd, 24, 0)
    if len(head) < 24 or head[:4] not in PCAP_MAGICS:
        return None
    swapped = PCAP_MAGICS[head[:4]]
    snaplen = int.from_bytes(head[16:20], "big" if swapped else "little")
    return swapped, head[:4] in NANOSECOND_MAGICS, snaplen if 0 < snaplen <= MAX_SNAPLEN else MAX_SNAPLEN


def _record_size(fd: int, pos: int, swapped: bool) -> int:
    head = os.pread(fd, 16, pos)
    if len(head) < 16:
        return 16
    return 16 + min(int.from_bytes(head[8:12], "big" if swapped else "little"), MAX_RECORD_BYTES)


class _Walk:
    """Batches of records of [start, end) of a classic pcap file, decoded in place."""

    def __init__(self, path: str, start: int, end: int, batch: int):
        self.fd = os.open(path, os.O_RDONLY)
        size = os.fstat(self.fd).st_size
        self.end = min(end, size) if end else size
        header = _header(self.fd)
        if header is None:
            os.close(self.fd)
            raise ValueError("not a classic pcap file")
        self.swapped, self.nanoseconds, self.snap = header
        self.window = FileWindow(self.fd, size, WINDOW_BYTES)
        self.pos = max(start, 24)
        self.meta = np.zeros((batch, 4), np.uint32)
        self.wire = np.zeros(batch, np.uint32)
        self.status = ST_OK

    def next(self, want: int):
        """(window, meta, wire) of up to ``want`` records, or None at the end (``status`` says how it ended)."""
        while True:
            if self.pos >= self.end:
                self.status = ST_EOF
                return None
            win, base, at_eof = self.window.args()
            if not base <= self.pos < base + len(win):
                self.window.fill(self.pos)
                if self.window.len == 0:
                    self.status = ST_DAMAGED
                    return None
                continue
            n, status, pos = index_records(win, base, at_eof, self.pos, self.end, self.swapped, self.nanoseconds,
                                           self.snap, want, self.meta, self.wire)
            if n:
                self.pos = pos
                return win, self.meta[:n], self.wire[:n]
            if status == ST_MORE:  # the next record runs past the window: read on from its start
                self.window.fill(self.pos, _record_size(self.fd, self.pos, self.swapped))
                continue
            self.status = status
            return None

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Damage:
    """Where a file's records end in damage (the chunks before it hold every complete record)."""

    source: int
    offset: int


def chunkable(paths: list[str]) -> str | None:
    """None if every file can be cut into chunks, else why not (the run then reads with one reader)."""
    for path in paths:
        if path == "-" or not os.path.isfile(path):
            return f"{path} is not a regular file"
        with open(path, "rb") as f:
            if f.read(4) not in PCAP_MAGICS:
                return f"{path} is not classic pcap"
    return None


def plan(paths: list[str], datalinks: list[int], chunk_packets: int, batch: int = 4096, decap: bool = True):
    """Yield the chunks of these files in order (and a ``Damage`` where a file ends in damage). ``decap`` as
    the readers decode (``--decapsulate``): fragments inside tunnels are then the readers' too."""
    frag = new_fragment_table()
    counters = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
    clock = np.zeros(1, np.int64)
    records = L.empty_records(batch)
    worker_of = np.zeros(batch, np.int32)
    cand = np.zeros((batch + 1, 3), np.int64)
    tun = np.zeros(TN_WORDS, np.int64)
    r16, r32, r64 = records.view(np.uint16), records.view(np.uint32), records.view(np.uint64)
    for index, (path, datalink) in enumerate(zip(paths, datalinks)):
        walk = _Walk(path, 24, 0, batch)
        try:
            start, packets, min_ts = walk.pos, 0, None
            snapshot = _used(frag)
            while True:
                got = walk.next(min(batch, chunk_packets - packets))
                if got is not None:
                    win, meta, wire = got
                    ts = meta[:, 0].astype(np.int64) * 1_000_000 + meta[:, 1]
                    low = int(ts.min())
                    min_ts = low if min_ts is None else min(min_ts, low)
                    decode_batch(win, meta, wire, datalink, walk.snap, records, r16, r32, r64, worker_of, 1, frag,
                                 counters, clock, False, cand, tun, 0, _NO_IFACES, decap, True)
                    packets += len(meta)
                if got is None or packets >= chunk_packets:
                    if packets:
                        yield Chunk(index, start, walk.pos, packets, *_live(snapshot, min_ts))
                    if got is None:
                        break
                    start, packets, min_ts = walk.pos, 0, None
                    snapshot = _used(frag)
            if walk.status != ST_EOF:
                yield Damage(index, walk.pos)
        finally:
            walk.close()


def _used(frag: np.ndarray):
    slots = np.flatnonzero(frag[:, 4] >> np.uint64(63))
    return slots, frag[slots].copy()


def _live(snapshot, min_ts: int):
    """The entries a chunk whose earliest packet is at ``min_ts`` can still match."""
    slots, rows = snapshot
    keep = rows[:, 6].astype(np.int64) >= min_ts - FRAG_TTL_US
    return slots[keep], rows[keep]


class ChunkReader:
    """Reads the records of one chunk (or of a whole file) in batches: ``next()`` gives (data, meta, wire) or
    None at its end."""

    def __init__(self, path: str, chunk: Chunk | None, batch: int):
        self._walk = _Walk(path, 0, 0, batch) if chunk is None else _Walk(path, chunk.start, chunk.end, batch)
        self._batch = batch

    def next(self):
        return self._walk.next(self._batch)

    @property
    def position(self) -> int:
        return self._walk.pos

    def damage(self) -> str | None:
        """Once ``next()`` gave None: why the records ended before the end of the file, or None."""
        if self._walk.status != ST_DAMAGED:
            return None
        walk = self._walk
        left = walk.window.size - walk.pos
        if left < 16:
            return f"the file ends inside a record header: {left} of its 16 bytes are there"
        caplen = int.from_bytes(os.pread(walk.fd, 16, walk.pos)[8:12], "big" if walk.swapped else "little")
        if caplen > MAX_SNAPLEN:
            return f"invalid packet capture length {caplen}, bigger than {MAX_SNAPLEN}"
        return f"the file ends inside a record: {left - 16} of its {caplen} captured bytes are there"

    def close(self) -> None:
        self._walk.close()


def warm_up(planning: bool = False) -> None:
    """Compile (or load from numba's cache) the classic pcap indexer, and with ``planning`` the planner's
    fragment-only decoding (several readers), before the supervisor forks."""
    window = np.zeros(64, np.uint8)
    meta, wire = np.zeros((1, 4), np.uint32), np.zeros(1, np.uint32)
    index_records(window, 0, True, 0, 0, False, False, 262144, 1, meta, wire)
    if planning:
        records = L.empty_records(1)
        decode_batch(window, meta[:0], wire[:0], 1, 262144, records, records.view(np.uint16),
                     records.view(np.uint32), records.view(np.uint64), np.zeros(1, np.int32), 1,
                     new_fragment_table(16), np.zeros(CN.N_CAPTURE_COUNTERS, np.int64), np.zeros(1, np.int64),
                     False, np.zeros((2, 3), np.int64), np.zeros(TN_WORDS, np.int64), 0, _NO_IFACES, True, True)
