"""``devourer query`` against an aggregation written here in plain Python of the same flows' ``-o file``
records: every query type, with and without conditions and time windows, from the flow store, from JSON
lines (plain and gzip) and from BigQuery (the emulator); and what a user sees: the table, CSV, errors."""

import datetime
import gzip
import json
import shutil
import subprocess

import orjson
import pytest

from devourer.cli import main
from tests.conftest import PCAPS, capture_records, run_devourer
from tests.test_conditions import PLAIN

CAPTURES = ("goprobe__default.pcap", "dpkt__nb6-http.pcap", "nfstream__1kxun.pcap", "zeek__vlan-collisions.pcap",
            "zeek__pcapng-multi-interface.pcapng", "nfstream__iphone.pcap")
TYPES = {"talk_src": ["sip"], "talk_dst": ["dip"], "talk_conv": ["sip", "dip"], "apps_port": ["dport", "proto"],
         "agg_talk_port": ["sip", "dip", "dport", "proto"], "raw": ["time", "iface", "sip", "dip", "dport", "proto"],
         "sensor,vlan,status,end_reason,tunnel,sport": ["sensor", "vlan", "status", "end_reason", "tunnel", "sport"],
         "dst_names,src_names,time": ["dst_names", "src_names", "time"]}
CONDITIONS = [None, "dport = 53", "net = 192.168.0.0/16", r"name ~ '\.radb\.net$' or src_names = MacBook-Air",
              "vlan = 0"]
ALL_TIME = ("-f", "1970-01-01", "-l", "now")


def _when(record) -> datetime.datetime:
    return datetime.datetime.fromisoformat(record["first_seen_at"])


def _value(attribute: str, r: dict, resolution: int):
    if attribute == "time":
        seconds = int(_when(r).timestamp()) // resolution * resolution
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if attribute in ("src_names", "dst_names"):
        return tuple(r[attribute[:3]]["names"])
    return {"sip": lambda: r["src"]["addr"], "dip": lambda: r["dst"]["addr"], "sport": lambda: r["src"]["port"],
            "dport": lambda: r["dst"]["port"], "proto": lambda: r["protocol"],
            "iface": lambda: None if r["interface"] is None else str(r["interface"]), "sensor": lambda: r["sensor"],
            "vlan": lambda: r["vlan"], "status": lambda: r["status"], "end_reason": lambda: r["end_reason"],
            "tunnel": lambda: (r["tunnel"] or {}).get("type")}[attribute]()


def expected(records, attributes, condition=None, first=None, last=None, resolution=300):
    """{attribute values: [packets sent, packets received, bytes sent, bytes received]} from the first address
    attribute's side."""
    side = next(({"sip": "src", "src_names": "src", "dip": "dst", "dst_names": "dst"}[a] for a in attributes
                 if a in ("sip", "src_names", "dip", "dst_names")), "src")
    other = "dst" if side == "src" else "src"
    groups: dict = {}
    for r in records:
        if condition is not None and not PLAIN[condition](r):
            continue
        if (first and _when(r) < first) or (last and _when(r) > last):
            continue
        key = tuple(_value(a, r, resolution) for a in attributes)
        c = groups.setdefault(key, [0, 0, 0, 0])
        for i, (who, what) in enumerate(((side, "packets"), (other, "packets"), (side, "bytes"), (other, "bytes"))):
            c[i] += r[f"{who}_stat"][what]
    return groups


def _order(groups, attributes):
    """The order devourer promises: most bytes first, then the attribute values ascending, nulls first (names
    as their JSON text)."""
    def key(item):
        values, c = item
        return (-(c[2] + c[3]),) + tuple(
            (v is not None, orjson.dumps(list(v)).decode() if isinstance(v, tuple) else v) for v in values)
    return [values for values, _ in sorted(groups.items(), key=key)]


def _got(doc, attributes):
    rows = {}
    for row in doc["rows"]:
        key = tuple(tuple(row[a]) if isinstance(row[a], list) else row[a] for a in attributes)
        assert key not in rows
        rows[key] = [row["packets_sent"], row["packets_rcvd"], row["bytes_sent"], row["bytes_rcvd"]]
        assert row["packets"] == row["packets_sent"] + row["packets_rcvd"]
        assert row["bytes"] == row["bytes_sent"] + row["bytes_rcvd"]
    return rows


def _check(doc, want, attributes):
    got = _got(doc, attributes)
    assert got == want
    assert [k for k in got] == _order(want, attributes)
    assert doc["hits"] == len(want)
    totals = [sum(c[i] for c in want.values()) for i in range(4)]
    assert [doc["totals"][k] for k in ("packets_sent", "packets_rcvd", "bytes_sent", "bytes_rcvd")] == totals


def query(capsys, *args) -> dict:
    """``devourer query ARGS -e json -n 0`` in this process (the matrix would take minutes as processes; the
    command line and its exit statuses are tested as processes below)."""
    capsys.readouterr()
    assert main(["query", *map(str, args), "-e", "json", "-n", "0"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The records of CAPTURES (two sensors), their store, and their JSON lines plain and gzip-compressed."""
    tmp = tmp_path_factory.mktemp("query")
    records, files = [], []
    for i, capture in enumerate(CAPTURES):
        sensor = f"s{i % 2}"
        got, proc = capture_records(PCAPS / capture, "--sensor-id", sensor, tmp_path=tmp)
        assert proc.returncode == 0, proc.stderr
        records += got
        proc = run_devourer("capture", "-r", PCAPS / capture, "--sensor-id", sensor, "-o", "parquet", "--store",
                            tmp / "store")
        assert proc.returncode == 0, proc.stderr
    files = sorted(p for p in tmp.iterdir() if p.suffix == ".jsonl")
    with gzip.open(tmp / "rotated.jsonl.gz", "wb") as out:  # rotation's gzip files
        for f in files[:3]:
            out.write(f.read_bytes())
    sources = {"store": ["--store", tmp / "store"],
               "json": ["-r", *files], "json.gz": ["-r", tmp / "rotated.jsonl.gz", *files[3:]]}
    return records, sources


@pytest.mark.parametrize("source", ["store", "json", "json.gz"])
@pytest.mark.parametrize("kind", sorted(TYPES))
def test_every_query_type_equals_a_plain_aggregation(kind, source, corpus, capsys):
    records, sources = corpus
    for condition in CONDITIONS:
        args = [kind, *sources[source], *ALL_TIME, "--resolution", "5m"] + (["-c", condition] if condition else [])
        want = expected(records, TYPES[kind], condition)
        _check(query(capsys, *args), want, TYPES[kind])
        assert want or condition


@pytest.mark.parametrize("source", ["store", "json"])
def test_a_time_window_holds_the_flows_that_start_in_it(corpus, source, capsys):
    records, sources = corpus
    times = sorted(_when(r) for r in records)
    for lo, hi in ((len(times) // 4, 3 * len(times) // 4), (0, len(times) // 3), (len(times) // 2, -1)):
        first, last = times[lo], times[hi]
        args = ["-f", first.isoformat(), "-l", last.isoformat()]
        for kind in ("talk_conv", "raw"):
            want = expected(records, TYPES[kind], None, first, last, resolution=3600)
            _check(query(capsys, kind, *sources[source], *args, "--resolution", "1h"), want, TYPES[kind])
            assert 0 < len(want) < len(records)


def test_limit_sum_and_order_by_packets_or_time(corpus, capsys):
    records, sources = corpus
    want = expected(records, ["sip"])
    capsys.readouterr()
    assert main(["query", "talk_src", *map(str, sources["store"]), *ALL_TIME, "-e", "json", "-n", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [row["sip"] for row in doc["rows"]] == [k[0] for k in _order(want, ["sip"])][:5]
    assert doc["hits"] == len(want)
    assert main(["query", "talk_src", *map(str, sources["store"]), *ALL_TIME, "-e", "json", "--sum"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == [] and doc["hits"] == len(want)
    assert doc["totals"]["bytes"] == sum(c[2] + c[3] for c in want.values())
    assert main(["query", "talk_src", *map(str, sources["store"]), *ALL_TIME, "-e", "json", "-n", "0", "-s", "packets",
                 "-a"]) == 0
    packets = [row["packets"] for row in json.loads(capsys.readouterr().out)["rows"]]
    assert packets == sorted(packets) and sorted(packets) == sorted(c[0] + c[1] for c in want.values())
    assert main(["query", "time", *map(str, sources["store"]), *ALL_TIME, "-e", "json", "-n", "0", "-s", "time",
                 "--resolution", "1d"]) == 0
    days = [row["time"] for row in json.loads(capsys.readouterr().out)["rows"]]
    assert days == sorted({_value("time", r, 86400) for r in records}, reverse=True)


def test_the_default_window_is_the_last_30_days(tmp_path, capsys):
    """Flows of 2026-01 are outside today's 30 days: none; with -f they are there."""
    store = tmp_path / "store"
    proc = run_devourer("capture", "-r", PCAPS / "zeek__pcapng-multi-interface.pcapng", "-o", "parquet",
                        "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert query(capsys, "talk_conv", "--store", store)["hits"] == 0
    proc = run_devourer("query", "talk_conv", "--store", store)
    assert proc.returncode == 0 and proc.stderr == ("devourer query: no flows in the last 30 days; the store holds "
                                                    "flows from 2026-01-06T01:00Z to 2026-01-06T02:00Z (choose "
                                                    "with -f/-l)\n"), proc.stderr
    assert query(capsys, "talk_conv", "--store", store, "-f", "-3650d")["hits"] == 2  # 3 flows, 2 conversations
    assert query(capsys, "talk_conv", "--store", store, "-f", "2026-01-06", "-l", "2026-01-06T01:35:00Z",
                 "-i", "eth0")["hits"] == 1


def test_the_table_a_person_reads(corpus):
    _, sources = corpus
    proc = run_devourer("query", "talk_conv", *sources["store"], *ALL_TIME, "-n", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["sip", "dip", "sent", "rcvd", "%", "sent", "rcvd", "%"]
    assert lines[5].lstrip().startswith("...")  # more hits than shown
    assert lines[7].lstrip().startswith("Totals:")
    assert lines[-1].startswith("Query stats : ") and " hits in " in lines[-1]
    assert any("Timespan" in line for line in lines) and any("Sorted by" in line for line in lines)
    proc = run_devourer("query", "apps_port", *sources["store"], *ALL_TIME, "-n", "2", "-e", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[0] == "dport,proto,packets,packets_sent,packets_rcvd,bytes,bytes_sent,bytes_rcvd"
    assert len(rows) == 3 and all(len(r.split(",")) == 8 for r in rows)


@pytest.mark.parametrize("args, says", [
    (["talk_conv", "-c", "dport = 443 and (sip = 10.0.0.1"], "-c/--condition: expected ')': "),
    (["talk_conv", "-c", "dport = http"], "dport = >>>http"),
    (["talk_nonsense"], "neither a query type"),
    (["sip,sip"], "given twice"),
    (["talk_src", "-f", "yesterday"], "-f/--first yesterday: not a time"),
    (["talk_src", "-f", "2026-12-01", "-l", "2026-11-01"], "is after -l/--last"),
    (["talk_src", "--resolution", "7m"], "--resolution 7m"),
    (["talk_src", "-n", "-1"], "-n/--limit"),
    (["talk_src", "-r", "/nonexistent/flows.json"], "-r/--read-file /nonexistent/flows.json: no such file"),
    (["talk_src", "--bigquery"], "--bigquery needs --bigquery-project-id"),
])
def test_a_bad_query_is_one_line_and_exit_2(args, says, tmp_path):
    proc = run_devourer("query", *args, "--store", tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_a_missing_store_or_foreign_json_says_so(tmp_path):
    proc = run_devourer("query", "talk_src", "--store", tmp_path / "nothing")
    assert proc.returncode == 2 and "no flow store there" in proc.stderr
    (tmp_path / "x.json").write_text('{"not": "a flow"}\n')
    proc = run_devourer("query", "talk_src", "-r", tmp_path / "x.json", *ALL_TIME)
    assert proc.returncode == 0, proc.stderr  # a record without the fields has none of the values: no flows
    (tmp_path / "y.json").write_text("this is not JSON\n")
    proc = run_devourer("query", "talk_src", "-r", tmp_path / "y.json", *ALL_TIME)
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1 and "not flow records" in proc.stderr


# ---- BigQuery: the same questions in BigQuery's SQL, against the emulator the capture filled
from tests.outputs import test_bigquery as _bq  # noqa: E402

emulator = _bq.emulator  # the module's emulator fixture, started once for these tests too
PROJECT = _bq.PROJECT


@pytest.fixture(scope="module")
def bigquery_corpus(emulator, tmp_path_factory):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    tmp = tmp_path_factory.mktemp("bq")
    bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                    client_options={"api_endpoint": emulator}).create_dataset("queries", exists_ok=True)
    records = []
    for i, capture in enumerate(CAPTURES[:4]):
        got, proc = capture_records(PCAPS / capture, "--sensor-id", f"s{i % 2}", tmp_path=tmp)
        records += got
        proc = run_devourer("capture", "-r", PCAPS / capture, "--sensor-id", f"s{i % 2}", "-o", "bigquery",
                            "--bigquery-project-id", PROJECT, "--bigquery-dataset-id", "queries",
                            "--bigquery-endpoint", emulator, "--spool-dir", tmp / f"spool{i}")
        assert proc.returncode == 0, proc.stderr
    return records, ["--bigquery", "--bigquery-project-id", PROJECT, "--bigquery-dataset-id", "queries",
                     "--bigquery-endpoint", emulator]


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_bigquery_answers_as_the_plain_aggregation(kind, bigquery_corpus, capsys):
    records, args = bigquery_corpus
    for condition in (None, "net = 192.168.0.0/16", r"name ~ '\.radb\.net$' or src_names = MacBook-Air"):
        want = expected(records, TYPES[kind], condition)
        extra = ["-c", condition] if condition else []
        _check(query(capsys, kind, *args, *ALL_TIME, "--resolution", "5m", *extra), want, TYPES[kind])


def test_bigquery_as_a_process_with_the_environment(bigquery_corpus, emulator):
    records, _ = bigquery_corpus
    env = {"DEVOURER_BIGQUERY_PROJECT_ID": PROJECT, "DEVOURER_BQ_DATASET": "queries",
           "DEVOURER_BIGQUERY_ENDPOINT": emulator}
    proc = run_devourer("query", "talk_dst", "--bigquery", *ALL_TIME, "-e", "json", "-n", "1", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"] == len(expected(records, ["dip"]))
    proc = run_devourer("query", "talk_dst", "--bigquery", "--bigquery-table", "no_such_table", *ALL_TIME, env=env)
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1 and "no_such_table" in proc.stderr


def test_duckdb_and_python_agree_on_small(small_capture, tmp_path, capsys):
    """genpcap's small capture (5,000 flows): every query type, store and JSON."""
    records, proc = capture_records(small_capture, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_devourer("capture", "-r", small_capture, "-o", "parquet", "--store", tmp_path / "store")
    assert proc.returncode == 0, proc.stderr
    files = [p for p in tmp_path.iterdir() if p.suffix == ".jsonl"]
    for kind in ("talk_src", "talk_dst", "talk_conv", "apps_port", "agg_talk_port", "raw"):
        want = expected(records, TYPES[kind], resolution=300)
        for source in (["--store", tmp_path / "store"], ["-r", *files]):
            _check(query(capsys, kind, *source, *ALL_TIME, "--resolution", "5m"), want, TYPES[kind])


def test_gzip_is_known_by_its_bytes_too(corpus, tmp_path, capsys):
    records, sources = corpus
    renamed = tmp_path / "flows.json.1"
    shutil.copy(sources["json.gz"][1], renamed)
    assert subprocess.run(["gzip", "-t", str(renamed)]).returncode == 0
    got = query(capsys, "talk_src", "-r", renamed, *ALL_TIME)
    assert got["hits"] > 0
