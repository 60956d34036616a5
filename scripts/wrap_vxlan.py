#!/usr/bin/env python3
"""Wrap every frame of a classic pcap in Ethernet/IPv4/UDP/VXLAN, as a cloud traffic mirror delivers it.

    .venv/bin/python scripts/wrap_vxlan.py bench-data/medium.pcap bench-data/medium-vxlan.pcap

Each frame becomes the payload of a VXLAN packet (VNI 4242) from one VTEP to
another (192.0.2.1 -> 192.0.2.2, UDP to 4789, source port from the frame's
length, as a VTEP spreads its flows), the wire and captured lengths grown by the
50 bytes of the outer headers. The benchmark of the decapsulation (README,
Encapsulations) runs devourer on the result beside the plain capture: the same
inner flows, one more tunnel to open per packet.
"""

import struct
import sys

OUTER = 14 + 20 + 8 + 8


def _outer(frame_len: int) -> bytes:
    udp_len = 8 + 8 + frame_len
    ip_len = 20 + udp_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 0, 0x4000, 64, 17, 0, bytes([192, 0, 2, 1]),
                     bytes([192, 0, 2, 2]))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF) + ip[12:]
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    udp = struct.pack("!HHHH", 49152 + frame_len % 16384, 4789, udp_len, 0)
    return eth + ip + udp + struct.pack("!B3xI", 0x08, 4242 << 8)


def main(src: str, dst: str) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        head = f.read(24)
        if head[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            sys.exit(f"{src}: not a little-endian classic pcap")
        out.write(head[:16] + struct.pack("<I", struct.unpack_from("<I", head, 16)[0] + OUTER) + head[20:])
        cache: dict[int, bytes] = {}
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                break
            sec, usec, cap, wire = struct.unpack("<IIII", rec)
            frame = f.read(cap)
            outer = cache.get(wire)
            if outer is None:
                outer = cache[wire] = _outer(wire)
            out.write(struct.pack("<IIII", sec, usec, cap + OUTER, wire + OUTER) + outer + frame)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
