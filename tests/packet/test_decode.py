"""Batch decode: keys are direction-agnostic, every packet lands in exactly one place."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer import counters as CN
from devourer.packet import layout as L
from devourer.packet.decode import DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW_LINKTYPE, BatchDecoder
from tests.pcapbuild import ethernet, icmp, ipv4, ipv6, tcp, udp


def decode(frames, datalink=DLT_EN10MB, workers=1, wire=None):
    counters = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
    dec = BatchDecoder(max(1, len(frames)), workers, counters)
    meta, offset = [], 0
    for i, f in enumerate(frames):
        meta.append((1_700_000_000 + i, 0, offset, len(f)))
        offset += len(f)
    n = dec.decode(b"".join(frames), np.array(meta, np.uint32).tobytes(),
                   None if wire is None else np.array(wire, np.uint32), datalink, 262144)
    return dec.records[:n].view(L.PACKET_DTYPE).ravel().copy(), counters, dec.worker_of[:n].copy()


def _accounted(counters, n_records):
    return n_records + counters[CN.C_NON_IP] + counters[CN.C_MALFORMED] + counters[CN.C_FRAG_UNMATCHED]


addresses4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ports = st.integers(0, 65535)


@given(a=addresses4, b=addresses4, pa=ports, pb=ports, proto=st.sampled_from([6, 17]), vlan=st.none() | st.integers(1, 4094))
def test_both_directions_give_the_same_key_and_worker(a, b, pa, pb, proto, vlan):
    l4 = tcp if proto == 6 else udp
    fwd = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4(a, b, proto, l4(pa, pb)), vlan=vlan)
    rev = ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", 0x0800, ipv4(b, a, proto, l4(pb, pa)), vlan=vlan)
    recs, counters, workers = decode([fwd, rev], workers=7)
    assert len(recs) == 2
    key = ["addr_a", "addr_b", "port_a", "port_b", "vlan", "proto", "key_hash"]
    for k in key:
        assert np.array_equal(recs[0][k], recs[1][k]), k
    assert workers[0] == workers[1]
    same_endpoint = (a, pa) == (b, pb)
    if not same_endpoint:
        assert (recs[0]["flags"] & L.FLAG_FROM_B) != (recs[1]["flags"] & L.FLAG_FROM_B)
    # A is the smaller endpoint by (address bytes, port)
    ab = (bytes(recs[0]["addr_a"][:4]), int(recs[0]["port_a"]))
    bb = (bytes(recs[0]["addr_b"][:4]), int(recs[0]["port_b"]))
    assert ab <= bb


@settings(max_examples=300)
@given(frames=st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=20),
       datalink=st.sampled_from([DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW_LINKTYPE]))
def test_arbitrary_bytes_never_crash_and_are_all_accounted_for(frames, datalink):
    recs, counters, _ = decode(frames, datalink)
    assert counters[CN.C_READ] == len(frames)
    assert _accounted(counters, len(recs)) == len(frames)


@settings(max_examples=200)
@given(payload=st.binary(min_size=0, max_size=120), cut=st.integers(0, 200))
def test_truncated_ip_packets_are_counted_not_crashing(payload, cut):
    frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, payload))
    recs, counters, _ = decode([frame[:cut]])
    assert _accounted(counters, len(recs)) == 1


def test_wire_length_from_record_header_or_ip_header():
    frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                     ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"z" * 1000)))
    recs, _, _ = decode([frame[:100]], wire=[len(frame)])
    assert recs[0]["wire_len"] == len(frame)
    recs, _, _ = decode([frame[:100]])  # no record header: caplen < snaplen means not cut
    assert recs[0]["wire_len"] == 100


def test_ipv6_extension_headers_and_icmp6():
    hop_by_hop = bytes([58, 0, 1, 4, 0, 0, 0, 0])  # next header ICMPv6, PadN
    frame = ethernet("02:00:00:00:00:01", "33:33:00:00:00:01", 0x86DD,
                     ipv6("fe80::1", "ff02::1", 0, hop_by_hop + icmp(130)))
    recs, counters, _ = decode([frame])
    assert len(recs) == 1 and recs[0]["proto"] == 58 and recs[0]["icmp_type"] == 130
    assert recs[0]["flags"] & L.FLAG_V6


def test_ipv4_options_and_fragments_join_their_first_fragment():
    opts = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    first = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                     ipv4("10.0.0.1", "10.0.0.2", 17, udp(5353, 53, b"a" * 24), ident=77, more_frags=True, options=opts))
    second = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                      ipv4("10.0.0.1", "10.0.0.2", 17, b"b" * 40, ident=77, frag_offset=32))
    orphan = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                      ipv4("10.0.0.1", "10.0.0.2", 17, b"c" * 40, ident=78, frag_offset=32))
    recs, counters, _ = decode([first, second, orphan])
    assert len(recs) == 2
    assert {int(r["port_a"]) for r in recs} | {int(r["port_b"]) for r in recs} == {53, 5353}
    assert np.array_equal(recs[0]["key_hash"], recs[1]["key_hash"])
    assert counters[CN.C_FRAG_UNMATCHED] == 1


def test_non_ip_is_counted():
    arp = ethernet("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", 0x0806, b"\0" * 28)
    recs, counters, _ = decode([arp])
    assert len(recs) == 0 and counters[CN.C_NON_IP] == 1


NAME_PORTS = [53, 5353, 5355, 137, 67, 68, 546, 547]


@settings(max_examples=300, deadline=None)
@given(packets=st.lists(st.tuples(st.sampled_from([6, 17]), st.sampled_from(NAME_PORTS + [443, 8080]),
                                  st.sampled_from(NAME_PORTS + [40000]), st.binary(max_size=12)), min_size=1,
                        max_size=20))
def test_the_resolver_gets_every_name_packet_but_dns_queries(packets):
    """The capture hands the resolver what it would read: UDP to or from a name port, TCP DNS, TLS ClientHellos.
    DNS-format queries (QR bit clear) name nothing and stay behind; the test of which is a query is the
    resolver's own, so nothing it would learn from is held back."""
    from devourer.names.observe import is_response as _is_response

    frames, expected = [], []
    for i, (proto, sport, dport, payload) in enumerate(packets):
        if proto == 6 and dport == 443 and i % 2:
            payload = b"\x16\x03\x01\x00\x10\x01" + payload  # looks like a ClientHello
        l4 = tcp(sport, dport, 0x18, payload) if proto == 6 else udp(sport, dport, payload)
        frames.append(ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("10.0.0.1", "10.0.0.2", proto,
                                                                                         l4)))
        ports = (sport, dport)
        if proto == 17:
            name_port = any(p in NAME_PORTS for p in ports)
            dns_format = any(p in (53, 5353, 5355) for p in ports)
            wanted = name_port and not (dns_format and not _is_response(payload))
        elif 53 in ports:
            wanted = len(payload) > 0 and not (len(payload) >= 2 and not _is_response(payload[2:]))
        else:
            wanted = payload[:2] == b"\x16\x03" and len(payload) >= 6 and payload[5] == 1
        if wanted:
            expected.append(i)
    counters = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
    dec = BatchDecoder(len(frames), 1, counters, want_names=True)
    meta, offset = [], 0
    for i, f in enumerate(frames):
        meta.append((1_700_000_000, i, offset, len(f)))
        offset += len(f)
    dec.decode(b"".join(frames), np.array(meta, np.uint32).tobytes(), None, DLT_EN10MB, 262144)
    slots = dec.name_packets()
    handed = [int(s[:L.RECORD_BYTES].copy().view(L.PACKET_DTYPE)["ts_us"][0]) - 1_700_000_000_000_000
              for s in slots]
    assert handed == expected
