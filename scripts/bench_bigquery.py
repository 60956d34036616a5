#!/usr/bin/env python3
"""BigQuery output, measured against the local emulator (.venv-bqemu, see scripts/install.sh).

    .venv/bin/python scripts/bench_bigquery.py [--capture medium]

1. rows/s: replay the capture with -o bigquery (names on) into a fresh dataset;
   rows stored / wall time of the run, and the run's own figures.
2. spooling: the same replay with BigQuery unreachable; the exporter's peak RSS
   (VmHWM) while every row goes to the spool, and the spool's size.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEVOURER_SHARED", REPO.parent / "shared"))
PROJECT = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exporter_peak_kb(pid: int) -> int:
    peak = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != pid:
                    continue
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "dvr-exporter":
                    continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            continue
    return peak


def run(args: list[str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "devourer"), "capture", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, exporter_peak_kb(proc.pid))
        time.sleep(0.05)
    return time.perf_counter() - t0, peak, proc.stderr.read()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capture", default=str(REPO / "bench-data" / "medium.pcap"))
    a = ap.parse_args()
    port = free_port()
    data = tempfile.mkdtemp(prefix="bqemu-bench-", dir="/dev/shm")
    emu = subprocess.Popen([str(REPO / ".venv-bqemu" / "bin" / "python"), str(SHARED / "bigquery-emulator" / "serve.py"),
                            "serve", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(free_port()),
                            "--project", PROJECT, "--data-dir", data], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    spool = tempfile.mkdtemp(prefix="devourer-spool-")
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/bigquery/v2/projects/{PROJECT}/datasets", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
        bq.create_dataset("flows", exists_ok=True)
        common = ["-r", a.capture, "-o", "bigquery", "--bigquery-project-id", PROJECT, "--bigquery-dataset-id",
                  "flows", "--spool-dir", spool]
        wall, peak, err = run([*common, "--bigquery-endpoint", url])
        rows = list(bq.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.flows.flow_logs`").result())[0]["n"]
        print(f"into the emulator: {rows:,} rows in {wall:.1f} s = {rows / wall:,.0f} rows/s; "
              f"exporter peak RSS {peak / 1024:.0f} MB")
        print("   ", [x for x in err.splitlines() if "summary" in x][-1].split("; ")[-1])
        down = f"http://127.0.0.1:{free_port()}"
        wall, peak, err = run([*common, "--bigquery-endpoint", down])
        size = sum(f.stat().st_size for f in Path(spool).glob("*.jsonl"))
        print(f"BigQuery unreachable: run {wall:.1f} s, exporter peak RSS {peak / 1024:.0f} MB, "
              f"spool {size / 1e6:.0f} MB")
        print("   ", [x for x in err.splitlines() if "summary" in x][-1].split("; ")[-1])
    finally:
        emu.terminate()
        emu.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
