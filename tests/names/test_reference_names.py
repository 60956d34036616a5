"""The names devourer learns from each corpus capture match tshark's reference.

`devourer names -r FILE` runs the capture decoder and the resolver's extractors
in one process and prints what they observed. Compared with
``../shared/pcaps/reference/*.names.tsv`` (see its MANIFEST), with these
differences named and checked rather than skipped:

* ``quic_sni``: needs QUIC Initial decryption; devourer reads SNI from TCP only.
* ``nbns NAME`` rows are every name tshark sees in an NBNS packet, queries
  included; a query binds no name to anything, so devourer takes names only
  from registrations, positive responses and node-status responses.
* ``dhcpv6 client_fqdn`` has no value in the reference; devourer binds it to the
  client's MAC: compared by name.
* mDNS: the reference pairs each record's owner name with a value by zipping
  tshark's name and type lists, which slips when SRV/TXT/NSEC records come first,
  so mDNS is compared by the addresses named and by the set of names, not pairs;
  devourer also reads A/AAAA records tshark's lists lose in additional sections.
* Names inside ICMP errors (``zeek__icmp-destunreach-udp.pcap``) are not read;
  names inside tunnels are (``dpkt__nb6-http.pcap``: every name packet is inside
  PPPoE).
"""

import re
import subprocess

import pytest

from tests.conftest import DEVOURER, PCAPS, REFERENCE, REPO, corpus_files

SERVICE = re.compile(r"\._(tcp|udp)\.")
NOT_READ = {
    "zeek__icmp-destunreach-udp.pcap": "the only DNS answer is quoted inside an ICMP error",
}


def _ours(capture):
    proc = subprocess.run([*DEVOURER, "names", "-r", str(PCAPS / capture)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode in (0, 4), proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "#source\tkind\tname\tvalue"  # a header, as the references have
    return {tuple(line.split("\t")) for line in lines[1:]}


def _reference(capture):
    rows = set()
    for line in open(REFERENCE / f"{capture}.names.tsv"):
        if line.startswith("#"):
            continue
        source, kind, name, value = line.rstrip("\n").split("\t")
        if source == "quic_sni" or (source == "nbns" and kind == "NAME"):
            continue
        if source == "nbns":
            for addr in value.split():
                rows.add((source, kind, re.sub(r"<..>$", "", name).rstrip(), addr))
        elif source == "tls_sni":
            rows.add((source, kind, name, value.split()[0]))
        elif source == "dhcpv6":
            rows.add((source, kind, name, "-"))
        else:
            rows.add((source, kind, name, value))
    return rows


def _comparable(rows):
    out = set()
    for source, kind, name, value in rows:
        if kind in ("bind", "NBSTAT"):
            continue
        out.add((source, kind, name, "-" if source == "dhcpv6" else value))
    return out


@pytest.mark.parametrize("capture", [c for c in corpus_files() if (REFERENCE / f"{c}.names.tsv").exists()])
def test_names_match_reference(capture):
    ref, ours = _reference(capture), _comparable(_ours(capture))
    if capture in NOT_READ:
        assert not ours
        return
    plain_ref = {r for r in ref if r[0] != "mdns"}
    plain_ours = {r for r in ours if r[0] != "mdns"}
    assert plain_ours == plain_ref
    mdns_ref = {r for r in ref if r[0] == "mdns"}
    mdns_ours = {r for r in ours if r[0] == "mdns"}
    addresses = lambda rows: {(k, v) for _, k, _, v in rows if k in ("A", "AAAA")}  # noqa: E731
    # an A/AAAA owner that is a service instance (x._tcp.local) is the reference's slip onto an SRV/TXT name
    names = lambda rows: ({n for _, k, n, _ in rows if not (k in ("A", "AAAA") and SERVICE.search(n))}  # noqa: E731
                          | {v for _, k, _, v in rows if k == "PTR"})
    assert addresses(mdns_ref) <= addresses(mdns_ours)
    assert names(mdns_ref) <= names(mdns_ours)


@pytest.mark.parametrize("family, capture, row", [
    ("DNS", "dpkt__http.pcap", ("dns", "A", "pagead.google.akadns.net", "216.239.59.99")),
    ("DNS over TCP", "tcpdump__dns_tcp.pcap", None),
    ("mDNS", "zeek__mdns.pcap", None),
    ("LLMNR", "zeek__smb2-llmnr-nbns.pcap", ("llmnr", "PTR", "17.112.31.172.in-addr.arpa", "WIN-I82B81NSLLJ")),
    ("NBNS", "ndpi__gnutella.pcap", ("nbns", "NB", "MSEDGEWIN10", "10.0.2.15")),
    ("DHCP", "zeek__dhcp.pcap", None),
    ("DHCP FQDN", "ndpi__gnutella.pcap", ("dhcp", "fqdn", "MSEDGEWIN10", "08:00:27:e6:e5:59")),
    ("DHCPv6", "ndpi__gnutella.pcap", ("dhcpv6", "client_fqdn", "MSEDGEWIN10", "08:00:27:e6:e5:59")),
    ("TLS SNI", "nfstream__443-curl.pcap", None),
])
def test_each_protocol_family_yields_names(family, capture, row):
    ours = _ours(capture)
    source = {"DNS": "dns", "DNS over TCP": "dns", "mDNS": "mdns", "LLMNR": "llmnr", "NBNS": "nbns", "DHCP": "dhcp",
              "DHCP FQDN": "dhcp", "DHCPv6": "dhcpv6", "TLS SNI": "tls_sni"}[family]
    assert any(r[0] == source and r[1] != "bind" for r in ours), family
    if row:
        assert row in ours
