"""A short coverage-guided fuzz run of every decoder that sees packet bytes (scripts/fuzz.py is the long one):
libFuzzer with atheris, from the kept seed corpus; any exception other than DecodeError, or a frame the
batch decoder does not account for, fails the run and is written as crash-*."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

TARGETS = ("dns", "nbns", "dhcp", "dhcpv6", "tls", "decode")


@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_run(target, tmp_path):
    pytest.importorskip("atheris")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "fuzz.py"), target, "-runs=50000", "-seed=1",
                           f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 50000 runs" in proc.stderr
    assert not list(tmp_path.glob("crash-*"))
