#!/usr/bin/env python3
"""Live capture at increasing rates: the highest rate devourer takes with zero drops, and what drops first.

    sudo .venv/bin/python scripts/bench_live.py [--rates 100000,200000,400000,top] [--seconds 3]
        [--interfaces 1|2] [--devourer-args '--buffer-size 256M']

Creates network namespaces and veth pairs of its own (removed afterwards), runs
``devourer capture -i`` on the host ends, and sends into each namespace end with
trafgen (netsniff-ng), which sends from a memory-mapped ring and so outruns
tcpreplay (about 400 k packets/s here): 4,096 UDP flows of 64-byte frames,
``--rate`` packets/s (or as fast as it can: ``top``) for ``--seconds``. The frames
travel only over those veth pairs. For each rate it prints what trafgen sent and
devourer's own accounting from its summary line: packets read, dropped by the
kernel (libpcap's ps_drop: the socket buffer was full), by the worker rings, and by
the resolver ring (none here: no name ports). With two interfaces, the same rate
goes into each.
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# 4,096 UDP flows (source ports 1024-5119) to a port that carries no names, 64-byte frames
TRAFGEN_PACKET = """{
  eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02),
  ipv4(saddr=10.254.90.2, daddr=10.254.90.1, ttl=64),
  udp(sp=dinc(1024, 5119), dp=9000),
  fill(0x61, 22)
}
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Links:
    """``n`` veth pairs, the far end of each in a namespace of its own."""

    def __init__(self, n: int):
        tag = f"dvb{os.getpid() % 10000}"
        self.pairs = [(f"{tag}n{j}", f"{tag}h{j}", f"{tag}p{j}") for j in range(n)]

    def __enter__(self):
        for ns, host_if, ns_if in self.pairs:
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", ns)
            sh("sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1")
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{ns_if}.disable_ipv6=1")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        return self

    def __exit__(self, *exc):
        for ns, host_if, _ in self.pairs:
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def number(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1).replace(",", "")) if m else -1


def one_rate(links: Links, rate: str, seconds: float, extra: list[str], config: str) -> dict:
    log = tempfile.TemporaryFile("w+")
    ifaces = [a for _, host_if, _ in links.pairs for a in ("-i", host_if)]
    dev = subprocess.Popen([str(REPO / ".venv" / "bin" / "devourer"), "capture", *ifaces, "-o", "file", "-w",
                            "/dev/null", *extra], stderr=log, text=True)
    time.sleep(3.0)  # started and capturing
    speed = [] if rate == "top" else ["-b", f"{rate}pps"]
    senders = []
    for ns, _, ns_if in links.pairs:
        senders.append(subprocess.Popen(["ip", "netns", "exec", ns, "trafgen", "-o", ns_if, "-i", config, "-P", "1",
                                         "-Q", *speed], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    time.sleep(seconds)
    outputs = []
    for s in senders:
        s.send_signal(signal.SIGINT)
        outputs.append(s.communicate(timeout=60)[0])
    time.sleep(1.0)
    dev.send_signal(signal.SIGTERM)
    dev.wait(timeout=120)
    log.seek(0)
    err = log.read()
    sent = sum(max(0, number(r"([\d,]+) packets outgoing", o)) for o in outputs)
    return {
        "rate": rate,
        "sent": sent,
        "sent_pps": int(sent / seconds),
        "read": number(r"([\d,]+) packets read", err),
        "kernel": number(r"kernel dropped ([\d,]+);", err),
        "ring": number(r"\+ ([\d,]+) dropped", err),
        "names": number(r"observations, [\d,]+ malformed, ([\d,]+) dropped", err),
        "per_interface": re.findall(r"; (\S+): ([\d,]+) read, kernel dropped ([\d,]+), ring dropped ([\d,]+)", err),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="50000,100000,200000,400000,800000,top",
                    help="packets/s per interface, comma-separated; top: as fast as trafgen sends")
    ap.add_argument("--seconds", type=float, default=3.0, help="how long each rate is sent")
    ap.add_argument("--interfaces", type=int, choices=[1, 2], default=1)
    ap.add_argument("--devourer-args", default="", help="more devourer flags, e.g. '--buffer-size 256M'")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_live.py needs root (network namespaces, veth pairs, live capture)", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as cfg, Links(args.interfaces) as links:
        cfg.write(TRAFGEN_PACKET)
        cfg.flush()
        print(f"machine: {os.cpu_count()} CPUs; {args.interfaces} interface(s); devourer {args.devourer_args or '(defaults)'}")
        print(f"{'rate pkt/s':>11}|{'sent':>10}|{'sent pkt/s':>11}|{'read':>10}|{'kernel drop':>12}|{'ring drop':>10}|"
              f"{'name drop':>10}| per interface (read/kernel/ring)")
        for rate in args.rates.split(","):
            r = one_rate(links, rate, args.seconds, shlex.split(args.devourer_args), cfg.name)
            per = " ".join(f"{n}:{a}/{b}/{c}" for n, a, b, c in r["per_interface"])
            print(f"{r['rate']:>11}|{r['sent']:>10,}|{r['sent_pps']:>11,}|{r['read']:>10,}|{r['kernel']:>12,}|"
                  f"{r['ring']:>10,}|{r['names']:>10,}| {per}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
