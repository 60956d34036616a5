"""Wire lengths from capture-file record headers, read beside libpcap.

pcapy-ng's ``next_batch`` gives each packet's captured length but not its wire
length, and flows must count wire bytes exactly (the corpus has thousands of
records cut by a snaplen). For regular files we therefore walk the record headers
ourselves over an mmap of the same file, in lockstep with libpcap: classic pcap
(either byte order, micro- or nanosecond) and pcapng (EPB, SPB and obsolete PB
blocks, any number of sections and interfaces).

The walk also finds where a damaged file stops holding complete records, so
capture asks libpcap for exactly the complete ones and never loses the records
before the damage (libpcap's ``next_batch`` raises and drops the whole batch).
Sources that cannot be mapped (pipes, stdin) have no walker; their wire length is
taken from the IP header where the packet was cut (see ``packet.decode``).
"""

import mmap
import os
import stat

import numba
import numpy as np

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": False, b"\xa1\xb2\xc3\xd4": True,  # microseconds, LE / BE file
    b"\x4d\x3c\xb2\xa1": False, b"\xa1\xb2\x3c\x4d": True,  # nanoseconds
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
MAX_RECORD_BYTES = 1 << 24
RELEASE_EVERY_BYTES = 32 << 20  # a record claiming more than 16 MiB is damage, not a packet

ST_OK = 0
ST_EOF = 1
ST_DAMAGED = 2


@numba.njit(cache=True, inline="always")
def _u32(buf, pos, swapped):
    if swapped:
        return (np.uint32(buf[pos]) << 24) | (np.uint32(buf[pos + 1]) << 16) | (np.uint32(buf[pos + 2]) << 8) | np.uint32(buf[pos + 3])
    return (np.uint32(buf[pos + 3]) << 24) | (np.uint32(buf[pos + 2]) << 16) | (np.uint32(buf[pos + 1]) << 8) | np.uint32(buf[pos])


@numba.njit(cache=True)
def walk_pcap(buf, pos, swapped, want, wire_out, cap_out, end_out):
    """Walk up to ``want`` classic-pcap records from ``pos``.

    Returns (count, status): status ST_OK when ``want`` were found, ST_EOF at a
    clean end of file, ST_DAMAGED when the file ends inside a record or a record
    header is impossible."""
    size = buf.shape[0]
    n = 0
    while n < want:
        if pos == size:
            return n, ST_EOF
        if pos + 16 > size:
            return n, ST_DAMAGED
        caplen = _u32(buf, pos + 8, swapped)
        wire = _u32(buf, pos + 12, swapped)
        if caplen > MAX_RECORD_BYTES or pos + 16 + caplen > size:
            return n, ST_DAMAGED
        wire_out[n] = max(wire, caplen)
        cap_out[n] = caplen
        pos += 16 + caplen
        end_out[n] = pos
        n += 1
    return n, ST_OK


@numba.njit(cache=True)
def walk_pcapng(buf, pos, swapped_in, want, wire_out, cap_out, end_out, state_out):
    """Walk pcapng blocks from ``pos`` until ``want`` packet blocks were found.

    Non-packet blocks are skipped; a Section Header Block may switch byte order,
    which is returned in ``state_out[0]`` as of the end of each packet in
    ``state_out[1 + i]`` (so the caller can commit any prefix). Returns (count, status)."""
    size = buf.shape[0]
    swapped = swapped_in
    n = 0
    while n < want:
        if pos == size:
            return n, ST_EOF
        if pos + 12 > size:
            return n, ST_DAMAGED
        btype_le = _u32(buf, pos, False)
        if btype_le == 0x0A0D0D0A:  # section header: byte-order magic decides
            if pos + 12 > size:
                return n, ST_DAMAGED
            swapped = not (buf[pos + 8] == 0x4D and buf[pos + 9] == 0x3C)
        btype = _u32(buf, pos, swapped)
        blen = _u32(buf, pos + 4, swapped)
        if blen < 12 or blen % 4 != 0 or blen > MAX_RECORD_BYTES or pos + blen > size:
            return n, ST_DAMAGED
        if btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if blen < 32:
                return n, ST_DAMAGED
            caplen = _u32(buf, pos + 20, swapped)
            wire = _u32(buf, pos + 24, swapped)
            if 28 + caplen > blen:
                return n, ST_DAMAGED
            wire_out[n] = max(wire, caplen)
            cap_out[n] = caplen
            end_out[n] = pos + blen
            state_out[1 + n] = swapped
            n += 1
        elif btype == 3:  # simple packet block: caplen is implied by the block length
            wire = _u32(buf, pos + 8, swapped)
            wire_out[n] = wire
            cap_out[n] = 0  # unknown here; not cross-checked
            end_out[n] = pos + blen
            state_out[1 + n] = swapped
            n += 1
        pos += blen
    state_out[0] = swapped
    return n, ST_OK


class RecordWalker:
    """Walks one capture file's record headers in step with libpcap.

    ``peek(k)`` finds up to k complete packet records after the committed position
    without moving it; ``commit(m)`` moves past the first m of them once libpcap has
    delivered them. ``damaged`` tells, after a short peek, whether the file ends
    in damage rather than cleanly."""

    def __init__(self, path: str, batch_packets: int):
        self._file = open(path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._buf = np.frombuffer(self._map, np.uint8)
        head = bytes(self._buf[:4])
        self.is_pcapng = head == PCAPNG_SHB
        if self.is_pcapng:
            self._pos, self._swapped = 0, False
        else:
            self._swapped = PCAP_MAGICS[head]
            self._pos = 24
        self._wire = np.zeros(batch_packets, np.uint32)
        self._cap = np.zeros(batch_packets, np.uint32)
        self._end = np.zeros(batch_packets, np.int64)
        self._state = np.zeros(batch_packets + 1, np.bool_)
        self._peeked = 0
        self._released = 0
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

    def peek(self, k: int):
        """Return (wire_lens, cap_lens) views for up to k complete records."""
        k = min(k, self._wire.shape[0])
        if self.is_pcapng:
            n, status = walk_pcapng(self._buf, self._pos, self._swapped, k, self._wire, self._cap, self._end, self._state)
        else:
            n, status = walk_pcap(self._buf, self._pos, self._swapped, k, self._wire, self._cap, self._end)
        if status == ST_DAMAGED and n < k:
            self.damaged = True
            self.damage_offset = int(self._end[n - 1]) if n else self._pos
        self._peeked = n
        return self._wire[:n], self._cap[:n]

    def commit(self, m: int) -> None:
        if m <= 0:
            return
        self._pos = int(self._end[m - 1])
        if self.is_pcapng:
            self._swapped = bool(self._state[m])
        if self._pos - self._released >= RELEASE_EVERY_BYTES:
            # Pages already walked are still page cache, but would count in our RSS
            # until the map closes; drop them from this process as we go.
            upto = self._pos & ~(mmap.PAGESIZE - 1)
            self._map.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto

    def close(self) -> None:
        self._buf = None
        try:
            self._map.close()
        except BufferError:  # a view is still alive somewhere; the OS unmaps at exit
            pass
        self._file.close()
