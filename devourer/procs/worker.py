"""A worker process: drains its ring into its flow-table shard, sends expired flows.

The core is ``flow.table.FlowTable``; this module only moves records from the
ring (one per capture reader, taken in chunk order: ``ipc.ordered``) to the table
and expired rows into its flow ring to the exporter, and turns the end of the
packet rings (capture closed them) into a final flush and the closing of the flow
ring.
"""

from typing import TYPE_CHECKING, NoReturn

import numpy as np

from devourer.errors import EXIT_FAILURE, EXIT_OK
from devourer.counters import CTL_ABORT
from devourer.flow.table import FlowTable
from devourer.ipc.ordered import OrderedRings
from devourer.packet import layout as L
from devourer.procs.common import Idle, orphaned, run_child
from devourer.procs.report import Role
from devourer.settings import Settings

if TYPE_CHECKING:
    from devourer.engine.topology import Topology


class WorkerLoop:
    def __init__(self, index: int, settings: Settings, rings, flow_ring, counters, control, parent_pid: int):
        self.index = index
        self.input = OrderedRings(rings, L.RING_FRAMING, ordered=not settings.live)
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
        idle = Idle()
        last_clock = 0
        while True:
            clock = self.input.clock_us()  # read before the rings: every record up to it is then in or behind us
            n, chunk_ended = self.input.read_into(self.buf)
            if n:
                self.table.ingest(self.buf[:n])
            if chunk_ended:
                self.table.tick(self.input.clock_us())
            if n or chunk_ended:
                idle.worked()
                continue
            if self.input.finished():
                break
            if orphaned(self.parent_pid):
                return EXIT_FAILURE
            if clock > last_clock:
                self.table.tick(clock)
                last_clock = clock
            idle.wait()
        self.table.tick(self.input.clock_us())
        self.table.flush()
        self.flow_ring.close_producer()  # the exporter's sign that this worker sent everything
        return EXIT_OK


def main(topo: "Topology", settings: Settings, index: int) -> NoReturn:
    """Worker ``index``'s process."""
    def body(parent: int) -> int:
        return WorkerLoop(index, settings, topo.worker_rings(index), topo.flow_rings[index],
                          topo.worker_counters[index], topo.control, parent).run()

    run_child(Role("worker", index), body, topo.reports)
