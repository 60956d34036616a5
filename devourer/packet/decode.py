"""Batch decode: one batch of packets -> fixed-size packet records, keyed and routed.

``decode_batch`` walks every packet of a batch once, in compiled code: the link
layer (Ethernet with any number of 802.1Q/802.1ad tags, Linux SLL and SLL2, raw
IP, BSD loopback), IPv4 with options, IPv6 with extension headers, fragments,
then the transport ports (TCP, UDP, SCTP, UDP-Lite, DCCP) or the ICMP type/code.
It writes one record per keyed packet (layout in ``packet.layout``), with the
key normalized so both directions of a conversation give the same bytes, and
picks the worker from the key's hash. Everything else is a counter: non-IP,
malformed, unmatched fragment. No Python object is made per packet.

Non-first IP fragments carry no ports: they join the flow of their first
fragment through a small bounded table (v6, src, dst, protocol, IP id) that
lives in the capture process.
"""

import numba
import numpy as np

from devourer import counters as CN
from devourer.flow.key import KEY_VNET, finish64, iface_bits, key_hash, key_word, mix64, vnet_word
from devourer.packet import layout as L
from devourer.packet import tunnels as TU
from devourer.packet.fields import be16 as _be16
from devourer.packet.fields import be32 as _be32
from devourer.packet.fields import le64 as _le64
from devourer.packet.fields import mac as _mac

# libpcap DLT_* values as pcap_datalink() returns them
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 12
DLT_RAW_OPENBSD = 14
DLT_RAW_LINKTYPE = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276
SUPPORTED_DATALINKS = {
    DLT_NULL: "BSD loopback", DLT_EN10MB: "Ethernet", DLT_RAW: "raw IP", DLT_RAW_OPENBSD: "raw IP",
    DLT_RAW_LINKTYPE: "raw IP", DLT_LOOP: "OpenBSD loopback", DLT_LINUX_SLL: "Linux cooked (SLL)",
    DLT_IPV4: "raw IPv4", DLT_IPV6: "raw IPv6", DLT_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETH_IPV4 = TU.ETH_IPV4
ETH_IPV6 = TU.ETH_IPV6

FRAG_SLOTS = 1 << 14  # first fragments remembered at once
FRAG_WORDS = 8
FRAG_PROBE = 8
FRAG_TTL_US = 60_000_000  # a first fragment older than this no longer adopts later ones
MAX_IPV6_EXT_HEADERS = 16


@numba.njit(cache=True)
def _frag_slot(frag, v6, w0, w1, w2, w3, tag, ts, create):
    """Find (or, with create, claim) the fragment-table slot for a datagram; -1 if none."""
    h = finish64(mix64(mix64(mix64(mix64(mix64(np.uint64(v6), w0), w1), w2), w3), tag))
    mask = frag.shape[0] - 1
    base = np.int64(h & np.uint64(mask))
    free = -1
    oldest = -1
    oldest_ts = np.int64(1) << np.int64(62)
    for k in range(FRAG_PROBE):
        s = (base + k) & mask
        used = (frag[s, 4] >> np.uint64(63)) != 0
        if used and ts - np.int64(frag[s, 6]) <= FRAG_TTL_US:
            if frag[s, 4] == tag and frag[s, 0] == w0 and frag[s, 1] == w1 and frag[s, 2] == w2 and frag[s, 3] == w3:
                return s
            if np.int64(frag[s, 6]) < oldest_ts:
                oldest_ts = np.int64(frag[s, 6])
                oldest = s
        elif free < 0:
            free = s
    if not create:
        return -1
    return free if free >= 0 else oldest


@numba.njit(cache=True, inline="always")
def _name_port(p):
    return p == 53 or p == 5353 or p == 5355 or p == 137 or p == 67 or p == 68 or p == 546 or p == 547


@numba.njit(cache=True, inline="always")
def _dns_port(p):
    return p == 53 or p == 5353 or p == 5355


@numba.njit(cache=True, inline="always")
def _dns_query(data, msg, end):
    """A DNS-format message at msg (up to end) with its QR bit clear: a query, which names nothing. Shorter
    messages are handed on (the resolver counts them malformed)."""
    return msg + 3 <= end and (data[msg + 2] & 0x80) == 0


@numba.njit(cache=True, inline="always")
def _ethernet(data, p, end):
    """An Ethernet header at p with any number of 802.1Q/802.1ad tags: (EtherType or -1, offset after it,
    source MAC, destination MAC, outermost VLAN id)."""
    if p + 14 > end:
        return np.int64(-1), p, np.uint64(0), np.uint64(0), np.int64(0)
    vlan = np.int64(0)
    dmac = _mac(data, p)
    smac = _mac(data, p + 6)
    etype = _be16(data, p + 12)
    q = p + 14
    while (etype == 0x8100 or etype == 0x88A8 or etype == 0x9100) and q + 4 <= end:
        if vlan == 0:
            vlan = _be16(data, q) & 0xFFF
        etype = _be16(data, q + 2)
        q += 4
    return etype, q, smac, dmac, vlan


@numba.njit(cache=True, inline="always")
def _link_layer(data, p, cap, end, datalink):
    """The link header at p: (ethertype or -1 when not IP, network header offset, source MAC, destination MAC,
    outermost VLAN id). Raw IP and loopback say their version in the first nibble."""
    smac = np.uint64(0)
    dmac = np.uint64(0)
    vlan = np.int64(0)
    etype = np.int64(-1)
    q = p
    if datalink == DLT_EN10MB:
        return _ethernet(data, p, end)
    elif datalink == DLT_LINUX_SLL:
        if cap >= 16:
            etype = _be16(data, p + 14)
            if _be16(data, p + 2) == 1 and _be16(data, p + 4) == 6:
                smac = _mac(data, p + 6)
        q = p + 16
    elif datalink == DLT_LINUX_SLL2:
        if cap >= 20:
            etype = _be16(data, p)
            if _be16(data, p + 8) == 1 and data[p + 11] == 6:
                smac = _mac(data, p + 12)
        q = p + 20
    else:
        if datalink == DLT_NULL or datalink == DLT_LOOP:
            q = p + 4
        if q < end:
            ver = data[q] >> 4
            etype = np.int64(ETH_IPV4 if ver == 4 else (ETH_IPV6 if ver == 6 else -1))
    return etype, q, smac, dmac, vlan


@numba.njit(cache=True, inline="always")
def _ipv4(data, q, end):
    """The IPv4 header at q: (well formed, protocol, source offset, destination offset, address length,
    transport offset, IP total length, fragment offset, more fragments, IP id)."""
    if q + 20 > end or (data[q] >> 4) != 4 or (data[q] & 15) < 5 or q + (data[q] & 15) * 4 > end:
        return False, np.int64(0), q, q, np.int64(4), q, np.int64(0), np.int64(0), False, np.int64(0)
    fw = _be16(data, q + 6)
    return (True, np.int64(data[q + 9]), q + 12, q + 16, np.int64(4), q + np.int64(data[q] & 15) * 4,
            _be16(data, q + 2), fw & 0x1FFF, (fw & 0x2000) != 0, _be16(data, q + 4))


@numba.njit(cache=True, inline="always")
def _ipv6(data, q, end):
    """The IPv6 header at q and its extension headers (at most MAX_IPV6_EXT_HEADERS; a fragment header
    with a non-zero offset ends the walk): the same tuple as ``_ipv4``."""
    bad = (False, np.int64(0), q, q, np.int64(16), q, np.int64(0), np.int64(0), False, np.int64(0))
    if q + 40 > end or (data[q] >> 4) != 6:
        return bad
    nh = np.int64(data[q + 6])
    l4 = q + 40
    frag_off = np.int64(0)
    more_frags = False
    ip_id = np.int64(0)
    for _ in range(MAX_IPV6_EXT_HEADERS + 1):
        if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140 or nh == 51:
            if l4 + 2 > end:
                return bad
            # AH counts its length in 4-byte units less 2, the others in 8-byte units less 1
            hl = (np.int64(data[l4 + 1]) + 2) * 4 if nh == 51 else (np.int64(data[l4 + 1]) + 1) * 8
            nh = np.int64(data[l4])
            l4 += hl
        elif nh == 44:
            if l4 + 8 > end:
                return bad
            fw = _be16(data, l4 + 2)
            frag_off = fw >> 3
            more_frags = (fw & 1) != 0
            ip_id = _be32(data, l4 + 4)
            nh = np.int64(data[l4])
            l4 += 8
            if frag_off > 0:
                break
        else:
            break
    else:
        return bad  # extension-header chain too long
    if l4 > end:
        return bad
    return True, nh, q + 8, q + 24, np.int64(16), l4, 40 + _be16(data, q + 4), frag_off, more_frags, ip_id


# the tunnel of the layer a packet is keyed on, as ``_innermost`` leaves it in its scratch array
TN_TYPE = 0  # packet.tunnels T_*, T_NONE when the packet was not in a tunnel
TN_ID = 1  # the tunnel's id, -1 when it has none
TN_KEYED = 2  # 1: the id names a virtual network and is part of the flow key
TN_OUTER_SRC = 3  # offset of the outer source address in the packet, -1 when no IP header is outside
TN_OUTER_DST = 4
TN_OUTER_V6 = 5
TN_DEPTH = 6  # tunnels opened
TN_WORDS = 8


@numba.njit(cache=True, inline="always")
def _ip(data, q, end, v6):
    return _ipv6(data, q, end) if v6 else _ipv4(data, q, end)


@numba.njit(cache=True, inline="always")
def _may_open(data, l4, ip_end, proto):
    """Whether an IP datagram's payload may be a tunnel (``_open_in_ip`` tells): IP in IP, GRE, or UDP to a
    tunnel port. Inlined; the opening itself is a call, so the decoder stays quick to compile."""
    if proto == 4 or proto == 41 or proto == 47:
        return True
    return (proto == 17 and l4 + 8 <= ip_end
            and TU.udp_tunnel_port(_be16(data, l4), _be16(data, l4 + 2)) != 0)


@numba.njit(cache=True)
def _open_in_ip(data, l4, ip_end, proto, v6):
    """The tunnel an IP datagram's payload at l4 opens: (next EtherType or -1, offset, id, type)."""
    if proto == 4 or proto == 41:
        return (np.int64(ETH_IPV4 if proto == 4 else ETH_IPV6), l4, np.int64(-1),
                TU.ip_in_ip_type(v6, proto == 41))
    if proto == 47:
        return TU.gre(data, l4, ip_end)
    none = (np.int64(-1), l4, np.int64(-1), np.int64(TU.T_NONE))
    if proto != 17 or l4 + 8 > ip_end:
        return none
    sport = _be16(data, l4)
    dport = _be16(data, l4 + 2)
    if _name_port(sport) or _name_port(dport):
        return none
    port = TU.udp_tunnel_port(sport, dport)
    if port == 0:
        return none
    return TU.udp_tunnel(data, l4 + 8, ip_end, port)


@numba.njit(cache=True)
def _open_on_link(data, q, end, pppoe):
    """A PPPoE session header or an MPLS label stack at q: (next EtherType or -1, offset, id)."""
    return TU.pppoe(data, q, end) if pppoe else TU.mpls(data, q, end)


@numba.njit(cache=True)
def _innermost(data, end, etype, q, smac, dmac, vlan, decap, tun, counters):
    """From the network layer at (etype, q) in, the IP layer the packet is keyed on: the innermost one
    reached through the tunnels ``packet.tunnels`` opens (with decap; at most MAX_TUNNELS of them), or the
    layer outside a tunnel whose payload is not IP. Returns (EtherType, offset, source MAC, destination MAC,
    VLAN) of that layer, -1 as EtherType when there is none, and ``_ipv4``'s tuple for it (not well formed:
    malformed). Its tunnel is left in ``tun`` (TN_*)."""
    tun[TN_TYPE] = TU.T_NONE
    tun[TN_DEPTH] = 0
    f_etype, f_q, f_smac, f_dmac, f_vlan = np.int64(-1), q, smac, dmac, vlan
    f_ip = (False, np.int64(0), q, q, np.int64(4), q, np.int64(0), np.int64(0), False, np.int64(0))
    p_type, p_id, p_keyed, p_src, p_dst, p_v6 = np.int64(0), np.int64(-1), False, np.int64(-1), np.int64(-1), False
    for _ in range(4 * TU.MAX_TUNNELS + 4):  # a header a step: bounded whatever the packet says
        if etype == ETH_IPV4 or etype == ETH_IPV6:
            v6 = etype == ETH_IPV6
            ip = _ip(data, q, end, v6)
            if not ip[0]:
                return etype, q, smac, dmac, vlan, ip
            f_etype, f_q, f_smac, f_dmac, f_vlan, f_ip = etype, q, smac, dmac, vlan, ip
            if p_type != TU.T_NONE:  # the tunnel opened on the way carries IP: it is this layer's
                tun[TN_TYPE] = p_type
                tun[TN_ID] = p_id
                tun[TN_KEYED] = 1 if p_keyed else 0
                tun[TN_OUTER_SRC] = p_src
                tun[TN_OUTER_DST] = p_dst
                tun[TN_OUTER_V6] = 1 if p_v6 else 0
                tun[TN_DEPTH] += 1
                p_type = TU.T_NONE
            if not decap:
                break
            if ip[7] != 0:  # a later fragment: what it carries is not known here
                if ip[1] == 4 or ip[1] == 41 or ip[1] == 47:
                    counters[CN.C_TUNNEL_CLOSED] += 1
                break
            ip_end = min(end, q + ip[6]) if ip[6] > 0 else end
            if not _may_open(data, ip[5], ip_end, ip[1]):
                break
            nxt, at, tid, ttype = _open_in_ip(data, ip[5], ip_end, ip[1], v6)
            if ttype == TU.T_NONE or nxt < 0:
                break
            if ip[8] or tun[TN_DEPTH] >= TU.MAX_TUNNELS:  # a first fragment, or one tunnel too many
                counters[CN.C_TUNNEL_CLOSED] += 1
                break
            p_type, p_id, p_src, p_dst, p_v6 = ttype, tid, ip[2], ip[3], v6
            p_keyed = ttype == TU.T_VXLAN or ttype == TU.T_GENEVE or (ttype == TU.T_GRE and tid >= 0)
            etype, q, end = nxt, at, ip_end
        elif decap and etype == TU.ETH_TEB:  # the Ethernet frame a tunnel carries
            etype, q, smac, dmac, inner_vlan = _ethernet(data, q, end)
            if vlan == 0:
                vlan = inner_vlan
        elif decap and (etype == TU.ETH_PPPOE_SESSION or etype == TU.ETH_MPLS or etype == TU.ETH_MPLS_MULTICAST):
            if tun[TN_DEPTH] >= TU.MAX_TUNNELS:
                counters[CN.C_TUNNEL_CLOSED] += 1
                break
            pppoe = etype == TU.ETH_PPPOE_SESSION
            nxt, at, tid = _open_on_link(data, q, end, pppoe)
            if nxt < 0:
                break
            p_type, p_id, p_keyed = np.int64(TU.T_PPPOE if pppoe else TU.T_MPLS), tid, pppoe
            if f_etype >= 0:  # the IP header outside, if any, is the tunnel's outer one
                p_src, p_dst, p_v6 = f_ip[2], f_ip[3], f_etype == ETH_IPV6
            else:
                p_src, p_dst, p_v6 = np.int64(-1), np.int64(-1), False
            etype, q = nxt, at
        else:
            break
    return f_etype, f_q, f_smac, f_dmac, f_vlan, f_ip


@numba.njit(cache=True, inline="always")
def _transport(data, l4, end, proto):
    """Ports (TCP, UDP, SCTP, UDP-Lite, DCCP) or ICMP type/code at l4: (well formed, source port, destination
    port, TCP flags, ICMP type, ICMP code). Other protocols have none."""
    zero = np.int64(0)
    if proto == 6 or proto == 17 or proto == 132 or proto == 136 or proto == 33:
        if l4 + 4 > end:
            return False, zero, zero, zero, zero, zero
        tflags = np.int64(data[l4 + 13]) if proto == 6 and l4 + 14 <= end else zero
        return True, _be16(data, l4), _be16(data, l4 + 2), tflags, zero, zero
    if proto == 1 or proto == 58:
        if l4 + 2 > end:
            return False, zero, zero, zero, zero, zero
        return True, zero, zero, zero, np.int64(data[l4]), np.int64(data[l4 + 1])
    return True, zero, zero, zero, zero, zero


@numba.njit(cache=True, inline="always")
def _datagram(data, saddr, daddr, alen, v6, proto, ip_id):
    """The fragment table's key of an IP datagram: (source words, destination words, tag of id/proto/v6)."""
    w0 = _le64(data, saddr, min(alen, 8))
    w1 = _le64(data, saddr + 8, 8) if v6 else np.uint64(0)
    w2 = _le64(data, daddr, min(alen, 8))
    w3 = _le64(data, daddr + 8, 8) if v6 else np.uint64(0)
    tag = (np.uint64(ip_id) | (np.uint64(proto) << np.uint64(32)) | (np.uint64(v6) << np.uint64(40))
           | (np.uint64(1) << np.uint64(63)))
    return w0, w1, w2, w3, tag


@numba.njit(cache=True, inline="always")
def _ports_of_first_fragment(frag, data, saddr, daddr, alen, v6, proto, ip_id, ts):
    """A later fragment's ports, from its first fragment: (found, source port, destination port)."""
    w0, w1, w2, w3, tag = _datagram(data, saddr, daddr, alen, v6, proto, ip_id)
    s = _frag_slot(frag, v6, w0, w1, w2, w3, tag, ts, False)
    if s < 0:
        return False, np.int64(0), np.int64(0)
    return True, np.int64(frag[s, 5] & np.uint64(0xFFFF)), np.int64((frag[s, 5] >> np.uint64(16)) & np.uint64(0xFFFF))


@numba.njit(cache=True, inline="always")
def _remember_first_fragment(frag, data, saddr, daddr, alen, v6, proto, ip_id, ts, sport, dport, counters):
    """Keep a first fragment's ports for the fragments after it (a live entry it replaces is counted)."""
    w0, w1, w2, w3, tag = _datagram(data, saddr, daddr, alen, v6, proto, ip_id)
    s = _frag_slot(frag, v6, w0, w1, w2, w3, tag, ts, True)
    if (frag[s, 4] >> np.uint64(63)) != 0 and ts - np.int64(frag[s, 6]) <= FRAG_TTL_US:
        if frag[s, 4] != tag or frag[s, 0] != w0 or frag[s, 1] != w1 or frag[s, 2] != w2 or frag[s, 3] != w3:
            counters[CN.C_FRAG_EVICTED] += 1
    frag[s, 0] = w0
    frag[s, 1] = w1
    frag[s, 2] = w2
    frag[s, 3] = w3
    frag[s, 4] = tag
    frag[s, 5] = np.uint64(sport) | (np.uint64(dport) << np.uint64(16))
    frag[s, 6] = np.uint64(ts)


@numba.njit(cache=True, inline="always")
def _sent_by_b(data, saddr, daddr, alen, sport, dport):
    """Whether the sender is endpoint B of the normalized key: A is the smaller (address bytes, port)."""
    for k in range(alen):
        a = data[saddr + k]
        b = data[daddr + k]
        if a != b:
            return a > b
    return sport > dport


@numba.njit(cache=True)
def _add_tunnel(rec8, rec32, rec64, out, data, tun):
    """The tunnel fields of packet record ``out``, which ``_write_record`` wrote as if it came through none
    (but keyed with the tunnel's virtual network, ``_vnet_of``). A call: few packets need it."""
    ttype, tid, depth = tun[TN_TYPE], tun[TN_ID], tun[TN_DEPTH]
    outer_src, outer_dst, outer_v6 = tun[TN_OUTER_SRC], tun[TN_OUTER_DST], tun[TN_OUTER_V6]
    for w in range(L.W_OUTER_SRC, L.W_OUTER_DST + 2):
        rec64[out, w] = 0
    rec8[out, L.B_TUNNEL] = ttype
    rec8[out, L.B_DEPTH] = depth
    flags = rec8[out, L.B_FLAGS]
    if tid >= 0:
        rec32[out, L.D_TUNNEL_ID] = tid
        flags |= L.FLAG_TUNNEL_ID
        if tun[TN_KEYED]:
            flags |= L.FLAG_KEYED
    if outer_src >= 0:
        flags |= L.FLAG_OUTER_IP | (L.FLAG_OUTER_V6 if outer_v6 else 0)
        at_src, at_dst = L.W_OUTER_SRC * 8, L.W_OUTER_DST * 8
        for k in range(16 if outer_v6 else 4):
            rec8[out, at_src + k] = data[outer_src + k]
            rec8[out, at_dst + k] = data[outer_dst + k]
    rec8[out, L.B_FLAGS] = flags


@numba.njit(cache=True, inline="always")
def _vnet_of(tun):
    """The virtual network word (``flow.key``) of the tunnel ``_innermost`` left in ``tun``, 0 when none."""
    if tun[TN_TYPE] == TU.T_NONE or tun[TN_ID] < 0 or not tun[TN_KEYED]:
        return np.uint64(0)
    return vnet_word(tun[TN_TYPE], tun[TN_ID])


@numba.njit(cache=True, inline="always")
def _write_record(rec8, rec16, rec32, rec64, out, data, aa, ab, alen, ts, clk, wl, pa, pb, vlan, proto, from_b,
                  v6, tflags, itype, icode, smac, dmac, iface, vnet):
    """Packet record ``out`` (layout in ``packet.layout``) for endpoints A at aa and B at ab, captured on the
    run's interface ``iface``, keyed with the virtual network ``vnet`` (0: none), as if it came through no
    tunnel (``_add_tunnel`` adds one); returns its key hash (``flow.key``)."""
    for k in range(16, 48):
        rec8[out, k] = 0
    for k in range(alen):
        rec8[out, 16 + k] = data[aa + k]
        rec8[out, 32 + k] = data[ab + k]
    rec64[out, L.W_TS] = ts
    rec64[out, L.W_CLOCK] = clk
    rec32[out, L.D_WIRE_LEN] = wl
    rec16[out, L.H_PORT_A] = pa
    rec16[out, L.H_PORT_B] = pb
    rec16[out, L.H_VLAN] = vlan
    rec8[out, L.B_PROTO] = proto
    flags = (L.FLAG_FROM_B if from_b else 0) | (L.FLAG_V6 if v6 else 0)
    rec8[out, L.B_TCP_FLAGS] = tflags
    rec8[out, L.B_ICMP_TYPE] = itype
    rec8[out, L.B_ICMP_CODE] = icode
    rec64[out, L.W_SRC_MAC] = smac
    rec64[out, L.W_DST_MAC] = dmac
    # the last word: no tunnel id, no depth, and the interface (H_IFACE, its top 16 bits)
    rec64[out, L.W_TUNNEL_ID] = np.uint64(iface) << np.uint64(48)
    rec8[out, L.B_TUNNEL] = 0
    rec8[out, L.B_FLAGS] = flags
    keyw = key_word(pa, pb, vlan, proto, v6) | (KEY_VNET if vnet != 0 else np.uint64(0)) | iface_bits(iface)
    h = key_hash(rec64[out, L.W_ADDR_A], rec64[out, L.W_ADDR_A + 1], rec64[out, L.W_ADDR_B],
                 rec64[out, L.W_ADDR_B + 1], keyw, vnet)
    rec64[out, L.W_HASH] = h
    return h


@numba.njit(cache=True, inline="always")
def _name_payload(data, q, end, l4, ip_len, proto, sport, dport):
    """The offset of the L4 payload of a packet that may carry names (UDP to or from a name port, TCP DNS, a
    TLS ClientHello; not DNS-format queries), or -1; and the end of the IP datagram."""
    ip_end = min(end, q + ip_len) if ip_len > 0 else end
    if proto == 17 and l4 + 8 <= ip_end and (_name_port(sport) or _name_port(dport)):
        if not ((_dns_port(sport) or _dns_port(dport)) and _dns_query(data, l4 + 8, ip_end)):
            return l4 + 8, ip_end
    elif proto == 6 and l4 + 20 <= ip_end:
        p0 = l4 + (np.int64(data[l4 + 12]) >> 4) * 4
        if sport == 53 or dport == 53:
            if p0 < ip_end and not _dns_query(data, p0 + 2, ip_end):  # after the 2-byte length
                return p0, ip_end
        elif p0 + 6 <= ip_end and data[p0] == 0x16 and data[p0 + 1] == 3 and data[p0 + 5] == 1:
            return p0, ip_end
    return np.int64(-1), ip_end


@numba.njit(cache=True)
def decode_batch(data, meta, wire, datalink, snaplen, rec8, rec16, rec32, rec64, worker_of, n_workers,
                 frag, counters, clock, want_names, cand, tun, iface, ifaces, decap=True, frag_only=False):
    """Decode one batch. Returns the number of records written to rec*/worker_of.

    data: packet bytes (uint8), meta: (n, 4) uint32 rows (sec, usec, offset, caplen);
    wire: wire lengths per packet, or an empty array when the source has none;
    rec8/16/32/64: views of one (n, RECORD_BYTES) buffer; frag: fragment table;
    counters: capture counters (``counters.C_*``); clock: [running max ts_us]; tun: TN_WORDS int64 of
    scratch; iface: the run's id of the interface the batch was captured on, or with ``ifaces`` (one u16 per
    packet; empty when the batch has one interface) each packet's; decap: open tunnels (``--decapsulate auto``).
    With want_names, packets that may carry names (``_name_payload``) are listed in cand: (n, 3) int64 rows of
    (record index, payload offset in data, payload length); cand[n, 0] holds the count.
    With frag_only, only the clock and the fragment table are brought up to date (a chunk's planning:
    ``packet.chunks``); nothing is written and the counters are the caller's scratch."""
    n = meta.shape[0]
    n_cand = 0
    has_wire = wire.shape[0] == n
    per_packet_iface = ifaces.shape[0] == n and n > 0
    out = 0
    clk = clock[0]
    for i in range(n):
        ts = np.int64(meta[i, 0]) * 1_000_000 + np.int64(meta[i, 1])
        p = np.int64(meta[i, 2])
        cap = np.int64(meta[i, 3])
        end = p + cap
        wl = np.int64(wire[i]) if has_wire else np.int64(0)
        counters[CN.C_READ] += 1
        if ts > clk:
            clk = ts
        etype, q, smac, dmac, vlan = _link_layer(data, p, cap, end, datalink)
        if etype == ETH_IPV4 or etype == ETH_IPV6:
            ip = _ip(data, q, end, etype == ETH_IPV6)
            ip_end = min(end, q + ip[6]) if ip[6] > 0 else end
            if not ip[0] or not decap or not _may_open(data, ip[5], ip_end, ip[1]):
                tun[TN_TYPE] = TU.T_NONE  # no tunnel: what _innermost would find, without its walk
                tun[TN_DEPTH] = 0
            else:
                etype, q, smac, dmac, vlan, ip = _innermost(data, end, etype, q, smac, dmac, vlan, decap, tun,
                                                            counters)
        else:
            etype, q, smac, dmac, vlan, ip = _innermost(data, end, etype, q, smac, dmac, vlan, decap, tun,
                                                        counters)
        if etype != ETH_IPV4 and etype != ETH_IPV6:
            counters[CN.C_NON_IP] += 1
            counters[CN.C_BYTES] += wl if has_wire else cap
            continue
        v6 = etype == ETH_IPV6
        ok, proto, saddr, daddr, alen, l4, ip_len, frag_off, more_frags, ip_id = ip
        if not ok:
            counters[CN.C_MALFORMED] += 1
            counters[CN.C_BYTES] += wl if has_wire else cap
            continue
        if frag_only and not (more_frags and frag_off == 0):
            continue
        if not has_wire:  # no record header: the packet was cut only if it filled the snaplen
            wl = cap if cap < snaplen else max(cap, (q - p) + ip_len)
        if frag_off > 0:
            tflags = itype = icode = np.int64(0)
            found, sport, dport = _ports_of_first_fragment(frag, data, saddr, daddr, alen, v6, proto, ip_id, ts)
            if not found:
                counters[CN.C_FRAG_UNMATCHED] += 1
                counters[CN.C_BYTES] += wl
                continue
        else:
            ok, sport, dport, tflags, itype, icode = _transport(data, l4, end, proto)
            if not ok:
                counters[CN.C_MALFORMED] += 1
                counters[CN.C_BYTES] += wl
                continue
            if more_frags:
                _remember_first_fragment(frag, data, saddr, daddr, alen, v6, proto, ip_id, ts, sport, dport,
                                         counters)
        if frag_only:
            continue
        from_b = _sent_by_b(data, saddr, daddr, alen, sport, dport)
        if from_b:
            pa, pb, aa, ab = dport, sport, daddr, saddr
        else:
            pa, pb, aa, ab = sport, dport, saddr, daddr
        h = _write_record(rec8, rec16, rec32, rec64, out, data, aa, ab, alen, ts, clk, wl, pa, pb, vlan, proto,
                          from_b, v6, tflags, itype, icode, smac, dmac, ifaces[i] if per_packet_iface else iface,
                          _vnet_of(tun))
        if tun[TN_TYPE] != TU.T_NONE:
            _add_tunnel(rec8, rec32, rec64, out, data, tun)
        worker_of[out] = np.int32(((h >> np.uint64(32)) * np.uint64(n_workers)) >> np.uint64(32))
        counters[CN.C_BYTES] += wl
        if tun[TN_TYPE] != TU.T_NONE:
            counters[CN.C_TUNNELLED] += 1
        if want_names and frag_off == 0:
            pay, ip_end = _name_payload(data, q, end, l4, ip_len, proto, sport, dport)
            if pay >= 0:
                cand[n_cand, 0] = out
                cand[n_cand, 1] = pay
                cand[n_cand, 2] = ip_end - pay
                n_cand += 1
        out += 1
    clock[0] = clk
    cand[n, 0] = n_cand
    return out


@numba.njit(cache=True)
def pack_name_slots(data, rec8, cand, slots):
    """Copy each candidate's record and L4 payload into a resolver-ring slot. Returns the count."""
    n = cand[cand.shape[0] - 1, 0]
    for i in range(n):
        r = cand[i, 0]
        for k in range(L.RECORD_BYTES):
            slots[i, k] = rec8[r, k]
        off = cand[i, 1]
        length = cand[i, 2]
        keep = min(length, L.NAME_PAYLOAD_MAX)
        slots[i, L.NAME_KEPT_AT] = keep & 0xFF
        slots[i, L.NAME_KEPT_AT + 1] = keep >> 8
        slots[i, L.NAME_ON_WIRE_AT] = min(length, 65535) & 0xFF
        slots[i, L.NAME_ON_WIRE_AT + 1] = min(length, 65535) >> 8
        for k in range(keep):
            slots[i, L.NAME_PAYLOAD_AT + k] = data[off + k]
    return n


def new_fragment_table(slots: int = FRAG_SLOTS) -> np.ndarray:
    return np.zeros((slots, FRAG_WORDS), np.uint64)


class BatchDecoder:
    """Owns the output buffers and fragment table of one capture process."""

    def __init__(self, batch_packets: int, n_workers: int, counters: np.ndarray, want_names: bool = False,
                 decapsulate: bool = True):
        self.records = L.empty_records(batch_packets)
        self._r16 = self.records.view(np.uint16)
        self._r32 = self.records.view(np.uint32)
        self._r64 = self.records.view(np.uint64)
        self.worker_of = np.zeros(batch_packets, np.int32)
        self.n_workers = n_workers
        self.frag = new_fragment_table()
        self.counters = counters
        self.clock = np.zeros(1, np.int64)
        self._no_wire = np.zeros(0, np.uint32)
        self._one_iface = np.zeros(0, np.uint16)
        self.want_names = want_names
        self.candidates = np.zeros((batch_packets + 1, 3), np.int64)
        self.name_slots = np.zeros((batch_packets if want_names else 1, L.NAME_SLOT_BYTES), np.uint8)
        self._data = None
        self._batch_n = 0
        self.decapsulate = decapsulate
        self._tunnel = np.zeros(TN_WORDS, np.int64)

    def decode(self, data: bytes, meta: bytes, wire, datalink: int, snaplen: int, iface: int = 0,
               ifaces: np.ndarray | None = None) -> int:
        """Decode a batch captured on interface ``iface`` (the run's id), or on ``ifaces`` (u16, one per packet)."""
        buf = np.frombuffer(data, np.uint8)
        m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
        if m.shape[0] > self.records.shape[0]:
            raise ValueError("batch larger than the decoder's buffers")
        self._data = buf
        self._batch_n = m.shape[0]
        cand = self.candidates[: m.shape[0] + 1]
        return decode_batch(buf, m, self._no_wire if wire is None else wire, datalink, snaplen,
                            self.records, self._r16, self._r32, self._r64, self.worker_of,
                            self.n_workers, self.frag, self.counters, self.clock, self.want_names, cand,
                            self._tunnel, iface, self._one_iface if ifaces is None else ifaces,
                            self.decapsulate)

    def name_packets(self) -> np.ndarray:
        """Resolver-ring slots for the name candidates of the batch just decoded."""
        if not self.want_names or self._data is None:
            return self.name_slots[:0]
        count = pack_name_slots(self._data, self.records, self.candidates[: self._batch_n + 1], self.name_slots)
        return self.name_slots[:count]


def warm_up() -> None:
    """Compile (or load from numba's cache) the decoder with the kinds of arrays a run gives it: libpcap's
    read-only bytes and a classic pcap file's writable window (a differently typed call would load again, in
    the child). Called by the supervisor before it forks, so every capture process inherits the code."""
    pkt = bytes.fromhex("ffffffffffff0200000000010800450000280001000040060000c0a80001c0a80002"
                        "0050d43100000000000000005002000000000000")
    meta = np.array([[1, 0, 0, len(pkt)]], np.uint32)
    wire = np.array([len(pkt)], np.uint32)
    dec = BatchDecoder(4, 1, np.zeros(CN.N_CAPTURE_COUNTERS, np.int64), want_names=True)
    for data, rows in ((pkt, meta.tobytes()), (np.frombuffer(pkt, np.uint8).copy(), meta)):
        dec.decode(data, rows, wire, DLT_EN10MB, 262144)
        dec.decode(data, rows, wire, DLT_EN10MB, 262144, 1, np.zeros(1, np.uint16))
        dec.name_packets()
