"""What an operator sees while devourer runs: Prometheus metrics scraped during a replay, the progress bar on a
terminal (and nowhere else), and the log in console or JSON form, on stderr or in a file."""

import fcntl
import json
import os
import pty
import socket
import struct
import subprocess
import termios
import time

import pytest

from tests.conftest import DEVOURER, PCAPS, REPO, free_port, run_devourer, scrape_metrics

HTTP = PCAPS / "dpkt__http.pcap"  # 43 packets, 3 flows


def pcap_records(path):
    """(global header, [record bytes]) of a little-endian pcap file."""
    data = path.read_bytes()
    header, at, records = data[:24], 24, []
    while at < len(data):
        caplen = struct.unpack_from("<I", data, at + 8)[0]
        records.append(data[at:at + 16 + caplen])
        at += 16 + caplen
    return header, records


def test_metrics_are_served_during_a_replay(tmp_path):
    header, records = pcap_records(HTTP)
    port = free_port()
    proc = subprocess.Popen([*DEVOURER, "capture", "-r", "-", "-o", "file", "-w", tmp_path / "f.jsonl",
                             "--metrics-port", str(port), "--metrics-address", "127.0.0.1"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        proc.stdin.write(header + b"".join(records[:20]))
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while True:  # the server comes up once the engine runs, and packets arrive in their own time
            try:
                m = scrape_metrics(port)
                if m["devourer_packets_read_total"] == 20 and m['devourer_worker_packets_total{worker="0"}'] == 20:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "metrics never showed the 20 packets written"
            time.sleep(0.1)
        info = f'devourer_info{{mode="replay",sensor="{socket.gethostname()}",version="0.1.0"}}'
        assert m[info] == 1
        assert m["devourer_bytes_read_total"] == sum(len(r) - 16 for r in records[:20])  # http.pcap is not cut
        assert m['devourer_packets_discarded_total{reason="malformed"}'] == 0
        assert m['devourer_packets_dropped_total{stage="ring"}'] == 0
        assert m['devourer_flows_active{worker="0"}'] >= 1 and m["devourer_flows_exported_total"] == 0
        assert m["devourer_name_packets_total"] >= 1  # the DNS lookup comes first in http.pcap
        proc.stdin.write(b"".join(records[20:]))
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(OSError):  # the server ended with the run
        scrape_metrics(port)


def test_a_metrics_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_devourer("capture", "-r", HTTP, "--metrics-port", port, "--metrics-address", "127.0.0.1")
    assert proc.returncode == 3 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "--metrics-port" in line and str(port) in line


def run_on_terminal(*args) -> tuple[int, str]:
    """Run devourer with stderr on a pseudo-terminal of 120 columns; (status, what the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([*DEVOURER, *map(str, args)], stdout=subprocess.DEVNULL, stderr=slave, cwd=REPO)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.wait(60), seen.decode(errors="replace")


def test_progress_bar_on_a_terminal_only(small_capture):
    status, screen = run_on_terminal("capture", "-r", small_capture, "-o", "file", "-w", "/dev/null")
    assert status == 0
    size = os.path.getsize(small_capture)
    assert "100%|" in screen and "flows" in screen and "packets/s" in screen
    assert f"{size / 2**20:.1f}M/{size / 2**20:.1f}M" in screen  # the whole file was read, by its size
    assert "summary:" in screen.split("100%|")[-1]  # the summary comes after the finished bar
    status, screen = run_on_terminal("capture", "-r", small_capture, "-o", "file", "-w", "/dev/null", "--quiet")
    assert status == 0 and screen.strip() == ""  # --quiet: no bar, and info lines (the summary) are off
    proc = run_devourer("capture", "-r", small_capture, "-o", "file", "-w", "/dev/null")
    assert proc.returncode == 0 and "%|" not in proc.stderr  # not a terminal: no bar


def test_json_log_lines_carry_level_role_and_counters(tmp_path):
    cut = tmp_path / "cut.pcap"
    header, records = pcap_records(HTTP)
    cut.write_bytes(header + b"".join(records[:-1]) + records[-1][:30])  # ends inside its last record
    proc = run_devourer("capture", "-r", cut, "-o", "file", "-w", tmp_path / "f.jsonl", "--log-format", "json")
    assert proc.returncode == 4
    lines = [json.loads(x) for x in proc.stderr.splitlines()]
    assert all({"time", "level", "role", "pid", "message"} <= set(x) for x in lines)
    (damage,) = [x for x in lines if "damaged" in x["message"]]
    (summary,) = [x for x in lines if x["message"].startswith("summary:")]
    assert (damage["level"], damage["role"]) == ("error", "capture") and damage["pid"] != summary["pid"]
    c = summary["counters"]
    assert summary["role"] == "supervisor" and c["read"] == 42
    assert c["read"] == c["in_flows"] + c["non_ip"] + c["malformed"] + c["unmatched_fragments"] + c["filtered"]


def test_log_output_file_and_level(tmp_path):
    log = tmp_path / "devourer.log"
    proc = run_devourer("capture", "-r", HTTP, "-o", "file", "-w", tmp_path / "f.jsonl", "--log-output", log)
    assert proc.returncode == 0 and proc.stderr == ""
    (line,) = log.read_text().splitlines()
    assert line.startswith("devourer: summary: 43 packets read")
    proc = run_devourer("capture", "-r", HTTP, "-o", "file", "-w", tmp_path / "f.jsonl", "--log-output", log,
                        "--log-level", "warning")
    assert proc.returncode == 0 and len(log.read_text().splitlines()) == 1  # appended nothing: info is off
    proc = run_devourer("capture", "-r", HTTP, "--log-level", "loud")
    assert proc.returncode == 2 and "--log-level" in proc.stderr


def test_the_progress_bar_shows_a_rate_from_its_first_update(tmp_path):
    """Not '0 packets/s' for the first half second: the rate so far, then half-second windows."""
    import io

    from devourer.engine.progress import ProgressBar

    now = [100.0]
    screen = io.StringIO()
    bar = ProgressBar(1000, stream=screen, clock=lambda: now[0])
    now[0] = 100.2
    bar.update(100, 4000, 0, 10)
    assert round(bar.pps) == 20000 and "20,000 packets/s" in bar.bar.postfix
    now[0] = 100.6
    bar.update(200, 5000, 0, 10)
    assert round(bar.pps) == round(5000 / 0.6)  # the first whole window
    now[0] = 100.8
    bar.update(300, 5100, 0, 10)  # inside the next window: the last window's rate stays
    assert round(bar.pps) == round(5000 / 0.6)
    bar.close()
