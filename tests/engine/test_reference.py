"""Flows on every real capture in the corpus match tshark's independent reference.

Compared per 5-tuple and per endpoint (packets and wire bytes each way). Where
tshark's conventions differ from devourer's semantics the capture is named here
with the reason, and the difference itself is checked, never skipped:

* VLAN ids: tshark ignores them, devourer keys by them (docs/architecture.md §3). Both
  sides are summed per 5-tuple; ``zeek__vlan-collisions.pcap`` checks the split.
* A reused TCP 5-tuple: tshark splits by stream index, devourer by idle time;
  both sides are summed per 5-tuple.
* IP fragments: tshark counts a datagram once, on the frame completing its
  reassembly (never if it does not complete); devourer counts every fragment.
  The difference is computed from the capture by ``refcheck.fragment_adjustments``.
* Tunnels: devourer counts a packet it decapsulates in its inner flow only, so
  the outer UDP conversation of a tunnel it opened (VXLAN, Geneve, GTP-U, L2TP)
  has at most the packets it did not open (control messages, non-IP payloads).
  Every other conversation, tunnelled (``plain`` = 0) or not, must match.
"""

import collections

import pytest

from tests.conftest import PCAPS, REFERENCE, capture_records, corpus_files
from tests.refcheck import fragment_adjustments, our_flows, our_icmp, reference_flows, reference_icmp

FRAGMENTED = {  # captures whose references are affected by IP fragments, and why
    "nfstream__dns_fragmented.pcap": "large DNS answers in IPv4/IPv6 fragments",
    "zeek__ipv6-fragmented-dns.pcap": "a DNS answer in IPv6 fragments",
    "goprobe__default.pcap": "326 IPv4 fragments (SNMP traps)",
    "goprobe__fragmented.pcap": "fragmented pings and SIP INVITEs whose reassembly never completes",
}
DAMAGED = {"dpkt__truncated_dns_2.pcap"}  # ends inside a record: exit status 4, flows before the damage


def _with_reference():
    return [f for f in corpus_files() if (REFERENCE / f"{f}.flows.tsv").exists()]


def test_every_capture_has_a_reference():
    missing = [f for f in corpus_files() if not (REFERENCE / f"{f}.flows.tsv").exists()]
    assert not missing


@pytest.mark.parametrize("capture", _with_reference())
def test_tcp_udp_flows_match_reference(capture, tmp_path):
    records, proc = capture_records(PCAPS / capture, tmp_path=tmp_path)
    assert proc.returncode == (4 if capture in DAMAGED else 0), proc.stderr
    ref, outside = reference_flows(REFERENCE / f"{capture}.flows.tsv")
    ours = our_flows(records)
    extra_frag = {}
    if capture in FRAGMENTED:
        extra_frag, _ = fragment_adjustments(PCAPS / capture)

    expected = {key: collections.Counter(ref.get(key, {})) for key in set(ref) | set(extra_frag)}
    for key, extra in extra_frag.items():
        expected[key].update(extra)
    expected = {key: +want for key, want in expected.items() if +want}
    assert set(ours) - set(outside) == set(expected), "flow 5-tuples differ from the reference"
    for key, want in expected.items():
        assert +ours[key] == want, f"{capture} {key}"
    for key in set(ours) & set(outside):  # what a tunnel's outer conversation kept: packets not opened
        for k, n in ours[key].items():
            assert n <= outside[key][k], f"{capture} {key}: more than the whole outer conversation"


@pytest.mark.parametrize("capture", _with_reference())
def test_icmp_matches_reference(capture, tmp_path):
    records, proc = capture_records(PCAPS / capture, tmp_path=tmp_path)
    ref = reference_icmp(REFERENCE / f"{capture}.icmp.tsv")
    extra = {}
    if capture in FRAGMENTED:
        _, extra = fragment_adjustments(PCAPS / capture)
    ours = our_icmp(records)
    assert set(ours) == set(ref), f"{capture}: ICMP address pairs differ from the reference"
    for key, (packets, nbytes) in ref.items():
        add_p, add_b = extra.get(key, (0, 0))
        assert ours[key] == (packets + add_p, nbytes + add_b), f"{capture} {key}"


def test_vlan_ids_split_flows_that_tshark_merges(tmp_path):
    records, proc = capture_records(PCAPS / "zeek__vlan-collisions.pcap", tmp_path=tmp_path)
    assert proc.returncode == 0
    tcp = [r for r in records if r["protocol"] == "tcp"]
    assert len(tcp) == 3
    assert len({r["vlan"] for r in tcp}) == 3
    assert all(r["src_stat"]["packets"] + r["dst_stat"]["packets"] == 14 for r in tcp)


@pytest.mark.parametrize("capture, linktype_name", [
    ("nfstream__mdns-sll.pcap", "Linux SLL"), ("zeek__linux_dlt_sll2.pcap", "Linux SLL2"),
    ("ndpi__ocs-rawip.pcap", "raw IPv4"), ("zeek__dns-ech-rawip.pcap", "raw IPv6"),
    ("zeek__http-qinq-0.pcap", "QinQ"), ("ndpi__sites.pcapng", "pcapng, 22 interfaces"),
    ("zeek__pcapng-multi-interface.pcapng", "pcapng, 2 interfaces"), ("nfstream__1kxun.pcap", "pcapng named .pcap"),
])
def test_every_link_type_yields_flows(capture, linktype_name, tmp_path):
    records, proc = capture_records(PCAPS / capture, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert records, f"no flows from {linktype_name}"
