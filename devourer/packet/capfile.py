"""Wire lengths from capture-file record headers, read beside libpcap.

pcapy-ng's ``next_batch`` gives each packet's captured length but not its wire
length, and flows must count wire bytes exactly (the corpus has thousands of
records cut by a snaplen). For regular files we therefore read the record headers
ourselves, in step with libpcap, through a window of the file that we refill
with plain sequential reads (measured: a kernel copy of the file costs ~35 ms
per GB, while touching a memory map of it costs ~100 ns per packet in TLB and
cache misses).

Classic pcap (either byte order, micro- or nanoseconds): after libpcap delivered
a batch, the header positions follow from the captured lengths it returned, so
``gather`` only reads the wire length at each. When libpcap fails on a damaged
file it drops the whole batch, so ``recover`` rebuilds the complete records
before the damage from the file. pcapng (EPB, SPB and obsolete PB blocks, any
number of sections and interfaces) has options and padding in every block, so
its blocks are walked before libpcap reads them (``peek``/``commit``) and a batch
never extends past the last complete block.

Sources that cannot be read twice (pipes, stdin) have no walker; capture reads
them a packet at a time, with libpcap's own headers.
"""

import os
import stat

import numba
import numpy as np

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": False, b"\xa1\xb2\xc3\xd4": True,  # microseconds, LE / BE file
    b"\x4d\x3c\xb2\xa1": False, b"\xa1\xb2\x3c\x4d": True,  # nanoseconds
}
NANOSECOND_MAGICS = (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
MAX_RECORD_BYTES = 1 << 24  # a record claiming more than 16 MiB is damage, not a packet
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
def gather_pcap(win, base, at_eof, pos, swapped, caplens, start, wire_out):
    """Wire lengths of records start.. whose captured lengths libpcap returned.

    ``win`` holds file bytes from offset ``base``; ``at_eof`` says it reaches the
    end of the file. Returns (next record index, its position, status): ST_OK when
    all were read, ST_MORE when the window ended first, ST_DAMAGED when a header
    disagrees with libpcap."""
    n = caplens.shape[0]
    end = base + win.shape[0]
    i = start
    while i < n:
        if pos + 16 > end:
            return i, pos, ST_DAMAGED if at_eof else ST_MORE
        q = pos - base
        if _u32(win, q + 8, swapped) != caplens[i]:
            return i, pos, ST_DAMAGED
        wire_out[i] = max(_u32(win, q + 12, swapped), caplens[i])
        pos += 16 + np.int64(caplens[i])
        i += 1
    return i, pos, ST_OK


@numba.njit(cache=True)
def walk_pcap(win, base, at_eof, pos, swapped, want, start, wire_out, cap_out, end_out):
    """Walk classic-pcap records from ``pos`` until ``want`` are found (counting from
    ``start``). Returns (count, status); each found record is complete in the file."""
    end = base + win.shape[0]
    n = start
    while n < want:
        if pos == end and at_eof:
            return n, ST_EOF
        if pos + 16 > end:
            return n, ST_DAMAGED if at_eof else ST_MORE
        q = pos - base
        caplen = _u32(win, q + 8, swapped)
        wire = _u32(win, q + 12, swapped)
        if caplen > MAX_RECORD_BYTES:
            return n, ST_DAMAGED
        if pos + 16 + caplen > end:
            return n, ST_DAMAGED if at_eof else ST_MORE
        wire_out[n] = max(wire, caplen)
        cap_out[n] = caplen
        pos += 16 + caplen
        end_out[n] = pos
        n += 1
    return n, ST_OK


@numba.njit(cache=True)
def walk_pcapng(win, base, at_eof, pos, swapped_in, want, start, wire_out, cap_out, end_out, state_out):
    """Walk pcapng blocks from ``pos`` until ``want`` packet blocks are found (counting
    from ``start``). Non-packet blocks are skipped; a Section Header Block may switch
    byte order: ``state_out[1 + i]`` is the byte order in force after packet i, and
    ``state_out[0]`` after the last block walked. Returns (count, status, pos)."""
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
            wire_out[n] = max(wire, caplen)
            cap_out[n] = caplen
            end_out[n] = pos + blen
            state_out[1 + n] = swapped
            n += 1
        elif btype == 3:  # simple packet block: caplen is implied by the block length
            wire_out[n] = _u32(win, q + 8, swapped)
            cap_out[n] = 0  # unknown here; not cross-checked
            end_out[n] = pos + blen
            state_out[1 + n] = swapped
            n += 1
        pos += blen
    state_out[0] = swapped
    return n, ST_OK, pos


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
    """Reads one capture file's record headers in step with libpcap.

    ``gather(caplens)`` (classic pcap) returns the wire lengths of the records
    libpcap just delivered and moves past them. ``peek(k)`` finds up to k complete
    records after the current position without moving it; ``commit(m)`` moves past
    the first m of them. After a short peek, ``damaged`` tells whether the file ends
    in damage rather than cleanly, and ``damage_offset`` where."""

    def __init__(self, path: str, batch_packets: int):
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, 4, 0)
        self.is_pcapng = head == PCAPNG_SHB
        self._nanoseconds = head in NANOSECOND_MAGICS
        if self.is_pcapng:
            self._pos, self._swapped = 0, False
        else:
            self._swapped = PCAP_MAGICS[head]
            self._pos = 24
        self._win = FileWindow(self._fd, self._size)
        self._wire = np.zeros(batch_packets, np.uint32)
        self._cap = np.zeros(batch_packets, np.uint32)
        self._end = np.zeros(batch_packets, np.int64)
        self._state = np.zeros(batch_packets + 1, np.bool_)
        self.damaged = False
        self.damage_offset = -1

    @staticmethod
    def supports(path: str) -> bool:
        """True for a regular, non-empty file whose magic we know."""
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size < 24:
                return False
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError:
            return False
        return head in PCAP_MAGICS or head == PCAPNG_SHB

    # ---- classic pcap, after libpcap
    def gather(self, caplens: np.ndarray):
        """Wire lengths of the records libpcap just returned (moving past them), or
        None if the file's headers disagree with libpcap."""
        n = caplens.shape[0]
        if n > self._wire.shape[0]:
            self._wire = np.zeros(n, np.uint32)
        i, pos = 0, self._pos
        while True:
            win, base, at_eof = self._win.args()
            if not base <= pos <= base + len(win):
                self._win.fill(pos)
                continue
            i, pos, status = gather_pcap(win, base, at_eof, pos, self._swapped, caplens, i, self._wire)
            if status == ST_OK:
                self._pos = pos
                return self._wire[:n]
            if status == ST_DAMAGED:
                return None
            self._win.fill(pos)

    def recover(self, k: int):
        """After libpcap failed mid-batch: (data, meta, wire) of the complete records
        from the current position (at most k), read from the file, or None."""
        wire, caps = self.peek(k)
        n = len(wire)
        if n == 0:
            return None
        byteorder = "big" if self._swapped else "little"
        starts = [self._pos] + self._end[:n - 1].tolist()
        meta = np.zeros((n, 4), np.uint32)
        frames, offset = [], 0
        for i, s in enumerate(starts):
            head = os.pread(self._fd, 16, s)
            sec = int.from_bytes(head[0:4], byteorder)
            frac = int.from_bytes(head[4:8], byteorder)
            cap = int(caps[i])
            frames.append(os.pread(self._fd, cap, s + 16))
            meta[i] = (sec, frac // 1000 if self._nanoseconds else frac, offset, cap)
            offset += cap
        self.commit(n)
        return b"".join(frames), meta.tobytes(), wire.copy()

    # ---- walking ahead (pcapng, and recovery)
    def peek(self, k: int):
        """(wire_lens, cap_lens) of up to k complete records after the current position."""
        k = min(k, self._wire.shape[0])
        n, pos, swapped = 0, self._pos, self._swapped
        while True:
            win, base, at_eof = self._win.args()
            if not base <= pos <= base + len(win):
                self._win.fill(pos)
                continue
            if self.is_pcapng:
                n, status, pos = walk_pcapng(win, base, at_eof, pos, swapped, k, n, self._wire, self._cap, self._end,
                                             self._state)
                swapped = bool(self._state[0])
            else:
                n, status = walk_pcap(win, base, at_eof, pos, self._swapped, k, n, self._wire, self._cap, self._end)
                pos = int(self._end[n - 1]) if n else self._pos
            if status == ST_MORE:
                # the next record did not fit: read on from its start, big enough for it
                need = self._record_size(pos)
                self._win.fill(pos, need)
                if self._win.base + self._win.len < pos + need:  # the file ends inside it
                    status = ST_DAMAGED
                else:
                    continue
            if status == ST_DAMAGED:
                self.damaged = True
                self.damage_offset = int(self._end[n - 1]) if n else self._pos
            return self._wire[:n], self._cap[:n]

    def _record_size(self, pos: int) -> int:
        head = os.pread(self._fd, 12, pos)
        if len(head) < 12:
            return 16
        order = "big" if self._swapped else "little"
        if self.is_pcapng:
            return max(12, int.from_bytes(head[4:8], order)) if int.from_bytes(head[4:8], order) <= MAX_RECORD_BYTES else 12
        cap = int.from_bytes(head[8:12], order)
        return 16 + cap if cap <= MAX_RECORD_BYTES else 16

    def commit(self, m: int) -> None:
        if m <= 0:
            return
        self._pos = int(self._end[m - 1])
        if self.is_pcapng:
            self._swapped = bool(self._state[m])

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far (the start of the next record)."""
        return self._pos

    def close(self) -> None:
        os.close(self._fd)
