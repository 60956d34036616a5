#!/usr/bin/env python3
"""``devourer query`` on a benchmark capture against the tests' plain-Python aggregation (issue 16).

    .venv/bin/python scripts/check_query.py medium      # or large, small

Replays the capture (bench-data/, genpcap) with ``-o file`` and ``-o parquet``, then asks every query type,
with and without a condition, from the store and from the JSON lines (``-n 0 -e json``), and compares each
answer with ``tests.test_query.expected`` of the records: groups, counts, order, hits and totals.
Too slow for the test suite at these sizes; the suite does the same on the corpus and on small.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench import generate  # noqa: E402

from tests.test_query import TYPES, _check, expected  # noqa: E402

DEVOURER = [sys.executable, "-m", "devourer"]
CONDITIONS = [None, "dport = 53", "dnet != 10.0.0.0/8 and snet = 10.0.0.0/8"]  # of tests.test_conditions.PLAIN


def main() -> int:
    capture = generate(sys.argv[1] if len(sys.argv) > 1 else "medium")
    with tempfile.TemporaryDirectory(dir=REPO / "bench-data") as tmp:
        flows, store = Path(tmp) / "flows.json", Path(tmp) / "store"
        for out in (["-o", "file", "-w", str(flows)], ["-o", "parquet", "--store", str(store)]):
            subprocess.run([*DEVOURER, "capture", "-r", str(capture), *out], check=True, stderr=subprocess.DEVNULL)
        records = [json.loads(line) for line in flows.open()]
        print(f"{capture.name}: {len(records):,} flows")
        for kind in ("talk_src", "talk_dst", "talk_conv", "apps_port", "agg_talk_port", "raw"):
            for condition in CONDITIONS:
                want = expected(records, TYPES[kind], condition, resolution=300)
                for source in (["--store", str(store)], ["-r", str(flows)]):
                    out = subprocess.run([*DEVOURER, "query", kind, *source, "-f", "1970-01-01", "-n", "0", "-e",
                                          "json", "--resolution", "5m"] + (["-c", condition] if condition else []),
                                         check=True, capture_output=True, text=True).stdout
                    _check(json.loads(out), want, TYPES[kind])
                print(f"  {kind:14} {condition or '':42} {len(want):>9,} groups: store and JSON lines equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
