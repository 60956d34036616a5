"""Flags, environment and config file: precedence, durations, one-line errors."""

import pytest

from devourer.cli import build_parser, parse_duration, parse_size, settings_from_args
from tests.conftest import REPO, run_devourer


def settings(argv, monkeypatch, env=None):
    for k in [k for k in __import__("os").environ if k.startswith("DEVOURER_")]:
        monkeypatch.delenv(k)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return settings_from_args(build_parser().parse_args(["capture", *argv]))


def test_flag_beats_env_beats_config_file_beats_default(tmp_path, monkeypatch):
    conf = tmp_path / "d.conf"
    conf.write_text("flow-timeout = 30s\nworkers = 3\nactive-timeout = 10m\nread-file = [a.pcap, b.pcap]\n")
    s = settings(["-c", str(conf)], monkeypatch)
    assert (s.flow_timeout_s, s.workers, s.active_timeout_s, s.read_files) == (30, 3, 600, ("a.pcap", "b.pcap"))
    s = settings(["-c", str(conf)], monkeypatch, env={"DEVOURER_WORKERS": "5", "DEVOURER_FLOW_TIMEOUT": "1m"})
    assert (s.flow_timeout_s, s.workers) == (60, 5)
    s = settings(["-c", str(conf), "--workers", "7"], monkeypatch, env={"DEVOURER_WORKERS": "5"})
    assert s.workers == 7
    s = settings(["-r", "x.pcap"], monkeypatch)
    assert (s.flow_timeout_s, s.active_timeout_s, s.output) == (120, 1800, "stdout")


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("2m", 120), ("1h", 3600), ("500ms", 0.5), ("1.5", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, n", [("65536", 65536), ("64M", 64 << 20), ("1G", 1 << 30), ("2k", 2048)])
def test_sizes(text, n):
    assert parse_size(text) == n


def test_example_config_file_parses(monkeypatch):
    s = settings(["-c", str(REPO / "conf" / "devourer.conf"), "-r", "x.pcap"], monkeypatch)
    assert s.flow_timeout_s > 0


def test_version_and_help():
    proc = run_devourer("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("devourer ")
    lines = run_devourer("version").stdout.splitlines()
    assert lines == proc.stdout.splitlines()
    assert any(x.startswith("python 3.") for x in lines) and any(x.startswith("libpcap version") for x in lines)
    assert any(x.startswith("numba ") for x in lines)
    proc = run_devourer("capture", "--help")
    assert proc.returncode == 0
    for flag in ("--interface", "--read-file", "--output", "--write-file", "--stat-interval", "--workers",
                 "--flow-timeout", "--active-timeout", "--max-flows", "--bpf", "--snaplen", "--promisc",
                 "--buffer-size", "DEVOURER_"):
        assert flag in proc.stdout
