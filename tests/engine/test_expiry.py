"""Expiry runs on packet time: a capture spanning an hour splits exactly where it should."""

from datetime import datetime

from tests.conftest import capture_records
from tests.pcapbuild import ethernet, ipv4, tcp, udp, write_pcap

T0 = 1_700_000_000.0
A, B = ("02:00:00:00:00:0a", "10.0.0.1"), ("02:00:00:00:00:0b", "10.0.0.2")


def frame(src, dst, l4, proto):
    return ethernet(src[0], dst[0], 0x0800, ipv4(src[1], dst[1], proto, l4))


def build(path):
    packets = []
    for k in range(360):  # a TCP flow with a packet every 10 s for an hour, alternating sides
        s, d = (A, B) if k % 2 == 0 else (B, A)
        sp, dp = (40000, 443) if k % 2 == 0 else (443, 40000)
        packets.append((T0 + 10 * k, frame(s, d, tcp(sp, dp, 0x18, b"x" * 10), 6)))
    for t in (0, 30, 230, 240):  # a UDP flow idle for 190 s in the middle
        packets.append((T0 + t + 0.5, frame(A, B, udp(5000, 53, b"q"), 17)))
    packets.append((T0 + 3590.7, frame(B, A, udp(123, 123, b"n"), 17)))  # at the very end
    packets.sort(key=lambda p: p[0])
    write_pcap(path, packets)


def test_idle_and_active_timeouts_split_on_packet_time(tmp_path):
    pcap = tmp_path / "hour.pcap"
    build(pcap)
    records, proc = capture_records(pcap, "--flow-timeout", "120s", "--active-timeout", "600s", "--workers", "2",
                                    tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    tcp_recs = sorted((r for r in records if r["protocol"] == "tcp"), key=lambda r: r["first_seen_at"])
    # segment j starts at 610*j s: its first packet is the first one more than 600 s after the previous start
    offsets = [round(_epoch(r["first_seen_at"]) - T0) for r in tcp_recs]
    lasts = [round(_epoch(r["last_seen_at"]) - T0) for r in tcp_recs]
    assert offsets == [0, 610, 1220, 1830, 2440, 3050]
    assert lasts == [600, 1210, 1820, 2430, 3040, 3590]
    assert [r["end_reason"] for r in tcp_recs] == ["active"] * 5 + ["shutdown"]
    assert [r["src_stat"]["packets"] + r["dst_stat"]["packets"] for r in tcp_recs] == [61] * 5 + [55]

    udp_recs = sorted((r for r in records if r["protocol"] == "udp" and r["dst"]["port"] == 53),
                      key=lambda r: r["first_seen_at"])
    assert [(round(_epoch(r["first_seen_at"]) - T0, 1), round(_epoch(r["last_seen_at"]) - T0, 1), r["end_reason"])
            for r in udp_recs] == [(0.5, 30.5, "idle"), (230.5, 240.5, "idle")]
    last = [r for r in records if r["protocol"] == "udp" and r["dst"]["port"] == 123]
    assert [r["end_reason"] for r in last] == ["shutdown"]


def test_active_timeout_zero_keeps_long_flows_whole(tmp_path):
    pcap = tmp_path / "hour.pcap"
    build(pcap)
    records, proc = capture_records(pcap, "--active-timeout", "0", tmp_path=tmp_path)
    tcp_recs = [r for r in records if r["protocol"] == "tcp"]
    assert len(tcp_recs) == 1
    assert tcp_recs[0]["src_stat"]["packets"] + tcp_recs[0]["dst_stat"]["packets"] == 360


def _epoch(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
