#!/usr/bin/env python3
"""Live load on a veth pair: a soak at a sustained rate, and an overload, read from devourer's own metrics.

    sudo .venv/bin/python scripts/load_live.py soak [--seconds 600] [--pps 100000]
    sudo .venv/bin/python scripts/load_live.py overload [--packets 1000000]

Creates a network namespace and a veth pair of its own (removed afterwards), runs
``devourer capture -i`` on the host end with ``--metrics-port``, and replays the
medium benchmark capture into the namespace end with tcpreplay. Frames travel only
over that veth pair.

soak: tcpreplay loops the capture at ``--pps`` for ``--seconds``; every 10 s the
script prints packets read, drops per stage, active flows, flows written and the
memory (RSS and PSS) of every devourer process, then checks at the end that
nothing was dropped, every packet sent was read, and the summary adds up.

overload: devourer is pinned to one CPU at nice 19 with small buffers
(``--buffer-size 4M --ring-size 4096``), and a busy loop competes for that CPU
while tcpreplay sends at top speed on the other, so every stage falls behind;
then a gentle phase (10 k packets/s, no busy loop) follows. It prints the
drops per stage after each phase: the burst drops (counted, per stage) and the
gentle phase adds none (devourer recovered), and the process is still running.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench import generate  # noqa: E402

DROP_STAGES = ("kernel", "ring", "resolver_ring")


def sh(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def total(m: dict, prefix: str) -> int:
    return int(sum(v for k, v in m.items() if k.startswith(prefix)))


def drops(m: dict) -> dict:
    return {s: int(m.get(f'devourer_packets_dropped_total{{stage="{s}"}}', 0)) for s in DROP_STAGES}


def memory(pid: int) -> dict[str, tuple[int, int]]:
    """{process name: (RSS, PSS) in MB} of pid and its children."""
    out = {}
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pid]
    for p in pids:
        rss = pss = 0
        try:
            with open(f"/proc/{p}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1]) // 1024
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1]) // 1024
        except OSError:
            continue
        out[name] = (rss, pss)
    return out


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


class Veth:
    def __init__(self):
        tag = f"dvl{os.getpid() % 10000}"
        self.ns, self.host_if, self.ns_if = f"{tag}ns", f"{tag}a", f"{tag}b"

    def __enter__(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def replay(self, capture: Path, *speed: str, prefix=()) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *prefix, "tcpreplay", "-i", self.ns_if, *speed,
                                 str(capture)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_devourer(iface: str, port: int, *extra: str, prefix=()) -> tuple[subprocess.Popen, object]:
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([*prefix, str(REPO / ".venv" / "bin" / "devourer"), "capture", "-i", iface, "-o", "file",
                             "-w", "/dev/null", "--metrics-port", str(port), "--metrics-address", "127.0.0.1", *extra],
                            stderr=log, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            scrape(port)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("devourer did not start")
            time.sleep(0.2)
    time.sleep(1.0)  # the capture handle is active
    return proc, log


def stop_devourer(proc, log) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=180)
    log.seek(0)
    return log.read()


def settle(port: int) -> dict:
    """Metrics once devourer has caught up: reads and drops unchanged for three scrapes a second apart (kernel drops are
    read from libpcap once a second, so a burst's drops may show a moment after it)."""
    seen: list = []
    while True:
        time.sleep(1.0)
        m = scrape(port)
        seen.append((m["devourer_packets_read_total"], tuple(drops(m).values())))
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            return m


def sent_packets(tcpreplay_output: str) -> int:
    m = re.search(r"Actual: (\d+) packets", tcpreplay_output)
    return int(m.group(1)) if m else -1


def summary_adds_up(err: str) -> bool:
    line = [x for x in err.splitlines() if "summary:" in x][-1].split("; names:")[0]
    n = [int(x.replace(",", "")) for x in re.findall(r"([\d,]+) (?:packets read|in flows|non-IP|malformed|"
                                                     r"unmatched fragments|filtered|dropped)", line)]
    return n[0] == sum(n[1:])


def soak(args, veth: Veth, capture: Path) -> int:
    port = free_port()
    # short timeouts make flows churn: each loop of the capture (20 s at 100 k/s) starts its flows anew after
    # they were written, so the exporter, the name map and the tables are exercised all along
    proc, log = start_devourer(veth.host_if, port, "--flow-timeout", args.flow_timeout, "--active-timeout", "60s")
    replay = veth.replay(capture, "--loop", "0", "--duration", str(args.seconds), "--pps", str(args.pps))
    print(f"soak: {args.seconds} s at {args.pps:,} packets/s ({capture.name} looped), --flow-timeout "
          f"{args.flow_timeout}")
    print(f"{'t s':>5} {'read':>12} {'pkt/s':>9} {'kernel':>7} {'ring':>6} {'names':>6} {'active':>8} "
          f"{'written':>10} {'RSS MB':>7} {'PSS MB':>7}")
    t0, last_read, last_t, curve = time.monotonic(), 0, time.monotonic(), []
    while replay.poll() is None:
        time.sleep(10)
        m = scrape(port)
        now, read = time.monotonic(), int(m["devourer_packets_read_total"])
        per_process = memory(proc.pid)
        rss, pss = (sum(v[k] for v in per_process.values()) for k in (0, 1))
        d = drops(m)
        curve.append((now - t0, rss, pss, per_process))
        print(f"{now - t0:>5.0f} {read:>12,} {(read - last_read) / (now - last_t):>9,.0f} {d['kernel']:>7,} "
              f"{d['ring']:>6,} {d['resolver_ring']:>6,} {total(m, 'devourer_flows_active'):>8,} "
              f"{int(m['devourer_flows_exported_total']):>10,} {rss:>7} {pss:>7}", flush=True)
        last_read, last_t = read, now
    sent = sent_packets(replay.stdout.read())
    time.sleep(2)
    m = scrape(port)
    err = stop_devourer(proc, log)
    read, d = int(m["devourer_packets_read_total"]), drops(m)
    half = [p for t, _, p, _ in curve if t >= curve[-1][0] / 2]
    print(f"sent {sent:,}, read {read:,} (the kernel adds a few IPv6 neighbour-discovery packets of the new link); "
          f"drops {d}; PSS over the second half: {min(half)}-{max(half)} MB; summary adds up: {summary_adds_up(err)}")
    print("PSS MB per process, every minute:")
    names = sorted(curve[-1][3])
    print(f"{'t s':>5} " + " ".join(f"{n:>13}" for n in names))
    for t, _, _, per_process in curve[::6]:
        print(f"{t:>5.0f} " + " ".join(f"{per_process.get(n, (0, 0))[1]:>13}" for n in names))
    print("\n".join(x for x in err.splitlines() if "stats:" not in x and "capturing as root" not in x))
    print(f"devourer exit status {proc.returncode}")
    ok = sum(d.values()) == 0 and read >= sent and summary_adds_up(err) and proc.returncode == 0
    return 0 if ok else 1


def overload(args, veth: Veth, capture: Path) -> int:
    port = free_port()
    proc, log = start_devourer(veth.host_if, port, "--workers", "1", "--buffer-size", "4M", "--ring-size", "4096",
                               prefix=("nice", "-n", "19", "taskset", "-c", "0"))
    print("overload: devourer at nice 19 on CPU 0 only, small buffers, a busy loop competing on CPU 0 during the "
          "bursts; tcpreplay on CPU 1 at top speed, then gently")
    print(f"{'phase':<28} {'sent':>10} {'read':>10} " + " ".join(f"{s:>13}" for s in DROP_STAGES) + "  running")
    phases = [(f"burst: top speed, {args.packets:,}", ("--topspeed", "--limit", str(args.packets))),
              ("gentle: 10,000 packets/s", ("--pps", "10000", "--limit", "50000")),
              (f"burst again: {args.packets:,}", ("--topspeed", "--limit", str(args.packets))),
              ("gentle again", ("--pps", "10000", "--limit", "50000"))]
    before = drops(scrape(port))
    read_before = int(scrape(port)["devourer_packets_read_total"])
    recovered = True
    for name, speed in phases:
        hog = None
        if name.startswith("burst"):  # devourer gets a sliver of its CPU: every stage falls behind
            hog = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
        replay = veth.replay(capture, *speed, prefix=("taskset", "-c", "1"))
        out = replay.communicate()[0]
        if hog is not None:
            hog.kill()
            hog.wait()
        m = settle(port)
        after, read = drops(m), int(m["devourer_packets_read_total"])
        delta = {s: after[s] - before[s] for s in DROP_STAGES}
        print(f"{name:<28} {sent_packets(out):>10,} {read - read_before:>10,} "
              + " ".join(f"{delta[s]:>13,}" for s in DROP_STAGES) + f"  {proc.poll() is None}", flush=True)
        if name.startswith("gentle") and sum(delta.values()):
            recovered = False
        before, read_before = after, read
    err = stop_devourer(proc, log)
    print([x for x in err.splitlines() if "summary:" in x][-1])
    print(f"recovered after each burst: {recovered}; summary adds up: {summary_adds_up(err)}; exit {proc.returncode}")
    return 0 if recovered and summary_adds_up(err) and proc.returncode == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--seconds", type=int, default=600)
    s.add_argument("--pps", type=int, default=100_000)
    s.add_argument("--flow-timeout", default="5s")
    o = sub.add_parser("overload")
    o.add_argument("--packets", type=int, default=1_000_000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("load_live.py needs root (network namespace, veth pair, live capture)", file=sys.stderr)
        return 2
    capture = generate("medium")
    with Veth() as veth:
        return soak(args, veth, capture) if args.mode == "soak" else overload(args, veth, capture)


if __name__ == "__main__":
    raise SystemExit(main())
