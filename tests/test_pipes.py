"""A closed standard output (``devourer ... | head``) ends devourer quietly, as tcpdump, nfdump and jq end:
exit 0, nothing on stderr. Real processes on a real pipe whose reader is gone before the first write."""

import os
import subprocess

import pytest

from tests.conftest import DEVOURER, PCAPS, REPO


def _with_closed_stdout(*args) -> subprocess.CompletedProcess:
    """Run devourer with a pipe as stdout whose read end is closed before devourer writes anything: its
    first write fails with EPIPE, whatever the timing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*DEVOURER, *map(str, args)], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, timeout=300)
    finally:
        os.close(write_end)


def test_a_replay_into_a_closed_pipe_ends_quietly(small_capture):
    proc = _with_closed_stdout("capture", "-r", small_capture)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("args", [["names", "-r", PCAPS / "goprobe__default.pcap"],
                                  ["names", "-r", PCAPS / "goprobe__default.pcap", "--json"], ["version"]])
def test_the_other_commands_end_quietly_too(args):
    proc = _with_closed_stdout(*args)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_failing_output_is_still_an_error(small_capture, tmp_path):
    """Only a closed pipe is quiet: an output that cannot be written is an error and exit 1, its cause said
    before the exporter's end."""
    proc = subprocess.run([*DEVOURER, "capture", "-r", str(small_capture)], stdout=open("/dev/full", "wb"),
                          stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    cause = [i for i, x in enumerate(lines) if "cannot write output: No space left on device" in x]
    death = [i for i, x in enumerate(lines) if "exporter" in x and "exited with status 1" in x]
    assert len(cause) == 1 and death and cause[0] < death[0]  # the cause first, then what it led to
