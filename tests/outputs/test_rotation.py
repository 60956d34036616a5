"""Output rotation (-o file --rotate-size/--rotate-interval/--rotate-keep): the rotated, compressed files and
the current one hold exactly the lines one unrotated file would, and nothing half done survives a restart."""

import gzip
import os
import re
import subprocess
import sys

import pytest

from devourer.outputs.jsonfile import JsonFileSink
from tests.conftest import GENPCAP, run_devourer

ROTATED = re.compile(r"^flows\.jsonl\.\d{8}T\d{6}Z(-\d+)?\.gz$")


def rotated_files(folder):
    names = sorted((n for n in os.listdir(folder) if ROTATED.match(n)),
                   key=lambda n: (n.split(".")[2].split("-")[0], int(n.split("-")[1][:-3]) if "-" in n else 0))
    return [folder / n for n in names]


def all_lines(folder):
    data = b"".join(gzip.decompress(p.read_bytes()) for p in rotated_files(folder))
    return data + (folder / "flows.jsonl").read_bytes()


def test_rotated_files_hold_exactly_the_unrotated_output(tmp_path):
    """Rotation falls between the exporter's writes (4096 records at most): 12,000 flows are at least three
    writes whatever the timing, so at least two rotations."""
    capture = tmp_path / "many-flows.pcap"
    subprocess.run([sys.executable, str(GENPCAP), "--packets", "40000", "--flows", "12000", "--seed", "4",
                    str(capture)], check=True, capture_output=True)
    plain, rotating = tmp_path / "plain", tmp_path / "rotating"
    plain.mkdir(), rotating.mkdir()
    args = ["capture", "-r", capture, "-o", "file", "-w"]
    assert run_devourer(*args, plain / "flows.jsonl").returncode == 0
    proc = run_devourer(*args, rotating / "flows.jsonl", "--rotate-size", "1k")
    assert proc.returncode == 0, proc.stderr
    assert len(rotated_files(rotating)) >= 2
    assert sorted(os.listdir(rotating)) == sorted([p.name for p in rotated_files(rotating)] + ["flows.jsonl"])
    expected = (plain / "flows.jsonl").read_bytes()
    # the same lines (the order of records is not fixed between runs: the exporter writes what is ready)
    assert sorted(all_lines(rotating).splitlines()) == sorted(expected.splitlines())
    for p in rotated_files(rotating):
        assert gzip.decompress(p.read_bytes()).endswith(b"\n")


def test_keep_bounds_the_rotated_files(small_capture, tmp_path):
    proc = run_devourer("capture", "-r", small_capture, "--flow-timeout", "1s", "-o", "file", "-w",
                        tmp_path / "flows.jsonl", "--rotate-size", "1k", "--rotate-keep", "1")
    assert proc.returncode == 0, proc.stderr
    assert len(rotated_files(tmp_path)) == 1


def test_interval_rotation_follows_the_clock_on_boundaries(tmp_path):
    now = [1_000_004_390.0]  # 2001-09-09T02:59:50Z, ten seconds before a whole hour
    sink = JsonFileSink(str(tmp_path / "flows.jsonl"), rotate_interval_s=3600, clock=lambda: now[0])
    sink.write_lines(b'{"a":1}\n')
    sink.tick()
    assert rotated_files(tmp_path) == []
    now[0] += 10  # the hour: the next tick rotates even though no line is written
    sink.tick()
    sink.tick()  # an empty file is not rotated again
    now[0] += 3600
    sink.tick()
    sink.write_lines(b'{"a":2}\n')
    sink.close()
    (first,) = rotated_files(tmp_path)
    assert first.name == "flows.jsonl.20010909T030000Z.gz"  # the time of the rotation, UTC
    assert gzip.decompress(first.read_bytes()) == b'{"a":1}\n'
    assert (tmp_path / "flows.jsonl").read_bytes() == b'{"a":2}\n'


def test_a_restart_finishes_what_a_killed_run_left(tmp_path):
    left_plain = tmp_path / "flows.jsonl.20260101T000000Z"
    left_plain.write_bytes(b'{"old":1}\n')
    (tmp_path / "flows.jsonl.20260101T000000Z.gz.tmp").write_bytes(b"\x1f\x8b half")
    sink = JsonFileSink(str(tmp_path / "flows.jsonl"), rotate_bytes=1 << 20)
    sink.close()
    assert sorted(os.listdir(tmp_path)) == ["flows.jsonl", "flows.jsonl.20260101T000000Z.gz"]
    assert gzip.decompress((tmp_path / "flows.jsonl.20260101T000000Z.gz").read_bytes()) == b'{"old":1}\n'


@pytest.mark.parametrize("flag", ["--rotate-size", "--rotate-interval"])
def test_rotation_needs_file_output(flag):
    proc = run_devourer("capture", "-r", "samples/http.pcap", flag, "10")
    assert proc.returncode == 2 and flag in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
