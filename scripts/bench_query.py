#!/usr/bin/env python3
"""``devourer query`` over a big flow store, beside DuckDB running the same SQL itself (issue 16).

    .venv/bin/python scripts/bench_query.py              # the store of ten replays of large (10 M flows)
    .venv/bin/python scripts/bench_query.py --ingest     # also: large with -o file and -o parquet, in turns

The store is made once in bench-data/store10m: large (scripts/bench.py's capture, genpcap seed 3) replayed
ten times with --sensor-id sensor-0..9. For each query type the script prints devourer's wall time as a
process (Python start, imports and output included; best and median of --runs) and DuckDB's time for the
statement devourer compiles (``query.sql.compile_query``), run on an open connection; then the store's
size. goQuery is not installable here; its README quotes 8 days of a sensor's flows in 37 ms.
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench import DATA, generate  # noqa: E402

from devourer.query import spec  # noqa: E402
from devourer.query.sources import _duckdb, store_files  # noqa: E402
from devourer.query.sql import compile_query  # noqa: E402

QUERIES = ["talk_src", "talk_dst", "talk_conv", "apps_port", "agg_talk_port", "raw", "sip,dip -c 'dport = 443'",
           "dport -c 'net = 10.0.0.0/8'", "sip -c 'net = 2000::/3'"]
DEVOURER = [sys.executable, "-m", "devourer"]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_store(store: Path, capture: Path, replays: int) -> None:
    if store.exists():
        return
    for i in range(replays):
        print(f"replay {i + 1}/{replays} into {store} ...", file=sys.stderr)
        subprocess.run([*DEVOURER, "capture", "-r", str(capture), "-o", "parquet", "--store", str(store),
                        "--sensor-id", f"sensor-{i}"], check=True, stderr=subprocess.DEVNULL)


def ingest(capture: Path, runs: int) -> None:
    """-o file and -o parquet on the same capture, in turns."""
    walls: dict[str, list[float]] = {"file": [], "parquet": []}
    sizes = {}
    for _ in range(runs):
        for kind in walls:
            target = DATA / f"ingest-{kind}"
            subprocess.run(["rm", "-rf", str(target)], check=True)
            args = ["-o", "file", "-w", str(target)] if kind == "file" else ["-o", "parquet", "--store", str(target)]
            t = time.perf_counter()
            subprocess.run([*DEVOURER, "capture", "-r", str(capture), *args], check=True, stderr=subprocess.DEVNULL)
            walls[kind].append(time.perf_counter() - t)
            sizes[kind] = target.stat().st_size if kind == "file" else _size(target)
    print(f"\ningest of {capture.name} ({runs} runs each, in turns)")
    print(f"{'output':10} {'best s':>8} {'median s':>9} {'size MB':>9}")
    for kind, w in walls.items():
        print(f"{kind:10} {min(w):8.2f} {statistics.median(w):9.2f} {sizes[kind] / 1e6:9.1f}")
    print(f"store / JSON lines size: {sizes['parquet'] / sizes['file']:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=DATA / "store10m")
    ap.add_argument("--replays", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ingest", action="store_true")
    args = ap.parse_args()
    capture = generate("large")
    make_store(args.store, capture, args.replays)
    files = store_files(str(args.store), spec.Window(spec.EARLIEST, spec.LATEST))
    con = _duckdb()
    flows = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
    print(f"store {args.store}: {flows:,} flows, {len(files)} files, {_size(args.store) / 1e6:.0f} MB "
          f"({_size(args.store) / flows:.1f} bytes a flow); {os.cpu_count()} CPUs")
    print(f"{'query':32} {'hits':>9} {'devourer best':>14} {'median':>8} {'DuckDB alone':>13}")
    now = datetime.datetime.now(datetime.timezone.utc)
    for text in QUERIES:
        words = text.split(" ", 1)
        extra = ["-c", words[1].split("'")[1]] if len(words) > 1 else []
        command = [*DEVOURER, "query", words[0], "--store", str(args.store), "-f", "1970-01-01", "-n", "10",
                   "-e", "json", *extra]
        walls, alone = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            walls.append(time.perf_counter() - t)
        from devourer.query.command import _condition

        query = spec.Query(spec.attributes_of(words[0]), _condition(extra[1] if extra else None, None),
                           spec.window_of("1970-01-01", None, now), 3600, limit=10)
        sql, params = compile_query(query, "read_parquet(?, union_by_name = true)", [files], "duckdb")
        for _ in range(args.runs):
            t = time.perf_counter()
            con.execute(sql, params).fetchall()
            alone.append(time.perf_counter() - t)
        hits = __import__("json").loads(out)["hits"]
        print(f"{text:32} {hits:9,} {min(walls):13.2f}s {statistics.median(walls):7.2f}s {min(alone):12.2f}s")
    if args.ingest:
        ingest(capture, 3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
