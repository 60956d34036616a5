"""The files under conf/: the example config names every option, the systemd unit and the logrotate
snippet are valid for the tools that read them, and the unit's command line is one devourer accepts."""

import re
import shlex
import shutil
import subprocess

import pytest

from devourer.cli import build_parser, settings_from_args
from tests.conftest import REPO

CONF = REPO / "conf"


def _capture_flags() -> set[str]:
    parser = build_parser()
    capture = parser._subparsers._group_actions[0].choices["capture"]
    flags = {s[2:] for a in capture._actions for s in a.option_strings if s.startswith("--")}
    return flags - {"help", "version"}  # actions, not settings


def test_example_config_names_every_capture_option():
    text = (CONF / "devourer.conf").read_text()
    written = set(re.findall(r"^#?\s*([a-z0-9-]+)\s*=", text, re.M))
    # aliases of the same option (--bq-project-id for --bigquery-project-id, ...) need not appear twice
    missing = {f for f in _capture_flags() - written if not f.startswith("bq-") and f != "config"}
    assert not missing, f"conf/devourer.conf does not mention: {sorted(missing)}"


def test_systemd_unit_verifies_and_its_command_line_parses(tmp_path, monkeypatch):
    unit = (CONF / "devourer.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    argv = shlex.split(exec_start)
    assert argv[0] == "/usr/local/bin/devourer" and argv[1] == "capture"
    args = [str(CONF / "devourer.conf") if a == "/etc/devourer/devourer.conf" else a for a in argv[2:]]
    for k in [k for k in __import__("os").environ if k.startswith("DEVOURER_")]:
        monkeypatch.delenv(k)
    s = settings_from_args(build_parser().parse_args(["capture", *args, "-i", "eth0"]))
    assert s.output == "file" and s.write_file == "/var/log/devourer/flows.jsonl"
    assert (s.rotate_interval_s, s.rotate_bytes, s.rotate_keep) == (86400, 1 << 30, 31)
    for needed in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "User=devourer",
                   "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN"):
        assert needed in unit
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    local = tmp_path / "devourer.service"
    local.write_text(unit.replace("/usr/local/bin/devourer", str(REPO / ".venv" / "bin" / "devourer")))
    proc = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert proc.returncode == 0 and str(local) not in proc.stderr, proc.stderr  # unknown keys are warnings


def test_logrotate_snippet_parses():
    if not shutil.which("logrotate"):
        pytest.skip("logrotate is not installed")
    proc = subprocess.run(["logrotate", "-d", str(CONF / "devourer.logrotate")], capture_output=True, text=True)
    assert proc.returncode == 0 and "error" not in (proc.stdout + proc.stderr).lower()
    assert "/var/log/devourer/flows.jsonl" in proc.stdout + proc.stderr
