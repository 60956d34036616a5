"""--user/--group: root is dropped in every process once the input is open (as tcpdump -Z), the files devourer
writes are opened with the user's rights (root follows no link the user planted), with safe modes, and a wrong
user is a one-line error."""

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
        os.mkdir(os.path.join(folder, "out"))
        os.chown(os.path.join(folder, "out"), nobody.pw_uid, nobody.pw_gid)  # the output is opened as the user
        fifo, out = os.path.join(folder, "in.pcap"), os.path.join(folder, "out", "flows.jsonl")
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
    assert proc.returncode == 3
    assert "cannot create files in" in proc.stderr or "as user nobody (--user): Permission denied" in proc.stderr


@pytest.fixture
def users_folder():
    """A folder of the user's own (as --user needs for rotation), beside a root-only file worth stealing."""
    nobody = pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="devourer-attack-")
    os.chmod(top, 0o755)
    mine = os.path.join(top, "nobody")
    os.mkdir(mine)
    os.chown(mine, nobody.pw_uid, nobody.pw_gid)
    victim = os.path.join(top, "shadow")
    with open(victim, "w") as f:
        f.write("root:secret\n")
    os.chmod(victim, 0o600)
    try:
        yield top, mine, victim
    finally:
        subprocess.run(["rm", "-rf", top])


@pytest.mark.parametrize("target", ["existing", "missing"])
@pytest.mark.parametrize("what", ["output", "log", "rotated output"])
def test_a_link_the_user_planted_reaches_nothing_of_roots(users_folder, what, target):
    """The user plants ``flows.jsonl -> /etc/shadow`` (or a link to a path that does not exist yet) in its own
    folder; root starts devourer with --user: nothing of root's is appended to, created or handed over (before:
    chowned to the user, records appended, or a root-owned file created at the link's target)."""
    top, mine, victim = users_folder
    aim = victim if target == "existing" else os.path.join(top, "created-by-root")
    planted = os.path.join(mine, "flows.jsonl" if what != "log" else "devourer.log")
    os.symlink(aim, planted)
    args = {"output": ["-o", "file", "-w", planted], "log": ["--log-output", planted],
            "rotated output": ["-o", "file", "-w", planted, "--rotate-size", "1k"]}[what]
    proc = run_devourer("capture", "-r", "samples/http.pcap", *args, "--user", "nobody")
    assert proc.returncode == 3, proc.stderr
    assert "as user nobody (--user)" in proc.stderr and "Permission denied" in proc.stderr
    st = os.stat(victim)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    with open(victim) as f:
        assert f.read() == "root:secret\n"
    assert not os.path.exists(os.path.join(top, "created-by-root"))


def test_the_users_files_are_created_by_the_user_and_private_whatever_the_umask(users_folder):
    top, mine, _ = users_folder
    nobody = pwd.getpwnam("nobody")
    out, log = os.path.join(mine, "flows.jsonl"), os.path.join(mine, "devourer.log")
    with open(out, "w"):
        pass
    os.chown(out, nobody.pw_uid, nobody.pw_gid)
    os.chmod(out, 0o666)  # left world-readable by someone: devourer tightens what is its own to write
    proc = subprocess.run([*DEVOURER, "capture", "-r", "samples/http.pcap", "-o", "file", "-w", out, "--log-output",
                           log, "--user", "nobody"], capture_output=True, text=True, cwd=REPO, timeout=120,
                          preexec_fn=lambda: os.umask(0))
    assert proc.returncode == 0, proc.stderr
    for path in (out, log):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 0o640), path


def test_a_key_file_the_user_swapped_for_a_link_is_not_read(users_folder, tmp_path):
    top, mine, victim = users_folder
    key = os.path.join(mine, "key.json")
    os.symlink(victim, key)
    proc = run_devourer("capture", "-r", "samples/http.pcap", "-o", "bigquery", "--bigquery-project-id", "p",
                        "--bigquery-dataset-id", "d", "--bigquery-endpoint", "http://127.0.0.1:9",
                        "--bigquery-sa-key-file", key, "--spool-dir", os.path.join(mine, "spool"),
                        "--user", "nobody")
    assert proc.returncode == 3 and "cannot read --bigquery-sa-key-file" in proc.stderr, proc.stderr
    assert "secret" not in proc.stderr


def test_a_key_only_root_may_read_is_read_for_the_user(users_folder):
    """The usual service: the key is root's (0600, in a folder of root's), the user runs the engine. Root reads
    it, the exporter gets it: with the token endpoint unreachable, the rows spool (the key was valid)."""
    from tests.outputs.test_bigquery import _service_account_key

    top, mine, _ = users_folder
    key = os.path.join(top, "key.json")
    with open(key, "w") as f:
        f.write(_service_account_key("http://127.0.0.1:9/token"))
    os.chmod(key, 0o600)
    proc = run_devourer("capture", "-r", "samples/http.pcap", "-o", "bigquery", "--bigquery-project-id", "p",
                        "--bigquery-dataset-id", "d", "--bigquery-endpoint", "http://127.0.0.1:9",
                        "--bigquery-sa-key-file", key, "--spool-dir", os.path.join(mine, "spool"),
                        "--bigquery-flush-interval", "1s", "--user", "nobody")
    assert proc.returncode == 0, proc.stderr
    assert "3 waiting in the spool" in proc.stderr
