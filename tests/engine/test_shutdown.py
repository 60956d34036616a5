"""Orderly shutdown on SIGTERM/SIGINT, and a killed worker, during a replay from a pipe.

The capture comes through a FIFO that the test keeps open, so the replay is
"long" for as long as the test wants: devourer has read every packet written so
far and waits for more when the signal arrives.
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import DEVOURER, REPO, our_shm_segments, parse_records
from tests.engine.proctools import alive, children_of
from tests.pcapbuild import ethernet, ipv4, pcap_header, pcap_record, udp

N_FLOWS = 50


def _packets():
    for i in range(N_FLOWS):
        for k in range(3):
            yield pcap_record(1_700_000_000 + i * 0.01 + k * 0.001,
                              ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                                       ipv4("10.1.0.1", f"10.2.0.{i + 1}", 17, udp(30000 + i, 9999, b"p" * 20))))


def _wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fifo_replay(tmp_path):
    fifo = tmp_path / "in.pcap"
    os.mkfifo(fifo)
    out = tmp_path / "flows.jsonl"
    procs = []

    def start(*extra):
        p = subprocess.Popen([*DEVOURER, "capture", "-r", str(fifo), "-o", "file", "-w", str(out), "-s", "0.2s",
                              *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             start_new_session=True)
        p.err_lines = []
        threading.Thread(target=lambda: p.err_lines.extend(p.stderr), daemon=True).start()
        procs.append(p)
        writer = open(fifo, "wb", buffering=0)
        writer.write(pcap_header())
        for rec in _packets():
            writer.write(rec)
        roles = {"dvr-capture", "dvr-exporter"}
        assert _wait_for(lambda: roles <= set(children_of(p.pid).values()))
        # a pipe's batch ends when nothing more has arrived: all 150 packets written are counted at once,
        # though the writer stays open
        assert _wait_for(lambda: any(" 150 packets read" in x for x in p.err_lines))
        return p, writer

    yield start, out
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the process group (Ctrl-C)"])
def test_signal_flushes_every_flow_once_and_exits_zero(fifo_replay, how, no_shm_leftovers):
    start, out = fifo_replay
    proc, writer = start("--workers", "2")
    kids = children_of(proc.pid)
    assert {"dvr-capture", "dvr-worker-0", "dvr-worker-1", "dvr-exporter"} <= set(kids.values())
    assert not [s for s in our_shm_segments() if s.startswith(f"devourer-{proc.pid}-")], "segments are unlinked once running"
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    writer.close()
    time.sleep(0.2)
    err = "".join(proc.err_lines)
    assert proc.returncode == 0, err
    records = parse_records(out.read_text())
    assert len(records) == N_FLOWS
    assert len({r["id"] for r in records}) == N_FLOWS
    assert all(r["end_reason"] == "shutdown" for r in records)
    assert sum(r["src_stat"]["packets"] for r in records) == 3 * N_FLOWS
    assert not [k for k in kids if alive(k)], "child processes left behind"
    assert "summary: 150 packets read" in err


def test_killed_worker_is_reported_and_run_fails(fifo_replay, no_shm_leftovers):
    start, out = fifo_replay
    proc, writer = start("--workers", "2")
    kids = children_of(proc.pid)
    worker = next(pid for pid, name in kids.items() if name == "dvr-worker-1")
    os.kill(worker, signal.SIGKILL)
    proc.wait(timeout=60)
    writer.close()
    time.sleep(0.2)
    err = "".join(proc.err_lines)
    assert proc.returncode == 1
    assert f"worker 1 (pid {worker}) killed by signal 9" in err
    assert not [k for k in kids if alive(k)]
    # the other worker's flows still arrive
    records = parse_records(out.read_text())
    assert 0 < len(records) < N_FLOWS


def test_segments_of_a_killed_run_are_removed_at_the_next_start(tmp_path):
    """A run killed with SIGKILL between creating its segments and forking leaves them in /dev/shm: the next
    run removes them (a segment of a live devourer stays)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"/dev/shm/devourer-{dead.pid}-ring0"
    with open(stale, "wb") as f:
        f.write(b"\0" * 4096)
    live = subprocess.Popen([*DEVOURER, "capture", "-r", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, cwd=REPO)
    kept = f"/dev/shm/devourer-{live.pid}-extra"
    try:
        with open(kept, "wb") as f:
            f.write(b"\0" * 4096)
        proc = subprocess.run([*DEVOURER, "capture", "-r", "samples/http.pcap", "-o", "file", "-w",
                               tmp_path / "f.jsonl"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0
        assert not os.path.exists(stale) and os.path.exists(kept)
        (line,) = [x for x in proc.stderr.splitlines() if "left by a killed run" in x]
        assert line.startswith("devourer: warning: removed 1 shared-memory segment(s)") and stale in line
    finally:
        live.kill()
        live.wait()
        for path in (stale, kept):
            if os.path.exists(path):
                os.unlink(path)
