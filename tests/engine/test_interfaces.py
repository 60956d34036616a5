"""Several interfaces in one run: live on two veth pairs into two network namespaces we create, and replayed
from pcapng files that describe several.

Each namespace sends only to its own veth pair (static neighbours, addresses that exist only there); both
namespaces send the very same UDP conversation, so only the interface tells their flows apart. tcpdump records
each host-side end at the same time, and replaying each recording must give that interface's flows.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import DEVOURER, PCAPS, REPO, capture_records, packets_add_up, parse_records, summary_counts
from tests.engine.proctools import children_of

SHARED_SRC, SHARED_DST, SHARED_PORTS = "10.254.79.2", "10.254.79.1", (40000, 18053)


def _run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture
def two_links():
    """Two veth pairs, their far ends in two namespaces; yields [(namespace, host-side interface)]."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("live capture test needs root and iproute2 (ip) to create network namespaces")
    tag = f"dm{os.getpid() % 100000}"
    links = [(f"{tag}n{j}", f"{tag}h{j}", f"{tag}p{j}") for j in (1, 2)]
    try:
        for ns, host_if, ns_if in links:
            _run("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as e:
        for ns, _, _ in links:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"this machine forbids network namespaces: {e.stderr.strip()}")
    try:
        for ns, host_if, ns_if in links:
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _run("ip", "link", "set", ns_if, "netns", ns)
            # no IPv6 either side (no autoconfiguration chatter) and no address on the host side: nothing it
            # receives goes anywhere, and it sends nothing
            _run("sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1")
            _run("ip", "link", "set", host_if, "up")
            _run("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{ns_if}.disable_ipv6=1")
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{SHARED_SRC}/30", "dev", ns_if)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            mac = open(f"/sys/class/net/{host_if}/address").read().strip()
            _run("ip", "netns", "exec", ns, "ip", "neigh", "add", SHARED_DST, "lladdr", mac, "dev", ns_if)
        yield [(ns, host_if) for ns, host_if, _ in links]
    finally:
        for ns, host_if, _ in links:
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _send(ns: str, datagrams: int, size: int) -> None:
    """``datagrams`` UDP datagrams of ``size`` bytes from the namespace, all of the same conversation."""
    code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{SHARED_SRC}',{SHARED_PORTS[0]}))\n"
            f"[s.sendto(b'u'*{size},('{SHARED_DST}',{SHARED_PORTS[1]})) for _ in range({datagrams})]")
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True, timeout=30)


def _flows(records):
    """(interface, 5-tuple, packets and bytes each way) of every record, sorted."""
    return sorted((r["interface"], r["protocol"], r["src"]["addr"], r["src"]["port"], r["dst"]["addr"],
                   r["dst"]["port"], r["src_stat"]["packets"], r["src_stat"]["bytes"], r["dst_stat"]["packets"],
                   r["dst_stat"]["bytes"]) for r in records)


def _wait_for_capture(proc, readers: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        names = list(children_of(proc.pid).values())
        if sum(n.startswith("dvr-capture") for n in names) >= readers:
            break
        time.sleep(0.1)
    time.sleep(1.5)  # capture handles active


@contextlib.contextmanager
def _capturing(tmp_path, *args):
    """``devourer capture ARGS`` running, its stderr going to a file (read while it runs): yields (process, that
    file); killed on the way out if it still runs (stopped with ``_stop``, it does not)."""
    err = tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen([*DEVOURER, "capture", *args], stdout=subprocess.DEVNULL, stderr=f, text=True,
                                cwd=REPO)
    try:
        yield proc, err
    finally:
        if proc.poll() is None:
            proc.kill()


def _stop(proc, err) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    return err.read_text()


@pytest.mark.parametrize("readers", [1, 2])
def test_two_interfaces_at_once_give_each_its_own_flows_as_tcpdump_records_them(two_links, tmp_path, readers,
                                                                                no_shm_leftovers):
    (ns1, if1), (ns2, if2) = two_links
    out = tmp_path / "live.jsonl"
    dumps = [tmp_path / f"{iface}.pcap" for iface in (if1, if2)]
    tcpdumps = [subprocess.Popen(["tcpdump", "-i", iface, "-U", "-w", str(d)], stderr=subprocess.PIPE)
                for iface, d in zip((if1, if2), dumps)]
    try:
        with _capturing(tmp_path, "-i", if1, "-i", if2, "--readers", str(readers), "--workers", "2", "-s", "1s",
                        "-o", "file", "-w", str(out)) as (proc, err_file):
            _wait_for_capture(proc, 2 * readers)
            _send(ns1, 3, 100)
            _send(ns2, 5, 200)
            time.sleep(1.0)
            err = _stop(proc, err_file)
    finally:
        for t in tcpdumps:
            t.send_signal(signal.SIGTERM)
            t.wait(timeout=30)
    assert proc.returncode == 0, err
    live = parse_records(out.read_text())
    shared = [f for f in _flows(live) if f[1:6] == ("udp", SHARED_SRC, SHARED_PORTS[0], SHARED_DST, SHARED_PORTS[1])]
    # the same conversation on both links: two flows, one per interface, never merged
    assert shared == [(if1, "udp", SHARED_SRC, 40000, SHARED_DST, 18053, 3, 3 * (14 + 20 + 8 + 100), 0, 0),
                      (if2, "udp", SHARED_SRC, 40000, SHARED_DST, 18053, 5, 5 * (14 + 20 + 8 + 200), 0, 0)]
    # every flow of each interface is one of tcpdump's recording of it, replayed
    for iface, dump in ((if1, dumps[0]), (if2, dumps[1])):
        replay, rproc = capture_records(dump, tmp_path=tmp_path)
        assert rproc.returncode == 0
        assert [f[1:] for f in _flows(live) if f[0] == iface] == [f[1:] for f in _flows(replay)]
    # each interface's numbers in the summary, and they add up
    assert packets_add_up(summary_counts(err))
    summary = [line for line in err.splitlines() if "summary:" in line][-1]
    assert f"; {if1}: 3 read, kernel dropped 0, ring dropped 0; {if2}: 5 read" in summary


def test_an_interface_that_goes_down_is_said_once_and_captured_again_when_it_is_back(two_links, tmp_path,
                                                                                     no_shm_leftovers):
    (ns1, if1), (ns2, if2) = two_links
    out = tmp_path / "live.jsonl"
    with _capturing(tmp_path, "-i", f"{if1},{if2}", "-s", "1s", "-o", "file", "-w", str(out)) as (proc, err_file):
        _wait_for_capture(proc, 2)
        _run("ip", "link", "set", if2, "down")
        time.sleep(2.5)  # several reopening attempts fail meanwhile
        _send(ns1, 4, 100)  # the other interface goes on
        _run("ip", "link", "set", if2, "up")
        deadline = time.monotonic() + 60
        while "is back" not in err_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the new handle active
        _send(ns2, 6, 100)
        time.sleep(1.0)
        err = _stop(proc, err_file)
    assert proc.returncode == 0, err
    assert err.count(f"interface {if2}:") == 1 and "opening it again every 1 s" in err
    assert err.count(f"interface {if2} is back: capturing again") == 1
    shared = [f for f in _flows(parse_records(out.read_text())) if f[1] == "udp"]
    assert [(f[0], f[6]) for f in shared] == [(if1, 4), (if2, 6)]


def _tshark_conversations(path) -> dict:
    """{(src, sport, dst, dport) of a UDP/TCP packet, either direction: the set of interface names} by tshark."""
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_name", "-e", "ip.src",
                          "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.srcport", "-e", "udp.srcport",
                          "-e", "tcp.dstport", "-e", "udp.dstport", "-Y", "tcp or udp"],
                         capture_output=True, text=True, check=True).stdout
    conversations: dict = {}
    for line in out.splitlines():
        name, s4, s6, d4, d6, ts, us, td, ud = line.split("\t")
        a, b = (s4 or s6, int(ts or us)), (d4 or d6, int(td or ud))
        conversations.setdefault(tuple(sorted([a, b])), set()).add(name)
    return conversations


@pytest.mark.parametrize("capture", ["zeek__pcapng-multi-interface.pcapng", "ndpi__sites.pcapng"])
def test_a_pcapng_files_interfaces_name_its_flows_as_tshark_does(capture, tmp_path):
    """Replayed, each flow says the interface its packets came in on: the pcapng description's name, or its
    index where it has none (tshark says "unknown")."""
    records, proc = capture_records(PCAPS / capture, tmp_path=tmp_path)
    assert proc.returncode == 0
    reference = _tshark_conversations(PCAPS / capture)
    seen = {}
    for r in records:
        if r["protocol"] not in ("tcp", "udp") or r["tunnel"] is not None:
            continue
        key = tuple(sorted([(r["src"]["addr"], r["src"]["port"]), (r["dst"]["addr"], r["dst"]["port"])]))
        name = r["interface"] if isinstance(r["interface"], str) else "unknown"
        seen.setdefault(key, set()).add(name)
    assert seen == reference
    assert len({r["interface"] for r in records}) > 1
