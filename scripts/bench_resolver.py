#!/usr/bin/env python3
"""Resolver throughput: name-resolution packets parsed per second by the resolver core.

    .venv/bin/python scripts/bench_resolver.py                  # medium benchmark capture (~16 k DNS packets)
    .venv/bin/python scripts/bench_resolver.py FILE [FILE ...]  # any captures

The name packets are first collected exactly as capture hands them to the
resolver (same decoder, same slots), then fed to ``NameExtractor`` alone, so the
figure is the resolver's own speed, without the rest of the engine.
"""

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devourer.counters import N_RESOLVER_COUNTERS, R_MALFORMED, R_OBSERVATIONS  # noqa: E402
from devourer.engine import inprocess  # noqa: E402
from devourer.names.observe import NameExtractor  # noqa: E402
from devourer.packet import layout as L  # noqa: E402
from devourer.settings import Settings  # noqa: E402


def main() -> int:
    files = sys.argv[1:] or [str(REPO / "bench-data" / "medium.pcap")]
    settings = Settings(read_files=tuple(files))
    grab = inprocess.Keep()
    inprocess.read(settings, inprocess.Discard(), grab)
    slots = np.concatenate(grab.batches) if grab.batches else np.zeros((0, L.NAME_SLOT_BYTES), np.uint8)
    counters = np.zeros(N_RESOLVER_COUNTERS, np.int64)
    core = NameExtractor(counters)
    core.slots(slots[:256])  # warm caches
    counters[:] = 0
    best = None
    for _ in range(3):
        counters[:] = 0
        t0 = time.perf_counter()
        for i in range(0, len(slots), 256):
            core.slots(slots[i:i + 256])
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    responses = sum(1 for s in slots if s[L.NAME_PAYLOAD_AT + 2] & 0x80)
    print(f"{len(slots):,} name packets ({responses:,} with the QR bit set) from {', '.join(files)}")
    print(f"resolver core: {len(slots) / best:,.0f} name packets/s, {int(counters[R_OBSERVATIONS]):,} observations, "
          f"{int(counters[R_MALFORMED]):,} malformed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
