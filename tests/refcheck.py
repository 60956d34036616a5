"""Reading the tshark references and an independent look at IP fragments.

The references (../shared/pcaps/reference, see its MANIFEST) count a fragmented
datagram once, on the frame that completes its reassembly, and not at all when
it never completes; devourer counts every fragment in its flow (docs/architecture.md §3).
``fragment_adjustments`` walks a capture with a small parser of its own (not
devourer's) and says, per flow endpoint, how many packets and bytes devourer
must show beyond the reference because of that.
"""

import collections
import ipaddress
import struct

from tests.pcapbuild import read_pcap_records

Totals = collections.Counter


def endpoint_totals(rows):
    """{(proto, (addr,port), (addr,port)) sorted: Counter{(addr, port, 'p'|'b'): n}}."""
    out = {}
    for proto, ea, eb, pa, ba, pb, bb in rows:
        key = (proto, *sorted([ea, eb]))
        c = out.setdefault(key, Totals())
        c[(*ea, "p")] += pa
        c[(*ea, "b")] += ba
        c[(*eb, "p")] += pb
        c[(*eb, "b")] += bb
    return out


#: UDP ports of the tunnels devourer opens (packet.tunnels): a reference conversation on one of them is the
#: outer side of a tunnel, whose packets devourer counts in the inner flows instead
TUNNEL_PORTS = {4789, 6081, 2152, 1701}


def reference_flows(path):
    """(conversations, tunnel outsides): endpoint totals of every conversation, plain or tunnelled (with its
    inner addresses), and of the outer UDP conversations of tunnels."""
    rows, outside = [], []
    for line in open(path):
        if line.startswith("#"):
            continue
        a = line.rstrip("\n").split("\t")
        row = (a[4], (a[0], int(a[1])), (a[2], int(a[3])), int(a[7]), int(a[8]), int(a[9]), int(a[10]))
        if a[4] == "udp" and TUNNEL_PORTS & {int(a[1]), int(a[3])}:
            outside.append(row)
        else:
            rows.append(row)
    return endpoint_totals(rows), endpoint_totals(outside)


def reference_icmp(path):
    """{(proto, addr1, addr2) sorted: (packets, bytes)} for every ICMP/ICMPv6 address pair (inner addresses
    for tunnelled ones)."""
    out = {}
    for line in open(path):
        if line.startswith("#"):
            continue
        a = line.rstrip("\n").split("\t")
        proto = "icmp4" if a[2] == "icmp" else "icmp6"
        out[(proto, *sorted([a[0], a[1]]))] = (int(a[3]), int(a[4]))
    return out


def our_flows(records):
    rows = []
    for r in records:
        if r["protocol"] not in ("tcp", "udp"):
            continue
        s, d = r["src"], r["dst"]
        rows.append((r["protocol"], (s["addr"], s["port"]), (d["addr"], d["port"]), r["src_stat"]["packets"],
                     r["src_stat"]["bytes"], r["dst_stat"]["packets"], r["dst_stat"]["bytes"]))
    return endpoint_totals(rows)


def our_icmp(records):
    out = collections.defaultdict(lambda: [0, 0])
    for r in records:
        if r["protocol"] in ("icmp4", "icmp6"):
            k = (r["protocol"], *sorted([r["src"]["addr"], r["dst"]["addr"]]))
            out[k][0] += r["src_stat"]["packets"] + r["dst_stat"]["packets"]
            out[k][1] += r["src_stat"]["bytes"] + r["dst_stat"]["bytes"]
    return {k: tuple(v) for k, v in out.items()}


# ---- an independent fragment walk (Ethernet, 802.1Q, PPPoE, IPv4, IPv6 fragment header)
def _ip_of(frame):
    off = 12
    etype = struct.unpack_from("!H", frame, off)[0]
    off += 2
    while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
        etype = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    if etype == 0x8864 and len(frame) >= off + 8:  # PPPoE session: IPv4 0x0021, IPv6 0x0057 in PPP
        etype = {0x0021: 0x0800, 0x0057: 0x86DD}.get(struct.unpack_from("!H", frame, off + 6)[0], 0)
        off += 8
    return etype, off


def _fragment_of(frame):
    """(proto_name, src, dst, ident, offset, more, l4_bytes_or_None, ip_payload_len) or None."""
    if len(frame) < 14:
        return None
    etype, off = _ip_of(frame)
    if etype == 0x0800 and len(frame) >= off + 20:
        ihl = (frame[off] & 15) * 4
        total, ident, fw, proto = struct.unpack_from("!H H H x B", frame, off + 2)
        foff, more = (fw & 0x1FFF) * 8, bool(fw & 0x2000)
        if not (foff or more):
            return None
        src, dst = (str(ipaddress.IPv4Address(frame[off + 12:off + 16])), str(ipaddress.IPv4Address(frame[off + 16:off + 20])))
        return proto, src, dst, ident, foff, more, frame[off + ihl:off + ihl + 8], total - ihl
    if etype == 0x86DD and len(frame) >= off + 48 and frame[off + 6] == 44:
        fh = off + 40
        nh, fw, ident = frame[fh], struct.unpack_from("!H", frame, fh + 2)[0], struct.unpack_from("!I", frame, fh + 4)[0]
        foff, more = (fw >> 3) * 8, bool(fw & 1)
        src = str(ipaddress.IPv6Address(frame[off + 8:off + 24]))
        dst = str(ipaddress.IPv6Address(frame[off + 24:off + 40]))
        plen = struct.unpack_from("!H", frame, off + 4)[0] - 8
        return nh, src, dst, ident, foff, more, frame[fh + 8:fh + 16], plen
    return None


PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp4", 58: "icmp6"}


def fragment_adjustments(pcap_path):
    """({(proto, endpoint, endpoint) sorted: Counter{(addr, port, 'p'|'b'): extra}},
    {(proto, a1, a2) sorted: [extra_packets, extra_bytes]} for ICMP pairs).

    extra = every fragment frame of a datagram, minus the one frame tshark counts:
    the frame completing reassembly; when a snaplen cut some fragment, so that
    reassembly is impossible, tshark 4.0 still reads the transport header of an
    IPv4 first fragment (and counts that frame) but counts nothing for IPv6."""
    datagrams = {}
    for _, caplen, wire, frame in read_pcap_records(pcap_path):
        f = _fragment_of(frame)
        if f is None:
            continue
        proto, src, dst, ident, foff, more, head, plen = f
        d = datagrams.setdefault((proto, src, dst, ident), {"frames": [], "ports": None, "have": [], "end": None,
                                                            "completing": None, "first": None, "cut": False})
        d["cut"] |= caplen < wire
        if foff == 0 and proto in (6, 17) and len(head) >= 4:
            d["ports"] = struct.unpack_from("!HH", head)
        elif foff == 0:
            d["ports"] = (0, 0)
        if d["ports"] is not None:  # fragments before their first one are unmatched in devourer
            d["frames"].append(wire)
            if foff == 0:
                d["first"] = wire
        d["have"].append((foff, foff + plen))
        if not more:
            d["end"] = foff + plen
        if d["completing"] is None and d["end"] is not None:
            covered = 0
            for a, b in sorted(d["have"]):
                if a > covered:
                    break
                covered = max(covered, b)
            if covered >= d["end"]:
                d["completing"] = wire
    flows, icmp = {}, collections.defaultdict(lambda: [0, 0])
    for (proto, src, dst, _), d in datagrams.items():
        if d["ports"] is None:
            continue  # first fragment never seen: devourer counts these as unmatched, not in a flow
        counted = (d["first"] if ":" not in src else None) if d["cut"] else d["completing"]
        extra_p = len(d["frames"]) - (1 if counted is not None else 0)
        extra_b = sum(d["frames"]) - (counted or 0)
        name = PROTO_NAMES.get(proto, str(proto))
        if proto in (1, 58):
            k = (name, *sorted([src, dst]))
            icmp[k][0] += extra_p
            icmp[k][1] += extra_b
        else:
            sport, dport = d["ports"]
            c = flows.setdefault((name, *sorted([(src, sport), (dst, dport)])), Totals())
            c[(src, sport, "p")] += extra_p
            c[(src, sport, "b")] += extra_b
    return flows, icmp
