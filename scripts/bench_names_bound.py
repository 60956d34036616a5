#!/usr/bin/env python3
"""A million distinct DNS names against the name map's bound: memory stays bounded, evictions are counted.

    .venv/bin/python scripts/bench_names_bound.py [--names 1000000] [--max-names 100000,1000000]

Writes a capture of N DNS answers, each naming a different address with a different name
(bench-data/names-N.pcap), replays it with each --max-names, and prints the wall time,
the peak memory of the exporter (which holds the name map) and the evictions from the summary.
"""

import argparse
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench-data"


def dns_packet(i: int, ts: float) -> bytes:
    name = b"".join(bytes([len(p)]) + p for p in (f"host{i}".encode(), b"bound", b"example")) + b"\0"
    addr = struct.pack("!I", (10 << 24) + i + 1)
    dns = (struct.pack("!HHHHHH", i & 0xFFFF, 0x8180, 1, 1, 0, 0) + name + struct.pack("!HH", 1, 1)
           + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 3600, 4) + addr)
    udp = struct.pack("!HHHH", 53, 40000, 8 + len(dns), 0) + dns
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([192, 0, 2, 53]),
                     bytes([192, 0, 2, 1])) + udp
    frame = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip
    sec, usec = int(ts), int((ts % 1) * 1e6)
    return struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame


def generate(n: int) -> Path:
    path = OUT / f"names-{n}.pcap"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
            for i in range(n):
                f.write(dns_packet(i, 1_700_000_000 + i * 1e-4))
    return path


def peak_rss_of(comm: str, proc: subprocess.Popen) -> int:
    """Poll /proc while proc runs; peak VmHWM (MB) of the child named comm."""
    peak = 0
    while proc.poll() is None:
        for pid in Path("/proc").iterdir():
            if not pid.name.isdigit():
                continue
            try:
                if (pid / "comm").read_text().strip() != comm:
                    continue
                for line in (pid / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) // 1024)
            except OSError:
                continue
        time.sleep(0.2)
    return peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--max-names", default="100000,1000000")
    args = ap.parse_args()
    capture = generate(args.names)
    print(f"{args.names:,} DNS answers, each a new name for a new address ({capture})")
    print(f"{'--max-names':>12} {'wall s':>7} {'exporter peak RSS MB':>21} {'names evicted':>14}")
    for bound in args.max_names.split(","):
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "devourer", "capture", "-r", str(capture), "-o", "file",
                                 "-w", "/dev/null", "--max-names", bound], stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        peak = peak_rss_of("dvr-exporter", proc)
        err = proc.stderr.read()
        wall = time.monotonic() - start
        evicted = re.search(r"([\d,]+) evicted from the name map", err)
        print(f"{int(bound):>12,} {wall:>7.1f} {peak:>21} {evicted.group(1) if evicted else '?':>14}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
