#!/usr/bin/env python3
"""Elephant flow: one flow carrying half the packets of a capture must not stall the others.

    .venv/bin/python scripts/bench_elephant.py [--workers 1,2]

Builds bench-data/elephant.pcap from the medium capture: after every packet
comes one packet of a single TCP connection (alternating directions, same
timestamp), so that connection holds half of the 4 M packets. Runs devourer on
both files and prints packets/s, and checks that the other flows come out
exactly as from the medium capture alone (same records, one flow more).
"""

import argparse
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench import generate  # noqa: E402


def _elephant_frame(from_client: bool, seq: int) -> bytes:
    client, server = bytes([198, 51, 100, 7]), bytes([203, 0, 113, 9])
    src, dst = (client, server) if from_client else (server, client)
    sport, dport = (40000, 443) if from_client else (443, 40000)
    payload = bytes(1400)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0, src, dst)
    macs = bytes.fromhex("020000000001020000000002") if from_client else bytes.fromhex("020000000002020000000001")
    return macs + b"\x08\x00" + ip + tcp + payload


def build(medium: Path, out: Path) -> None:
    if out.exists():
        return
    frames = [_elephant_frame(True, 0), _elephant_frame(False, 0)]
    with open(medium, "rb") as f, open(out, "wb") as w:
        w.write(f.read(24))
        i = 0
        while header := f.read(16):
            sec, usec, caplen, wire = struct.unpack("<IIII", header)
            w.write(header + f.read(caplen))
            e = frames[i & 1]
            w.write(struct.pack("<IIII", sec, usec, len(e), len(e)) + e)
            i += 1


def run(path: Path, workers: int) -> tuple[float, list[bytes]]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
        t0 = time.perf_counter()
        subprocess.run([str(REPO / ".venv" / "bin" / "devourer"), "capture", "-r", str(path), "--workers",
                        str(workers), "-o", "file", "-w", out.name], check=True, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        records = []
        for line in Path(out.name).read_bytes().splitlines():
            r = orjson.loads(line)
            r.pop("id")
            records.append(orjson.dumps(r, option=orjson.OPT_SORT_KEYS))
    return wall, sorted(records)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    medium = generate("medium")
    elephant = medium.with_name("elephant.pcap")
    build(medium, elephant)
    for f in (medium, elephant):
        with open(f, "rb") as h:  # hot page cache
            while h.read(1 << 24):
                pass
    for workers in [int(w) for w in args.workers.split(",")]:
        wall_m, recs_m = run(medium, workers)
        wall_e, recs_e = run(elephant, workers)
        others = [r for r in recs_e if b"198.51.100.7" not in r]
        big = [orjson.loads(r) for r in recs_e if b"198.51.100.7" in r]
        packets = sum(r["src_stat"]["packets"] + r["dst_stat"]["packets"] for r in big)
        print(f"--workers {workers}: medium 2,000,000 packets in {wall_m:.2f} s ({2e6 / wall_m:,.0f} pkt/s); "
              f"with the elephant 4,000,000 packets in {wall_e:.2f} s ({4e6 / wall_e:,.0f} pkt/s); "
              f"elephant: {len(big)} record(s), {packets:,} packets; other flows identical to medium's: "
              f"{others == recs_m} ({len(others):,})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
