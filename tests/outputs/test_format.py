"""Record format of docs/architecture.md §4: fields, ids, times, and JSON-lines framing."""

import json
import uuid

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from devourer.flow import record as R
from devourer.flow.key import key_word_of
from devourer.outputs.format import RecordFormatter
from devourer.packet.tunnels import TUNNEL_NAMES
from tests.community_reference import reference_id


def row(first_us=1_736_937_000_123_456, proto=6, sport=52431, dport=443, src_is_b=False):
    r = np.zeros(R.FLOW_WORDS, np.uint64)
    a = bytes([192, 168, 1, 10]) + bytes(12)
    b = bytes([93, 184, 216, 34]) + bytes(12)
    r[0:2] = np.frombuffer(a, "<u8")
    r[2:4] = np.frombuffer(b, "<u8")
    r[R.F_KEY] = key_word_of(sport, dport, 0, proto, False)
    r[R.F_FIRST] = first_us
    r[R.F_LAST] = first_us + 72_531_865
    r[R.F_A_BYTES], r[R.F_A_PKTS], r[R.F_B_BYTES], r[R.F_B_PKTS] = 12340, 42, 98210, 65
    r[R.F_MAC_A] = (1 << 63) | 0xAABBCCDDEEF0
    r[R.F_STATE] = R.ST_ESTABLISHED | (R.ST_SRC_IS_B if src_is_b else 0)
    r[R.F_END] = R.END_IDLE
    return r


def test_record_matches_design_example():
    (rec,) = [json.loads(x) for x in RecordFormatter("s1").lines(np.array([row()])).splitlines()]
    assert rec["protocol"] == "tcp"
    assert rec["src"] == {"addr": "192.168.1.10", "port": 52431, "hw_addr": "aa:bb:cc:dd:ee:f0", "names": []}
    assert rec["dst"] == {"addr": "93.184.216.34", "port": 443, "hw_addr": None, "names": []}
    assert rec["first_seen_at"] == "2025-01-15T10:30:00.123456Z"
    assert rec["last_seen_at"] == "2025-01-15T10:31:12.655321Z"
    assert rec["src_stat"] == {"bytes": 12340, "packets": 42}
    assert rec["dst_stat"] == {"bytes": 98210, "packets": 65}
    assert (rec["status"], rec["end_reason"]) == ("established", "idle")
    assert uuid.UUID(rec["id"]).version == 8


def test_src_is_the_first_sender_even_when_it_is_b():
    (rec,) = [json.loads(x) for x in RecordFormatter("s1").lines(np.array([row(src_is_b=True)])).splitlines()]
    assert rec["src"]["addr"] == "93.184.216.34" and rec["src_stat"]["packets"] == 65


def test_ids_are_stable_and_depend_on_sensor_key_and_start():
    f = RecordFormatter("s1")
    ids = lambda fmt, r: json.loads(fmt.lines(np.array([r])))["id"]  # noqa: E731
    assert ids(f, row()) == ids(RecordFormatter("s1"), row())
    assert ids(f, row()) != ids(RecordFormatter("s2"), row())
    assert ids(f, row()) != ids(f, row(first_us=1_736_937_000_123_457))
    assert ids(f, row()) != ids(f, row(dport=444))


@given(sensor=st.text(max_size=40))
def test_any_sensor_string_keeps_one_record_per_line(sensor):
    rows = np.array([row(first_us=1_736_937_000_000_000 + i) for i in range(5)])
    lines = RecordFormatter(sensor).lines(rows).splitlines()
    assert len(lines) == 5
    assert all(json.loads(x)["sensor"] == sensor for x in lines)


def _expected(r: np.ndarray, interfaces: tuple = ()) -> dict:
    """The record of one row, computed with the standard library only (independent of outputs.render)."""
    import datetime
    import socket

    key, state = int(r[R.F_KEY]), int(r[R.F_STATE])
    proto, v6, vlan = (key >> 48) & 0xFF, bool((key >> 56) & 1), (key >> 32) & 0xFFF
    iface = (key >> 44) & 0xF | ((key >> 58) & 0x1F) << 4
    raw = r[0:4].tobytes()
    addr = [socket.inet_ntop(socket.AF_INET6, raw[:16]) if v6 else socket.inet_ntop(socket.AF_INET, raw[:4]),
            socket.inet_ntop(socket.AF_INET6, raw[16:]) if v6 else socket.inet_ntop(socket.AF_INET, raw[16:20])]
    port = [key & 0xFFFF, (key >> 16) & 0xFFFF]
    mac = [R.format_mac(int(r[R.F_MAC_A])), R.format_mac(int(r[R.F_MAC_B]))]
    stat = [{"bytes": int(r[R.F_A_BYTES]), "packets": int(r[R.F_A_PKTS])},
            {"bytes": int(r[R.F_B_BYTES]), "packets": int(r[R.F_B_PKTS])}]
    flags = [(state >> 8) & 0xFF, (state >> 16) & 0xFF]
    s, d = (1, 0) if state & R.ST_SRC_IS_B else (0, 1)

    def when(us):
        t = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=int(us))
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    tcp, icmp = proto == 6, proto in (1, 58)
    tunnel = None
    if state & R.ST_TUNNEL:
        t = [int(w) for w in r[R.F_TUNNEL:R.F_TUNNEL + R.TUNNEL_WORDS]]
        info, vnet, ids = t[R.U_INFO], t[R.U_VNET], t[R.U_IDS]
        outer_v6 = bool(info & R.INFO_OUTER_V6)
        outer = [R.format_addr(r[R.F_TUNNEL + at:R.F_TUNNEL + at + 2].tobytes(), outer_v6)
                 if info & R.INFO_OUTER_IP else None for at in (R.U_OUTER_A, R.U_OUTER_B)]
        side_id = [ids & 0xFFFFFFFF if info & R.INFO_A_ID else None, ids >> 32 if info & R.INFO_B_ID else None]
        tunnel = {"type": TUNNEL_NAMES.get(info & 0xFF, "unknown"), "id": vnet & 0xFFFFFFFF if vnet else None,
                  "src_id": side_id[s], "dst_id": side_id[d], "src": outer[s], "dst": outer[d],
                  "depth": (info >> R.INFO_DEPTH_SHIFT) & 0xFF}
    icmp_type_code = ((state >> 24) & 0xFF, (state >> 32) & 0xFF) if icmp else None
    return {
        "community_id": reference_id(proto, addr[s], port[s], addr[d], port[d], icmp_type_code),
        "protocol": {6: "tcp", 17: "udp", 1: "icmp4", 58: "icmp6"}.get(proto, str(proto)),
        "src": {"addr": addr[s], "port": port[s], "hw_addr": mac[s], "names": []},
        "dst": {"addr": addr[d], "port": port[d], "hw_addr": mac[d], "names": []},
        "first_seen_at": when(r[R.F_FIRST]), "last_seen_at": when(r[R.F_LAST]),
        "src_stat": stat[s], "dst_stat": stat[d],
        "status": "established" if state & R.ST_ESTABLISHED else "init",
        "end_reason": R.END_REASONS.get(int(r[R.F_END]), "unknown"),
        "vlan": vlan or None, "src_tcp_flags": flags[s] if tcp else None, "dst_tcp_flags": flags[d] if tcp else None,
        "icmp_type": (state >> 24) & 0xFF if icmp else None, "icmp_code": (state >> 32) & 0xFF if icmp else None,
        "tunnel": tunnel, "interface": interfaces[iface] if iface < len(interfaces) else None, "sensor": "s",
    }


_u64 = st.integers(0, 2**64 - 1)
# IPv6 words with runs of zero groups, IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) forms
_addr_words = st.one_of(
    st.tuples(_u64, _u64),
    st.tuples(st.just(0), _u64),
    st.tuples(st.just(0), st.integers(0, 2**32 - 1).map(lambda v: (v << 32) | 0xFFFF0000)),
    st.tuples(st.just(0), st.integers(0, 2**32 - 1).map(lambda v: v << 32)),
    st.tuples(_u64.map(lambda v: v & 0xFFFF0000FFFF0000), _u64.map(lambda v: v & 0x0000FFFF0000FFFF)),
)


@given(a=_addr_words, b=_addr_words, ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
       vlan=st.integers(0, 4095), proto=st.sampled_from([6, 17, 1, 58, 47, 132, 0, 255]), v6=st.booleans(),
       first=st.integers(0, 253402300799_999_999), span=st.integers(0, 10**12),
       counts=st.lists(_u64, min_size=4, max_size=4), macs=st.tuples(_u64, _u64), state=st.integers(0, 2**41 - 1),
       end=st.integers(0, 6), tunnel=st.tuples(st.integers(0, 2**41 - 1) | st.just(0), st.integers(0, 2**24 - 1),
                                               _u64, _addr_words, _addr_words),
       iface=st.integers(0, 511) | st.integers(0, 3),
       interfaces=st.lists(st.text(max_size=20) | st.integers(0, 511) | st.none(), max_size=6).map(tuple))
def test_every_field_matches_an_independent_rendering(a, b, ports, vlan, proto, v6, first, span, counts, macs,
                                                      state, end, tunnel, iface, interfaces):
    r = np.zeros(R.FLOW_WORDS, np.uint64)
    r[0:2], r[2:4] = a, b
    r[R.F_KEY] = key_word_of(ports[0], ports[1], vlan, proto, v6, iface=iface)
    r[R.F_FIRST] = first
    r[R.F_LAST] = min(first + span, 253402300799_999_999)
    r[R.F_A_BYTES], r[R.F_B_BYTES], r[R.F_A_PKTS], r[R.F_B_PKTS] = counts
    r[R.F_MAC_A], r[R.F_MAC_B] = macs[0] & 0x8000FFFFFFFFFFFF, macs[1] & 0x8000FFFFFFFFFFFF
    r[R.F_STATE], r[R.F_END] = state, end
    vnet, info, ids, outer_a, outer_b = tunnel  # a tunnel's words (read only where state says ST_TUNNEL)
    r[R.F_TUNNEL + R.U_VNET], r[R.F_TUNNEL + R.U_INFO], r[R.F_TUNNEL + R.U_IDS] = vnet, info, ids
    r[R.F_TUNNEL + R.U_OUTER_A:R.F_TUNNEL + R.U_OUTER_A + 2] = outer_a
    r[R.F_TUNNEL + R.U_OUTER_B:R.F_TUNNEL + R.U_OUTER_B + 2] = outer_b
    record = json.loads(RecordFormatter("s", interfaces).lines(r[None, :]))
    assert uuid.UUID(record.pop("id")).version == 8
    assert record == _expected(r, interfaces)
