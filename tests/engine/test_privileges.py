"""--user/--group: root is dropped in every process once the input and the output are open (as tcpdump -Z),
files devourer creates are handed to that user with safe modes, and a wrong user is a one-line error."""

import os
import pwd
import stat
import subprocess
import tempfile
import time

import pytest

from tests.conftest import DEVOURER, REPO, parse_records, run_devourer
from tests.engine.proctools import children_of
from tests.engine.test_shutdown import _packets
from tests.pcapbuild import pcap_header

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")


def uids(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status") as f:
        (line,) = [x for x in f if x.startswith("Uid:")]
    return {int(x) for x in line.split()[1:]}


def test_every_process_runs_as_the_user_and_owns_the_output():
    nobody = pwd.getpwnam("nobody")
    folder = tempfile.mkdtemp(prefix="devourer-user-")
    try:
        os.chmod(folder, 0o755)
        fifo, out = os.path.join(folder, "in.pcap"), os.path.join(folder, "flows.jsonl")
        os.mkfifo(fifo)
        proc = subprocess.Popen([*DEVOURER, "capture", "-r", fifo, "--workers", "2", "-o", "file", "-w", out,
                                 "--user", "nobody"], stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            with open(fifo, "wb", buffering=0) as writer:
                writer.write(pcap_header() + b"".join(_packets()))
                deadline = time.monotonic() + 60
                while len(children_of(proc.pid)) < 5 and time.monotonic() < deadline:  # capture, 2 workers, ...
                    time.sleep(0.05)
                pids = [proc.pid, *children_of(proc.pid)]
                assert len(pids) == 6
                assert all(uids(p) == {nobody.pw_uid} for p in pids)  # dropped before the fork
        finally:
            err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, err
        st = os.stat(out)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, nobody.pw_gid, 0o640)
        with open(out) as f:
            assert len(parse_records(f.read())) == 50
    finally:
        subprocess.run(["rm", "-rf", folder])


@pytest.mark.parametrize("args, flag", [(["--user", "no-such-user-here"], "--user"),
                                        (["--user", "nobody", "--group", "no-such-group-here"], "--group"),
                                        (["--group", "nogroup"], "--group")])
def test_wrong_user_or_group_is_a_one_line_error(args, flag):
    proc = run_devourer("capture", "-r", "samples/http.pcap", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert flag in line


def test_rotation_into_a_folder_the_user_cannot_write_is_refused(tmp_path):
    proc = run_devourer("capture", "-r", "samples/http.pcap", "-o", "file", "-w", tmp_path / "f.jsonl",
                        "--rotate-size", "1M", "--user", "nobody")
    assert proc.returncode == 3 and "cannot create files in" in proc.stderr
