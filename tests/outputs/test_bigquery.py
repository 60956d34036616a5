"""-o bigquery against a real BigQuery emulator over HTTP (local-bigquery, see
../shared/bigquery-emulator.md; scripts/install.sh puts it in .venv-bqemu).

The real Google endpoint cannot be reached from here; everything else is real:
the google-cloud-bigquery client, HTTP, table creation, insertAll with insertIds.
"""

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

from tests.conftest import PCAPS, REPO, SHARED, capture_records, free_port, run_devourer

EMULATOR_PY = REPO / ".venv-bqemu" / "bin" / "python"
PROJECT = "test-project"


@pytest.fixture(scope="module")
def emulator():
    if not EMULATOR_PY.exists():
        pytest.skip("BigQuery emulator not installed (scripts/install.sh installs it into .venv-bqemu; "
                    "it needs Python 3.13)")
    port, grpc_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="bqemu-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    log = open(os.path.join(data, "emulator.log"), "wb")
    proc = subprocess.Popen([str(EMULATOR_PY), str(SHARED / "bigquery-emulator" / "serve.py"), "serve", "--host",
                             "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port), "--project", PROJECT,
                             "--data-dir", data], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/bigquery/v2/projects/{PROJECT}/datasets", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("BigQuery emulator did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def client(emulator):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": emulator})


@pytest.fixture
def dataset(client, request):
    name = f"d_{request.node.name.split('[')[0][5:30]}_{os.getpid()}_{int(time.time() * 1000) % 10**6}"
    client.create_dataset(name, exists_ok=True)
    return name


def _bq_args(emulator, dataset, spool, *extra):
    return ["-o", "bigquery", "--bigquery-project-id", PROJECT, "--bigquery-dataset-id", dataset,
            "--bigquery-endpoint", emulator, "--spool-dir", str(spool), "--bigquery-flush-interval", "1s", *extra]


def _rows(client, dataset):
    return [dict(r) for r in client.query(f"SELECT * FROM `{PROJECT}.{dataset}.flow_logs`").result()]


def test_replay_creates_the_table_and_stores_exactly_the_file_output(emulator, client, dataset, tmp_path):
    capture = PCAPS / "nfstream__iphone.pcap"
    proc = run_devourer("capture", "-r", capture, *_bq_args(emulator, dataset, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    table = client.get_table(f"{PROJECT}.{dataset}.flow_logs")
    assert table.time_partitioning.type_ == "DAY" and table.time_partitioning.field == "first_seen_at"
    modes = {f.name: (f.field_type, f.mode) for f in table.schema}
    assert modes["src_names"] == ("STRING", "REPEATED") and modes["first_seen_at"][0] == "TIMESTAMP"
    assert modes["src_bytes"] == ("INTEGER", "NULLABLE")

    records, _ = capture_records(capture, tmp_path=tmp_path)
    from devourer.outputs.bigquery import row_of

    want = {r["id"]: row_of(r) for r in records}
    got = {r["id"]: r for r in _rows(client, dataset)}
    assert set(got) == set(want)
    for flow_id, row in want.items():
        stored = got[flow_id]
        for k, v in row.items():
            if k in ("first_seen_at", "last_seen_at"):
                assert stored[k].strftime("%Y-%m-%dT%H:%M:%S.%fZ") == v
            else:
                assert stored[k] == v, (flow_id, k)
    assert any(r["dst_names"] for r in got.values())
    assert "bigquery: 51 rows sent, 0 rejected, 0 waiting in the spool" in proc.stderr


def test_older_smaller_table_gets_the_missing_columns(emulator, client, dataset, tmp_path):
    from google.cloud import bigquery

    old = bigquery.Table(f"{PROJECT}.{dataset}.flow_logs", schema=[
        bigquery.SchemaField("id", "STRING"), bigquery.SchemaField("protocol", "STRING"),
        bigquery.SchemaField("src_bytes", "INTEGER")])
    client.create_table(old)
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", *_bq_args(emulator, dataset, tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    names = {f.name for f in client.get_table(f"{PROJECT}.{dataset}.flow_logs").schema}
    assert {"src_names", "end_reason", "sensor", "first_seen_at"} <= names
    assert len(_rows(client, dataset)) == 3


def test_incompatible_table_stops_before_capturing(emulator, client, dataset, tmp_path):
    from google.cloud import bigquery

    client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.flow_logs", schema=[
        bigquery.SchemaField("id", "STRING"), bigquery.SchemaField("src_port", "STRING")]))
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", *_bq_args(emulator, dataset, tmp_path / "s"))
    assert proc.returncode == 3
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "column src_port is NULLABLE STRING" in line
    assert _rows(client, dataset) == []


def test_missing_dataset_is_a_clear_error(emulator, tmp_path):
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", *_bq_args(emulator, "nosuchdataset", tmp_path / "s"))
    assert proc.returncode == 3
    assert proc.stderr.strip() == f"devourer: error: BigQuery dataset {PROJECT}:nosuchdataset does not exist"


def test_rejected_row_is_counted_and_the_others_stored(emulator, client, dataset, tmp_path):
    from devourer.outputs.bigquery import BigQuerySink, row_of
    from devourer.settings import Settings

    records, _ = capture_records(PCAPS / "dpkt__http.pcap", tmp_path=tmp_path)
    settings = Settings(output="bigquery", bigquery_project_id=PROJECT, bigquery_dataset_id=dataset,
                        bigquery_endpoint=emulator, spool_dir=str(tmp_path / "spool"))
    counters = {"sent": 0, "rejected": 0, "spooled": 0, "spool_dropped": 0}
    reports = []
    sink = BigQuerySink(settings, lambda text, level="warning": reports.append(text), counters)
    rows = [row_of(r) for r in records]
    rows[1]["src_port"] = "not a number"
    assert sink._send(rows)
    assert counters == {"sent": 2, "rejected": 1, "spooled": 0, "spool_dropped": 0}
    assert len(reports) == 1 and rows[1]["id"] in reports[0]
    assert sorted(r["id"] for r in _rows(client, dataset)) == sorted([rows[0]["id"], rows[2]["id"]])


def test_unreachable_bigquery_spools_and_a_later_run_sends_each_row_once(emulator, client, dataset, tmp_path):
    spool = tmp_path / "spool"
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", *_bq_args(down, dataset, spool))
    assert proc.returncode == 0, proc.stderr
    assert "rows are spooled" in proc.stderr and "3 waiting in the spool" in proc.stderr
    assert list(spool.glob("*.jsonl"))
    empty = tmp_path / "empty.pcap"
    from tests.pcapbuild import write_pcap

    write_pcap(empty, [])
    for _ in range(2):  # the second run finds nothing left to send
        proc = run_devourer("capture", "-r", empty, *_bq_args(emulator, dataset, spool))
        assert proc.returncode == 0, proc.stderr
    assert not list(spool.glob("*.jsonl"))
    ids = [r["id"] for r in _rows(client, dataset)]
    assert len(ids) == len(set(ids)) == 3


def test_bigquery_flags_from_the_original_tools_environment(emulator, client, dataset, tmp_path):
    env = {"DEVOURER_BQ_PROJECT_ID": PROJECT, "DEVOURER_BQ_DATASET": dataset}
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", "-o", "bigquery", "--bigquery-endpoint", emulator,
                        "--spool-dir", tmp_path / "s", env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(_rows(client, dataset)) == 3
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", "-o", "bigquery")
    assert proc.returncode == 2 and "--bigquery-project-id" in proc.stderr


def test_key_material_never_reaches_the_output(tmp_path):
    secret = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----SECRETSECRET"}'
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", "-o", "bigquery", "--bigquery-project-id", "p",
                        "--bigquery-dataset-id", "d", "--spool-dir", tmp_path / "s",
                        env={"DEVOURER_BIGQUERY_SA_KEY_DATA": secret})
    assert proc.returncode == 2
    assert "SECRET" not in proc.stderr + proc.stdout
    assert "--bigquery-sa-key-data is not a valid service-account key" in proc.stderr


def _start_emulator(port: int, data: str):
    proc = subprocess.Popen([str(EMULATOR_PY), str(SHARED / "bigquery-emulator" / "serve.py"), "serve", "--host",
                             "127.0.0.1", "--port", str(port), "--grpc-port", str(free_port()), "--project", PROJECT,
                             "--data-dir", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/bigquery/v2/projects/{PROJECT}/datasets", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("BigQuery emulator did not start")


def test_bigquery_down_at_start_then_up_gets_every_flow_once(emulator, tmp_path):
    """Replay from a pipe: flows expire while BigQuery is away (spooled), the emulator starts
    10 s later, the spool drains during the run, SIGTERM flushes the rest: each flow once."""
    import signal
    import threading

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from tests.conftest import DEVOURER
    from tests.pcapbuild import ethernet, ipv4, pcap_header, pcap_record, udp

    port = free_port()
    fifo = tmp_path / "in.pcap"
    os.mkfifo(fifo)
    out_err = []
    proc = subprocess.Popen([*DEVOURER, "capture", "-r", str(fifo), "--flow-timeout", "2s",
                             *_bq_args(f"http://127.0.0.1:{port}", "late", tmp_path / "spool")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    threading.Thread(target=lambda: out_err.extend(proc.stderr), daemon=True).start()
    writer = open(fifo, "wb", buffering=0)
    writer.write(pcap_header())

    def flows(first: int, n: int, t: float):
        for i in range(first, first + n):
            writer.write(pcap_record(t, ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                                                 ipv4("10.9.0.1", f"10.9.1.{i}", 17, udp(20000 + i, 9, b"x")))))

    data = tempfile.mkdtemp(prefix="bqemu-late-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    server = None
    try:
        flows(1, 100, 1_700_000_000.0)  # 64-packet pipe batches: these expire once time moves on
        flows(101, 100, 1_700_000_100.0)
        deadline = time.monotonic() + 60
        while not any("retrying, then spooling" in x for x in out_err) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any("retrying, then spooling" in x for x in out_err)
        time.sleep(10)
        server = _start_emulator(port, data)
        bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": f"http://127.0.0.1:{port}"})
        bq.create_dataset("late", exists_ok=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("answers again" in x for x in out_err):
            time.sleep(0.5)
        assert any("answers again" in x for x in out_err), "the spool was not replayed during the run"
        flows(201, 50, 1_700_000_200.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, "".join(out_err)
        writer.close()
        ids = [r["id"] for r in bq.query(f"SELECT id FROM `{PROJECT}.late.flow_logs`").result()]
        assert len(ids) == len(set(ids)) == 250, "".join(out_err)
        assert not list((tmp_path / "spool").glob("*.jsonl"))
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


class _PipeReplay:
    """devourer reading a FIFO the test writes packets into, so a run lasts as long as needed."""

    def __init__(self, tmp_path, endpoint: str, dataset: str, spool):
        import threading

        from tests.conftest import DEVOURER
        from tests.pcapbuild import pcap_header

        self.fifo = tmp_path / f"in-{time.monotonic_ns()}.pcap"
        os.mkfifo(self.fifo)
        self.err: list[str] = []
        self.proc = subprocess.Popen([*DEVOURER, "capture", "-r", str(self.fifo), "--flow-timeout", "2s",
                                      *_bq_args(endpoint, dataset, spool)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        self.writer = open(self.fifo, "wb", buffering=0)
        self.writer.write(pcap_header())

    def flows(self, first: int, n: int, t: float) -> None:
        from tests.pcapbuild import ethernet, ipv4, pcap_record, udp

        for i in range(first, first + n):
            self.writer.write(pcap_record(t, ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                                                      ipv4("10.9.0.1", f"10.9.{i // 250}.{i % 250}", 17,
                                                           udp(20000 + i, 9, b"x")))))

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in x for x in self.err) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(text in x for x in self.err), f"never saw {text!r}: {''.join(self.err)}"

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.writer.close()


def test_devourer_killed_mid_outage_restarts_from_its_spool(emulator, client, dataset, tmp_path):
    spool = tmp_path / "spool"
    run = _PipeReplay(tmp_path, f"http://127.0.0.1:{free_port()}", dataset, spool)
    try:
        run.flows(1, 100, 1_700_000_000.0)
        run.flows(101, 100, 1_700_000_100.0)
        run.wait_for("retrying, then spooling")
        deadline = time.monotonic() + 60
        while not list(spool.glob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        run.close()  # SIGKILL to the whole process group, mid-outage
    spooled = set()
    for f in spool.glob("*.jsonl"):
        spooled |= {line.split('"id":"')[1].split('"')[0] for line in f.read_text().splitlines()}
    assert len(spooled) >= 100
    from tests.pcapbuild import write_pcap

    empty = tmp_path / "empty.pcap"
    write_pcap(empty, [])
    proc = run_devourer("capture", "-r", empty, *_bq_args(emulator, dataset, spool))
    assert proc.returncode == 0, proc.stderr
    ids = [r["id"] for r in _rows(client, dataset)]
    assert len(ids) == len(set(ids)) and set(ids) == spooled


def test_bigquery_killed_mid_run_and_restarted_gets_every_flow_once(emulator, tmp_path):
    """The emulator dies after the first flows landed and comes back on the same port and data:
    whatever was retried or spooled meanwhile arrives, and nothing twice."""
    import signal

    from google.api_core.exceptions import NotFound
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    port = free_port()
    data = tempfile.mkdtemp(prefix="bqemu-restart-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    server = _start_emulator(port, data)
    url = f"http://127.0.0.1:{port}"
    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
    bq.create_dataset("restart", exists_ok=True)

    def stored() -> int:
        try:
            return list(bq.query(f"SELECT COUNT(*) n FROM `{PROJECT}.restart.flow_logs`").result())[0]["n"]
        except NotFound:  # the exporter creates the table with its first batch
            return 0

    run = _PipeReplay(tmp_path, url, "restart", tmp_path / "spool")
    try:
        run.flows(1, 100, 1_700_000_000.0)
        run.flows(101, 100, 1_700_000_100.0)  # the first hundred expire and are sent
        deadline = time.monotonic() + 60
        while stored() < 100 and time.monotonic() < deadline:
            time.sleep(0.5)
        server.terminate()
        server.wait(timeout=30)
        run.flows(201, 100, 1_700_000_200.0)  # the second hundred expire while BigQuery is down
        run.wait_for("retrying, then spooling")
        server = _start_emulator(port, data)
        deadline = time.monotonic() + 60
        while stored() < 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=120) == 0, "".join(run.err)
        ids = [r["id"] for r in bq.query(f"SELECT id FROM `{PROJECT}.restart.flow_logs`").result()]
        assert len(ids) == len(set(ids)) == 300, "".join(run.err)
        assert not list((tmp_path / "spool").glob("*.jsonl"))
    finally:
        run.close()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def _service_account_key(token_uri: str) -> str:
    """A real, freshly made service-account key (RSA 2048) whose token endpoint is token_uri."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return json.dumps({"type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
                       "private_key": pem, "client_email": "devourer@test-project.iam.gserviceaccount.com",
                       "client_id": "1", "token_uri": token_uri})


def test_unreachable_token_endpoint_spools_like_any_outage(tmp_path):
    """A service-account key while the network is down at boot: the token request fails to connect. That is an
    outage like BigQuery's own (capture runs, rows spool, exit 0), not a traceback and exit 1."""
    down = f"http://127.0.0.1:{free_port()}"
    key = _service_account_key(f"{down}/token")
    spool = tmp_path / "spool"
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", *_bq_args(down, "d", spool),
                        env={"DEVOURER_BIGQUERY_SA_KEY_DATA": key})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "rows are spooled" in proc.stderr
    assert "3 waiting in the spool" in proc.stderr
    assert "PRIVATE KEY" not in proc.stderr


def test_key_material_is_refused_in_argv_and_gone_from_every_process(tmp_path):
    """A key on the command line is in /proc/PID/cmdline of every process, for every local user (ps): refused.
    From the environment it is taken out once read: no process shows it in cmdline or environ."""
    key = _service_account_key(f"http://127.0.0.1:{free_port()}/token")
    marker = key[key.index("MII"):key.index("MII") + 40]
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", "-o", "bigquery", "--bigquery-project-id", "p",
                        "--bigquery-dataset-id", "d", "--bigquery-sa-key-data", key, "--spool-dir", tmp_path / "s")
    assert proc.returncode == 2 and "visible to every local user" in proc.stderr
    assert marker not in proc.stderr
    fifo = tmp_path / "in.pcap"
    os.mkfifo(fifo)
    down = f"http://127.0.0.1:{free_port()}"
    env = dict(os.environ, DEVOURER_BIGQUERY_SA_KEY_DATA=key)
    live = subprocess.Popen([str(REPO / ".venv" / "bin" / "python"), "-m", "devourer", "capture", "-r", str(fifo),
                             *_bq_args(down, "d", tmp_path / "spool")], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True)
    from tests.engine.proctools import children_of
    from tests.pcapbuild import pcap_header

    try:
        with open(fifo, "wb", buffering=0) as writer:
            writer.write(pcap_header())
            deadline = time.monotonic() + 60
            while len(children_of(live.pid)) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            pids = [live.pid, *children_of(live.pid)]
            assert len(pids) >= 5
            for pid in pids:
                for what in ("cmdline", "environ"):
                    with open(f"/proc/{pid}/{what}", "rb") as f:
                        assert marker.encode() not in f.read(), (pid, what)
    finally:
        err = live.communicate(timeout=60)[1]
    assert live.returncode == 0, err


def test_spool_stays_private_and_a_damaged_batch_is_set_aside(emulator, client, dataset, tmp_path):
    """An existing spool folder left 0755 is set back to 0700 and batches are 0600 whatever the umask; a stray or
    damaged file that looks like a batch is moved aside (counted), not a crash at every start."""
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    os.chmod(spool, 0o755)
    down = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "devourer", "capture", "-r",
                           str(PCAPS / "dpkt__http.pcap"), *_bq_args(down, dataset, spool)], capture_output=True,
                          text=True, cwd=REPO, timeout=120, preexec_fn=lambda: os.umask(0))
    assert proc.returncode == 0, proc.stderr
    batches = list(spool.glob("*.jsonl"))
    assert batches and oct(os.stat(spool).st_mode & 0o777) == "0o700"
    assert all(oct(os.stat(b).st_mode & 0o777) == "0o600" for b in batches)
    (spool / "00000000000000000001-1-000001.jsonl").write_bytes(b"\x00\xffnot json\n")  # oldest: read first
    (spool / "notes.txt").write_text("left by an operator")
    (spool / "00000000000000000002-1-000001.jsonl").mkdir()
    empty = tmp_path / "empty.pcap"
    from tests.pcapbuild import write_pcap

    write_pcap(empty, [])
    proc = run_devourer("capture", "-r", empty, *_bq_args(emulator, dataset, spool))
    assert proc.returncode == 0, proc.stderr
    assert "spool file 00000000000000000001-1-000001.jsonl is not a readable batch" in proc.stderr
    assert "1 damaged spool files set aside" in proc.stderr
    assert (spool / "damaged" / "00000000000000000001-1-000001.jsonl").exists()
    assert (spool / "notes.txt").exists()
    assert len(_rows(client, dataset)) == 3  # the good batch behind the damaged one was sent
