"""The tunnel and encapsulation headers the decoder opens, one compiled reader each.

Each reader takes the packet bytes, the offset of its header and the end of the
captured bytes, and says what follows: ``(next, offset, id)``. ``next`` is the
EtherType of what starts at ``offset`` (IPv4, IPv6, PPPoE session, MPLS, or
``ETH_TEB`` for a whole Ethernet frame), or -1 when the header is not one this
reader opens or does not carry IP: the decoder then keys the packet on the
layer outside (docs/architecture.md §3, tunnels). ``id`` is the tunnel's id
(VNI, session, key, label, TEID), -1 when it has none.

What is opened, and which ids are keyed (name a virtual network and are the
same both ways) or only recorded (chosen per direction):

    type     carried in                       id                       keyed
    pppoe    EtherType 0x8864 (session)       session id               yes
    mpls     EtherType 0x8847/0x8848          bottom label             no
    gre      IP protocol 47 (version 0)       key, when present        yes
    erspan   GRE 0x88BE (II), 0x22EB (III)    session id               no
    vxlan    UDP port 4789                    VNI                      yes
    geneve   UDP port 6081                    VNI                      yes
    gtpu     UDP port 2152 (G-PDU)            TEID                     no
    l2tp     UDP port 1701 (v2 data)          tunnel << 16 | session   no
    ipip, 6in4, 4in6, 6in6   IP protocol 4/41 none                     no

Everything is inlined into ``packet.decode``'s loop.
"""

import numba
import numpy as np

from devourer.packet.fields import be16, be24, be32

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = 0x8847
ETH_MPLS_MULTICAST = 0x8848
ETH_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows
ETH_ERSPAN_2 = 0x88BE
ETH_ERSPAN_3 = 0x22EB

PORT_VXLAN = 4789
PORT_GENEVE = 6081
PORT_GTPU = 2152
PORT_L2TP = 1701

T_NONE = 0
T_PPPOE = 1
T_MPLS = 2
T_GRE = 3
T_ERSPAN = 4
T_VXLAN = 5
T_GENEVE = 6
T_GTPU = 7
T_L2TP = 8
T_IPIP = 9
T_6IN4 = 10
T_4IN6 = 11
T_6IN6 = 12
TUNNEL_NAMES = {T_PPPOE: "pppoe", T_MPLS: "mpls", T_GRE: "gre", T_ERSPAN: "erspan", T_VXLAN: "vxlan",
                T_GENEVE: "geneve", T_GTPU: "gtpu", T_L2TP: "l2tp", T_IPIP: "ipip", T_6IN4: "6in4",
                T_4IN6: "4in6", T_6IN6: "6in6"}

MAX_TUNNELS = 4  # tunnels opened in one packet; one more is left closed (counted)
MAX_MPLS_LABELS = 8
MAX_GTP_EXTENSIONS = 8

_NOT = (np.int64(-1), np.int64(0), np.int64(-1))


@numba.njit(cache=True, inline="always")
def udp_tunnel_port(sport, dport):
    """The tunnel port a UDP datagram goes to (VXLAN, Geneve and GTP-U by destination: their source port is
    entropy; L2TP either way), or 0."""
    if dport == PORT_VXLAN or dport == PORT_GENEVE or dport == PORT_GTPU or dport == PORT_L2TP:
        return dport
    if sport == PORT_L2TP:
        return sport
    return np.int64(0)


@numba.njit(cache=True, inline="always")
def ip_in_ip_type(outer_v6, inner_v6):
    if outer_v6:
        return np.int64(T_6IN6 if inner_v6 else T_4IN6)
    return np.int64(T_6IN4 if inner_v6 else T_IPIP)


@numba.njit(cache=True, inline="always")
def _ip_by_version(data, q, end):
    """IPv4 or IPv6 by the first nibble at q (payloads that do not say what they carry), else -1."""
    if q >= end:
        return np.int64(-1)
    v = data[q] >> 4
    return np.int64(ETH_IPV4 if v == 4 else (ETH_IPV6 if v == 6 else -1))


@numba.njit(cache=True, inline="always")
def _ppp(data, q, end):
    """The PPP protocol field at q (two bytes, or one when compressed): (IPv4/IPv6 EtherType or -1, offset
    of the datagram)."""
    if q + 1 > end:
        return np.int64(-1), q
    if data[q] & 1:  # protocol-field compression: 0x21 IPv4, 0x57 IPv6
        proto = np.int64(data[q])
        q += 1
    else:
        if q + 2 > end:
            return np.int64(-1), q
        proto = be16(data, q)
        q += 2
    if proto == 0x21:
        return np.int64(ETH_IPV4), q
    if proto == 0x57:
        return np.int64(ETH_IPV6), q
    return np.int64(-1), q


@numba.njit(cache=True, inline="always")
def pppoe(data, q, end):
    """A PPPoE session header (RFC 2516) at q and the PPP protocol after it."""
    if q + 8 > end or data[q] != 0x11 or data[q + 1] != 0:
        return _NOT
    nxt, at = _ppp(data, q + 6, end)
    return nxt, at, be16(data, q + 2)


@numba.njit(cache=True, inline="always")
def mpls(data, q, end):
    """An MPLS label stack at q: what follows the bottom label is IPv4/IPv6 by its first nibble, an Ethernet
    pseudowire after a control word (first nibble 0) or else an Ethernet pseudowire without one."""
    label = np.int64(-1)
    for _ in range(MAX_MPLS_LABELS):
        if q + 4 > end:
            return _NOT
        label = be32(data, q) >> 12
        bottom = data[q + 2] & 1
        q += 4
        if bottom:
            break
    else:
        return _NOT
    if q >= end:
        return _NOT
    first = data[q] >> 4
    if first == 4 or first == 6:
        return _ip_by_version(data, q, end), q, label
    if first == 0:
        q += 4  # the pseudowire control word
    return np.int64(ETH_TEB), q, label


@numba.njit(cache=True, inline="always")
def gre(data, p, end):
    """A GRE header (RFC 2784/2890, version 0) at p: (next, offset, key or -1, type). ERSPAN type II and III
    (and type I, a GRE 0x88BE without sequence number) are opened to the mirrored Ethernet frame; their id
    is the session."""
    if p + 4 > end:
        return np.int64(-1), p, np.int64(-1), np.int64(T_GRE)
    flags = be16(data, p)
    if (flags & 7) != 0 or (flags & 0x4000) != 0:  # enhanced GRE (PPTP) or source routing: not opened
        return np.int64(-1), p, np.int64(-1), np.int64(T_GRE)
    proto = be16(data, p + 2)
    q = p + 4
    if flags & 0x8000:  # checksum and reserved
        q += 4
    key = np.int64(-1)
    if flags & 0x2000:
        if q + 4 > end:
            return np.int64(-1), p, np.int64(-1), np.int64(T_GRE)
        key = be32(data, q)
        q += 4
    if flags & 0x1000:  # sequence number
        q += 4
    if q > end:
        return np.int64(-1), p, np.int64(-1), np.int64(T_GRE)
    if proto == ETH_ERSPAN_2:
        if not flags & 0x1000:
            return np.int64(ETH_TEB), q, np.int64(-1), np.int64(T_ERSPAN)  # type I: no ERSPAN header
        if q + 8 > end or (data[q] >> 4) != 1:
            return np.int64(-1), p, np.int64(-1), np.int64(T_GRE)
        return np.int64(ETH_TEB), q + 8, be16(data, q + 2) & 0x3FF, np.int64(T_ERSPAN)
    if proto == ETH_ERSPAN_3:
        if q + 12 > end or (data[q] >> 4) != 2:
            return np.int64(-1), p, np.int64(-1), np.int64(T_GRE)
        at = q + 12 + (8 if data[q + 11] & 1 else 0)  # the optional platform-specific subheader
        return np.int64(ETH_TEB), at, be16(data, q + 2) & 0x3FF, np.int64(T_ERSPAN)
    if proto == ETH_IPV4 or proto == ETH_IPV6 or proto == ETH_TEB or proto == ETH_MPLS:
        return proto, q, key, np.int64(T_GRE)
    return np.int64(-1), p, np.int64(-1), np.int64(T_GRE)


@numba.njit(cache=True, inline="always")
def vxlan(data, p, end):
    """A VXLAN header (RFC 7348) at p, its I flag set: an Ethernet frame follows."""
    if p + 8 > end or (data[p] & 0x08) == 0:
        return _NOT
    return np.int64(ETH_TEB), p + 8, be24(data, p + 4)


@numba.njit(cache=True, inline="always")
def geneve(data, p, end):
    """A Geneve header (RFC 8926, version 0) at p; its options are skipped by their length."""
    if p + 8 > end or (data[p] >> 6) != 0:
        return _NOT
    q = p + 8 + np.int64(data[p] & 0x3F) * 4
    proto = be16(data, p + 2)
    if q > end or not (proto == ETH_TEB or proto == ETH_IPV4 or proto == ETH_IPV6):
        return _NOT
    return proto, q, be24(data, p + 4)


@numba.njit(cache=True, inline="always")
def gtpu(data, p, end):
    """A GTP-U version 1 G-PDU (3GPP TS 29.281) at p, its extension headers skipped: IP follows."""
    if p + 8 > end or (data[p] >> 5) != 1 or (data[p] & 0x10) == 0 or data[p + 1] != 0xFF:
        return _NOT
    teid = be32(data, p + 4)
    q = p + 8
    if data[p] & 0x07:  # sequence number, N-PDU number and the next extension header's type
        if q + 4 > end:
            return _NOT
        nxt = data[q + 3]
        q += 4
        for _ in range(MAX_GTP_EXTENSIONS):
            if nxt == 0:
                break
            if q >= end or data[q] == 0 or q + np.int64(data[q]) * 4 > end:
                return _NOT
            length = np.int64(data[q]) * 4
            nxt = data[q + length - 1]
            q += length
        else:
            return _NOT
    return _ip_by_version(data, q, end), q, teid


@numba.njit(cache=True, inline="always")
def l2tp(data, p, end):
    """An L2TPv2 data message (RFC 2661) at p and the PPP frame in it; control messages are not opened."""
    if p + 6 > end:
        return _NOT
    flags = be16(data, p)
    if (flags & 0x8000) != 0 or (flags & 0xF) != 2:
        return _NOT
    q = p + 2
    if flags & 0x4000:  # length
        q += 2
    if q + 4 > end:
        return _NOT
    ident = (be16(data, q) << 16) | be16(data, q + 2)
    q += 4
    if flags & 0x0800:  # Ns, Nr
        q += 4
    if flags & 0x0200:  # offset size, then that much padding
        if q + 2 > end:
            return _NOT
        q += 2 + be16(data, q)
    if q + 2 <= end and data[q] == 0xFF and data[q + 1] == 0x03:  # PPP address and control
        q += 2
    nxt, at = _ppp(data, q, end)
    return nxt, at, ident


@numba.njit(cache=True, inline="always")
def udp_tunnel(data, p, end, port):
    """The tunnel header at p of a UDP datagram to ``port`` (``udp_tunnel_port``): (next EtherType or -1,
    offset, id, type)."""
    if port == PORT_VXLAN:
        nxt, at, tid = vxlan(data, p, end)
        return nxt, at, tid, np.int64(T_VXLAN)
    if port == PORT_GENEVE:
        nxt, at, tid = geneve(data, p, end)
        return nxt, at, tid, np.int64(T_GENEVE)
    if port == PORT_GTPU:
        nxt, at, tid = gtpu(data, p, end)
        return nxt, at, tid, np.int64(T_GTPU)
    if port == PORT_L2TP:
        nxt, at, tid = l2tp(data, p, end)
        return nxt, at, tid, np.int64(T_L2TP)
    return np.int64(-1), p, np.int64(-1), np.int64(T_NONE)
