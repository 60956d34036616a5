"""Captures built to hurt, replayed through the whole engine: every packet is accounted for (the summary adds up),
no process crashes, bounds hold, and every record is valid JSON.

Covered here: frames of 0 bytes and of 64 KiB, IP headers claiming more bytes than the frame holds, IPv6
extension-header chains that run long, first fragments that never complete (many more than the fragment
table holds), clocks that go backwards and jump years, and thousands of distinct DNS names against a small
--max-names. (Random bytes through the decoders are the property tests of tests/packet and tests/names.)
"""

import json
import re
import struct

from devourer.packet.decode import MAX_IPV6_EXT_HEADERS
from tests.conftest import packets_add_up, run_devourer, summary_counts
from tests.pcapbuild import ethernet, ipv4, ipv6, pcap_header, pcap_record, udp

A, B = "02:00:00:00:00:01", "02:00:00:00:00:02"
T0 = 1_700_000_000.0


def replay(tmp_path, records: list[bytes], *args):
    path = tmp_path / "hostile.pcap"
    path.write_bytes(pcap_header(snaplen=262144) + b"".join(records))
    out = tmp_path / "flows.jsonl"
    proc = run_devourer("capture", "-r", path, "-o", "file", "-w", out, *args)
    flows = [json.loads(line) for line in out.read_text().splitlines()]
    s = summary_counts(proc.stderr)
    assert packets_add_up(s), proc.stderr
    s["names evicted"] = int(re.search(r"([\d,]+) evicted from the name map", proc.stderr).group(1).replace(",", ""))
    assert s["flows written"] == len(flows)
    return proc, s, flows


def raw_record(ts: float, frame: bytes, wire_len: int) -> bytes:
    sec, usec = int(ts), round((ts % 1) * 1e6)
    return struct.pack("<IIII", sec, usec, len(frame), wire_len) + frame


def test_zero_length_huge_and_lying_frames(tmp_path):
    good = ethernet(A, B, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"x")))
    records = [
        raw_record(T0, b"", 0),  # a zero-length frame
        raw_record(T0 + 1, b"\xff" * 13, 13),  # shorter than an Ethernet header
        raw_record(T0 + 2, ethernet(A, B, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"y" * 65_000))),
                   65_000 + 42),  # a 64 KiB frame
        raw_record(T0 + 3, good[:14] + ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"z"), total_len=60_000)[:40],
                   60_014),  # claims 60,000 bytes, holds 40 (a snaplen cut): counted with its wire length
        raw_record(T0 + 4, good[:14] + ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), total_len=0)[:28], 42),
        # total length 0, as in captures of TCP/UDP segmentation offload: keyed and counted like tshark does
    ]
    proc, s, flows = replay(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    # no link-layer header to read an IP version from: not IP
    assert (s["packets read"], s["non-IP"], s["malformed"], s["in flows"]) == (5, 2, 0, 3)
    (flow,) = flows
    assert flow["src_stat"] == {"packets": 3, "bytes": 65_042 + 60_014 + 42}


def test_long_ipv6_extension_chains_are_counted(tmp_path):
    def packet(n: int, ts: float) -> bytes:
        body = udp(5, 6, b"v")
        for k in range(n):  # destination-options headers (8 bytes, PadN), built from the last one outwards
            body = bytes([17 if k == 0 else 60, 0, 1, 4, 0, 0, 0, 0]) + body
        return pcap_record(ts, ethernet(A, B, 0x86DD, ipv6("fd00::1", "fd00::2", 60 if n else 17, body)))

    records = [packet(n, T0 + i) for i, n in enumerate((0, 1, 8, 200, 2000))]
    proc, s, flows = replay(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    # chains up to MAX_IPV6_EXT_HEADERS reach UDP (one flow); longer ones are refused as malformed
    reach = sum(n <= MAX_IPV6_EXT_HEADERS for n in (0, 1, 8, 200, 2000))
    assert (s["packets read"], s["in flows"], s["malformed"]) == (5, reach, 5 - reach)
    assert [f["src_stat"]["packets"] for f in flows] == [reach]


def test_fragments_that_never_complete_stay_bounded(tmp_path):
    records = [pcap_record(T0 + i * 1e-4, ethernet(A, B, 0x0800, ipv4(
        "10.1.0.1", "10.1.0.2", 17, udp(7, 8, b"f" * 16), ident=i, more_frags=True))) for i in range(40_000)]
    # and as many non-first fragments whose first fragment never came
    records += [pcap_record(T0 + 5 + i * 1e-4, ethernet(A, B, 0x0800, ipv4(
        "10.1.0.3", "10.1.0.4", 17, b"g" * 16, ident=i, frag_offset=64))) for i in range(40_000)]
    proc, s, flows = replay(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    assert s["unmatched fragments"] == 40_000 and s["in flows"] == 40_000
    assert len(flows) == 1 and flows[0]["src_stat"]["packets"] == 40_000


def test_clock_going_backwards_and_jumping_years(tmp_path):
    def pkt(ts, sport):
        return pcap_record(ts, ethernet(A, B, 0x0800, ipv4("10.2.0.1", "10.2.0.2", 17, udp(sport, 53, b"q"))))

    ten_years = 10 * 365 * 86400
    records = [pkt(T0, 1000), pkt(T0 + 1, 1000), pkt(T0 - 3600, 1000),  # an hour back, same flow
               pkt(T0 + ten_years, 2000),  # a jump of ten years: every earlier flow is long idle
               pkt(T0 + 2, 1000),  # and back again: a packet of the old flow, after it was written
               pkt(0, 3000), pkt(4_000_000_000, 3000)]  # 1970 and 2096
    proc, s, flows = replay(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    assert s["in flows"] == 7
    assert sum(f["src_stat"]["packets"] for f in flows) == 7
    # a packet from the past moves first_seen back (the flow of port 1000 starts an hour early), never past last_seen
    assert all(f["first_seen_at"] <= f["last_seen_at"] for f in flows)
    first = [f for f in flows if f["src"]["port"] == 1000]
    assert first[0]["end_reason"] == "idle" and first[0]["src_stat"]["packets"] == 3
    assert (first[0]["first_seen_at"], first[0]["last_seen_at"]) == ("2023-11-14T21:13:20.000000Z", "2023-11-14T22:13:21.000000Z")


def test_many_distinct_dns_names_stay_within_max_names(tmp_path):
    def dns_answer(i: int) -> bytes:
        name = b"".join(bytes([len(p)]) + p for p in (f"host{i}".encode(), b"example", b"com")) + b"\0"
        head = struct.pack("!HHHHHH", i & 0xFFFF, 0x8180, 1, 1, 0, 0)
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 3600, 4) + bytes([10, 3, (i >> 8) & 255, i & 255])
        return head + name + struct.pack("!HH", 1, 1) + answer

    records = [pcap_record(T0 + i * 1e-3, ethernet(A, B, 0x0800, ipv4("10.3.255.1", "10.3.255.2", 17, udp(
        53, 40000, dns_answer(i))))) for i in range(5_000)]
    records += [pcap_record(T0 + 10, ethernet(A, B, 0x0800, ipv4("10.9.0.1", f"10.3.{(i >> 8) & 255}.{i & 255}", 17,
                                                                  udp(5000, 80, b"x")))) for i in (1, 4_999)]
    proc, s, flows = replay(tmp_path, records, "--max-names", "100")
    assert proc.returncode == 0, proc.stderr
    assert s["names evicted"] >= 4_900
    by_dst = {f["dst"]["addr"]: f["dst"]["names"] for f in flows if f["src"]["port"] == 5000}
    assert by_dst["10.3.19.135"] == ["host4999.example.com"]  # recent: still known
    assert by_dst["10.3.0.1"] == []  # pushed out long before its flow


def _dns_answer(ident: int, name: str, address: bytes, ttl: int = 3600) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    head = struct.pack("!HHHHHH", ident & 0xFFFF, 0x8180, 1, 1, 0, 0)
    return head + qname + struct.pack("!HH", 1, 1) + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + address


def test_one_address_named_thousands_of_times_keeps_records_bounded(tmp_path):
    """Spoofed DNS answers give one address 6,000 distinct names (anyone who can send UDP from port 53 onto the
    link can): the name map keeps at most MAX_NAMES_PER_KEY per address, the rest is counted, and the flows of
    that address carry the most recently observed names only (before the bound: every name on every record, and
    an exporter that ran out of memory on a batch of such flows)."""
    from devourer.names.table import MAX_NAMES_PER_KEY

    victim = bytes([10, 4, 0, 1])
    records = [pcap_record(T0 + i * 1e-4, ethernet(A, B, 0x0800, ipv4("10.3.255.1", "10.3.255.2", 17, udp(
        53, 40000, _dns_answer(i, f"n{i}.flood.example", victim))))) for i in range(6_000)]
    records += [pcap_record(T0 + 1 + i * 1e-3, ethernet(A, B, 0x0800, ipv4(f"10.9.0.{i + 1}", "10.4.0.1", 17,
                                                                           udp(5000 + i, 443, b"x"))))
                for i in range(200)]
    proc, s, flows = replay(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    to_victim = [f for f in flows if f["dst"]["addr"] == "10.4.0.1"]
    assert len(to_victim) == 200
    expected = [f"n{i}.flood.example" for i in range(6_000 - MAX_NAMES_PER_KEY, 6_000)]
    assert all(f["dst"]["names"] == expected for f in to_victim)
    capped = int(re.search(r"([\d,]+) over the bound per address", proc.stderr).group(1).replace(",", ""))
    assert capped == 6_000 - MAX_NAMES_PER_KEY
    assert max(len(line) for line in (tmp_path / "flows.jsonl").read_bytes().splitlines()) < 2_000
