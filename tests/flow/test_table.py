"""The flow-table core, without processes: counting, direction, expiry, growth, eviction."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer import counters as CN
from devourer.flow import record as R
from devourer.flow.table import K_EVICTED, FlowTable
from devourer.packet import layout as L
from devourer.packet.decode import BatchDecoder
from tests.pcapbuild import ethernet, ipv4, tcp, udp

S = 1_000_000  # microseconds


def packets(specs):
    """specs: [(t_seconds, client_index, from_client, size)] -> decoded records (clock = running max)."""
    frames, meta, off = [], [], 0
    for t, c, fwd, size in specs:
        a, b = f"10.0.{c // 256}.{c % 256}", "192.0.2.1"
        ip = ipv4(a, b, 17, udp(10000 + c, 53, b"x" * size)) if fwd else ipv4(b, a, 17, udp(53, 10000 + c, b"x" * size))
        f = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ip)
        frames.append(f)
        meta.append((int(t), int(round((t - int(t)) * 1e6)), off, len(f)))
        off += len(f)
    counters = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
    dec = BatchDecoder(len(frames), 1, counters)
    n = dec.decode(b"".join(frames), np.array(meta, np.uint32).tobytes(), None, 1, 262144)
    return dec.records[:n].copy()


def run(records, batch=None, **kw):
    rows = []
    table = FlowTable(kw.get("idle", 120 * S), kw.get("active", 1800 * S), kw.get("max_flows", 10**6), rows.append,
                      initial_slots=kw.get("slots", 16))
    batch = batch or len(records)
    for i in range(0, len(records), batch):
        table.ingest(records[i:i + batch])
    table.flush()
    return (np.concatenate(rows) if rows else np.zeros((0, R.FLOW_WORDS), np.uint64)), table


def test_counts_each_direction_and_src_is_first_sender():
    rows, _ = run(packets([(100, 1, False, 10), (101, 1, True, 20), (102, 1, True, 30)]))
    (row,) = rows
    assert row[R.F_STATE] & R.ST_SRC_IS_B  # the server (B = 192.0.2.1 > 10.0.0.1) spoke first
    assert row[R.F_STATE] & R.ST_ESTABLISHED
    assert (int(row[R.F_A_PKTS]), int(row[R.F_B_PKTS])) == (2, 1)
    assert row[R.F_END] == R.END_SHUTDOWN


def test_idle_gap_starts_a_new_flow():
    rows, _ = run(packets([(100, 1, True, 1), (150, 1, True, 1), (400, 1, True, 1), (401, 2, True, 1)]))
    ends = sorted((int(r[R.F_FIRST]) // S, int(r[R.F_END])) for r in rows)
    assert ends == [(100, R.END_IDLE), (400, R.END_SHUTDOWN), (401, R.END_SHUTDOWN)]


@settings(max_examples=40, deadline=None)
@given(spec=st.lists(st.tuples(st.floats(0, 2000), st.integers(0, 40), st.booleans(), st.integers(0, 50)),
                     min_size=1, max_size=120), batch=st.integers(1, 50), slots=st.sampled_from([4, 16, 1024]))
def test_records_do_not_depend_on_batching_or_table_size(spec, batch, slots):
    spec = sorted(spec)
    recs = packets([(1_700_000_000 + t, c, f, s) for t, c, f, s in spec])
    one, _ = run(recs, idle=60 * S, active=300 * S)
    other, _ = run(recs, batch=batch, slots=slots, idle=60 * S, active=300 * S)
    canon = lambda rows: sorted(map(tuple, rows.tolist()))  # noqa: E731
    assert canon(one) == canon(other)
    assert sum(int(r[R.F_A_PKTS] + r[R.F_B_PKTS]) for r in one) == len(spec)


def test_full_table_evicts_longest_idle_and_counts_it():
    recs = packets([(1000 + i, i, True, 1) for i in range(100)])
    rows, table = run(recs, max_flows=40)
    assert len(rows) == 100
    evicted = rows[rows[:, R.F_END] == R.END_EVICTED]
    assert len(evicted) == table.counters[K_EVICTED] > 0
    # the evicted ones are older than every flow still in the table at the end
    kept = rows[rows[:, R.F_END] == R.END_SHUTDOWN]
    assert evicted[:, R.F_LAST].max() < kept[:, R.F_LAST].min()


def test_tcp_flags_and_macs_are_kept_per_side():
    f1 = ethernet("02:00:00:00:00:0a", "02:00:00:00:00:0b", 0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1000, 80, 0x02)))
    f2 = ethernet("02:00:00:00:00:0b", "02:00:00:00:00:0a", 0x0800, ipv4("10.0.0.2", "10.0.0.1", 6, tcp(80, 1000, 0x12)))
    counters = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
    dec = BatchDecoder(2, 1, counters)
    meta = np.array([(1, 0, 0, len(f1)), (1, 5, len(f1), len(f2))], np.uint32).tobytes()
    n = dec.decode(f1 + f2, meta, None, 1, 262144)
    rows, _ = run(dec.records[:n].copy())
    (row,) = rows
    assert (int(row[R.F_STATE]) >> 8) & 0xFF == 0x02 and (int(row[R.F_STATE]) >> 16) & 0xFF == 0x12
    assert int(row[R.F_MAC_A]) & 0xFFFFFFFFFFFF == 0x02000000000A
    assert int(row[R.F_MAC_B]) & 0xFFFFFFFFFFFF == 0x02000000000B


def test_many_flows_expiring_while_the_index_grows_give_the_same_rows():
    rng = np.random.default_rng(7)
    spec = sorted((float(t), int(c), bool(f), int(s)) for t, c, f, s in zip(
        rng.uniform(0, 3000, 6000), rng.integers(0, 3000, 6000), rng.integers(0, 2, 6000), rng.integers(0, 40, 6000)))
    recs = packets([(1_700_000_000 + t, c, f, s) for t, c, f, s in spec])
    one, _ = run(recs, idle=60 * S, active=600 * S, slots=1 << 16)
    other, table = run(recs, batch=97, slots=4, idle=60 * S, active=600 * S)
    canon = lambda rows: sorted(map(tuple, rows.tolist()))  # noqa: E731
    assert canon(one) == canon(other)
    assert sum(int(r[R.F_A_PKTS] + r[R.F_B_PKTS]) for r in one) == len(spec)
    assert table.count == 0 and table.index.shape[0] > 4
    # the exported hash is the one capture computed for the flow's packets
    assert set(one[:, R.F_HASH].tolist()) <= set(recs.view(np.uint64)[:, L.W_HASH].tolist())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_follows_the_flows_held_not_the_limit():
    before = _rss_bytes()
    table = FlowTable(3600 * S, 0, 10**7, lambda rows: None, trim_bytes=1 << 20)  # room for 10 M flows: 1.28 GB reserved, not used
    assert _rss_bytes() - before < 20 << 20
    recs = packets([(1_700_000_000 + i / 1000, i, True, 1) for i in range(50_000)])
    table.ingest(recs)
    held = table.index.nbytes + table.count * R.TABLE_WORDS * 8
    assert table.count == 50_000 and held / table.count <= 150  # docs/architecture.md §7: at most 150 B per flow
    grown = _rss_bytes()
    table.flush()
    assert table.count == 0 and _rss_bytes() < grown - (4 << 20)  # the rows' pages went back
