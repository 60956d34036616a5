"""The exporter process: the only owner of output I/O.

Collects expired-flow rows from every worker's flow ring and name observations
(and control messages) from its queue, enriches each flow with the names of its endpoints (``names.table``),
formats the records (``outputs.format``) and writes them to the sink. A batch
of flows waits until the resolver's watermark has passed its last packet, so
every name seen before a flow ended is there. It ends once every worker closed
its flow ring and the resolver said it is done (or the supervisor said one of
them is lost).
"""

import collections
import queue as queue_mod
import time
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from devourer.errors import EXIT_FAILURE, EXIT_OK
from devourer.counters import (CTL_REOPEN, E_BATCHES, E_FLOWS_WRITTEN, E_NAMES_CAPPED, E_NAMES_EVICTED, E_WAITING,
                               E_WRITE_FAILED, SINK_COUNTERS)
from devourer.flow import record as R
from devourer.ipc import wire
from devourer.names.observe import observations_of
from devourer.names.table import NameTable
from devourer.outputs import FlowBatch, PartialWrite, Sink, open_sink
from devourer.outputs.format import RecordFormatter
from devourer.procs.common import Idle, orphaned, run_child
from devourer.procs.report import Reason, Reporter, Role
from devourer.settings import Settings

if TYPE_CHECKING:
    from devourer.engine.topology import Topology

TICK_S = 0.25
#: rows a sink holds unsettled that bring its tick forward (a sink that makes rows durable at its tick, the
#: store, would otherwise hold a quarter second of rows, and a busy worker's flow ring fills: 65,536 rows)
EARLY_TICK_ROWS = 1 << 14
READ_ROWS = 4096  # rows taken from a flow ring at a time


class CounterView:
    """Named access to the exporter's shared counters, for the output sinks."""

    def __init__(self, array, names: dict[str, int]):
        self.array, self.names = array, names

    def __getitem__(self, name: str) -> int:
        return int(self.array[self.names[name]])

    def __setitem__(self, name: str, value: int) -> None:
        self.array[self.names[name]] = value


class _Taken:
    """Rows read from a flow ring in one go; freed there once settled (the output has them for good)."""

    __slots__ = ("count", "settled")

    def __init__(self, count: int):
        self.count, self.settled = count, False


class ExporterLoop:
    def __init__(self, sink: Sink, sensor: str, in_queue, flow_rings, counters, parent_pid: int, report,
                 names: NameTable | None = None, resolver_id: int | None = None, keep_going: bool = False,
                 reopen_requested=lambda: 0, interfaces: tuple = (), community_seed: int = 0):
        self.sink = sink
        self.reopen_requested = reopen_requested  # a count the supervisor raises on SIGHUP
        self.reopened = reopen_requested()
        # keep_going (live capture to a file): an output that fails (disk full) costs the flows of that moment,
        # counted, and writing resumes once it works again; otherwise the first failure ends the run
        self.keep_going = keep_going
        self.lost_while_down: int | None = None
        self.output_closed = False  # the reader of the output pipe went away
        self.formatter = RecordFormatter(sensor, interfaces, community_seed)
        # the queue, or a callable giving the current one: a restarted resolver writes to a fresh queue
        self.current_queue = in_queue if callable(in_queue) else (lambda: in_queue)
        self.flow_rings = list(flow_rings)
        self.waiting_for = set(range(len(self.flow_rings)))
        self.counters = counters
        self.parent_pid = parent_pid
        self.report = report
        self.failed = False
        self.names = names
        self.resolver_id = resolver_id
        if names is not None and resolver_id is not None:
            self.waiting_for.add(resolver_id)
            self.watermark = -1
        else:
            self.watermark = wire.WATERMARK_DONE
        self.held: collections.deque = collections.deque()  # (last packet time, rows, _Taken) awaiting the watermark
        # Rows stay in their flow ring until the output has them for good (written, sent or spooled), so an
        # exporter that dies loses none: a successor reads them again. Per ring: slots read but not yet freed,
        # and what was read, in ring order; and what the sink holds unsettled, in the order it got them.
        self.peeked = [0] * len(self.flow_rings)
        self.taken: list[collections.deque] = [collections.deque() for _ in self.flow_rings]
        self.handed: collections.deque = collections.deque()
        self.handed_rows = 0

    def take_rows(self, rows: np.ndarray, ring: int | None = None) -> None:
        """Expired flow rows (k, FLOW_WORDS) from a worker('s flow ring): held until the watermark passes them."""
        taken = None
        if ring is not None:
            taken = _Taken(len(rows))
            self.taken[ring].append(taken)
        self.held.append((int(rows[:, R.F_LAST].max()), rows, taken))
        self.counters[E_WAITING] += len(rows)
        self._release()

    def handle(self, message: bytes) -> None:
        """A message from the queue: names from the resolver, or done/lost."""
        match wire.decode(message):
            case wire.Names(watermark, rows):
                for ts, obs in observations_of(rows):
                    self.names.observe(ts, obs)
                self.counters[E_NAMES_EVICTED] = self.names.evicted
                self.counters[E_NAMES_CAPPED] = self.names.capped
                self.watermark = max(self.watermark, watermark)
            case wire.Done(sender) | wire.Lost(sender):
                self.waiting_for.discard(sender)
                if sender == self.resolver_id:
                    self.watermark = wire.WATERMARK_DONE
        self._release()

    def _release(self) -> None:
        """Write every held batch whose flows all ended before the watermark."""
        ready = [(rows, taken) for last, rows, taken in self.held if last <= self.watermark]
        if not ready:
            return
        self.held = collections.deque(entry for entry in self.held if entry[0] > self.watermark)
        rows = np.concatenate([r for r, _ in ready]) if len(ready) > 1 else ready[0][0]
        self.counters[E_WAITING] -= len(rows)
        self._write(rows)
        for _, taken in ready:
            if taken is not None:
                self.handed.append(taken)
                self.handed_rows += taken.count
        self._settle()

    def _settle(self) -> None:
        """Free in the flow rings the rows the sink no longer holds in memory (after a failure: all; they are
        counted as lost)."""
        unsettled = 0 if self.failed else self.sink.unsettled()
        while self.handed and self.handed_rows - self.handed[0].count >= unsettled:
            taken = self.handed.popleft()
            self.handed_rows -= taken.count
            taken.settled = True
        for i, queue in enumerate(self.taken):
            while queue and queue[0].settled:
                taken = queue.popleft()
                self.flow_rings[i].release(taken.count)
                self.peeked[i] -= taken.count

    def _write(self, rows) -> None:
        if self.failed:
            self.counters[E_WRITE_FAILED] += len(rows)
            return
        try:
            for start in range(0, len(rows), 4096):
                self.sink.write(FlowBatch(self.formatter, rows[start:start + 4096], self.names))
            self.sink.flush()
        except BrokenPipeError:
            self._closed(len(rows))
            return
        except OSError as e:
            kept = e.lines if isinstance(e, PartialWrite) else 0  # whole lines that are in the file all the same
            self.counters[E_FLOWS_WRITTEN] += kept
            rows = rows[kept:]
            self.counters[E_WRITE_FAILED] += len(rows)
            if not self.keep_going:
                self.failed = True
                self.report(f"cannot write output: {e.strerror or e}", "error", Reason.OUTPUT_FAILED)
            elif self.lost_while_down is None:
                self.lost_while_down = 0
                self.report(f"output failing: {e.strerror or e}; flows are counted as lost until it can be "
                            "written again", "error")
            if self.lost_while_down is not None:
                self.lost_while_down += len(rows)
            return
        if self.lost_while_down is not None:
            self.report(f"output works again; {self.lost_while_down:,} flows were lost meanwhile", "warning")
            self.lost_while_down = None
        self.counters[E_FLOWS_WRITTEN] += len(rows)
        self.counters[E_BATCHES] += 1
        if self.names is not None:
            self.counters[E_NAMES_CAPPED] = self.names.capped

    def _reopen(self) -> None:
        self.reopened = self.reopen_requested()
        try:
            self.sink.reopen()
        except OSError as e:
            self.report(f"cannot reopen the output after SIGHUP: {e.strerror or e}; writing on to the file open "
                        "before", "error")

    def _drain_rings(self, buf: np.ndarray) -> bool:
        """Take every row the workers wrote so far; a worker whose ring is closed and empty is done."""
        slots = buf.view(np.uint8).reshape(len(buf), -1)
        got = False
        for i, ring in enumerate(self.flow_rings):
            closed = ring.closed()  # read first: once closed, what is in the ring is all there will be
            while n := ring.peek_into(slots, self.peeked[i]):
                self.peeked[i] += n
                self.take_rows(buf[:n].copy(), i)
                got = True
            if closed and i in self.waiting_for and ring.pending() == self.peeked[i]:
                self.waiting_for.discard(i)
        return got

    def _drain_queue(self) -> bool:
        got = False
        while True:
            try:
                message = self.current_queue().get_nowait()
            except queue_mod.Empty:
                return got
            self.handle(message)
            got = True

    def run(self) -> int:
        buf = np.empty((READ_ROWS, R.FLOW_WORDS), np.uint64)
        last_tick = time.monotonic()
        idle = Idle()
        while self.waiting_for:
            got = self._drain_rings(buf)
            got = self._drain_queue() or got
            if self.reopen_requested() != self.reopened:
                self._reopen()
            since = time.monotonic() - last_tick
            if since >= TICK_S or (since >= TICK_S / 10 and self.sink.unsettled() >= EARLY_TICK_ROWS):
                # time-bound batches and spool replay go on, also while rows keep coming
                try:
                    self.sink.tick()
                except OSError as e:
                    self._sink_failed(e)
                self._settle()
                last_tick = time.monotonic()
            if got:
                idle.worked()
                continue
            if orphaned(self.parent_pid):
                return EXIT_FAILURE
            idle.wait()
        self.watermark = wire.WATERMARK_DONE
        self._release()
        try:
            self.sink.flush()
            self.sink.close()
        except OSError as e:
            self._sink_failed(e)
        self._settle()
        return EXIT_OK if self.output_closed or not self.failed else EXIT_FAILURE

    def _closed(self, rows: int) -> None:
        """The reader of the output pipe went away (``| head``): nothing more can be written, which is what the
        reader wanted, so the run ends quietly (the rows not written are counted, as for a failure)."""
        self.counters[E_WRITE_FAILED] += rows
        if not self.failed:
            self.failed = self.output_closed = True
            self.report("the reader of the output went away (a closed pipe)", "debug", Reason.OUTPUT_CLOSED)

    def _sink_failed(self, e: OSError) -> None:
        """The sink failed outside a write (its tick or its close): what it held and had not made durable
        (``unsettled``) is lost, and the output is given up."""
        lost = 0 if self.failed else self.sink.unsettled()
        self.counters[E_FLOWS_WRITTEN] -= lost
        self.counters[E_WRITE_FAILED] += lost
        if not self.failed:
            self.report(f"cannot write output: {e.strerror or e}", "error", Reason.OUTPUT_FAILED)
        self.failed = True


def main(topo: "Topology", settings: Settings) -> NoReturn:
    """The exporter's process; ``settings`` are the only ones that hold the BigQuery key."""
    report = Reporter(topo.reports, Role("exporter"))

    def body(parent: int) -> int:
        sink = open_sink(settings, report, CounterView(topo.exporter_counters, SINK_COUNTERS))
        names = NameTable(settings.max_names, settings.name_lifetime_s) if settings.resolve_names else None
        return ExporterLoop(sink, settings.sensor_id, lambda: topo.export_queue, topo.flow_rings,
                            topo.exporter_counters, parent, report, names, topo.resolver_id,
                            keep_going=settings.live and settings.output == "file",
                            reopen_requested=lambda: int(topo.control[CTL_REOPEN]),
                            interfaces=settings.interface_labels,
                            community_seed=settings.community_id_seed).run()

    run_child(Role("exporter"), body, topo.reports, lambda: ([topo.export_queue], []))
