"""Directories of captures, as tcpdump's ``-C``/``-G`` rotation writes them: every capture in it, in the
order of its first packet.

``capture_files_in(dir)`` lists the regular files of a directory (not its sub-directories, not hidden
files) that start like a capture (classic pcap, pcapng) or a compressed file (``packet.streams``), ordered by
the time of their first packet and then by name, so ``-r /var/spool/pcap`` reads a rotation in the order it
was written whatever the names (``dump.pcap``, ``dump.pcap1``, ..., ``dump.pcap10`` sort wrongly as text).
A file whose first packet cannot be read (empty, damaged) sorts first: reading it reports what is wrong.
"""

import os
import struct

from devourer.packet.capfile import NANOSECOND_MAGICS, PCAP_MAGICS, PCAPNG_SHB
from devourer.packet.streams import Stream, compression_of

_NEVER = -1  # the sort key of a file without a readable first packet


def looks_like_a_capture(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return False
    return head[:4] in PCAP_MAGICS or head[:4] == PCAPNG_SHB or compression_of(head) is not None


def capture_files_in(directory: str) -> list[str]:
    """The captures of ``directory`` in the order of their first packet (then by name)."""
    paths = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            if looks_like_a_capture(entry.path):
                paths.append(entry.path)
    return sorted(paths, key=lambda p: (first_packet_time(p), p))


def first_packet_time(path: str) -> int:
    """Microseconds since the epoch of the first packet of a capture (compressed too), or -1."""
    try:
        stream = Stream(path)
    except OSError:
        return _NEVER
    try:
        return _first_time(_Prefix(stream))
    except (OSError, EOFError, ValueError, struct.error):
        return _NEVER
    finally:
        stream.close()


class _Prefix:
    """The first bytes of a stream, read as far as they are asked for."""

    def __init__(self, stream: Stream):
        self.stream, self.data = stream, bytearray()

    def at(self, pos: int, n: int) -> bytes:
        while len(self.data) < pos + n:
            chunk = bytearray(max(65536, pos + n - len(self.data)))
            got = self.stream.readinto(memoryview(chunk))
            if not got:
                raise EOFError
            self.data += chunk[:got]
        return bytes(self.data[pos:pos + n])


def _first_time(prefix: _Prefix) -> int:
    head = prefix.at(0, 24)
    if head[:4] in PCAP_MAGICS:
        order = ">" if PCAP_MAGICS[head[:4]] else "<"
        sec, frac = struct.unpack(order + "II", prefix.at(24, 8))
        return sec * 1_000_000 + (frac // 1000 if head[:4] in NANOSECOND_MAGICS else frac)
    if head[:4] != PCAPNG_SHB:
        return _NEVER
    order, pos, resolution = "<", 0, []
    for _ in range(10_000):  # blocks before the first packet
        btype_raw = prefix.at(pos, 12)
        if btype_raw[:4] == PCAPNG_SHB:
            order = "<" if btype_raw[8:10] == b"\x4d\x3c" else ">"
            resolution = []
        btype, blen = struct.unpack(order + "II", btype_raw[:8])
        if blen < 12:
            return _NEVER
        if btype == 1:
            resolution.append(_tsresol(prefix.at(pos, blen), order))
        elif btype in (2, 6):
            body = prefix.at(pos + 8, 12)
            iface = struct.unpack(order + ("H" if btype == 2 else "I"), body[:2 if btype == 2 else 4])[0]
            hi, lo = struct.unpack(order + "II", body[4:12])
            if iface >= len(resolution) or not resolution[iface]:
                return _NEVER
            ticks, per_second = hi << 32 | lo, resolution[iface]
            return ticks * 1_000_000 // per_second
        elif btype == 3:
            return 0  # a simple packet block has no time
        pos += blen
    return _NEVER


def _tsresol(block: bytes, order: str) -> int:
    """Ticks per second of an Interface Description Block (if_tsresol; microseconds without it)."""
    at, end = 16, len(block) - 4
    while at + 4 <= end:
        code, length = struct.unpack(order + "HH", block[at:at + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = block[at + 4]
            return 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
        at += 4 + (length + 3) // 4 * 4
    return 1_000_000
