"""The same capture gives the same records, ids included, whatever the engine's shape."""

import json

import pytest

from tests.conftest import PCAPS, capture_records


def _canonical(records):
    return sorted(json.dumps(r, sort_keys=True) for r in records)


@pytest.mark.parametrize("capture", ["goprobe__default.pcap", "zeek__echo-connections.pcap", "ndpi__gnutella.pcap"])
def test_same_records_for_any_workers_batch_and_ring_size(capture, tmp_path):
    base, proc = capture_records(PCAPS / capture, "--workers", "1", tmp_path=tmp_path)
    assert proc.returncode == 0 and base
    for extra in (["--workers", "2"], ["--workers", "4"], ["--workers", "3", "--batch-size", "7", "--ring-size", "64"],
                  ["--workers", "1", "--batch-size", "1"]):
        other, proc = capture_records(PCAPS / capture, *extra, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert _canonical(other) == _canonical(base), f"records differ with {extra}"


def test_same_records_with_expiry_under_many_workers(small_capture, tmp_path):
    """Short timeouts make expiry happen mid-run, on every worker, at different batch points."""
    args = ["--flow-timeout", "5s", "--active-timeout", "20s"]
    base, proc = capture_records(small_capture, "--workers", "1", *args, tmp_path=tmp_path)
    assert proc.returncode == 0
    reasons = {r["end_reason"] for r in base}
    assert {"idle", "active"} <= reasons
    for extra in (["--workers", "4"], ["--workers", "2", "--batch-size", "100", "--ring-size", "256"]):
        other, proc = capture_records(small_capture, *extra, *args, tmp_path=tmp_path)
        assert proc.returncode == 0
        assert _canonical(other) == _canonical(base), f"records differ with {extra}"


def test_reading_from_stdin_gives_the_same_records_as_the_file(tmp_path):
    """A pipe is read packet by packet with libpcap's own headers; a file in batches
    with wire lengths from the record headers. Both must agree."""
    import subprocess

    from tests.conftest import DEVOURER, REPO, parse_records

    capture = PCAPS / "goprobe__default.pcap"
    base, _ = capture_records(capture, tmp_path=tmp_path)
    with open(capture, "rb") as f:
        proc = subprocess.run([*DEVOURER, "capture", "-r", "-"], stdin=f, capture_output=True, text=True, cwd=REPO,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _canonical(parse_records(proc.stdout)) == _canonical(base)
