"""A full disk under -o file: one clear error, the loss counted, and the file holds every whole line that fitted
(never ends inside a JSON line). A real tmpfs of 600 KiB, mounted for the test (root only)."""

import contextlib
import json
import os
import sys
import re
import subprocess

import pytest

from tests.conftest import GENPCAP, packets_add_up, run_devourer, summary_counts


@contextlib.contextmanager
def _disk(where, size: str):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    with _disk(tmp_path / "disk", "600k") as where:
        yield where


def test_disk_full_loses_no_line_silently(small_capture, small_disk):
    out = small_disk / "flows.jsonl"
    # without names the exporter writes each batch as it comes (nothing waits for the resolver)
    proc = run_devourer("capture", "-r", small_capture, "--flow-timeout", "1s", "--names", "false", "-o", "file", "-w", out)
    assert proc.returncode == 1
    assert [x for x in proc.stderr.splitlines() if "No space left on device" in x] == [
        "devourer: exporter: cannot write output: No space left on device"]
    data = out.read_bytes()
    # whole lines up to the space there is (before: a 4,096-record batch was all or nothing, and none fitted):
    # the disk is full to within its last page and a line
    assert data.endswith(b"\n") and len(data) > 600 * 1024 - 4096 - max(map(len, data.splitlines())) - 1
    records = [json.loads(line) for line in data.splitlines()]
    written, lost = (int(x.replace(",", "")) for x in re.search(
        r"([\d,]+) flows written \(\d+ evicted early, ([\d,]+) lost at the output\)", proc.stderr).groups())
    assert len(records) == written and lost > 0
    # once the output is gone the replay stops reading (the rest would only be counted lost), so the flows to
    # account for are those of the packets read: a replay of exactly that many packets, cut by tcpdump
    counts = summary_counts(proc.stderr)
    assert packets_add_up(counts)
    read = counts["packets read"]
    if read < 100_000:
        assert "stopped reading" in proc.stderr
    first = small_disk.parent / "first.pcap"
    subprocess.run(["tcpdump", "-r", str(small_capture), "-c", str(read), "-w", str(first)], check=True,
                   capture_output=True)
    replay = run_devourer("capture", "-r", first, "--flow-timeout", "1s")
    assert written + lost == len(replay.stdout.splitlines())  # every flow is either in the file or counted lost


def test_disk_full_under_the_store_loses_no_flow_silently(tmp_path):
    """-o parquet on a disk that fills up: one clear error, and every flow is in the store (its Parquet files,
    or the staging file that the next start converts) or counted lost, none in both. A 12 MiB tmpfs; the
    60,000 flows' staging file alone takes about 19 MB."""
    import pyarrow.parquet as pq

    from devourer.outputs.store import STAGING, _read_staging

    capture = tmp_path / "flows.pcap"
    subprocess.run([sys.executable, str(GENPCAP), "--packets", "200000", "--flows", "60000", "--seed", "5",
                    str(capture)], check=True, capture_output=True)
    with _disk(tmp_path / "disk", "12m") as disk:
        store = disk / "store"
        proc = run_devourer("capture", "-r", capture, "--flow-timeout", "1s", "--names", "false", "-o", "parquet",
                            "--store", store)
        assert proc.returncode == 1
        assert [x for x in proc.stderr.splitlines() if "No space left on device" in x] == [
            "devourer: exporter: cannot write output: No space left on device"]
        assert "Traceback" not in proc.stderr
        written, lost = (int(x.replace(",", "")) for x in re.search(
            r"([\d,]+) flows written \(\d+ evicted early, ([\d,]+) lost at the output\)", proc.stderr).groups())
        assert lost > 0
        kept = sum(pq.read_metadata(p).num_rows for p in store.rglob("*.parquet") if not p.name.startswith("."))
        for staging in (store / STAGING).iterdir():
            table = _read_staging(str(staging))
            kept += 0 if table is None else table.num_rows
        assert kept == written
    counts = summary_counts(proc.stderr)
    assert packets_add_up(counts)
    first = tmp_path / "first.pcap"
    subprocess.run(["tcpdump", "-r", str(capture), "-c", str(counts["packets read"]), "-w", str(first)],
                   check=True, capture_output=True)
    replay = run_devourer("capture", "-r", first, "--flow-timeout", "1s")
    assert written + lost == len(replay.stdout.splitlines())
