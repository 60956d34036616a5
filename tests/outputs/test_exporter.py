"""The exporter core without processes: flows wait for the resolver's watermark."""

import json
import queue

import numpy as np

from devourer.flow import record as R
from devourer.flow.key import key_word_of
from devourer.names.extract import Observation
from devourer.names.table import NameTable
from devourer.counters import N_EXPORTER_COUNTERS
from devourer.procs.exporter import ExporterLoop
from devourer.ipc import wire


class ListSink:
    """A sink that keeps the lines it is given (the ``outputs.Sink`` protocol, in memory)."""

    def __init__(self):
        self.lines = []

    def write(self, batch) -> None:
        self.lines.extend(batch.lines().splitlines())

    def flush(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def unsettled(self) -> int:
        return 0

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def flow_row(last_us: int) -> np.ndarray:
    r = np.zeros(R.FLOW_WORDS, np.uint64)
    r[0:2] = np.frombuffer(bytes([10, 0, 0, 1]) + bytes(12), "<u8")
    r[2:4] = np.frombuffer(bytes([192, 0, 2, 7]) + bytes(12), "<u8")
    r[R.F_KEY] = key_word_of(40000, 443, 0, 6, False)
    r[R.F_FIRST] = last_us - 1_000_000
    r[R.F_LAST] = last_us
    r[R.F_A_PKTS] = 1
    r[R.F_END] = R.END_IDLE
    return r


def test_flows_wait_for_the_watermark_and_get_names_seen_before_they_ended():
    sink = ListSink()
    loop = ExporterLoop(sink, "s", queue.Queue(), [None], np.zeros(N_EXPORTER_COUNTERS, np.int64), parent_pid=0, report=print,
                        names=NameTable(), resolver_id=1)
    t = 1_700_000_000_000_000
    loop.take_rows(np.array([flow_row(t + 5_000_000)]))
    assert sink.lines == []  # no watermark yet
    answer = Observation("dns", "A", "example.com", "192.0.2.7", None, 300)
    loop.handle(wire.names([(t + 2_000_000, *answer)], t + 4_000_000))
    assert sink.lines == []  # the watermark has not passed the flow's last packet
    loop.handle(wire.names([], t + 5_000_000))
    (line,) = sink.lines
    assert json.loads(line)["dst"]["names"] == ["example.com"]


def test_without_a_resolver_flows_go_out_at_once():
    sink = ListSink()
    loop = ExporterLoop(sink, "s", queue.Queue(), [None], np.zeros(N_EXPORTER_COUNTERS, np.int64), parent_pid=0, report=print)
    loop.take_rows(np.array([flow_row(1_700_000_000_000_000)]))
    assert len(sink.lines) == 1 and loop.watermark == wire.WATERMARK_DONE
