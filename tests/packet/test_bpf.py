"""devourer's BPF interpreter (packet.bpf) gives libpcap's verdict (pcapy's ``filter``, libpcap's own
bpf_filter) for every packet of real captures and for arbitrary bytes, over expressions that use every kind
of instruction libpcap emits (absolute, indexed and MSH loads, the scratch memory, ALU, every jump, len)."""

import numpy as np
import pcapy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.packet.bpf import compile_filter, live_kernel_filter, run_filter
from tests.conftest import PCAPS
from tests.pcapbuild import read_pcap_records

EXPRESSIONS = [
    "tcp", "udp port 53", "not port 53", "host 192.168.1.1 or net 10.0.0.0/8", "tcp[13] & 2 != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0", "vlan and tcp", "ip6 and udp", "icmp or icmp6", "greater 500",
    "less 100", "ip[6:2] & 0x1fff != 0", "tcp portrange 1000-2000", "ether broadcast or ether multicast",
    "pppoes and udp", "mpls", "udp[8:2] = 0x1234", "ip[2:2] > 1000 and ip[2:2] % 7 = 3", "(len - 14) * 2 / 3 > 100",
    "ip6 protochain 6", "tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16", live_kernel_filter("tcp port 443"),
    "ether[0] ^ 0xff = 0 or ether[12:2] << 1 = 0x1000", "vlan 100 or vlan 200",
]
CAPTURES = {"goprobe__default.pcap": 1, "nfstream__mdns-sll.pcap": 113, "ndpi__ocs-rawip.pcap": 101,
            "zeek__http-qinq-0.pcap": 1, "dpkt__nb6-http.pcap": 1}


def _verdicts(datalink, expression, frames, wires):
    prog = compile_filter(datalink, 262144, expression)
    data = np.frombuffer(b"".join(frames), np.uint8)
    offsets = np.cumsum([0] + [len(f) for f in frames[:-1]])
    meta = np.array([[0, 0, o, len(f)] for o, f in zip(offsets, frames)], np.uint32).reshape(-1, 4)
    keep = np.zeros(len(frames), np.bool_)
    run_filter(prog, data, meta, np.array(wires, np.uint32), keep)
    return keep.tolist()


def _libpcap(datalink, expression, frames, wires):
    bpf = pcapy.compile(datalink, 262144, expression, 1, 0)
    return [bpf.filter(f) != 0 for f in frames]


@pytest.mark.parametrize("capture", list(CAPTURES))
def test_every_packet_of_real_captures_gets_libpcaps_verdict(capture):
    records = list(read_pcap_records(PCAPS / capture))[:5000]
    frames = [frame for _, _, _, frame in records]
    wires = [len(f) for f in frames]  # pcapy's filter() knows only the captured bytes: its len is theirs
    for expression in EXPRESSIONS:
        try:
            want = _libpcap(CAPTURES[capture], expression, frames, wires)
        except pcapy.PcapError:
            continue  # not an expression for this link type
        assert _verdicts(CAPTURES[capture], expression, frames, wires) == want, expression


@settings(max_examples=300)
@given(frames=st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=20),
       expression=st.sampled_from(EXPRESSIONS))
def test_arbitrary_bytes_get_libpcaps_verdict(frames, expression):
    wires = [len(f) for f in frames]
    assert _verdicts(1, expression, frames, wires) == _libpcap(1, expression, frames, wires)


def test_len_is_the_wire_length_as_tcpdump_reads_it():
    """goprobe__default.pcap has 19,020 packets cut to 128 bytes: `greater 500` passes those that were longer
    on the wire, as tcpdump counts them (pcap_offline_filter gives the filter the record's wire length)."""
    import subprocess

    capture = PCAPS / "goprobe__default.pcap"
    records = list(read_pcap_records(capture))
    frames = [frame for _, _, _, frame in records]
    wires = [wire for _, _, wire, _ in records]
    ours = sum(_verdicts(1, "greater 500", frames, wires))
    proc = subprocess.run(["tcpdump", "-r", str(capture), "--count", "greater 500"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{ours} packets" in proc.stdout
    assert ours > sum(1 for f in frames if len(f) >= 500) == 0  # every frame was cut to 128 bytes
