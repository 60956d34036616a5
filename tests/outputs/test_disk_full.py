"""A full disk under -o file: one clear error, the loss counted, and the file holds every whole line that fitted
(never ends inside a JSON line). A real tmpfs of 600 KiB, mounted for the test (root only)."""

import json
import os
import re
import subprocess

import pytest

from tests.conftest import packets_add_up, run_devourer, summary_counts


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


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
