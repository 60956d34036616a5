"""Orderly shutdown on SIGTERM/SIGINT, and a killed worker, during a replay from a pipe.

The capture comes through a FIFO that the test keeps open, so the replay is
"long" for as long as the test wants: devourer has read every packet written so
far and waits for more when the signal arrives.
"""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import DEVOURER, REPO, our_shm_segments, packets_add_up, parse_records, run_devourer, summary_counts
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


def _dns_response(i: int) -> bytes:
    from tests.engine.test_hostile import _dns_answer

    return pcap_record(1_700_000_001 + i * 0.01, ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", 0x0800, ipv4(
        "10.1.0.53", "10.1.0.1", 17, udp(53, 40000, _dns_answer(i, f"h{i}.example", bytes([10, 5, i >> 8 & 255,
                                                                                              i & 255]))))))


def test_killed_exporter_during_a_replay_never_leaves_the_run_hanging(fifo_replay, no_shm_leftovers):
    """The exporter is stopped while name packets keep coming, so the resolver fills the export queue and waits on
    it; then the exporter is killed. The run must end by itself (not only at --shutdown-timeout: before, the
    resolver waited on the dead queue and the supervisor's own queue thread on a lock the dead held, for ever),
    with exit 1 and every flow it did not write counted as lost at the output."""
    start, out = fifo_replay
    proc, writer = start("--shutdown-timeout", "1000s")
    exporter = next(pid for pid, name in children_of(proc.pid).items() if name == "dvr-exporter")
    os.kill(exporter, signal.SIGSTOP)
    for i in range(600):  # a DNS answer every 10 ms: the resolver sends a message per 20 ms, the queue holds 256
        writer.write(_dns_response(i))
        time.sleep(0.01)
    os.kill(exporter, signal.SIGKILL)
    proc.wait(timeout=240)
    writer.close()
    time.sleep(0.2)
    err = "".join(proc.err_lines)
    assert proc.returncode == 1, err
    assert f"exporter (pid {exporter}) killed by signal 9" in err
    counts = summary_counts(err)
    assert packets_add_up(counts), err
    lost = int(re.search(r"([\d,]+) lost at the output", err).group(1).replace(",", ""))
    written = len(parse_records(out.read_text())) if out.exists() else 0
    assert counts["flows written"] == written
    assert written + lost == N_FLOWS + 1  # the 50 UDP flows and the DNS one: each written or counted lost


def test_killed_worker_during_a_replay_leaves_every_packet_counted(fifo_replay, no_shm_leftovers):
    """Worker 1 stops, packets pile up in its ring, then it is killed: those packets are counted as lost with
    the dead worker, so the summary still adds up (before, they were in "read" and nowhere else)."""
    start, out = fifo_replay
    proc, writer = start("--workers", "2", "--shutdown-timeout", "1000s")
    worker = next(pid for pid, name in children_of(proc.pid).items() if name == "dvr-worker-1")
    os.kill(worker, signal.SIGSTOP)
    for rec in _packets():
        writer.write(rec)
    assert _wait_for(lambda: any(" 300 packets read" in x for x in proc.err_lines))
    os.kill(worker, signal.SIGKILL)
    proc.wait(timeout=120)
    writer.close()
    err = "".join(proc.err_lines)
    assert proc.returncode == 1
    counts = summary_counts(err)
    assert packets_add_up(counts), err
    assert counts["lost with dead workers"] > 0
    assert re.search(r"[1-9][\d,]* lost with dead workers\)", err)  # its flows, in the flow part of the line


def test_sighup_reopens_the_log_and_the_output_and_loses_nothing(tmp_path, no_shm_leftovers):
    """SIGHUP (a closed terminal, logrotate's postrotate) stops nothing: log file and output file are reopened
    (files moved away are created anew), capture goes on, and SIGTERM later writes every flow once, exit 0."""
    fifo, out, log = tmp_path / "in.pcap", tmp_path / "flows.jsonl", tmp_path / "devourer.log"
    os.mkfifo(fifo)
    proc = subprocess.Popen([*DEVOURER, "capture", "-r", str(fifo), "-o", "file", "-w", str(out), "-s", "0.2s",
                             "--flow-timeout", "1s", "--log-output", str(log)], cwd=REPO, start_new_session=True)
    try:
        writer = open(fifo, "wb", buffering=0)
        writer.write(pcap_header() + b"".join(_packets()))
        assert _wait_for(lambda: log.exists() and " 150 packets read" in log.read_text())
        writer.write(pcap_record(1_700_000_100, ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                                                         ipv4("10.1.0.1", "10.3.0.1", 17, udp(1, 2, b"x")))))
        assert _wait_for(lambda: out.exists() and len(parse_records(out.read_text())) == N_FLOWS)  # expired
        os.rename(out, tmp_path / "rotated.jsonl")
        os.rename(log, tmp_path / "rotated.log")
        os.kill(proc.pid, signal.SIGHUP)
        assert _wait_for(lambda: log.exists() and "SIGHUP" in log.read_text())
        assert proc.poll() is None
        assert len(children_of(proc.pid)) == 4  # capture, worker, resolver, exporter: none hung up either
        writer.write(pcap_record(1_700_000_200, ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                                                         ipv4("10.1.0.1", "10.3.0.2", 17, udp(1, 2, b"x")))))
        assert _wait_for(lambda: out.exists() and len(parse_records(out.read_text())) == 1)  # 10.3.0.1, idle
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        writer.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    before, after = parse_records((tmp_path / "rotated.jsonl").read_text()), parse_records(out.read_text())
    assert len(before) == N_FLOWS and len(after) == 2  # 10.3.0.1 (idle) and 10.3.0.2 (shutdown): nothing lost
    assert "summary: 152 packets read" in log.read_text() and "summary:" not in (tmp_path / "rotated.log").read_text()


def test_segment_names_taken_by_another_user_do_not_stop_a_start(tmp_path):
    """Anyone can create files in /dev/shm. Names in the old fixed form (devourer-<pid>-ring0) planted for the
    next pids, and a planted name that the run's first random token would give, are never opened or removed;
    the run starts with names of its own."""
    import pwd
    import secrets

    from devourer.engine.topology import Topology
    from devourer.settings import Settings

    if os.geteuid() != 0:
        pytest.skip("planting files of another user needs root")
    with open("/proc/sys/kernel/ns_last_pid") as f:
        last = int(f.read())
    planted = [f"/dev/shm/devourer-{pid}-{what}" for pid in range(last + 1, last + 400)
               for what in ("ring0", "counters")]
    for path in planted:
        with open(path, "wb") as f:
            f.write(b"squatter")
        os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    try:
        proc = run_devourer("capture", "-r", "samples/http.pcap", "-o", "file", "-w", tmp_path / "f.jsonl")
        assert proc.returncode == 0, proc.stderr
        assert all(open(p, "rb").read() == b"squatter" for p in planted)
    finally:
        for path in planted:
            os.unlink(path)
    tokens = iter(["a" * 32, "b" * 32])
    real = secrets.token_hex
    secrets.token_hex = lambda n: next(tokens)
    squat = f"/dev/shm/devourer-{os.getpid()}-{'a' * 32}-flows0"
    with open(squat, "wb") as f:
        f.write(b"squatter")
    try:
        topo = Topology(Settings(workers=1, resolve_names=False))
        topo.unlink()
        assert topo.flow_rings[0].name == f"devourer-{os.getpid()}-{'b' * 32}-flows0"
        assert open(squat, "rb").read() == b"squatter"
    finally:
        secrets.token_hex = real
        os.unlink(squat)


def test_stale_segments_of_another_user_are_left_alone(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("planting a file of another user needs root")
    import pwd

    dead = subprocess.Popen(["true"])
    dead.wait()
    theirs = f"/dev/shm/devourer-{dead.pid}-{'c' * 32}-ring0"
    with open(theirs, "wb") as f:
        f.write(b"\0" * 64)
    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)
    try:
        proc = run_devourer("capture", "-r", "samples/http.pcap", "-o", "file", "-w", tmp_path / "f.jsonl")
        assert proc.returncode == 0 and os.path.exists(theirs)
        assert "left by a killed run" not in proc.stderr
    finally:
        os.unlink(theirs)
