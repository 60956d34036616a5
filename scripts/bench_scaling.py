#!/usr/bin/env python3
"""Scaling of devourer over cores: packets/s for each --workers/--readers pair, in one run.

    .venv/bin/python scripts/bench_scaling.py --capture large --grid 1x1,2x1,4x1,8x1,8x2,8x4

Each pair is WORKERSxREADERS. The capture comes from ../shared/bench/genpcap.py
(bench-data/, as scripts/bench.py); every run writes JSON lines to /dev/null on a
hot page cache, best of --runs. Printed per pair: wall time, packets/s, CPU
seconds, peak PSS/RSS summed over the processes, flows written, and the speed-up
over the first pair. Meant for a many-core machine; on 2 cores more processes
only share the same two.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import CAPTURES, devourer_flows, generate, measure  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", choices=sorted(CAPTURES), default="large")
    ap.add_argument("--grid", default="1x1,2x1,4x1,8x1,2x2,4x2,8x2,8x4",
                    help="comma-separated WORKERSxREADERS pairs")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--devourer-args", default="", help="more devourer flags")
    args = ap.parse_args()
    path = generate(args.capture)
    packets = CAPTURES[args.capture][0]
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    print(f"machine: {os.cpu_count()} CPUs; capture {args.capture}: {packets:,} packets", flush=True)
    print(f"{'workers':>7} {'readers':>7} {'wall s':>7} {'M pkt/s':>8} {'CPU s':>7} {'PSS MB':>7} {'RSS MB':>7} "
          f"{'flows':>10} {'speed-up':>8}", flush=True)
    first = None
    for pair in args.grid.split(","):
        workers, readers = (int(x) for x in pair.lower().split("x"))
        cmd = [os.path.join(REPO, ".venv", "bin", "devourer"), "capture", "-r", str(path), "-o", "file", "-w",
               "/dev/null", "--workers", str(workers), "--readers", str(readers), *args.devourer_args.split()]
        best = None
        for _ in range(args.runs):
            r = measure(cmd)
            if r["rc"] != 0:
                print(f"{pair} failed ({r['rc']}): {r['out'][-400:]}", file=sys.stderr)
            if best is None or r["wall"] < best["wall"]:
                best = r
        first = first or best["wall"]
        print(f"{workers:>7} {readers:>7} {best['wall']:>7.2f} {packets / best['wall'] / 1e6:>8.2f} "
              f"{best['cpu']:>7.1f} {best['pss_mb']:>7.0f} {best['rss_mb']:>7.0f} "
              f"{devourer_flows(best['out']) or 0:>10,} {first / best['wall']:>7.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
