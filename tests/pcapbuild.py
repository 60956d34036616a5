"""Builds real packet bytes and pcap files for tests (Ethernet/802.1Q, IPv4/IPv6, TCP/UDP/ICMP)."""

import ipaddress
import struct


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def ethernet(src_mac: str, dst_mac: str, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    head = mac(dst_mac) + mac(src_mac)
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    frame = head + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1, frag_offset: int = 0, more_frags: bool = False,
         options: bytes = b"", total_len: int | None = None) -> bytes:
    ihl = 5 + len(options) // 4
    flags = (0x2000 if more_frags else 0) | (frag_offset // 8)
    length = total_len if total_len is not None else ihl * 4 + len(payload)
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, ident, flags, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + options
    head = head[:10] + struct.pack("!H", _csum(head)) + head[12:]
    return head + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def tcp(sport: int, dport: int, flags: int = 0x10, payload: bytes = b"", seq: int = 0) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def vxlan(vni: int, frame: bytes) -> bytes:
    """A VXLAN header (I flag, the VNI) and the Ethernet frame it carries: a UDP payload for port 4789."""
    return struct.pack("!B3xI", 0x08, vni << 8) + frame


def icmp(icmp_type: int, code: int = 0, ident: int = 1, seq: int = 1, payload: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", icmp_type, code, 0, ident, seq) + payload


def write_pcap(path, packets, linktype: int = 1, snaplen: int = 262144) -> None:
    """packets: iterable of (ts_seconds_float, frame bytes[, wire_len])."""
    with open(path, "wb") as f:
        f.write(pcap_header(linktype, snaplen))
        for p in packets:
            f.write(pcap_record(*p))


def pcap_header(linktype: int = 1, snaplen: int = 262144) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: float, frame: bytes, wire_len: int | None = None) -> bytes:
    sec = int(ts)
    usec = int(round((ts - sec) * 1e6))
    return struct.pack("<IIII", sec, usec, len(frame), wire_len or len(frame)) + frame


def read_pcap_records(path):
    """Independent reader of classic little-endian pcap: [(ts_us, caplen, wire_len, frame)]."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, caplen, wire = struct.unpack_from("<IIII", data, pos)
        out.append((sec * 1_000_000 + usec, caplen, wire, data[pos + 16:pos + 16 + caplen]))
        pos += 16 + caplen
    return out


# ---- pcapng (little-endian unless said): blocks as libpcap reads them
def _block(btype: int, body: bytes, big: bool = False) -> bytes:
    body += b"\0" * (-len(body) % 4)
    end = ">" if big else "<"
    size = 12 + len(body)
    return struct.pack(f"{end}II", btype, size) + body + struct.pack(f"{end}I", size)


def pcapng_section(big: bool = False) -> bytes:
    """A Section Header Block (version 1.0, section length unknown)."""
    end = ">" if big else "<"
    return _block(0x0A0D0D0A, struct.pack(f"{end}IHHq", 0x1A2B3C4D, 1, 0, -1), big)


def pcapng_interface(linktype: int = 1, snaplen: int = 262144, big: bool = False) -> bytes:
    """An Interface Description Block (microsecond timestamps)."""
    end = ">" if big else "<"
    return _block(1, struct.pack(f"{end}HHI", linktype, 0, snaplen), big)


def pcapng_packet(ts_us: int, frame: bytes, interface: int = 0, big: bool = False,
                  wire_len: int | None = None) -> bytes:
    """An Enhanced Packet Block; ``ts_us`` is microseconds since 1970 (any 64-bit value)."""
    end = ">" if big else "<"
    ts = ts_us & ((1 << 64) - 1)
    wire = len(frame) if wire_len is None else wire_len
    return _block(6, struct.pack(f"{end}IIIII", interface, ts >> 32, ts & 0xFFFFFFFF, len(frame), wire) + frame, big)
