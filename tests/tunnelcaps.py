"""Captures of our own for every encapsulation devourer opens, built with scapy (an independent encoder).

Each capture holds one inner TCP conversation (handshake, request, answer,
close) and one inner DNS query and answer that names the server, sent both ways
through the tunnel, so that tshark's reference (``../shared/pcaps/tools/mkref.py``)
has inner conversations to compare devourer's flows with, and the resolver a name
to learn inside the tunnel. Ids chosen per direction (MPLS labels, GTP-U TEIDs,
L2TP ids) differ between the two directions on purpose.
"""

from scapy.compat import raw
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.l2tp import L2TP
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

CLIENT, SERVER, RESOLVER = "10.20.0.5", "10.20.9.80", "10.20.9.53"
CLIENT6, SERVER6, RESOLVER6 = "2001:db8:20::5", "2001:db8:29::80", "2001:db8:29::53"
OUTER_C, OUTER_S = "192.0.2.10", "198.51.100.20"
OUTER_C6, OUTER_S6 = "2001:db8:ff::10", "2001:db8:ff::20"
NAME = "www.tunnel.example"
MAC_C, MAC_S = "02:00:00:00:00:0c", "02:00:00:00:00:05"
INNER_MAC_C, INNER_MAC_S = "02:00:00:00:10:0c", "02:00:00:00:10:05"


def inner_packets(v6: bool = False, sport: int = 40001):
    """[(from_client, inner IP packet)] of the conversation and the name lookup."""
    ip = IPv6 if v6 else IP
    c, s, r = (CLIENT6, SERVER6, RESOLVER6) if v6 else (CLIENT, SERVER, RESOLVER)
    up = lambda: ip(src=c, dst=s)  # noqa: E731
    down = lambda: ip(src=s, dst=c)  # noqa: E731
    answer = DNSRR(rrname=NAME, type="AAAA" if v6 else "A", rdata=s, ttl=300)
    return [
        (True, ip(src=c, dst=r) / UDP(sport=53001, dport=53) / DNS(id=7, rd=1, qd=DNSQR(qname=NAME,
                                                                                          qtype=28 if v6 else 1))),
        (False, ip(src=r, dst=c) / UDP(sport=53, dport=53001) / DNS(id=7, qr=1, aa=1, rd=1, qd=DNSQR(
            qname=NAME, qtype=28 if v6 else 1), an=answer)),
        (True, up() / TCP(sport=sport, dport=80, flags="S", seq=1000)),
        (False, down() / TCP(sport=80, dport=sport, flags="SA", seq=5000, ack=1001)),
        (True, up() / TCP(sport=sport, dport=80, flags="A", seq=1001, ack=5001)),
        (True, up() / TCP(sport=sport, dport=80, flags="PA", seq=1001, ack=5001) / Raw(
            b"GET / HTTP/1.1\r\nHost: " + NAME.encode() + b"\r\n\r\n")),
        (False, down() / TCP(sport=80, dport=sport, flags="PA", seq=5001, ack=1050) / Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64)),
        (True, up() / TCP(sport=sport, dport=80, flags="FA", seq=1050, ack=5108)),
        (False, down() / TCP(sport=80, dport=sport, flags="FA", seq=5108, ack=1051)),
        (True, up() / TCP(sport=sport, dport=80, flags="A", seq=1051, ack=5109)),
    ]


def _eth(up: bool, inner_mac: bool = False):
    a, b = (INNER_MAC_C, INNER_MAC_S) if inner_mac else (MAC_C, MAC_S)
    return Ether(src=a, dst=b) if up else Ether(src=b, dst=a)


def _outer_ip(up: bool, v6: bool = False):
    if v6:
        return IPv6(src=OUTER_C6, dst=OUTER_S6) if up else IPv6(src=OUTER_S6, dst=OUTER_C6)
    return IP(src=OUTER_C, dst=OUTER_S) if up else IP(src=OUTER_S, dst=OUTER_C)


def _ppp_proto(pkt) -> int:
    return 0x57 if pkt.haslayer(IPv6) and not pkt.haslayer(IP) or isinstance(pkt, IPv6) else 0x21


# every wrapper: (from_client, inner packet) -> the frame on the wire
WRAPPERS = {
    "pppoe": lambda up, p: _eth(up) / PPPoE(sessionid=0x2A2A) / PPP(proto=_ppp_proto(p)) / p,
    "mpls": lambda up, p: _eth(up) / MPLS(label=100, s=0, ttl=64) / MPLS(label=1600 if up else 1700, s=1,
                                                                          ttl=64) / p,
    "mpls-pw": lambda up, p: _eth(up) / MPLS(label=2100 if up else 2200, s=1, ttl=64) / Raw(b"\0\0\0\0")
    / _eth(up, True) / Dot1Q(vlan=7) / p,
    "gre": lambda up, p: _eth(up) / _outer_ip(up) / GRE(key_present=1, key=77, seqnum_present=1,
                                                        sequence_number=1) / p,
    "gre-checksum": lambda up, p: _eth(up) / _outer_ip(up) / GRE(chksum_present=1) / p,
    "gre-ethernet": lambda up, p: _eth(up) / _outer_ip(up) / GRE(proto=0x6558) / _eth(up, True) / p,
    "erspan2": lambda up, p: _eth(up) / _outer_ip(up) / GRE(seqnum_present=1, sequence_number=3)
    / ERSPAN_II(session_id=11) / _eth(up, True) / p,
    "erspan3": lambda up, p: _eth(up) / _outer_ip(up) / GRE(seqnum_present=1, sequence_number=3)
    / ERSPAN_III(session_id=12) / _eth(up, True) / p,
    "vxlan": lambda up, p: _eth(up) / Dot1Q(vlan=10) / _outer_ip(up) / UDP(sport=49152 if up else 49153,
                                                                           dport=4789)
    / VXLAN(vni=5001, flags=0x08) / _eth(up, True) / Dot1Q(vlan=20) / p,
    "geneve": lambda up, p: _eth(up) / _outer_ip(up) / UDP(sport=50000, dport=6081)
    / GENEVE(vni=6001, proto=0x6558, optionlen=2, options=bytes.fromhex("0101010100000001"))
    / _eth(up, True) / p,
    "gtpu": lambda up, p: _eth(up) / _outer_ip(up) / UDP(sport=2152, dport=2152)
    / GTP_U_Header(teid=0x1111 if up else 0x2222, gtp_type=255, E=1, next_ex=0x85)
    / GTPPDUSessionContainer(type=1 if up else 0, QFI=9) / p,
    "l2tp": lambda up, p: _eth(up) / _outer_ip(up) / UDP(sport=1701, dport=1701)
    / L2TP(tunnel_id=31 if up else 41, session_id=32 if up else 42) / Raw(b"\xff\x03")
    / PPP(proto=_ppp_proto(p)) / p,
    "ipip": lambda up, p: _eth(up) / _outer_ip(up) / p,
    "6in4": lambda up, p: _eth(up) / _outer_ip(up) / p,
    "4in6": lambda up, p: _eth(up) / _outer_ip(up, v6=True) / p,
    "6in6": lambda up, p: _eth(up) / _outer_ip(up, v6=True) / p,
    "vxlan-gre": lambda up, p: _eth(up) / _outer_ip(up) / UDP(sport=49152, dport=4789) / VXLAN(vni=5002, flags=0x08)
    / _eth(up, True) / IP(src="172.16.0.1" if up else "172.16.0.2", dst="172.16.0.2" if up else "172.16.0.1")
    / GRE() / p,
}
#: the inner packets each capture carries: IPv6 ones where the encapsulation is about IPv6
INNER_V6 = {"6in4", "6in6"}
#: what the record's tunnel says for each: (type, keyed id or None, client side's id, server side's id, outer
#: addresses known, depth)
EXPECTED_TUNNEL = {
    "pppoe": ("pppoe", 0x2A2A, 0x2A2A, 0x2A2A, False, 1),
    "mpls": ("mpls", None, 1600, 1700, False, 1),
    "mpls-pw": ("mpls", None, 2100, 2200, False, 1),
    "gre": ("gre", 77, 77, 77, True, 1),
    "gre-checksum": ("gre", None, None, None, True, 1),
    "gre-ethernet": ("gre", None, None, None, True, 1),
    "erspan2": ("erspan", None, 11, 11, True, 1),
    "erspan3": ("erspan", None, 12, 12, True, 1),
    "vxlan": ("vxlan", 5001, 5001, 5001, True, 1),
    "geneve": ("geneve", 6001, 6001, 6001, True, 1),
    "gtpu": ("gtpu", None, 0x1111, 0x2222, True, 1),
    "l2tp": ("l2tp", None, 31 << 16 | 32, 41 << 16 | 42, True, 1),
    "ipip": ("ipip", None, None, None, True, 1),
    "6in4": ("6in4", None, None, None, True, 1),
    "4in6": ("4in6", None, None, None, True, 1),
    "6in6": ("6in6", None, None, None, True, 1),
    "vxlan-gre": ("gre", None, None, None, True, 2),
}


def frames(kind: str, v6: bool | None = None, sport: int = 40001) -> list[bytes]:
    """The frames of one capture of this encapsulation, in order."""
    wrap = WRAPPERS[kind]
    inner_v6 = kind in INNER_V6 if v6 is None else v6
    return [raw(wrap(up, p)) for up, p in inner_packets(inner_v6, sport)]
