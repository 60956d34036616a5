"""Flags, environment and config file: precedence, durations, one-line errors."""

import os

import pytest

from devourer.cli import build_parser, parse_duration, parse_size, settings_from_args
from devourer.errors import UsageError
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


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("2m", 120), ("1h", 3600), ("500ms", 0.5), ("1.5", 1.5),
                                           ("1m30s", 90), ("1h2m3.5s", 3723.5), ("2h45m", 9900), ("1s500ms", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_not_durations():
    for text in ("1m30", "m30s", "1x", "1m 30s", ""):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(text)


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path):
    proc = run_devourer("capture", "-r", "x.pcap", env={"DEVOURER_WORKERS": "abc"})
    assert proc.returncode == 2
    assert proc.stderr == "devourer capture: error: DEVOURER_WORKERS (--workers): not a whole number: 'abc'\n"
    proc = run_devourer("capture", "-r", "x.pcap", "--workers", "x", env={"DEVOURER_WORKERS": "abc"})
    assert proc.stderr == "devourer capture: error: argument --workers: not a whole number: 'x'\n"


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


@pytest.mark.parametrize("args, env, flag", [
    (["--flow-timeout", "99999999999999999999"], {}, "--flow-timeout"),
    (["--flow-timeout", "106751990d"], {}, "--flow-timeout"),  # overflowed to every packet its own flow
    (["--active-timeout", "106751991d"], {}, "--active-timeout"),
    (["--name-lifetime", "999999999d"], {}, "--name-lifetime"),
    (["--workers", "10000"], {}, "--workers"),  # EMFILE, and rings left in /dev/shm
    (["--readers", "1000"], {}, "--readers"),
    (["--buffer-size", "3G"], {}, "--buffer-size"),  # libpcap's C int
    (["--snaplen", "9999999"], {}, "--snaplen"),
    (["--ring-size", "99999999999"], {}, "--ring-size"),
    (["--max-flows", "99999999999"], {}, "--max-flows"),
    (["--batch-size", "8192", "--ring-size", "4096"], {}, "--batch-size"),
    (["--stat-interval", "1e3"], {}, "--stat-interval"),
    (["--workers", "abc"], {}, "--workers"),
    ([], {"DEVOURER_FLOW_TIMEOUT": "106751990d"}, "--flow-timeout"),
])
def test_values_out_of_range_are_one_line_naming_the_setting_and_its_range(args, env, flag, tmp_path):
    before = set(os.listdir("/dev/shm"))
    proc = run_devourer("capture", "-r", "samples/http.pcap", *args, env=env)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert flag in line and "Traceback" not in proc.stderr
    assert set(os.listdir("/dev/shm")) <= before


def test_a_sensor_id_that_is_not_utf8_is_a_one_line_error():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "devourer", "capture", "-r", "samples/http.pcap", "--sensor-id",
                           b"edge\xff".decode("utf-8", "surrogateescape")], capture_output=True, cwd=REPO, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["devourer capture: error: argument --sensor-id: is not valid UTF-8"]


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"flow-timeout = 10s\n\xff\xfe\x00\n"])
def test_a_binary_config_file_is_a_one_line_error(tmp_path, content):
    conf = tmp_path / "devourer.conf"
    conf.write_bytes(content)
    proc = run_devourer("capture", "-r", "samples/http.pcap", "-c", conf)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"devourer: error: {conf}: not a text file")


def test_range_messages_give_the_limits():
    proc = run_devourer("capture", "-r", "samples/http.pcap", "--flow-timeout", "106751990d")
    assert "106751990d is out of range: 1ms to 3650d" in proc.stderr
    proc = run_devourer("capture", "-r", "samples/http.pcap", "--rotate-interval", "400d", "-o", "file", "-w", "x")
    assert "400d is out of range: 0 (off) or 1s to 366d" in proc.stderr


@pytest.mark.parametrize("argv, files, bpf", [
    (["-r", "a.pcap", "b.pcap", "c.pcapng"], ("a.pcap", "b.pcap", "c.pcapng"), None),  # -r dir/*.pcap
    (["-r", "a.pcap", "-r", "b.pcap"], ("a.pcap", "b.pcap"), None),
    (["a.pcap", "b.pcap"], ("a.pcap", "b.pcap"), None),  # positional capture files
    (["-r", "a.pcap", "tcp", "port", "80"], ("a.pcap",), "tcp port 80"),  # tcpdump -r FILE EXPRESSION
    (["-r", "a.pcap", "b.pcap", "not", "port", "53"], ("a.pcap", "b.pcap"), "not port 53"),
    (["-r", "a.pcap", "-o", "file", "-w", "x.jsonl", "host", "10.0.0.1"], ("a.pcap",), "host 10.0.0.1"),
    (["-r", "a.pcap", "tcp[13] & 2 != 0"], ("a.pcap",), "tcp[13] & 2 != 0"),
    (["-r", "a.pcap", "(udp or icmp)"], ("a.pcap",), "(udp or icmp)"),
    (["-r", "tcp"], ("tcp",), None),  # the first word after -r is a file, whatever its name
    (["-r", "-", "src", "net", "10.0.0.0/8"], ("-",), "src net 10.0.0.0/8"),
])
def test_files_and_a_filter_expression_after_the_options_as_tcpdump_takes_them(argv, files, bpf, monkeypatch):
    s = settings(argv, monkeypatch)
    assert (s.read_files, s.bpf) == (files, bpf)


def test_a_filter_expression_after_the_options_on_an_interface(monkeypatch):
    s = settings(["-i", "eth0", "tcp", "port", "80"], monkeypatch)
    assert (s.interfaces, s.read_files, s.bpf) == (("eth0",), (), "tcp port 80")


def test_a_filter_given_twice_is_refused(monkeypatch):
    with pytest.raises(UsageError, match="give the filter once"):
        settings(["-r", "a.pcap", "--bpf", "tcp", "udp"], monkeypatch)
    with pytest.raises(UsageError, match="nothing to capture from"):
        settings(["tcp", "port", "80"], monkeypatch)


def test_several_interfaces_by_flag_comma_list_environment_and_config_line(tmp_path, monkeypatch):
    assert settings(["-i", "eth0", "-i", "eth1,eth2"], monkeypatch).interfaces == ("eth0", "eth1", "eth2")
    assert settings([], monkeypatch, env={"DEVOURER_INTERFACE": "eth0, eth1"}).interfaces == ("eth0", "eth1")
    conf = tmp_path / "d.conf"
    conf.write_text("interface = eth3,eth4\n")
    assert settings(["-c", str(conf)], monkeypatch).interfaces == ("eth3", "eth4")
    assert settings(["-c", str(conf), "-i", "eth5"], monkeypatch).interfaces == ("eth5",)  # the flag wins


@pytest.mark.parametrize("argv, message", [
    (["-i", "eth0", "-i", "eth0"], "'eth0' is given twice"),
    (["-i", "eth0,,eth1"], "an empty interface name"),
    (["-i", "a-name-far-too-long"], "not an interface name"),
    (["-i", "../etc"], "not an interface name"),
    (["-i", ",".join(f"e{i}" for i in range(65))], "65 interfaces; at most 64"),
])
def test_bad_interface_lists_are_refused_naming_the_flag(argv, message, monkeypatch):
    with pytest.raises(UsageError, match=message):
        settings(argv, monkeypatch)


def test_w_alone_means_o_file_as_tcpdumps_w(monkeypatch):
    s = settings(["-r", "x.pcap", "-w", "flows.jsonl"], monkeypatch)
    assert (s.output, s.write_file) == ("file", "flows.jsonl")
    assert settings(["-r", "x.pcap"], monkeypatch).output == "stdout"
    with pytest.raises(UsageError, match="-w/--write-file is only used with -o file"):
        settings(["-r", "x.pcap", "-w", "f", "-o", "parquet"], monkeypatch)


def test_the_metrics_listen_on_this_host_only_unless_told():
    args = build_parser().parse_args(["capture", "-r", "x.pcap"])
    assert args.metrics_address == "127.0.0.1"


def test_go_devourers_log_level_warn_and_logs_to_stdout(small_capture, tmp_path):
    """--log-level warn is warning; --log-output stdout writes the log there (not to a file named stdout), and
    is refused where the flow records go to stdout."""
    out = tmp_path / "flows.jsonl"
    proc = run_devourer("capture", "-r", small_capture, "-w", out, "--log-output", "stdout", cwd=tmp_path)
    assert proc.returncode == 0 and "summary:" in proc.stdout and proc.stderr == ""
    assert not (tmp_path / "stdout").exists() and out.stat().st_size > 0
    proc = run_devourer("capture", "-r", small_capture, "-w", out, "--log-output", "stdout", "--log-level", "warn")
    assert proc.returncode == 0 and "summary:" not in proc.stdout + proc.stderr
    proc = run_devourer("capture", "-r", small_capture, "--log-output", "stdout")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert "--log-output stdout" in proc.stderr


@pytest.mark.parametrize("argv", [["-V"], ["capture", "--version"], ["capture", "-V"]])
def test_the_version_as_other_tools_ask_for_it(argv):
    proc = run_devourer(*argv)
    assert proc.returncode == 0 and proc.stdout == run_devourer("version").stdout


@pytest.mark.parametrize("line, env, source", [
    (["-r", "{pcap}"], {"DEVOURER_INTERFACE": "eth0"}, "file"),
    (["--read-file={pcap}"], {"DEVOURER_INTERFACE": "eth0"}, "file"),
    (["{pcap}"], {"DEVOURER_INTERFACE": "eth0"}, "file"),
    (["-i", "lo"], {"DEVOURER_READ_FILE": "{pcap}"}, "interface"),
    (["--interface=lo", "tcp", "port", "80"], {"DEVOURER_READ_FILE": "{pcap}"}, "interface"),
])
def test_the_command_lines_source_beats_the_environments(line, env, source):
    from devourer import cli

    pcap = str(REPO / "samples" / next(p.name for p in (REPO / "samples").iterdir() if ".pcap" in p.name))
    fill = [x.format(pcap=pcap) for x in line]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "_COMMAND_LINE", ["capture", *fill])
        s = settings(fill, mp, env={k: v.format(pcap=pcap) for k, v in env.items()})
    assert (s.read_files, s.interfaces) == (((pcap,), ()) if source == "file" else ((), ("lo",)))


def test_both_sources_on_the_command_line_are_refused(monkeypatch):
    from devourer import cli

    monkeypatch.setattr(cli, "_COMMAND_LINE", ["capture", "-i", "lo", "-r", "x.pcap"])
    with pytest.raises(UsageError, match="not both"):
        settings(["-i", "lo", "-r", "x.pcap"], monkeypatch)


def test_a_misspelt_variable_is_one_warning_naming_the_closest_setting():
    proc = run_devourer("capture", "-r", REPO / "samples" / "http.pcap", env={"DEVOURER_WORKRES": "2",
                                                                                "DEVOURER_FLOW_TIMEOUT": "10s"})
    assert proc.returncode == 0
    warnings = [x for x in proc.stderr.splitlines() if "warning" in x]
    assert warnings == ["devourer: warning: DEVOURER_WORKRES in the environment is no setting of devourer's and "
                        "is ignored; did you mean DEVOURER_WORKERS?"]


def test_a_typo_in_the_config_file_names_its_line_and_the_nearest_setting(tmp_path):
    conf = tmp_path / "d.conf"
    conf.write_text("# flows\nworkers = 2\nflow_timout = 10s\n")
    proc = run_devourer("capture", "-c", conf, "-r", REPO / "samples" / "http.pcap")
    assert proc.returncode == 2
    assert proc.stderr == (f"devourer: error: {conf} line 3: unknown setting 'flow_timout' (did you mean "
                           "flow-timeout?)\n")


def test_a_devourer_version_variable_is_no_setting():
    """An image's DEVOURER_VERSION label in the environment neither prints the version nor stops capture."""
    proc = run_devourer("capture", "-r", REPO / "samples" / "http.pcap", env={"DEVOURER_VERSION": "0.1.0"})
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3
