"""The flow_logs columns of flow rows (``outputs.columns``, the flow store's form) against the reference: the
JSON record the exporter writes for the same rows (checked against tshark elsewhere), mapped to a row by
``outputs.bigquery.row_of``. Rows and names come from real captures read by the engine's own cores
(``engine.inprocess``): names, IPv6, VLANs, tunnels, several pcapng interfaces."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.engine import inprocess
from devourer.flow import record as R
from devourer.names.table import NameTable
from devourer.outputs.bigquery import SCHEMA, row_of
from devourer.outputs.columns import flow_table
from devourer.outputs.format import RecordFormatter
from devourer.procs.capture import interface_labels, open_sources
from devourer.settings import Settings
from tests.conftest import PCAPS
from tests.pcapbuild import write_pcap
from tests.tunnelcaps import WRAPPERS, frames

CAPTURES = ["dpkt__nb6-http.pcap", "goprobe__default.pcap", "tcpreplay__test.pcap", "ndpi__sites.pcapng",
            "zeek__pcapng-multi-interface.pcapng", "nfstream__1kxun.pcap"]


def _as_json_row(row: dict) -> dict:
    """A table row with its times written as the JSON record writes them."""
    for field in ("first_seen_at", "last_seen_at"):
        row[field] = row[field].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return row


def _rows_and_names(path) -> tuple[np.ndarray, NameTable, tuple]:
    settings = Settings(read_files=(str(path),))
    flows, names = inprocess.ToTable(settings), inprocess.ToNames()
    inprocess.read(settings, flows, names)
    flows.table.flush()
    table = NameTable()
    for ts, obs in names.observations:
        table.observe(ts, obs)
    return np.concatenate(flows.rows), table, interface_labels(open_sources(settings))


def _same_as_records(rows: np.ndarray, names, formatter: RecordFormatter) -> None:
    expected = [row_of(r) for r in formatter.records(rows, names)]
    table = flow_table(formatter, rows, names)
    assert table.schema.names == [name for name, _, _ in SCHEMA]
    assert [_as_json_row(r) for r in table.to_pylist()] == expected


@pytest.mark.parametrize("capture", CAPTURES)
def test_the_columns_of_a_capture_are_its_records(capture):
    rows, names, labels = _rows_and_names(PCAPS / capture)
    formatter = RecordFormatter("sensor-1", labels)
    _same_as_records(rows, names, formatter)
    if capture == "dpkt__nb6-http.pcap":  # names inside PPPoE: the lists are there, not only empty ones
        assert any(r["dst_names"] for r in flow_table(formatter, rows, names).to_pylist())


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_the_columns_of_a_tunnelled_capture_are_its_records(kind, tmp_path):
    path = tmp_path / f"{kind}.pcap"
    write_pcap(path, [(1_700_000_000 + i * 0.01, f) for i, f in enumerate(frames(kind))])
    rows, names, labels = _rows_and_names(path)
    assert (rows[:, R.F_STATE] & np.uint64(R.ST_TUNNEL)).any()
    _same_as_records(rows, names, RecordFormatter("sensor-1", labels))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300))
def test_the_columns_of_any_rows_are_their_records(seed, k):
    """Rows of random words (times and counters kept where a record can show them): every field, every
    combination of flags, IPv6 or not, tunnelled or not, MACs known or not."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 2**63, size=(k, R.FLOW_WORDS), dtype=np.uint64)
    rows[:, R.F_FIRST] = rng.integers(0, 2**51, k).astype(np.uint64)
    rows[:, R.F_LAST] = rows[:, R.F_FIRST] + rng.integers(0, 2**30, k).astype(np.uint64)
    rows[:, R.F_END] = rng.integers(0, 6, k).astype(np.uint64)
    for c in (R.F_A_BYTES, R.F_B_BYTES, R.F_A_PKTS, R.F_B_PKTS):
        rows[:, c] >>= np.uint64(1)
    _same_as_records(rows, None, RecordFormatter("s", ("eth0", 3, "eth1")))
