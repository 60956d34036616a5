"""Live capture for real: traffic across a veth pair into a network namespace we create.

Packets go only between the two ends of our own veth pair (addresses of a /30
that exists only there); the namespace and the pair are removed afterwards.
tcpdump records the same interface at the same time, and replaying its file
through devourer must give the same flows as the live run.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import (DEVOURER, REPO, capture_records, free_port, packets_add_up, parse_records,
                            scrape_metrics, summary_counts)
from tests.engine.proctools import alive, children_of

NS_ADDR, HOST_ADDR = "10.254.77.2", "10.254.77.1"
TCP_PORT, UDP_PORT = 18080, 18053


def _run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def _remove_stale_namespaces() -> None:
    """The namespace and veth of a test run that was killed (its fixture never tore them down) hold the same
    addresses as ours and would take our traffic: removed when the run that made them is gone."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    tags = {int(p) % 100000 for p in os.listdir("/proc") if p.isdigit()}  # a tag is its run's pid % 100000
    for name in listed:
        m = re.fullmatch(r"dv(\d+)ns", name)
        if m and int(m.group(1)) not in tags:
            subprocess.run(["ip", "link", "del", f"dv{m.group(1)}a"], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def veth(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("live capture test needs root and iproute2 (ip) to create a network namespace")
    _remove_stale_namespaces()
    tag = f"dv{os.getpid() % 100000}"
    ns, host_if, ns_if = f"{tag}ns", f"{tag}a", f"{tag}b"
    try:
        _run("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"this machine forbids network namespaces: {e.stderr.strip()}")
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NS_ADDR}/30", "dev", ns_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        yield ns, host_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _in_ns(ns, code):
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True, timeout=30)


def _traffic(ns):
    tcp_server = socket.create_server((HOST_ADDR, TCP_PORT))
    udp_server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_server.bind((HOST_ADDR, UDP_PORT))
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", HOST_ADDR], check=True,
                       capture_output=True, timeout=30)
        _in_ns(ns, f"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                   f"[s.sendto(b'd'*100,('{HOST_ADDR}',{UDP_PORT})) for _ in range(5)]")
        client = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                                   f"import socket\nc=socket.create_connection(('{HOST_ADDR}',{TCP_PORT}))\n"
                                   "c.sendall(b'x'*5000)\nc.shutdown(socket.SHUT_WR)\nwhile c.recv(65536): pass\n"
                                   "c.close()"])
        conn, _ = tcp_server.accept()
        got = 0
        while chunk := conn.recv(65536):
            got += len(chunk)
        conn.sendall(b"y" * 300)
        conn.close()
        client.wait(timeout=30)
        assert got == 5000
    finally:
        tcp_server.close()
        udp_server.close()


def _key(r):
    return (r["protocol"], r["src"]["addr"], r["src"]["port"], r["dst"]["addr"], r["dst"]["port"])


def _live_beside_tcpdump(tmp_path, iface, args, up_when, send):
    """`devourer capture -i IFACE ARGS -o file` with tcpdump recording the same interface: once the child named
    ``up_when`` runs, ``send()`` the traffic, then SIGTERM. Returns (process, its stderr, its children before the
    signal {pid: name}, the records written, tcpdump's file)."""
    out, ref_pcap = tmp_path / "live.jsonl", tmp_path / "tcpdump.pcap"
    tcpdump = subprocess.Popen(["tcpdump", "-i", iface, "-U", "-w", str(ref_pcap)], stderr=subprocess.PIPE)
    proc = subprocess.Popen([*DEVOURER, "capture", "-i", iface, *args, "-o", "file", "-w", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while up_when not in children_of(proc.pid).values() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # capture handles active
        send()
        time.sleep(1.0)
        kids = children_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        tcpdump.send_signal(signal.SIGTERM)
        tcpdump.wait(timeout=30)
    return proc, err, kids, parse_records(out.read_text()) if out.exists() else [], ref_pcap


def test_live_capture_on_veth_matches_tcpdump(veth, tmp_path, no_shm_leftovers):
    ns, iface = veth
    proc, err, kids, live, ref_pcap = _live_beside_tcpdump(tmp_path, iface, ["--workers", "2", "-s", "1s"],
                                                           "dvr-capture", lambda: _traffic(ns))
    assert proc.returncode == 0, err
    assert "stats:" in err and "drops: kernel 0, ring 0 (w0:0 w1:0), exporter 0" in err
    assert err.count("capturing as root; use --user NAME") == 1  # said once: how to avoid going on as root
    assert not [k for k in kids if alive(k)]
    by_key = {_key(r): r for r in live}

    icmp = [r for r in live if r["protocol"] == "icmp4"]
    assert len(icmp) == 1 and icmp[0]["src"]["addr"] == NS_ADDR
    assert icmp[0]["src_stat"]["packets"] == 3 and icmp[0]["dst_stat"]["packets"] == 3
    assert all(r["end_reason"] == "shutdown" for r in live)

    udp = by_key[("udp", NS_ADDR, udp_src_port(live), HOST_ADDR, UDP_PORT)]
    assert udp["src_stat"] == {"packets": 5, "bytes": 5 * (14 + 20 + 8 + 100)}
    assert udp["dst_stat"]["packets"] == 0 and udp["status"] == "init"

    (tcp,) = [r for r in live if r["protocol"] == "tcp" and r["dst"]["port"] == TCP_PORT]
    assert tcp["src"]["addr"] == NS_ADDR and tcp["status"] == "established"
    assert tcp["src_tcp_flags"] & 0x02 and tcp["dst_tcp_flags"] & 0x12 == 0x12  # SYN, then SYN-ACK
    assert tcp["src_stat"]["bytes"] > 5000 and tcp["dst_stat"]["bytes"] > 300

    # The same packets replayed from tcpdump's file give the same flows. (IPv6 autoconfiguration
    # chatter from when the interface came up may predate devourer's start: compare our /30 only.)
    replay, rproc = capture_records(ref_pcap, tmp_path=tmp_path)
    assert rproc.returncode == 0
    assert _ours(live) == _ours(replay)


def test_several_live_readers_share_the_interface(veth, tmp_path, no_shm_leftovers):
    """--readers 3 live: three handles in one PACKET_FANOUT group; the kernel keeps each flow on one of them, and
    the flows are those of tcpdump's recording replayed by one reader."""
    ns, iface = veth

    def send():
        _traffic(ns)
        _in_ns(ns, "import socket\n"  # 40 more flows, both ways, for the kernel to spread over the readers
                   + "".join(f"s{i}=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s{i}.bind(('{NS_ADDR}',{20000 + i}))\n"
                             f"s{i}.sendto(b'p'*{i + 1},('{HOST_ADDR}',{UDP_PORT}))\n" for i in range(40)))

    proc, err, kids, live, ref_pcap = _live_beside_tcpdump(tmp_path, iface, ["--workers", "2", "--readers", "3"],
                                                           "dvr-capture-2", send)
    assert proc.returncode == 0, err
    assert sorted(n for n in kids.values() if n.startswith("dvr-capture")) == ["dvr-capture-0", "dvr-capture-1",
                                                                                "dvr-capture-2"]
    assert packets_add_up(summary_counts(err))
    replay, rproc = capture_records(ref_pcap, tmp_path=tmp_path)
    assert rproc.returncode == 0
    assert len(_ours(live)) >= 43 and _ours(live) == _ours(replay)


def _ours(records):
    return sorted((_key(r), r["src_stat"]["packets"], r["src_stat"]["bytes"], r["dst_stat"]["packets"],
                   r["dst_stat"]["bytes"]) for r in records if {r["src"]["addr"], r["dst"]["addr"]} == {NS_ADDR, HOST_ADDR})


def udp_src_port(records):
    return next(r["src"]["port"] for r in records if r["protocol"] == "udp" and r["dst"]["port"] == UDP_PORT)


def test_idle_flows_expire_on_wall_time_when_traffic_stops(veth, tmp_path):
    """Live, packet time keeps running with the wall clock when no packets come,
    so an idle flow is written without waiting for more traffic or the end."""
    ns, iface = veth
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen([*DEVOURER, "capture", "-i", iface, "--workers", "1", "-o", "file", "-w", str(out),
                             "--flow-timeout", "1s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while "dvr-capture" not in children_of(proc.pid).values() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", HOST_ADDR], check=True, capture_output=True,
                       timeout=30)
        deadline = time.monotonic() + 20
        written = []
        while time.monotonic() < deadline and not written:
            time.sleep(0.25)
            written = [r for r in parse_records(out.read_text()) if r["protocol"] == "icmp4"] if out.exists() else []
        assert written and written[0]["end_reason"] == "idle", "idle flow not written while capture ran"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_unprivileged_live_capture_with_permitted_capabilities(veth, tmp_path):
    """The Docker image's setup: a non-root user whose interpreter has CAP_NET_RAW/CAP_NET_ADMIN as permitted
    (not effective) file capabilities; devourer raises them to open the interface."""
    if not (shutil.which("setcap") and shutil.which("setpriv")):
        pytest.skip("needs setcap and setpriv (libcap2-bin, util-linux)")
    ns, iface = veth
    import tempfile

    shared = tempfile.mkdtemp(prefix="devourer-caps-")
    try:
        os.chmod(shared, 0o777)
        python = os.path.join(shared, "python")
        shutil.copy2(os.path.realpath(sys.executable), python)
        _run("setcap", "cap_net_raw,cap_net_admin+ip", python)
        site = [p for p in sys.path if p.endswith("site-packages")]
        code = (f"import sys; sys.path[:0] = {[str(REPO), *site]!r}; from devourer.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        as_nobody = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", python, "-c", code]
        if subprocess.run([*as_nobody, "version"], capture_output=True).returncode != 0:
            pytest.skip("user nobody cannot read this checkout")
        out = os.path.join(shared, "flows.jsonl")
        # nobody cannot write numba's cache beside the checkout: give it one (else it compiles at every start)
        env = {**os.environ, "NUMBA_CACHE_DIR": os.path.join(shared, "numba-cache")}
        proc = subprocess.Popen([*as_nobody, "capture", "-i", iface, "--workers", "1", "-o", "file", "-w", out],
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + 180
            while _pid_of(proc.pid, "dvr-capture") is None and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.1)
            time.sleep(1.5)  # the capture handle is active
            subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", HOST_ADDR], check=True,
                           capture_output=True, timeout=30)
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, err
        with open(out) as f:
            pings = [r for r in parse_records(f.read()) if r["protocol"] == "icmp4"]
        assert [(p["src"]["addr"], p["dst"]["addr"], p["src_stat"]["packets"]) for p in pings] == [
            (NS_ADDR, HOST_ADDR, 3)]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _pid_of(parent: int, comm: str) -> int | None:
    return next((pid for pid, name in children_of(parent).items() if name == comm), None)


@pytest.mark.parametrize("victim", ["dvr-worker-0", "dvr-resolver", "dvr-exporter"])
def test_live_capture_outlives_a_killed_process(veth, tmp_path, victim, no_shm_leftovers):
    ns, iface = veth
    out = tmp_path / "live.jsonl"
    # with a 1 s flow timeout the first round's flows are in the exporter's hands when it is killed
    port = free_port()
    proc = subprocess.Popen([*DEVOURER, "capture", "-i", iface, "--workers", "2", "-o", "file", "-w", str(out),
                             "--flow-timeout", "1s", "--metrics-port", str(port), "--metrics-address", "127.0.0.1"],
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while _pid_of(proc.pid, "dvr-capture") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        resolver = _pid_of(proc.pid, "dvr-resolver")
        if victim == "dvr-exporter":  # no watermark: the exporter holds the expired flows it read, unwritten
            os.kill(resolver, signal.SIGSTOP)
        _traffic(ns)
        time.sleep(1.5)
        old = _pid_of(proc.pid, victim)
        if victim == "dvr-exporter":  # the flows expire (1 s idle, once packet time follows the wall clock)
            deadline = time.monotonic() + 20
            while scrape_metrics(port)["devourer_exporter_waiting_flows"] == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert scrape_metrics(port)["devourer_exporter_waiting_flows"] > 0
        os.kill(old, signal.SIGKILL)
        killed_at = time.monotonic()
        if victim == "dvr-exporter":
            os.kill(resolver, signal.SIGCONT)
        while (_pid_of(proc.pid, victim) in (None, old)) and time.monotonic() - killed_at < 1.0:
            time.sleep(0.02)
        assert _pid_of(proc.pid, victim) not in (None, old)  # a new one within a second
        time.sleep(0.5)
        if victim == "dvr-resolver":  # the new resolver learns names: a DNS answer naming the namespace's end
            _in_ns(ns, "import socket, struct\n"
                       "q = b'\\x05after\\x07restart\\x04test\\x00'\n"
                       "m = struct.pack('!HHHHHH', 9, 0x8180, 1, 1, 0, 0) + q + struct.pack('!HH', 1, 1)"
                       f" + b'\\xc0\\x0c' + struct.pack('!HHIH', 1, 1, 600, 4) + socket.inet_aton('{NS_ADDR}')\n"
                       "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                       f"s.bind(('{NS_ADDR}', 53))\ns.sendto(m, ('{HOST_ADDR}', 40053))\n")
            time.sleep(0.3)
        _traffic(ns)  # capture goes on: the second round's flows are written
        time.sleep(1.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    said = [x for x in err.splitlines() if f"(pid {old}) killed by signal 9" in x]
    assert len(said) == 1, err
    records = parse_records(out.read_text())
    tcp = [r for r in records if r["protocol"] == "tcp" and r["dst"]["port"] == TCP_PORT]
    assert len(tcp) >= 1
    counts = summary_counts(err)
    assert packets_add_up(counts), err  # every packet read is accounted for
    summary = [x for x in err.splitlines() if "summary:" in x][-1]
    if victim == "dvr-worker-0":
        assert "restarted as pid" in said[0] and "restarted workers" in summary
    elif victim == "dvr-resolver":
        assert "restarted as pid" in said[0]
        assert any("after.restart.test" in r["src"]["names"] for r in tcp)
    else:  # nothing the exporter held is lost (a record may come twice, with the same id)
        assert "restarted as pid" in said[0]
        unique = {r["id"]: r for r in records}.values()
        assert sum(r["src_stat"]["packets"] + r["dst_stat"]["packets"] for r in unique) == counts["in flows"]


def test_live_capture_rides_out_a_full_disk(veth, tmp_path):
    """Disk full under live capture to a file: one line when it starts failing, the flows of that time counted as
    lost, writing resumes by itself once there is room (no exit, no restart loop), and the file never holds half
    a line. A real 256 KiB tmpfs, filled up by the test."""
    ns, iface = veth
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = disk / "flows.jsonl"
        proc = subprocess.Popen([*DEVOURER, "capture", "-i", iface, "-o", "file", "-w", str(out), "--flow-timeout",
                                 "1s"], stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while _pid_of(proc.pid, "dvr-capture") is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.5)
            filler = disk / "filler"
            with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
            _traffic(ns)
            time.sleep(4)  # the flows expire and fail to be written
            filler.unlink()
            _traffic(ns)
            time.sleep(4)  # these are written
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, err
        failing = [x for x in err.splitlines() if "output failing: No space left on device" in x]
        back = [x for x in err.splitlines() if "output works again" in x]
        assert len(failing) == 1 and len(back) == 1, err
        lost = int(re.search(r"([\d,]+) lost at the output", err).group(1).replace(",", ""))
        assert lost > 0 and f"{lost:,} flows were lost meanwhile" in back[0]
        data = out.read_bytes()
        records = [json.loads(line) for line in data.splitlines()]
        assert data.endswith(b"\n") and any(r["protocol"] == "tcp" for r in records)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_sigterm_on_a_silent_link_stops_at_once(veth, tmp_path):
    """No packet at all on the interface (IPv6 off, so no neighbour discovery): libpcap's read would wait for a
    packet forever; devourer must still stop promptly on SIGTERM, and let packet time follow the wall clock."""
    ns, iface = veth
    _run("sysctl", "-qw", f"net.ipv6.conf.{iface}.disable_ipv6=1")
    _run("ip", "netns", "exec", ns, "sh", "-c", "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > $f; done")
    time.sleep(1)
    proc = subprocess.Popen([*DEVOURER, "capture", "-i", iface, "-o", "file", "-w", str(tmp_path / "f.jsonl"),
                             "-s", "0.5s"], stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while _pid_of(proc.pid, "dvr-capture") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "summary: 0 packets read" in err
    assert took < 5, f"SIGTERM took {took:.1f} s on a silent link"


def test_a_live_filter_decides_the_flows_not_the_names(veth, tmp_path, no_shm_leftovers):
    """Live with --bpf tcp: the kernel passes the DNS answer too (the name ports), capture counts it as
    filtered, and its name is on the TCP flow; no UDP flow is written."""
    from scapy.compat import raw
    from scapy.layers.dns import DNS, DNSQR, DNSRR

    ns, iface = veth

    def send():
        dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dns.bind((HOST_ADDR, 53))
        tcp_server = socket.create_server((HOST_ADDR, TCP_PORT))
        try:
            asker = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                                      f"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                                      f"s.sendto(bytes.fromhex('{raw(DNS(id=9, rd=1, qd=DNSQR(qname='web.live.test'))).hex()}'),"
                                      f"('{HOST_ADDR}',53))\ns.settimeout(10)\ns.recv(512)"])
            query, peer = dns.recvfrom(512)
            dns.sendto(raw(DNS(id=9, qr=1, aa=1, qd=DNSQR(qname="web.live.test"),
                               an=DNSRR(rrname="web.live.test", type="A", rdata=HOST_ADDR, ttl=600))), peer)
            asker.wait(timeout=30)
            client = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                                       f"import socket\nc=socket.create_connection(('{HOST_ADDR}',{TCP_PORT}))\n"
                                       "c.sendall(b'x'*100)\nc.close()"])
            conn, _ = tcp_server.accept()
            while conn.recv(65536):
                pass
            conn.close()
            client.wait(timeout=30)
        finally:
            dns.close()
            tcp_server.close()

    proc, err, _, live, _ = _live_beside_tcpdump(tmp_path, iface, ["--bpf", "tcp"], "dvr-capture", send)
    assert proc.returncode == 0, err
    assert not [r for r in live if r["protocol"] != "tcp"]
    (tcp,) = [r for r in live if r["dst"]["port"] == TCP_PORT]
    assert tcp["dst"]["names"] == ["web.live.test"]
    counts = summary_counts(err)
    assert counts["filtered"] >= 2 and packets_add_up(counts)  # the query and the answer
