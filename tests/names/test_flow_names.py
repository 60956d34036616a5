"""Names on flow records, end to end through the engine."""

import json

import pytest

from tests.conftest import PCAPS, REFERENCE, capture_records
from tests.pcapbuild import ethernet, ipv4, tcp, udp, write_pcap

ROUTER_MAC, CLIENT_MAC = "02:00:00:00:00:01", "02:00:00:00:00:77"
ROUTER_IP, CLIENT_IP = "192.168.1.1", "192.168.1.77"


def _dhcp_ack(client_mac: str, yiaddr: str, hostname: bytes) -> bytes:
    chaddr = bytes(int(x, 16) for x in client_mac.split(":")) + bytes(10)
    bootp = (bytes([2, 1, 6, 0]) + b"\x12\x34\x56\x78" + bytes(4) + bytes(4)
             + bytes(int(x) for x in yiaddr.split(".")) + bytes(8) + chaddr + bytes(192) + b"\x63\x82\x53\x63")
    options = b"\x35\x01\x05" + b"\x33\x04\x00\x00\x0e\x10" + bytes([12, len(hostname)]) + hostname + b"\xff"
    return bootp + options


def test_gateway_dhcp_name_stays_off_remote_peers(tmp_path):
    """The router got its own address (and host name) by DHCP; flows to remote
    addresses go through the router's MAC and must not get the router's name."""
    packets = [
        (1.0, ethernet(ROUTER_MAC, "ff:ff:ff:ff:ff:ff", 0x0800,
                       ipv4("192.168.1.254", "255.255.255.255", 17, udp(67, 68, _dhcp_ack(ROUTER_MAC, ROUTER_IP, b"gw-router"))))),
        (1.5, ethernet(ROUTER_MAC, "ff:ff:ff:ff:ff:ff", 0x0800,
                       ipv4("192.168.1.254", "255.255.255.255", 17, udp(67, 68, _dhcp_ack(CLIENT_MAC, CLIENT_IP, b"laptop"))))),
    ]
    t = 2.0
    for remote in ("93.184.216.34", "198.51.100.9"):
        packets.append((t, ethernet(CLIENT_MAC, ROUTER_MAC, 0x0800, ipv4(CLIENT_IP, remote, 6, tcp(40000, 443, 0x02)))))
        packets.append((t + 0.01, ethernet(ROUTER_MAC, CLIENT_MAC, 0x0800, ipv4(remote, CLIENT_IP, 6, tcp(443, 40000, 0x12)))))
        t += 1
    packets.append((t, ethernet(CLIENT_MAC, ROUTER_MAC, 0x0800, ipv4(CLIENT_IP, ROUTER_IP, 17, udp(5000, 53, b"q")))))
    pcap = tmp_path / "gw.pcap"
    write_pcap(pcap, packets)
    records, proc = capture_records(pcap, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    remote = [r for r in records if r["protocol"] == "tcp"]
    assert len(remote) == 2
    for r in remote:
        assert r["src"]["names"] == ["laptop"]
        assert r["dst"]["names"] == []
        assert r["dst"]["hw_addr"] == ROUTER_MAC
    (dns,) = [r for r in records if r["protocol"] == "udp" and r["dst"]["port"] == 53]
    assert dns["dst"]["names"] == ["gw-router"]


def test_dns_names_reach_the_flows_that_follow(tmp_path):
    records, proc = capture_records(PCAPS / "dpkt__http.pcap", tmp_path=tmp_path)
    (ad,) = [r for r in records if r["dst"]["addr"] == "216.239.59.99"]
    assert set(ad["dst"]["names"]) == {"pagead2.googlesyndication.com", "pagead2.google.com", "pagead.google.akadns.net"}


def test_sni_names_the_server(tmp_path):
    records, proc = capture_records(PCAPS / "nfstream__443-curl.pcap", tmp_path=tmp_path)
    (tls,) = [r for r in records if r["protocol"] == "tcp"]
    assert tls["dst"]["names"]


SNI_CAPTURES = sorted(p.name[:-len(".names.tsv")] for p in REFERENCE.glob("*.names.tsv")
                      if "\ntls_sni\t" in "\n" + p.read_text())


@pytest.mark.parametrize("capture", SNI_CAPTURES)
def test_every_tls_server_name_of_the_reference_is_on_its_flow(tmp_path, capture):
    """Each ClientHello's server name (tshark's reference) is on the server's end of a flow to that address and
    port, also in captures whose time jumps back (ndpi__sites joins captures of different days)."""
    expected = set()
    for line in (REFERENCE / f"{capture}.names.tsv").read_text().splitlines():
        source, _, name, value = line.split("\t")
        if source == "tls_sni":
            addr, port = value.split()
            expected.add((name, addr, int(port)))
    records, proc = capture_records(PCAPS / capture, tmp_path=tmp_path)
    assert proc.returncode in (0, 4), proc.stderr
    named = set()
    for r in records:
        for end in (r["src"], r["dst"]):
            if r["protocol"] == "tcp":
                named.update((n, end["addr"], end["port"]) for n in end["names"])
    assert expected - named == set()


def test_names_are_the_same_for_any_number_of_workers(tmp_path):
    canon = lambda recs: sorted(json.dumps(r, sort_keys=True) for r in recs)  # noqa: E731
    for capture in ("nfstream__iphone.pcap", "goprobe__default.pcap"):
        base, _ = capture_records(PCAPS / capture, "--workers", "1", tmp_path=tmp_path)
        assert any(r["src"]["names"] or r["dst"]["names"] for r in base)
        for extra in (["--workers", "3"], ["--workers", "2", "--batch-size", "16", "--ring-size", "64"]):
            other, _ = capture_records(PCAPS / capture, *extra, tmp_path=tmp_path)
            assert canon(other) == canon(base), extra


def test_names_off(tmp_path):
    records, proc = capture_records(PCAPS / "dpkt__http.pcap", "--names", "false", tmp_path=tmp_path)
    assert proc.returncode == 0
    assert all(not r["src"]["names"] and not r["dst"]["names"] for r in records)
