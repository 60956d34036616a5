"""The flow store (``-o parquet --store DIR``, issue 16): what a run puts in it equals what ``-o file`` writes
(mapped to flow_logs rows by ``row_of``), partitioned by the hour of ``first_seen_at``; what was acknowledged
survives a killed run, once; bad settings are one line."""

import datetime
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devourer.engine import inprocess
from devourer.outputs import FlowBatch
from devourer.outputs.bigquery import row_of
from devourer.outputs.format import RecordFormatter
from devourer.outputs.store import STAGING, ParquetStoreSink
from devourer.settings import Settings
from tests.conftest import PCAPS, capture_records, run_devourer


def _store_rows(store) -> list[dict]:
    files = sorted(p for p in store.rglob("*.parquet"))
    rows = []
    for path in files:
        date, hour = path.parent.parent.name, path.parent.name
        for row in pq.read_table(path).to_pylist():
            first = row["first_seen_at"]
            assert (f"date={first:%Y-%m-%d}", f"hour={first:%H}") == (date, hour), path
            for field in ("first_seen_at", "last_seen_at"):
                row[field] = row[field].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            rows.append(row)
    return sorted(rows, key=lambda r: r["id"])


@pytest.mark.parametrize("capture", ["dpkt__nb6-http.pcap", "ndpi__sites.pcapng", "zeek__pcapng-multi-interface.pcapng",
                                     "tcpreplay__test.pcap"])
def test_the_store_holds_what_file_output_writes(capture, tmp_path):
    records, proc = capture_records(PCAPS / capture, "--sensor-id", "s1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = tmp_path / "store"
    proc = run_devourer("capture", "-r", PCAPS / capture, "--sensor-id", "s1", "-o", "parquet", "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert _store_rows(store) == sorted((row_of(r) for r in records), key=lambda r: r["id"])
    assert os.listdir(store / STAGING) == []
    assert not [p for p in store.rglob("*") if p.name.startswith(".") and p.name != STAGING]


def test_a_capture_over_several_hours_lands_in_each_hour(tmp_path):
    """goprobe__default spans hours: every flow is in the partition of its first packet (checked by
    _store_rows), and there is more than one."""
    store = tmp_path / "store"
    proc = run_devourer("capture", "-r", PCAPS / "goprobe__default.pcap", "-o", "parquet", "--store", store)
    assert proc.returncode == 0, proc.stderr
    rows = _store_rows(store)
    hours = {p.parent for p in store.rglob("*.parquet")}
    assert len(hours) > 1 and len(hours) == len({r["first_seen_at"][:13] for r in rows})


def _rows_of(capture: str) -> np.ndarray:
    settings = Settings(read_files=(str(PCAPS / capture),))
    flows = inprocess.ToTable(settings)
    inprocess.read(settings, flows)
    flows.table.flush()
    return np.concatenate(flows.rows)


def test_a_killed_run_loses_nothing_it_acknowledged_and_adds_nothing_twice(tmp_path):
    """Batches fsynced at a tick are acknowledged (unsettled 0); the process dies before the staging file
    became Parquet, in the middle of writing one more batch. The next start puts exactly the acknowledged
    rows into the store, and a third start adds nothing."""
    rows = _rows_of("goprobe__default.pcap")
    formatter = RecordFormatter("s1")
    store = tmp_path / "store"
    sink = ParquetStoreSink(str(store), flush_interval_s=3600)
    half = len(rows) // 2
    sink.write(FlowBatch(formatter, rows[:half]))
    assert sink.unsettled() == half
    sink.tick()
    assert sink.unsettled() == 0  # acknowledged: on disk
    staging = sink._path
    sink.write(FlowBatch(formatter, rows[half:]))
    sink._stage()  # the next tick's staging: the kill comes before its fsync
    sink._file.flush()
    with open(staging, "r+b") as f:  # the kill tore the last batch
        f.truncate(os.path.getsize(staging) - 100)
    del sink
    assert list(store.rglob("*.parquet")) == []

    ParquetStoreSink(str(store)).close()
    expected = sorted((row_of(r) for r in formatter.records(rows[:half])), key=lambda r: r["id"])
    assert _store_rows(store) == expected
    assert os.listdir(store / STAGING) == []
    ParquetStoreSink(str(store)).close()
    assert _store_rows(store) == expected


def test_flows_are_in_the_store_once_the_flush_interval_passed(tmp_path):
    """Live, a flow is queryable --store-flush-interval after it ended, not only at the end of the run."""
    now = [0.0]
    store = tmp_path / "store"
    sink = ParquetStoreSink(str(store), flush_interval_s=10, clock=lambda: now[0])
    rows = _rows_of("dpkt__nb6-http.pcap")
    sink.write(FlowBatch(RecordFormatter("s1"), rows))
    sink.tick()
    assert list(store.rglob("*.parquet")) == []
    now[0] = 10.0
    sink.tick()
    assert len(_store_rows(store)) == len(rows)
    sink.close()
    assert len(_store_rows(store)) == len(rows)


def test_a_store_that_is_a_file_is_one_line_and_exit_3(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__nb6-http.pcap", "-o", "parquet", "--store", blocker)
    assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--store" in proc.stderr


@pytest.mark.parametrize("value", ["0", "2h", "abc"])
def test_a_flush_interval_out_of_range_is_refused(value, tmp_path):
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__nb6-http.pcap", "-o", "parquet", "--store", tmp_path / "s",
                        "--store-flush-interval", value)
    assert proc.returncode == 2 and "--store-flush-interval" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_the_store_reads_as_one_table_with_its_partitions(tmp_path):
    """What a query engine sees: every file of the store as one dataset, date and hour as columns."""
    import pyarrow.dataset as ds

    store = tmp_path / "store"
    proc = run_devourer("capture", "-r", PCAPS / "goprobe__default.pcap", "-o", "parquet", "--store", store)
    assert proc.returncode == 0, proc.stderr
    table = ds.dataset(store, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(_store_rows(store))
    assert {"date", "hour"} <= set(table.schema.names)
    first = table.column("first_seen_at").to_pylist()[0]
    assert isinstance(first, datetime.datetime) and first.tzinfo is not None
    assert table.schema.field("src_names").type == pa.list_(pa.string())


# ---- upkeep: compaction and retention
def _hour_folders(store):
    return sorted(p for p in store.glob("date=*/hour=*"))


def test_an_hour_of_many_files_is_compacted_into_one_with_the_same_rows(tmp_path):
    from devourer.outputs.store_upkeep import COMPACT_AT

    rows = _rows_of("dpkt__nb6-http.pcap")
    assert len(rows) >= COMPACT_AT + 1
    store = tmp_path / "store"
    ticks = iter(range(0, 10**6, 100))
    sink = ParquetStoreSink(str(store), flush_interval_s=10, clock=lambda: next(ticks))
    formatter = RecordFormatter("s1")
    counts = []
    for part in np.array_split(rows, COMPACT_AT + 1):
        sink.write(FlowBatch(formatter, part))
        sink.tick()  # publishes: one file per batch
        counts.append(sum(len(list(f.glob("*.parquet"))) for f in _hour_folders(store)))
    sink.close()
    assert len(_hour_folders(store)) == 1
    assert counts[:COMPACT_AT - 1] == list(range(1, COMPACT_AT)) and counts[COMPACT_AT - 1:] == [1, 2]
    ids = [r["id"] for r in _store_rows(store)]
    assert len(ids) == len(set(ids)) == len(rows)
    assert not [p for p in store.rglob("*") if p.name.startswith(".") and p.name != STAGING]


def _one_hour_store(tmp_path):
    """A store of one capture's flows in one hour folder: (store, its rows, the hour folder)."""
    store = tmp_path / "store"
    sink = ParquetStoreSink(str(store))
    sink.write(FlowBatch(RecordFormatter("s1"), _rows_of("dpkt__nb6-http.pcap")))
    sink.close()
    return store, _store_rows(store), _hour_folders(store)[0]


def test_an_interrupted_compaction_leaves_the_hour_whole_and_is_cleaned_up(tmp_path):
    """A crash before the swap leaves .hour=HH.new, after it .hour=HH.new with the old files: either way the
    visible folder is complete, and the next start removes the hidden one."""
    store, before, hour = _one_hour_store(tmp_path)
    leftover = hour.parent / f".{hour.name}.new"
    leftover.mkdir()
    (leftover / "compacted-1.parquet").write_bytes(b"PAR1 torn")
    import duckdb

    from devourer.query.sources import store_files
    from devourer.query.spec import EARLIEST, LATEST, Window

    files = store_files(str(store), Window(EARLIEST, LATEST))
    assert files and all(".new" not in f for f in files)
    assert duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0] == len(before)
    ParquetStoreSink(str(store)).close()
    assert not leftover.exists() and _store_rows(store) == before


def test_a_flow_file_torn_while_written_is_never_read_and_is_removed_at_start(tmp_path):
    """A crash while a piece was written leaves its hidden temporary name; queries skip it, the next start
    removes it, and a hidden file that is no piece of ours stays."""
    store, before, hour = _one_hour_store(tmp_path)
    torn = hour / ".1-1-0.parquet.tmp"
    torn.write_bytes(b"PAR1 torn")
    other = hour / ".notes"
    other.write_bytes(b"kept")
    from devourer.query.sources import store_files
    from devourer.query.spec import EARLIEST, LATEST, Window

    assert all(".tmp" not in f for f in store_files(str(store), Window(EARLIEST, LATEST)))
    ParquetStoreSink(str(store)).close()
    assert not torn.exists() and other.exists() and _store_rows(store) == before


def test_retention_removes_the_hours_that_ended_before_it(tmp_path):
    store = tmp_path / "store"
    sink = ParquetStoreSink(str(store))
    sink.write(FlowBatch(RecordFormatter("s1"), _rows_of("goprobe__default.pcap")))
    sink.close()
    hours = _hour_folders(store)
    assert len(hours) >= 3
    starts = [datetime.datetime.strptime(f"{h.parent.name[5:]} {h.name[5:]}", "%Y-%m-%d %H").replace(
        tzinfo=datetime.timezone.utc) for h in hours]
    keep_from = starts[2]  # hours 0 and 1 end at or before now - retention
    now = keep_from.timestamp() + 86400
    rows = _store_rows(store)
    ParquetStoreSink(str(store), retention_s=86400, wall_clock=lambda: now).close()
    assert _hour_folders(store) == hours[2:]
    kept = _store_rows(store)
    assert kept == [r for r in rows if r["first_seen_at"] >= keep_from.strftime("%Y-%m-%dT%H")]
    assert all(any(d.iterdir()) for d in store.glob("date=*"))  # days left empty are gone


@pytest.mark.parametrize("value", ["10m", "-1d", "1000y"])
def test_a_retention_out_of_range_is_refused(value, tmp_path):
    proc = run_devourer("capture", "-r", PCAPS / "dpkt__http.pcap", "-o", "parquet", "--store", tmp_path / "s",
                        "--store-retention", value)
    assert proc.returncode == 2 and "--store-retention" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_big_publish_is_written_as_pieces_in_parallel_each_row_once(tmp_path, monkeypatch):
    """An hour's rows beyond PIECE_ROWS become several files written side by side; converting the same
    staging file again (a crash before it was removed) names the same files, so nothing is there twice."""
    from devourer.outputs import store as store_module

    monkeypatch.setattr(store_module, "PIECE_ROWS", 7)
    rows = _rows_of("dpkt__nb6-http.pcap")
    store = tmp_path / "store"
    sink = ParquetStoreSink(str(store), flush_interval_s=3600)
    sink.write(FlowBatch(RecordFormatter("s1"), rows))
    sink.tick()
    staging = next((store / STAGING).iterdir())
    kept = tmp_path / "kept.arrows"
    kept.write_bytes(staging.read_bytes())
    sink.close()
    files = sorted(store.rglob("*.parquet"))
    assert len(files) == -(-len(rows) // 7) and len(_hour_folders(store)) == 1
    before = _store_rows(store)
    assert len({r["id"] for r in before}) == len(before) == len(rows)
    staging.parent.joinpath(staging.name).write_bytes(kept.read_bytes())  # as if the unlink never happened
    ParquetStoreSink(str(store)).close()
    assert sorted(store.rglob("*.parquet")) == files and _store_rows(store) == before
