"""A worker process: drains its ring into its flow-table shard, sends expired flows.

The core is ``flow.table.FlowTable``; this module only moves records from the
ring (one per capture reader, taken in chunk order: ``ipc.ordered``) to the table
and expired rows into its flow ring to the exporter, and turns the end of the
packet rings (capture closed them) into a final flush and the closing of the flow
ring.
"""

import time

import numpy as np

from devourer.flow.table import FlowTable
from devourer.ipc.ordered import OrderedRings
from devourer.packet import layout as L
from devourer.procs.common import CTL_ABORT, orphaned
from devourer.settings import Settings


class WorkerLoop:
    def __init__(self, index: int, settings: Settings, rings, flow_ring, counters, control, parent_pid: int):
        self.index = index
        self.input = OrderedRings(rings, ordered=not settings.live)
        self.flow_ring = flow_ring
        self.control = control
        self.parent_pid = parent_pid
        per_worker_max = max(1, settings.max_flows // max(1, settings.workers))
        self.table = FlowTable(settings.idle_timeout_us, settings.active_timeout_us, per_worker_max, self._send)
        self.table.counters = counters
        self.buf = L.empty_records(settings.batch_packets)

    def _exporter_gone(self) -> bool:
        return bool(self.control[CTL_ABORT]) or orphaned(self.parent_pid)

    def _send(self, rows) -> None:
        slots = np.ascontiguousarray(rows, np.uint64).view(np.uint8).reshape(len(rows), -1)
        self.flow_ring.write(slots, self._exporter_gone)  # gone: the run is failing anyway

    def run(self) -> int:
        pause = 1e-4
        last_clock = 0
        while True:
            clock = self.input.clock_us()  # read before the rings: every record up to it is then in or behind us
            n, chunk_ended = self.input.read_into(self.buf)
            if n:
                self.table.ingest(self.buf[:n])
            if chunk_ended:
                self.table.tick(self.input.clock_us())
            if n or chunk_ended:
                pause = 1e-4
                continue
            if self.input.finished():
                break
            if orphaned(self.parent_pid):
                return 1
            if clock > last_clock:
                self.table.tick(clock)
                last_clock = clock
            time.sleep(pause)
            pause = min(pause * 2, 5e-3)
        self.table.tick(self.input.clock_us())
        self.table.flush()
        self.flow_ring.close_producer()  # the exporter's sign that this worker sent everything
        return 0
