"""Start-up: the supervisor loads every compiled loop before it forks, so no child loads or compiles.

A child that had to load a compiled function itself would pay numba's set-up again (0.1-0.2 s
each, on every run); several capture readers would each pay it. devourer runs here under a tracer
that logs every numba compilation or cache load, with the process it happened in."""

import subprocess
import sys

import pytest

from tests.conftest import PCAPS, REPO

TRACED_RUN = """
import os, sys
from numba.core import dispatcher
supervisor, log = os.getpid(), sys.argv[1]
compile = dispatcher.Dispatcher.compile
def traced(self, sig):
    with open(log, "a") as f:
        role = "supervisor" if os.getpid() == supervisor else "child"
        f.write(f"{role} {os.getpid()} {self.py_func.__module__}.{self.py_func.__qualname__}\\n")
    return compile(self, sig)
dispatcher.Dispatcher.compile = traced
from devourer import cli
sys.exit(cli.main(sys.argv[2:]))
"""

RUNS = {
    "names-to-stdout": ["-r", PCAPS / "zeek__smb2-llmnr-nbns.pcap"],
    "pcapng-to-file": ["-r", PCAPS / "ndpi__sites.pcapng", "-o", "file", "-w", "{tmp}/flows.json"],
    "several-readers-fragments": ["-r", PCAPS / "nfstream__dns_fragmented.pcap", "-r",
                                  PCAPS / "goprobe__fragmented.pcap", "--readers", "3", "--chunk-size", "2"],
    "table-full": ["-r", PCAPS / "nfstream__1kxun.pcap", "--max-flows", "16"],
    "truncated": ["-r", PCAPS / "dpkt__truncated_dns.pcap"],
    "bpf": ["-r", PCAPS / "zeek__dhcp.pcap", "--bpf", "udp"],
    "pcapng-bpf": ["-r", PCAPS / "nfstream__alexa-app.pcapng", "--bpf", "tcp"],
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_children_neither_load_nor_compile(run, tmp_path):
    log = tmp_path / "compiled.log"
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in RUNS[run]]
    proc = subprocess.run([sys.executable, "-c", TRACED_RUN, str(log), "capture", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert "summary:" in proc.stderr, proc.stderr
    events = log.read_text().splitlines()
    assert any(e.startswith("supervisor ") for e in events), "the tracer saw no warm-up"
    assert [e for e in events if e.startswith("child ")] == []
