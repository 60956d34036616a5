"""Tunnels (docs/architecture.md §3): a decapsulated packet counts in its inner flow only, checked against
tshark on captures of our own for every encapsulation devourer opens (``tests.tunnelcaps``, built with scapy),
with the tunnel each record names, the names learned inside, tenants kept apart and what is left closed.

The references come from ``../shared/pcaps/tools/mkref.py`` (tshark), as the corpus's do. The one capture
tshark does not open by default, an MPLS Ethernet pseudowire, is checked against the frames' own lengths.
"""

import shutil
import subprocess
import sys

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, fragment
from scapy.layers.l2 import ARP, Ether

from tests.conftest import SHARED, capture_records, summary_counts
from tests.pcapbuild import write_pcap
from tests.refcheck import our_flows, reference_flows
from tests.tunnelcaps import (CLIENT, CLIENT6, EXPECTED_TUNNEL, INNER_V6, NAME, OUTER_C, OUTER_C6, OUTER_S, OUTER_S6,
                              SERVER, SERVER6, WRAPPERS, frames, inner_packets)

MKREF = SHARED / "pcaps" / "tools" / "mkref.py"
NOT_IN_TSHARK = {"mpls-pw": "tshark opens an MPLS pseudowire only when told to (decode as)"}
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is installed by scripts/install.sh")


def _capture(tmp_path, name, frame_list):
    path = tmp_path / f"{name}.pcap"
    write_pcap(path, [(1_700_000_000 + i * 0.01, f) for i, f in enumerate(frame_list)])
    return path


def _tcp_flow(records):
    (flow,) = [r for r in records if r["protocol"] == "tcp"]
    return flow


@needs_tshark
@pytest.mark.parametrize("kind", [k for k in WRAPPERS if k not in NOT_IN_TSHARK])
def test_inner_flows_match_tshark(kind, tmp_path):
    pcap = _capture(tmp_path, kind, frames(kind))
    subprocess.run([sys.executable, str(MKREF), str(pcap), str(tmp_path)], check=True, stdout=subprocess.DEVNULL)
    ref, outside = reference_flows(tmp_path / f"{kind}.pcap.flows.tsv")
    records, proc = capture_records(pcap, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours = our_flows(records)
    assert len(ref) == 2  # the TCP conversation and the DNS lookup, inside the tunnel
    assert set(ours) - set(outside) == set(ref)
    for key, want in ref.items():
        assert +ours[key] == +want, f"{kind} {key}"
    assert not set(ours) & set(outside), "an opened tunnel's outer conversation still has packets"
    counts = summary_counts(proc.stderr)
    assert counts["in flows"] == counts["packets read"] == len(frames(kind))


@pytest.mark.parametrize("kind", list(WRAPPERS))
def test_each_record_names_its_tunnel_and_the_names_learned_inside(kind, tmp_path):
    records, proc = capture_records(_capture(tmp_path, kind, frames(kind)), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    flow = _tcp_flow(records)
    v6 = kind in INNER_V6
    assert (flow["src"]["addr"], flow["dst"]["addr"]) == ((CLIENT6, SERVER6) if v6 else (CLIENT, SERVER))
    assert flow["dst"]["names"] == [NAME]
    ttype, tid, src_id, dst_id, outer_known, depth = EXPECTED_TUNNEL[kind]
    tunnel = flow["tunnel"]
    assert (tunnel["type"], tunnel["id"], tunnel["src_id"], tunnel["dst_id"], tunnel["depth"]) == (
        ttype, tid, src_id, dst_id, depth)
    if not outer_known:
        assert tunnel["src"] is tunnel["dst"] is None
    elif kind == "vxlan-gre":  # the innermost tunnel's outer header: the GRE endpoints inside the VXLAN
        assert (tunnel["src"], tunnel["dst"]) == ("172.16.0.1", "172.16.0.2")
    elif kind in ("4in6", "6in6"):
        assert (tunnel["src"], tunnel["dst"]) == (OUTER_C6, OUTER_S6)
    else:
        assert (tunnel["src"], tunnel["dst"]) == (OUTER_C, OUTER_S)
    if kind == "mpls-pw":  # not in tshark's reference: the frames' own lengths
        fr = frames(kind)
        up = [len(f) for f, (from_client, p) in zip(fr, _inner(kind)) if from_client and p.haslayer("TCP")]
        down = [len(f) for f, (from_client, p) in zip(fr, _inner(kind)) if not from_client and p.haslayer("TCP")]
        assert (flow["src_stat"], flow["dst_stat"]) == ({"bytes": sum(up), "packets": len(up)},
                                                        {"bytes": sum(down), "packets": len(down)})
        assert flow["vlan"] == 7


def _inner(kind):
    return inner_packets(kind in INNER_V6)


def test_the_same_inner_flow_in_two_virtual_networks_is_two_flows(tmp_path):
    vni_a = frames("vxlan")
    vni_b = [f.replace(bytes.fromhex("08000000001389"), bytes.fromhex("08000000001771")) for f in vni_a]  # 5001, 6001
    assert vni_a != vni_b
    records, proc = capture_records(_capture(tmp_path, "two-vnis", vni_a + vni_b), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    tcp = [r for r in records if r["protocol"] == "tcp"]
    assert sorted(r["tunnel"]["id"] for r in tcp) == [5001, 6001]
    assert all(r["src_stat"]["packets"] + r["dst_stat"]["packets"] == 8 for r in tcp)
    # ids chosen per direction are recorded, not keyed: one flow, both labels
    records, _ = capture_records(_capture(tmp_path, "mpls", frames("mpls")), tmp_path=tmp_path)
    assert len([r for r in records if r["protocol"] == "tcp"]) == 1


def test_decapsulate_none_keeps_the_outer_flows(tmp_path):
    records, proc = capture_records(_capture(tmp_path, "vxlan", frames("vxlan")), "--decapsulate", "none",
                                    tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {(r["src"]["addr"], r["dst"]["port"]) for r in records} == {(OUTER_C, 4789), (OUTER_S, 4789)}
    assert all(r["tunnel"] is None for r in records)
    records, proc = capture_records(_capture(tmp_path, "pppoe", frames("pppoe")), "--decapsulate", "none",
                                    tmp_path=tmp_path)
    assert records == [] and summary_counts(proc.stderr)["non-IP"] == len(frames("pppoe"))


def test_broken_or_non_ip_tunnels_never_crash_and_are_counted(tmp_path):
    fr = frames("vxlan")
    cut = fr[2][:len(fr[2]) - 30]  # the inner TCP SYN cut inside its IP header: malformed
    arp = raw(WRAPPERS["vxlan"](True, ARP()))
    records, proc = capture_records(_capture(tmp_path, "broken", [cut, arp]), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    counts = summary_counts(proc.stderr)
    assert (counts["malformed"], counts["in flows"]) == (1, 1)
    (outer,) = records  # a VXLAN frame carrying ARP stays the outer UDP flow
    assert (outer["src"]["addr"], outer["dst"]["port"], outer["tunnel"]) == (OUTER_C, 4789, None)


def test_a_fragmented_outer_packet_is_not_opened_and_is_counted(tmp_path):
    big = inner_packets()[6][1]
    pieces = fragment(IP(src=OUTER_C, dst=OUTER_S, proto=4) / big, fragsize=64)
    records, proc = capture_records(_capture(tmp_path, "frag", [raw(Ether() / p) for p in pieces]), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(pieces) > 1
    assert f"tunnels: 0 packets counted in inner flows, {len(pieces)} left closed" in proc.stderr
    (outer,) = records  # IP-in-IP's outer flow, fragments and all
    assert (outer["protocol"], outer["src"]["addr"], outer["src_stat"]["packets"]) == ("4", OUTER_C, len(pieces))
