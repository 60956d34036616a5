"""The Community ID of every record (``outputs.community``): Zeek's published test vectors, the ``communityid``
package (the reference implementation in Python) on any flow, and tshark's own Community ID of the packets of
real captures."""

import ipaddress
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.flow import record as R
from devourer.flow.key import key_word_of
from devourer.outputs.community import community_ids
from tests.community_reference import reference_id
from tests.conftest import PCAPS, capture_records


def _row(proto, src, sport, dst, dport, icmp=None):
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    r = np.zeros(R.FLOW_WORDS, np.uint64)
    r[0:2] = np.frombuffer(a.packed.ljust(16, b"\0"), "<u8")
    r[2:4] = np.frombuffer(b.packed.ljust(16, b"\0"), "<u8")
    r[R.F_KEY] = key_word_of(0, 0, 0, proto, a.version == 6) if icmp else key_word_of(sport, dport, 0, proto,
                                                                                       a.version == 6)
    if icmp:
        r[R.F_STATE] = (icmp[0] << 24) | (icmp[1] << 32)
    return r


V6_A, V6_B = "fe80:1:203:405:607:809:a0b:c0d", "fe80:1011:1213:1415:1617:1819:1a1b:1c1d"
#: Zeek's testing/btest/bifs/community_id (orig, resp, seed, expected), and one without ports (RSVP)
ZEEK_VECTORS = [
    ((6, "1.2.3.4", 1122, "5.6.7.8", 3344), 0, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
    ((17, "1.2.3.4", 1122, "5.6.7.8", 3344), 0, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
    ((1, "1.2.3.4", 0, "5.6.7.8", 0, (8, 0)), 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
    ((58, V6_A, 0, V6_B, 0, (128, 0)), 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="),
    ((6, "1.2.3.4", 1122, "5.6.7.8", 3344), 1, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
    ((17, "1.2.3.4", 1122, "5.6.7.8", 3344), 1, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
    ((1, "1.2.3.4", 0, "5.6.7.8", 0, (8, 0)), 1, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
    ((58, V6_A, 0, V6_B, 0, (128, 0)), 1, "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
    ((46, "1.2.3.4", 0, "5.6.7.8", 0), 0, "1:ikv3kmf89luf73WPz1jOs49S768="),
]


@pytest.mark.parametrize("flow,seed,expected", ZEEK_VECTORS)
def test_the_published_vectors(flow, seed, expected):
    proto, src, sport, dst, dport, *icmp = flow
    forward = _row(proto, src, sport, dst, dport, *icmp)
    # the same flow seen from its other end (an ICMP reply's type is the request's counterpart)
    back_icmp = [(0 if icmp[0][0] == 8 else 129, 0)] if icmp else []
    backward = _row(proto, dst, dport, src, sport, *back_icmp)
    assert community_ids(np.array([forward, backward]), seed) == [expected, expected]


_V4 = st.sampled_from(["10.0.0.1", "10.0.0.2", "127.0.0.1"]) | st.ip_addresses(v=4).map(str)
_V6 = st.sampled_from(["::1", "fe80::1", "fe80::2"]) | st.ip_addresses(v=6).map(str)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.tuples(_V4, _V4), st.tuples(_V6, _V6)), st.integers(0, 65535), st.integers(0, 65535),
       st.sampled_from([6, 17, 132, 1, 58, 47, 46, 0, 255]), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 65535), st.booleans())
def test_any_flow_has_the_id_of_the_reference_implementation(addrs, sport, dport, proto, itype, icode, seed, same):
    """The communityid package on the record's fields: any address pair (the same address at both ends too),
    ports, protocol, ICMP type and code, seed."""
    src, dst = (addrs[0], addrs[0]) if same else addrs
    icmp = (itype, icode) if proto in (1, 58) else None
    ours = community_ids(np.array([_row(proto, src, sport, dst, dport, icmp)]), seed)[0]
    assert ours == reference_id(proto, src, sport, dst, dport, icmp, seed)


@pytest.mark.parametrize("capture", ["zeek__5-pings.pcap", "dpkt__dns_icmp.pcap", "zeek__icmp6-nd-options.pcap",
                                     "zeek__icmp-destunreach-udp.pcap", "nfstream__iphone.pcap", "dpkt__http.pcap",
                                     "zeek__vlan-collisions.pcap", "nfstream__http_ipv6.pcap"])
def test_every_record_has_the_community_id_tshark_gives_its_packets(capture, tmp_path):
    """tshark's Community ID post-dissector on every packet; a record's id is the id of its flow's packets
    (for ICMP, of some packet of the address pair: the record takes its first packet's type)."""
    fields = ["ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "icmp.type", "icmpv6.type", "tcp.port", "udp.port",
              "communityid"]
    out = subprocess.run(["tshark", "--enable-protocol", "communityid", "-r", str(PCAPS / capture), "-T", "fields",
                          "-E", "separator=|", *[x for f in fields for x in ("-e", f)]],
                         capture_output=True, text=True, check=True).stdout
    by_flow: dict[tuple, set] = {}
    for line in out.splitlines():
        # the first value of each field: the packet's own header (an ICMP error quotes another after it)
        src4, src6, dst4, dst6, icmp4, icmp6, tcp, udp, cid = (v.split(",")[0] for v in line.split("|"))
        if not cid:
            continue
        proto, ports = (1, "") if icmp4 else (58, "") if icmp6 else (6, tcp) if tcp else (17, udp) if udp else (0, "")
        if not proto:
            continue
        ports = tuple(sorted(map(int, line.split("|")[6 if proto == 6 else 7].split(",")[:2]))) if ports else ()
        a, b = sorted([src4 or src6, dst4 or dst6])
        by_flow.setdefault((proto, a, b, ports), set()).add(cid)
    records, proc = capture_records(PCAPS / capture, "--decapsulate", "none", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    checked = 0
    for r in records:
        proto = {"tcp": 6, "udp": 17, "icmp4": 1, "icmp6": 58}.get(r["protocol"]) or int(r["protocol"])
        a, b = sorted([r["src"]["addr"], r["dst"]["addr"]])
        ports = tuple(sorted([r["src"]["port"], r["dst"]["port"]])) if proto in (6, 17) else ()
        seen = by_flow.get((proto, a, b, ports))
        if seen is None:
            continue  # e.g. a fragment tshark did not reassemble into its transport header
        assert r["community_id"] in seen, (capture, r)
        checked += 1
    assert checked >= 0.8 * len(records) > 0


def test_the_seed_flag_gives_the_ids_of_that_seed(tmp_path):
    records, proc = capture_records(PCAPS / "zeek__5-pings.pcap", "--community-id-seed", "7", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for r in records:
        icmp = (r["icmp_type"], r["icmp_code"]) if r["icmp_type"] is not None else None
        assert r["community_id"] == reference_id(1, r["src"]["addr"], 0, r["dst"]["addr"], 0, icmp, seed=7)


@pytest.mark.parametrize("value", ["-1", "65536", "x"])
def test_a_seed_out_of_range_is_one_line_and_exit_2(value, tmp_path):
    from tests.conftest import run_devourer

    proc = run_devourer("capture", "-r", PCAPS / "zeek__5-pings.pcap", "--community-id-seed", value)
    assert proc.returncode == 2 and "--community-id-seed" in proc.stderr and proc.stderr.count("\n") == 1
