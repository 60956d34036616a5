"""Shared test helpers: where the corpus is, and running devourer as a real subprocess."""

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# No property test may depend on how fast the machine is: hypothesis's default deadline (200 ms per example)
# fails an example that a loaded machine, or a first call that loads compiled code, makes slow.
hypothesis_settings.register_profile("devourer", deadline=None)
hypothesis_settings.load_profile("devourer")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEVOURER_SHARED", REPO.parent / "shared"))
PCAPS = SHARED / "pcaps"
REFERENCE = PCAPS / "reference"
GENPCAP = SHARED / "bench" / "genpcap.py"
DEVOURER = [sys.executable, "-m", "devourer"]


def corpus_files():
    return sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng"))


def run_devourer(*args, env=None, timeout=300, **kw):
    """Run `devourer ARGS` to completion; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("PYTHONWARNINGS", None)
    if env:
        full_env.update(env)
    return subprocess.run([*DEVOURER, *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=kw.pop("cwd", REPO), **kw)


def parse_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def replay_to_stdout(*args, stdin: bytes | None = None) -> tuple[list[dict], str]:
    """`devourer capture ARGS --sensor-id t` writing its records to stdout (``stdin``: the bytes `-r -` reads),
    which must end with exit 0: (records, stderr)."""
    proc = subprocess.run([*DEVOURER, "capture", *map(str, args), "--sensor-id", "t"], input=stdin,
                          capture_output=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return parse_records(proc.stdout.decode()), proc.stderr.decode()


def capture_records(pcap, *extra, tmp_path=None):
    """Replay pcap with -o file, return (records, completed process)."""
    out = Path(tmp_path) / f"flows-{os.getpid()}-{len(list(Path(tmp_path).iterdir()))}.jsonl"
    proc = run_devourer("capture", "-r", pcap, "-o", "file", "-w", out, *extra)
    records = parse_records(out.read_text()) if out.exists() else []
    return records, proc


def summary_counts(stderr: str) -> dict:
    """The packet and flow counts of the last summary line (before its names part)."""
    line = [x for x in stderr.splitlines() if "summary:" in x][-1].split("; names:")[0]
    packets, flows = line.split("; ", 1)  # the flows part says "lost with dead workers" of flows too
    counts = {k: int(v.replace(",", "")) for v, k in re.findall(
        r"([\d,]+) (packets read|in flows|non-IP|malformed|unmatched fragments|filtered|dropped|"
        r"lost with dead workers|abandoned)", packets)}
    counts["flows written"] = int(re.search(r"([\d,]+) flows written", flows).group(1).replace(",", ""))
    return counts


def packets_add_up(counts: dict) -> bool:
    """Every packet read is in a flow or one named counter."""
    parts = ("in flows", "non-IP", "malformed", "unmatched fragments", "filtered", "dropped", "lost with dead workers",
             "abandoned")
    return counts["packets read"] == sum(counts.get(k, 0) for k in parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_metrics(port: int) -> dict:
    """{metric with labels: value} from devourer's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def our_shm_segments():
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith("devourer-"))
    except FileNotFoundError:
        return []


@pytest.fixture
def no_shm_leftovers():
    before = set(our_shm_segments())
    yield
    left = set(our_shm_segments()) - before
    assert not left, f"shared-memory segments left behind: {sorted(left)}"


@pytest.fixture(scope="session")
def small_capture(tmp_path_factory):
    """genpcap.py --packets 100000 --flows 5000 --seed 1 (the conservation capture)."""
    path = tmp_path_factory.mktemp("bench") / "small.pcap"
    subprocess.run([sys.executable, str(GENPCAP), "--packets", "100000", "--flows", "5000", "--seed", "1", str(path)],
                   check=True, capture_output=True)
    return path
