"""Bad input: one clear line on stderr, a documented exit status, nothing lost before damage."""

import os
import shutil

import pytest

from tests.conftest import PCAPS, capture_records, parse_records, run_devourer, summary_counts


def _error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.strip()]


def test_missing_file_is_one_line_exit_3(tmp_path, no_shm_leftovers):
    proc = run_devourer("capture", "-r", tmp_path / "nope.pcap")
    assert proc.returncode == 3
    assert _error_lines(proc.stderr) == [f"devourer: error: capture file {tmp_path / 'nope.pcap'}: no such file"]
    assert proc.stdout == ""


def test_file_that_is_not_a_capture_exit_3(tmp_path):
    bogus = tmp_path / "notes.pcap"
    bogus.write_text("these are not packets\n" * 10)
    proc = run_devourer("capture", "-r", bogus)
    assert proc.returncode == 3
    (line,) = _error_lines(proc.stderr)
    assert str(bogus) in line and "unknown file format" in line


def test_truncated_capture_keeps_flows_before_the_damage(tmp_path, no_shm_leftovers):
    records, proc = capture_records(PCAPS / "dpkt__truncated_dns_2.pcap", tmp_path=tmp_path)
    assert proc.returncode == 4
    assert len(records) == 1 and records[0]["protocol"] == "udp"
    assert records[0]["src_stat"]["packets"] + records[0]["dst_stat"]["packets"] == 1
    damage = [x for x in proc.stderr.splitlines() if "damaged" in x]
    assert len(damage) == 1 and "dpkt__truncated_dns_2.pcap" in damage[0]


@pytest.mark.parametrize("cut", [24 + 16 + 10, 1000, 50_000, 4_000_000])
def test_capture_cut_anywhere_yields_every_complete_packet(tmp_path, cut):
    src = PCAPS / "goprobe__default.pcap"
    cut_file = tmp_path / "cut.pcap"
    with open(src, "rb") as f:
        cut_file.write_bytes(f.read(cut))
    from tests.pcapbuild import read_pcap_records

    complete = [r for r in read_pcap_records(cut_file) if len(r[3]) == r[1]]
    records, proc = capture_records(cut_file, tmp_path=tmp_path)
    assert proc.returncode in (0, 4)
    summary = [x for x in proc.stderr.splitlines() if "summary:" in x][0]
    assert f"summary: {len(complete):,} packets read" in summary


def test_two_files_are_read_in_order_and_damage_in_one_is_reported(tmp_path):
    records, proc = capture_records(PCAPS / "dpkt__http.pcap", "-r", PCAPS / "dpkt__truncated_dns_2.pcap",
                                    tmp_path=tmp_path)
    assert proc.returncode == 4
    assert len(records) == 4


def test_damage_in_one_file_does_not_cost_the_files_after_it(tmp_path):
    records, proc = capture_records(PCAPS / "dpkt__truncated_dns_2.pcap", "-r", PCAPS / "dpkt__http.pcap",
                                    tmp_path=tmp_path)
    assert proc.returncode == 4
    assert len(records) == 4
    assert len([x for x in proc.stderr.splitlines() if "damaged" in x]) == 1


def test_unknown_interface_exit_3(no_shm_leftovers):
    proc = run_devourer("capture", "-i", "nosuchif0")
    assert proc.returncode == 3
    (line,) = _error_lines(proc.stderr)
    assert line.startswith("devourer: error: interface nosuchif0:")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_live_capture_without_privileges_exit_3(tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                           sys.executable, "-m", "devourer", "capture", "-i", "lo"],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "HOME": str(tmp_path)},
                          timeout=60)
    assert proc.returncode == 3, proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert "interface lo:" in line and "CAP_NET_RAW" in line


@pytest.mark.parametrize("args, names", [
    (["--workers", "zero"], "--workers"),
    (["--workers", "0"], "--workers"),
    (["--flow-timeout", "soon"], "--flow-timeout"),
    (["--output", "kafka"], "--output"),
    (["--no-such-flag"], "--no-such-flag"),
    (["-o", "file"], "--write-file"),
])
def test_invalid_flag_is_one_line_exit_2(args, names):
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", *args)
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert names in line


def test_invalid_config_and_env_values_exit_2(tmp_path):
    conf = tmp_path / "devourer.conf"
    conf.write_text("flow-timeout = eventually\n")
    proc = run_devourer("capture", "-c", conf, "-r", PCAPS / "dpkt__http.pcap")
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert "--flow-timeout" in line and "eventually" in line
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", env={"DEVOURER_WORKERS": "many"})
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert "--workers" in line and "many" in line


def test_unwritable_output_exit_3(tmp_path):
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", "-o", "file", "-w", tmp_path / "no" / "dir.jsonl")
    assert proc.returncode == 3
    (line,) = _error_lines(proc.stderr)
    assert "cannot open output file" in line


def test_output_closed_early_ends_the_run_quietly(tmp_path):
    """`devourer capture -r big.pcap | head -1`: the reader goes away; devourer stops, as tcpdump and jq stop at
    a closed pipe: exit 0, no error line (issue 18; tests/test_pipes.py closes the pipe before any write)."""
    import subprocess

    from tests.conftest import DEVOURER, REPO

    proc = subprocess.Popen([*DEVOURER, "capture", "-r", str(PCAPS / "zeek__echo-connections.pcap"), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert err == ""


def _ng_frame(i: int) -> bytes:
    from tests.pcapbuild import ethernet, ipv4, udp

    return ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                    ipv4("10.1.0.1", f"10.2.{i // 250}.{i % 250 + 1}", 17, udp(30000 + i, 9999, b"p" * 20)))


def _ng_damaged(damage: str) -> bytes:
    from tests.pcapbuild import pcapng_interface, pcapng_packet, pcapng_section

    good = b"".join(pcapng_packet(1_700_000_000_000_000 + i * 1000, _ng_frame(i)) for i in range(100))
    after = b"".join(pcapng_packet(1_700_000_001_000_000 + i * 1000, _ng_frame(200 + i)) for i in range(5))
    bad = {"a packet on an interface with no description block": pcapng_packet(1_700_000_000_500_000, _ng_frame(1),
                                                                                interface=1),
           "a second interface of another link type": pcapng_interface(linktype=101),
           "a section in the other byte order": pcapng_section(big=True) + pcapng_interface(big=True)}[damage]
    return pcapng_section() + pcapng_interface() + good + bad + after


@pytest.mark.parametrize("damage", ["a packet on an interface with no description block",
                                    "a second interface of another link type", "a section in the other byte order"])
@pytest.mark.parametrize("how", ["file", "pipe"])
def test_pcapng_damage_libpcap_refuses_keeps_every_packet_before_it(tmp_path, damage, how):
    """libpcap refuses the block after 100 good packets: those 100 are counted and in their flows, exit 4
    (before: next_batch raised for the whole batch, and 0 packets were read)."""
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(_ng_damaged(damage))
    out = tmp_path / "flows.jsonl"
    if how == "file":
        proc = run_devourer("capture", "-r", path, "-o", "file", "-w", out)
    else:
        proc = run_devourer("capture", "-r", "-", "-o", "file", "-w", out, stdin=open(path, "rb"))
    assert proc.returncode == 4, proc.stderr
    counts = summary_counts(proc.stderr)
    assert counts["packets read"] == counts["in flows"] == 100
    assert len(parse_records(out.read_text())) == 100


def test_pcapng_times_past_2106_or_before_1970_are_counted_not_fatal(tmp_path):
    """pcapng carries 64-bit times; 32-bit seconds do not hold them. On a pipe such a packet crashed the capture
    process; now it is counted as malformed, and everything else is read."""
    from tests.pcapbuild import pcapng_interface, pcapng_packet, pcapng_section

    data = (pcapng_section() + pcapng_interface()
            + b"".join(pcapng_packet(1_700_000_000_000_000 + i * 1000, _ng_frame(i)) for i in range(10))
            + pcapng_packet(5_000_000_000 * 1_000_000, _ng_frame(50)) + pcapng_packet(-5_000_000, _ng_frame(51))
            + b"".join(pcapng_packet(1_700_000_000_100_000 + i * 1000, _ng_frame(i)) for i in range(10, 20)))
    path = tmp_path / "times.pcapng"
    path.write_bytes(data)
    out = tmp_path / "flows.jsonl"
    proc = run_devourer("capture", "-r", "-", "-o", "file", "-w", out, stdin=open(path, "rb"))
    assert proc.returncode == 0, proc.stderr
    counts = summary_counts(proc.stderr)
    assert (counts["packets read"], counts["in flows"], counts["malformed"]) == (22, 20, 2)
    assert len(parse_records(out.read_text())) == 20
