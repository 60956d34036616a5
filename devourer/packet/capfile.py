"""Capture files read beside libpcap, or instead of it.

pcapy-ng's ``next_batch`` gives each packet's captured length but not its wire length, and flows must count
wire bytes exactly (the corpus has thousands of records cut by a snaplen). So the record headers are read here,
through a window of the file refilled with plain sequential reads (``FileWindow``; measured: a kernel copy of
the file costs ~35 ms per GB, while touching a memory map of it costs ~100 ns per packet in TLB and cache
misses).

Classic pcap files are not read through libpcap at all: ``packet.chunks`` decodes their packets where they lie
in the window. pcapng files (EPB, SPB and obsolete PB blocks, any number of sections and interfaces) go through
libpcap, and ``RecordWalker`` walks their blocks before libpcap reads them (``peek``/``commit``), so a batch never
extends past the last complete block. Sources that cannot be read twice (pipes, stdin, compressed files) are
streams (``packet.streams``): classic pcap in them is indexed by ``packet.chunks``, pcapng by ``index_pcapng``
here, which refuses what libpcap refuses (a packet on an interface never described, a second link type, a
section in the other byte order).
"""

import os
import stat
import struct
from dataclasses import dataclass

import numba
import numpy as np

from devourer.flow.key import MAX_INTERFACES  # interface descriptions a pcapng section may hold (more: damage)

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": False, b"\xa1\xb2\xc3\xd4": True,  # microseconds, LE / BE file
    b"\x4d\x3c\xb2\xa1": False, b"\xa1\xb2\x3c\x4d": True,  # nanoseconds
}
NANOSECOND_MAGICS = (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
MAX_RECORD_BYTES = 1 << 24  # a record claiming more than 16 MiB is damage, not a packet
MAX_DESCRIBED_BLOCKS = 4096  # blocks ``describe_pcapng`` looks at before the first packet
WINDOW_BYTES = 4 << 20

ST_OK = 0  # found what was asked
ST_EOF = 1  # clean end of file
ST_DAMAGED = 2  # the file ends inside a record, or a header is impossible
ST_MORE = 3  # the window ends: refill from the returned position and call again


@numba.njit(cache=True, inline="always")
def _u32(buf, pos, swapped):
    if swapped:
        return (np.uint32(buf[pos]) << 24) | (np.uint32(buf[pos + 1]) << 16) | (np.uint32(buf[pos + 2]) << 8) | np.uint32(buf[pos + 3])
    return (np.uint32(buf[pos + 3]) << 24) | (np.uint32(buf[pos + 2]) << 16) | (np.uint32(buf[pos + 1]) << 8) | np.uint32(buf[pos])


@numba.njit(cache=True)
def walk_pcapng(win, base, at_eof, pos, swapped_in, want, start, wire_out, cap_out, end_out, iface_out, state_out):
    """Walk pcapng blocks from ``pos`` until ``want`` packet blocks are found (counting
    from ``start``), with each one's interface (its section's index) in ``iface_out``. Non-packet blocks are
    skipped; a Section Header Block may switch byte order: ``state_out[1 + i]`` is the byte order in force
    after packet i, and ``state_out[0]`` after the last block walked. Returns (count, status, pos)."""
    end = base + win.shape[0]
    swapped = swapped_in
    n = start
    while n < want:
        if pos == end and at_eof:
            state_out[0] = swapped
            return n, ST_EOF, pos
        if pos + 12 > end:
            state_out[0] = swapped
            return n, ST_DAMAGED if at_eof else ST_MORE, pos
        q = pos - base
        new_swapped = swapped
        if _u32(win, q, False) == 0x0A0D0D0A:  # section header: its byte-order magic decides
            new_swapped = not (win[q + 8] == 0x4D and win[q + 9] == 0x3C)
        btype = _u32(win, q, new_swapped)
        blen = _u32(win, q + 4, new_swapped)
        if blen < 12 or blen % 4 != 0 or blen > MAX_RECORD_BYTES:
            state_out[0] = swapped
            return n, ST_DAMAGED, pos
        if pos + blen > end:
            state_out[0] = swapped
            return n, ST_DAMAGED if at_eof else ST_MORE, pos
        swapped = new_swapped
        if btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if blen < 32:
                state_out[0] = swapped
                return n, ST_DAMAGED, pos
            caplen = _u32(win, q + 20, swapped)
            wire = _u32(win, q + 24, swapped)
            if 28 + caplen > blen:
                state_out[0] = swapped
                return n, ST_DAMAGED, pos
            wire_out[n] = wire  # also where it is less than was captured (bytes captured past the frame)
            cap_out[n] = caplen
            if btype == 6:
                iface_out[n] = min(_u32(win, q + 8, swapped), np.uint32(0xFFFF))
            else:
                iface_out[n] = (np.uint16(win[q + 8]) << 8 | np.uint16(win[q + 9])) if swapped else (
                    np.uint16(win[q + 9]) << 8 | np.uint16(win[q + 8]))
            end_out[n] = pos + blen
            state_out[1 + n] = swapped
            n += 1
        elif btype == 3:  # simple packet block: caplen is implied by the block length
            wire_out[n] = _u32(win, q + 8, swapped)
            cap_out[n] = 0  # unknown here; not cross-checked
            iface_out[n] = 0
            end_out[n] = pos + blen
            state_out[1 + n] = swapped
            n += 1
        pos += blen
    state_out[0] = swapped
    return n, ST_OK, pos


@numba.njit(cache=True)
def idb_option(win, q, blen, swapped, wanted):
    """Where the option ``wanted`` of the Interface Description Block at q lies: (offset of its value, its
    length), or (-1, 0) when the block has none. The one walk over an IDB's options (pcapng's TLVs, each
    padded to 4 bytes, ended by opt_endofopt or the block)."""
    at = q + 16
    end = q + blen - 4
    while at + 4 <= end:
        code = (np.int64(win[at + 1]) << 8 | np.int64(win[at])) if not swapped else (np.int64(win[at]) << 8 | np.int64(win[at + 1]))
        length = (np.int64(win[at + 3]) << 8 | np.int64(win[at + 2])) if not swapped else (np.int64(win[at + 2]) << 8 | np.int64(win[at + 3]))
        if code == 0:
            break
        if code == wanted:
            return at + 4, min(length, end - at - 4)
        at += 4 + ((length + 3) // 4) * 4
    return np.int64(-1), np.int64(0)


OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9


@numba.njit(cache=True)
def _ticks_per_second(win, q, blen, swapped):
    """if_tsresol of the Interface Description Block at q (default microseconds), as ticks per second; 0 when
    it cannot be used (finer than 10^-18 or 2^-62)."""
    at, length = idb_option(win, q, blen, swapped, OPT_IF_TSRESOL)
    if at < 0 or length < 1:
        return np.int64(1_000_000)
    v = np.int64(win[at])
    if v & 0x80:
        return np.int64(1) << (v & 0x7F) if (v & 0x7F) <= 62 else np.int64(0)
    if v > 18:
        return np.int64(0)
    t = np.int64(1)
    for _ in range(v):
        t *= 10
    return t


@numba.njit(cache=True)
def index_pcapng(win, base, at_eof, pos, want, meta, wire, iface_out, ifaces, state):
    """Up to ``want`` packets of a pcapng stream from position ``pos``, as the decoder takes them: meta rows
    (sec, usec, offset in ``win``, caplen), wire lengths and interfaces (their section's index; EPB, SPB and
    obsolete PB blocks). ``win`` holds the
    stream from ``base``. ``ifaces`` rows (link type, ticks per second, snaplen) and ``state`` (byte order,
    interfaces in this section, the stream's link type, packets whose time does not fit: counted apart) are
    carried from call to call. An interface of another link type than the first, or a packet on an interface
    never described, is damage (libpcap refuses both). Returns (count, status, next position)."""
    end = base + win.shape[0]
    n = 0
    while n < want:
        if pos == end and at_eof:
            return n, ST_EOF, pos
        if pos + 12 > end:
            return n, ST_DAMAGED if at_eof else ST_MORE, pos
        q = pos - base
        swapped = state[0] != 0
        is_shb = _u32(win, q, False) == 0x0A0D0D0A
        if is_shb:
            if pos + 12 > end:
                return n, ST_DAMAGED if at_eof else ST_MORE, pos
            swapped = not (win[q + 8] == 0x4D and win[q + 9] == 0x3C)
        btype = _u32(win, q, swapped)
        blen = np.int64(_u32(win, q + 4, swapped))
        if blen < 12 or blen % 4 != 0 or blen > MAX_RECORD_BYTES:
            return n, ST_DAMAGED, pos
        if pos + blen > end:
            return n, ST_DAMAGED if at_eof else ST_MORE, pos
        if is_shb:
            if state[2] >= 0 and swapped != (state[0] != 0):  # libpcap refuses a section in the other byte order
                return n, ST_DAMAGED, pos
            state[0] = 1 if swapped else 0
            state[1] = 0  # a new section describes its interfaces again
        elif btype == 1:  # interface description
            if blen < 20 or state[1] >= ifaces.shape[0]:
                return n, ST_DAMAGED, pos
            link = np.int64(_u32(win, q + 8, swapped) & np.uint32(0xFFFF)) if not swapped else np.int64(
                (np.uint32(win[q + 8]) << 8) | np.uint32(win[q + 9]))
            tps = _ticks_per_second(win, q, blen, swapped)
            if tps == 0 or (state[2] >= 0 and link != state[2]):
                return n, ST_DAMAGED, pos
            state[2] = link
            k = state[1]
            ifaces[k, 0] = link
            ifaces[k, 1] = tps
            ifaces[k, 2] = np.int64(_u32(win, q + 12, swapped))
            state[1] += 1
        elif btype == 6 or btype == 2 or btype == 3:
            if btype == 3:  # simple packet block: interface 0, no time, caplen from the block length
                if blen < 16 or state[1] < 1:
                    return n, ST_DAMAGED, pos
                length = np.int64(_u32(win, q + 8, swapped))
                caplen = min(length, blen - 16)
                snap = ifaces[0, 2]
                if snap > 0:
                    caplen = min(caplen, snap)
                ticks = np.uint64(0)
                iface = 0
                data_at = q + 12
            else:
                if blen < 32:
                    return n, ST_DAMAGED, pos
                if btype == 6:
                    iface = np.int64(_u32(win, q + 8, swapped))
                else:
                    iface = (np.int64(win[q + 8]) << 8 | np.int64(win[q + 9])) if swapped else (
                        np.int64(win[q + 9]) << 8 | np.int64(win[q + 8]))
                ticks = (np.uint64(_u32(win, q + 12, swapped)) << np.uint64(32)) | np.uint64(_u32(win, q + 16, swapped))
                caplen = np.int64(_u32(win, q + 20, swapped))
                length = np.int64(_u32(win, q + 24, swapped))
                data_at = q + 28
                if 28 + caplen > blen:
                    return n, ST_DAMAGED, pos
            if iface >= state[1]:
                return n, ST_DAMAGED, pos
            tps = np.uint64(ifaces[iface, 1])
            sec = ticks // tps
            frac = ticks % tps
            if sec > np.uint64(0xFFFFFFFF):
                state[3] += 1
            else:
                meta[n, 0] = np.uint32(sec)
                if tps >= np.uint64(1_000_000) and tps % np.uint64(1_000_000) == 0:
                    meta[n, 1] = np.uint32(frac // (tps // np.uint64(1_000_000)))
                else:
                    meta[n, 1] = np.uint32(np.float64(frac) * 1e6 / np.float64(tps))
                meta[n, 2] = data_at
                meta[n, 3] = caplen
                wire[n] = length
                iface_out[n] = iface
                n += 1
        pos += blen
    return n, ST_OK, pos


@dataclass(frozen=True)
class Interface:
    """A pcapng Interface Description Block: its link type and its if_name (None when it has none)."""

    link_type: int
    name: str | None


def block_head(head: bytes, swapped: bool) -> tuple[int, int, bool]:
    """The type and total length of the pcapng block whose first 12 bytes are ``head``, in the byte order of
    its section (``swapped``: big-endian), and that order after it: a Section Header Block sets it by its
    byte-order magic."""
    if head[:4] == PCAPNG_SHB:
        swapped = head[8:12] != b"\x4d\x3c\x2b\x1a"
    order = ">" if swapped else "<"
    btype, blen = struct.unpack(order + "II", head[:8])
    return btype, blen, swapped


def describe_pcapng(read_at) -> list[Interface]:
    """The interfaces a pcapng capture's first section describes before its first packet, in order (their
    indexes are the packets' interface ids), read with ``read_at(position, size) -> bytes``. Stops at the
    first packet block, a second section, the end or anything impossible: what was found so far."""
    found: list[Interface] = []
    pos, swapped = 0, False
    for _ in range(MAX_DESCRIBED_BLOCKS):
        head = read_at(pos, 12)
        if len(head) < 12:
            break
        if head[:4] == PCAPNG_SHB and pos:
            break
        btype, blen, swapped = block_head(head, swapped)
        order = ">" if swapped else "<"
        if blen < 12 or blen % 4 or blen > MAX_RECORD_BYTES or btype in (2, 3, 6):
            break
        if btype == 1:
            block = read_at(pos, blen)
            if len(block) < max(blen, 20) or len(found) >= MAX_INTERFACES:
                break
            found.append(Interface(struct.unpack(order + "H", block[8:10])[0], _if_name(block, order)))
        pos += blen
    return found


def _if_name(block: bytes, order: str) -> str | None:
    """The if_name option of an Interface Description Block, or None."""
    at, length = idb_option(np.frombuffer(block, np.uint8), 0, len(block), order == ">", OPT_IF_NAME)
    if at < 0:
        return None
    return block[at:at + length].split(b"\0", 1)[0].decode("utf-8", "replace") or None


def describe_pcapng_file(path: str) -> list[Interface]:
    """``describe_pcapng`` of a file, read through one descriptor."""
    with open(path, "rb") as f:
        return describe_pcapng(lambda pos, size: os.pread(f.fileno(), size, pos))


class FileWindow:
    """Sequential reads of one file into a reusable buffer (a kernel copy is cheaper than touching a map)."""

    def __init__(self, fd: int, size: int, window_bytes: int = WINDOW_BYTES):
        self.fd, self.size = fd, size
        self.buf = np.empty(window_bytes, np.uint8)
        self.base, self.len = 0, 0

    def fill(self, pos: int, need: int = 0) -> None:
        """Make the window start at ``pos`` (and hold at least ``need`` bytes when the file has them)."""
        if need > self.buf.shape[0]:
            self.buf = np.empty(need, np.uint8)
        want = min(self.buf.shape[0], self.size - pos)
        view = memoryview(self.buf)[:want]
        got = 0
        while got < want:
            n = os.preadv(self.fd, [view[got:]], pos + got)
            if n == 0:
                break
            got += n
        self.base, self.len = pos, got

    def args(self):
        """(bytes held, their file offset, whether they reach the end of the file), as the walkers take them."""
        return self.buf[:self.len], self.base, self.base + self.len >= self.size


class RecordWalker:
    """Walks one pcapng file's blocks ahead of libpcap.

    ``peek(k)`` finds up to k complete packet blocks after the current position without moving it;
    ``commit(m)`` moves past the first m of them. After a short peek, ``damaged`` tells whether the file ends
    in damage rather than cleanly, and ``damage_offset`` where."""

    def __init__(self, path: str, batch_packets: int):
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size
        self._pos, self._swapped = 0, False
        self._win = FileWindow(self._fd, self._size)
        self._wire = np.zeros(batch_packets, np.uint32)
        self._cap = np.zeros(batch_packets, np.uint32)
        self._end = np.zeros(batch_packets, np.int64)
        self._iface = np.zeros(batch_packets, np.uint16)
        self._state = np.zeros(batch_packets + 1, np.bool_)
        self.damaged = False
        self.damage_offset = -1

    @staticmethod
    def supports(path: str) -> bool:
        """True for a regular pcapng file."""
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return False
            with open(path, "rb") as f:
                return f.read(4) == PCAPNG_SHB
        except OSError:
            return False

    def peek(self, k: int):
        """(wire_lens, cap_lens, interfaces) of up to k complete packet blocks after the current position."""
        k = min(k, self._wire.shape[0])
        n, pos, swapped = 0, self._pos, self._swapped
        while True:
            win, base, at_eof = self._win.args()
            if not base <= pos <= base + len(win):
                self._win.fill(pos)
                continue
            n, status, pos = walk_pcapng(win, base, at_eof, pos, swapped, k, n, self._wire, self._cap, self._end,
                                         self._iface, self._state)
            swapped = bool(self._state[0])
            if status == ST_MORE:
                # the next block did not fit: read on from its start, big enough for it
                need = self._block_size(pos)
                self._win.fill(pos, need)
                if self._win.base + self._win.len < pos + need:  # the file ends inside it
                    status = ST_DAMAGED
                else:
                    continue
            if status == ST_DAMAGED:
                self.damaged = True
                self.damage_offset = int(self._end[n - 1]) if n else self._pos
            return self._wire[:n], self._cap[:n], self._iface[:n]

    def _block_size(self, pos: int) -> int:
        head = os.pread(self._fd, 12, pos)
        if len(head) < 12:
            return 16
        size = int.from_bytes(head[4:8], "big" if self._swapped else "little")
        return max(12, size) if size <= MAX_RECORD_BYTES else 12

    def commit(self, m: int) -> None:
        if m <= 0:
            return
        self._pos = int(self._end[m - 1])
        self._swapped = bool(self._state[m])

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far (the start of the next block)."""
        return self._pos

    def close(self) -> None:
        os.close(self._fd)


def warm_up() -> None:
    """Compile (or load from numba's cache) the pcapng walker before the supervisor forks capture."""
    window = np.zeros(64, np.uint8)
    out32, out64, state = np.zeros(1, np.uint32), np.zeros(1, np.int64), np.zeros(2, np.bool_)
    walk_pcapng(window, 0, True, 0, False, 1, 0, out32, out32.copy(), out64, np.zeros(1, np.uint16), state)
