"""Regression guard: the hot path stays vectorized.

Counts Python-level function calls (sys.setprofile) while a batch goes through
decode, the flow table and the record formatter: the count must not grow with
the batch size. No wall-clock time is measured."""

import sys

import numpy as np

from devourer import counters as CN
from devourer.flow.table import FlowTable
from devourer.packet.decode import BatchDecoder
from tests.pcapbuild import ethernet, ipv4, tcp


def _batch(n: int):
    frames = [ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
                       ipv4(f"10.0.{i // 250}.{i % 250 + 1}", "192.0.2.1", 6, tcp(10000 + i, 443, 0x10)))
              for i in range(n)]
    meta, off = [], 0
    for i, f in enumerate(frames):
        meta.append((1_700_000_000, i, off, len(f)))
        off += len(f)
    return b"".join(frames), np.array(meta, np.uint32).tobytes()


def _python_calls(n: int) -> int:
    data, meta = _batch(n)
    dec = BatchDecoder(n, 1, np.zeros(CN.N_CAPTURE_COUNTERS, np.int64), want_names=True)
    warm = FlowTable(10**9, 0, 10**7, lambda rows: None, initial_slots=1 << 16)
    warm.ingest(dec.records[:dec.decode(data, meta, None, 1, 262144)])  # compile / load outside the count
    dec.name_packets()
    table = FlowTable(10**9, 0, 10**7, lambda rows: None, initial_slots=1 << 16)
    calls = [0]

    def count(frame, event, arg):
        if event == "call":
            calls[0] += 1

    sys.setprofile(count)
    try:
        k = dec.decode(data, meta, None, 1, 262144)
        dec.name_packets()
        table.ingest(dec.records[:k])
    finally:
        sys.setprofile(None)
    return calls[0]


def test_python_calls_per_batch_do_not_grow_with_the_batch():
    small, large = _python_calls(256), _python_calls(4096)
    assert 0 < small < 100 and large <= small + 10, (small, large)
