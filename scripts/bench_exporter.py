#!/usr/bin/env python3
"""The exporter alone: how long writing the flow records of a capture takes, names included.

    .venv/bin/python scripts/bench_exporter.py                  # large benchmark capture (1 M flows)
    .venv/bin/python scripts/bench_exporter.py --capture medium

First the capture is read in this process through the engine's own parts
(capture decoder, one flow table, resolver core) to collect every expired flow
row and every name observation, exactly what the exporter process is handed in
a run. Then only the exporter's work is timed: feeding the observations to the
name map, and formatting every row (names looked up) into JSON lines written to
/dev/null through the file output, in the batches the exporter uses. docs/architecture.md
§7 asks that this take less time than counting the capture's packets did.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench import CAPTURES, generate  # noqa: E402
from devourer.engine import inprocess  # noqa: E402
from devourer.names.table import NameTable  # noqa: E402
from devourer.outputs.format import RecordFormatter  # noqa: E402
from devourer.outputs.jsonfile import JsonFileSink  # noqa: E402
from devourer.procs.exporter import READ_ROWS  # noqa: E402
from devourer.settings import Settings  # noqa: E402


def collect(path: Path):
    settings = Settings(read_files=(str(path),))
    flows, names = inprocess.ToTable(settings), inprocess.ToNames()
    t0 = time.perf_counter()
    inprocess.read(settings, flows, names)
    flows.table.flush()
    took = time.perf_counter() - t0
    return np.concatenate(flows.rows), names.observations, took


def synthetic_names(rows: np.ndarray) -> list:
    """One DNS answer per distinct A-side address of the rows, seen before the capture began."""
    import socket

    from devourer.flow import record as R
    from devourer.names.extract import Observation

    v6 = ((rows[:, R.F_KEY] >> np.uint64(56)) & np.uint64(1)).astype(bool)
    start = int(rows[:, R.F_FIRST].min()) - 1
    seen, out = set(), []
    for i, is_v6 in enumerate(v6.tolist()):
        raw = rows[i, R.F_ADDR_A:R.F_ADDR_A + 2].tobytes()
        addr = socket.inet_ntop(socket.AF_INET6, raw) if is_v6 else socket.inet_ntop(socket.AF_INET, raw[:4])
        if addr not in seen:
            seen.add(addr)
            out.append((start, Observation("dns", "AAAA" if is_v6 else "A", f"host-{len(seen)}.example.net", addr,
                                           None, 86400, ("www.example.net",))))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", choices=sorted(CAPTURES), default="large")
    ap.add_argument("--name-every-host", action="store_true",
                    help="also give every flow's first address a DNS name (worst case: every record has names)")
    args = ap.parse_args()
    path = generate(args.capture)
    rows, observations, counting_s = collect(path)
    if args.name_every_host:
        observations += synthetic_names(rows)
    formatter = RecordFormatter("bench")
    formatter.lines(rows[:10], NameTable())  # compiled code loaded outside the timing
    sink = JsonFileSink("/dev/null")
    t0 = time.perf_counter()
    names = NameTable()
    for ts, obs in observations:
        names.observe(ts, obs)
    t1 = time.perf_counter()
    written = 0
    for start in range(0, len(rows), READ_ROWS):
        lines = formatter.lines(rows[start:start + READ_ROWS], names)
        written += len(lines)
        sink.write_lines(lines)
    sink.flush()
    t2 = time.perf_counter()
    named = sum(1 for line in formatter.lines(rows, names).splitlines() if b'"names":["' in line)
    print(f"{args.capture}: {len(rows):,} flow records, {len(observations):,} name observations, "
          f"{named:,} records with a name")
    print(f"name map fed in {t1 - t0:.2f} s; records formatted and written in {t2 - t1:.2f} s "
          f"({len(rows) / (t2 - t1):,.0f} records/s, {written / len(rows):.0f} bytes each)")
    print(f"exporter work in all: {t2 - t0:.2f} s; counting the packets in one process (read, decode, "
          f"table, names) took {counting_s:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
