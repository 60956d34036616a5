"""Directories of captures, as tcpdump's ``-C``/``-G`` rotation writes them: every capture in it, in the
order of its first packet.

``capture_files_in(dir)`` lists the regular files of a directory (not its sub-directories, not hidden
files) that start like a capture (classic pcap, pcapng) or a compressed file (``packet.streams``), ordered by
the time of their first packet and then by name, so ``-r /var/spool/pcap`` reads a rotation in the order it
was written whatever the names (``dump.pcap``, ``dump.pcap1``, ..., ``dump.pcap10`` sort wrongly as text).
A file whose first packet cannot be read (empty, damaged) sorts first: reading it reports what is wrong.
"""

import os

from devourer.packet.capfile import PCAP_MAGICS, PCAPNG_SHB
from devourer.packet.streams import STREAM_ERRORS, Stream, StreamReader, compression_of

_NEVER = -1  # the sort key of a file without a readable first packet
FIRST_PACKET_WINDOW = 64 << 10  # bytes decompressed at a time to find it (the window grows for a larger block)


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
        batch = StreamReader(stream, 1, window_bytes=FIRST_PACKET_WINDOW).next()
    except (*STREAM_ERRORS, ValueError):
        batch = None
    finally:
        stream.close()
    if batch is None:
        return _NEVER
    _, meta, _, _ = batch
    return int(meta[0, 0]) * 1_000_000 + int(meta[0, 1])
