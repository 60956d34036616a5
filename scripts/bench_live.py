#!/usr/bin/env python3
"""Live capture at increasing rates: the highest rate devourer takes with zero drops, and what drops first.

    sudo .venv/bin/python scripts/bench_live.py [--rates 50000,100000,200000,400000,top] [--packets 400000]

Creates a network namespace and a veth pair of its own (removed afterwards),
runs ``devourer capture -i`` on the host end, and replays the medium benchmark
capture into the namespace end with tcpreplay (``--pps R``, or ``--topspeed``).
The frames travel only over that veth pair. For each rate it prints what
tcpreplay achieved and devourer's own accounting from its summary line:
packets read, dropped by the kernel (libpcap's ps_drop), by the worker rings
and by the resolver ring.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench import generate  # noqa: E402
from load_live import Veth  # noqa: E402


def number(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1).replace(",", "")) if m else -1


def one_rate(host_if: str, ns: str, ns_if: str, capture: Path, rate: str, packets: int) -> dict:
    log = tempfile.TemporaryFile("w+")
    dev = subprocess.Popen([str(REPO / ".venv" / "bin" / "devourer"), "capture", "-i", host_if, "-o", "file", "-w",
                            "/dev/null"], stderr=log, text=True)
    time.sleep(2.0)  # started and capturing
    speed = ["--topspeed"] if rate == "top" else ["--pps", rate]
    replay = subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "-i", ns_if, *speed, "--limit", str(packets),
                             str(capture)], capture_output=True, text=True)
    time.sleep(1.0)
    dev.send_signal(signal.SIGTERM)
    dev.wait(timeout=120)
    log.seek(0)
    err = log.read()
    return {
        "rate": rate,
        "sent": number(r"Actual: (\d+) packets", replay.stdout),
        "sent_pps": number(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d,]+)\.?\d* pps", replay.stdout),
        "read": number(r"([\d,]+) packets read", err),
        "kernel": number(r"kernel dropped ([\d,]+)", err),
        "ring": number(r"\+ ([\d,]+) dropped", err),
        "names": number(r"observations, [\d,]+ malformed, ([\d,]+) dropped", err),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="50000,100000,200000,400000,800000,top")
    ap.add_argument("--packets", type=int, default=400_000, help="packets replayed per rate")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_live.py needs root (network namespace, veth pair, live capture)", file=sys.stderr)
        return 2
    capture = generate("medium")
    with Veth() as veth:
        print(f"{'rate pkt/s':>12}|{'sent':>9}|{'sent pkt/s':>11}|{'read':>9}|{'kernel drop':>12}|{'ring drop':>10}|"
              f"{'name drop':>10}")
        for rate in args.rates.split(","):
            r = one_rate(veth.host_if, veth.ns, veth.ns_if, capture, rate, args.packets)
            print(f"{r['rate']:>12}|{r['sent']:>9,}|{r['sent_pps']:>11,}|{r['read']:>9,}|{r['kernel']:>12,}|"
                  f"{r['ring']:>10,}|{r['names']:>10,}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
