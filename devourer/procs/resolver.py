"""The resolver process: name-resolution packets in, timed name observations out.

Capture copies every packet that may carry names (with its packet record) into
the resolver's ring; ``names.observe.NameExtractor`` is the core that turns such slots into
``Observation``s, and ``ResolverLoop`` sends them to the exporter together with
a watermark: the capture clock up to which every name packet has been handled.
The exporter enriches a flow only once the watermark has passed the flow's last
packet, so replays give the same names whatever the timing.
"""

import time
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from devourer.errors import EXIT_FAILURE, EXIT_OK
from devourer.counters import CTL_EXPORTER_GONE
from devourer.ipc import wire
from devourer.ipc.ordered import OrderedRings
from devourer.names.observe import NameExtractor
from devourer.packet import layout as L
from devourer.procs.common import Idle, orphaned, put_until, run_child
from devourer.procs.report import Role
from devourer.settings import Settings

if TYPE_CHECKING:
    from devourer.engine.topology import Topology

GATHER_S = 0.002  # pause after a small read, so the loop runs per batch rather than per packet
SEND_EVERY_S = 0.02  # observations and watermark go out at most this often (and at the end)


class ResolverLoop:
    """``out_queue``: the exporter's queue, or a callable giving the current one (the exporter may be restarted
    with a new queue; what was sent to the old one is lost with it)."""

    def __init__(self, rings, out_queue, counters, parent_pid: int, resolver_id: int, batch_slots: int = 256,
                 ordered: bool = True, give_up=lambda: False):
        self.input = OrderedRings(rings if isinstance(rings, (list, tuple)) else [rings], L.RING_FRAMING, ordered)
        self.current_queue = out_queue if callable(out_queue) else (lambda: out_queue)
        self.core = NameExtractor(counters)
        self.parent_pid = parent_pid
        self.resolver_id = resolver_id
        self.buf = np.zeros((batch_slots, L.NAME_SLOT_BYTES), np.uint8)
        self.pending: list = []
        self.sent_wm = -1
        self.give_up = give_up  # the run failed: stop waiting for room in the queue (its reader may be dead)

    def _send(self, message: bytes) -> bool:
        queue = self.current_queue()
        return put_until(queue, message, lambda: orphaned(self.parent_pid) or self.current_queue() is not queue
                         or self.give_up())

    def _flush(self, watermark: int) -> None:
        if self.pending or watermark > self.sent_wm:
            self._send(wire.names([(ts, *o) for ts, o in self.pending], watermark))
            self.pending = []
            self.sent_wm = watermark

    def run(self) -> int:
        idle = Idle()
        last_send = time.monotonic()
        while True:
            clock = self.input.clock_us()  # read first: every name packet up to it is then in or behind us
            n, chunk_ended = self.input.read_into(self.buf)
            if n:
                self.pending.extend(self.core.slots(self.buf[:n]))
            if chunk_ended:
                continue
            if n:
                idle.worked()
                if len(self.pending) > 2000 or time.monotonic() - last_send > SEND_EVERY_S:
                    self._flush(self.sent_wm)
                    last_send = time.monotonic()
                if n < len(self.buf) // 4 and len(self.input.rings) == 1 and not self.input.finished():
                    # a trickle: let a batch gather (the ring holds thousands) rather than wake per packet
                    time.sleep(GATHER_S)
                continue
            if self.input.finished():
                break
            if orphaned(self.parent_pid):
                return EXIT_FAILURE
            if time.monotonic() - last_send > SEND_EVERY_S:
                self._flush(clock)  # drained: everything up to clock is handled
                last_send = time.monotonic()
            idle.wait()
        self._flush(wire.WATERMARK_DONE)
        self._send(wire.done(self.resolver_id))
        return EXIT_OK


def main(topo: "Topology", settings: Settings) -> NoReturn:
    """The resolver's process. It sends to the export queue of the current channel; when the exporter died
    and none follows, nobody reads that queue any more and what is on it is abandoned."""
    unread = lambda: bool(topo.control[CTL_EXPORTER_GONE])  # noqa: E731

    def body(parent: int) -> int:
        return ResolverLoop(topo.name_rings, lambda: topo.export_queue, topo.resolver_counters, parent,
                            topo.resolver_id, ordered=not settings.live, give_up=unread).run()

    def queues():
        current = [] if unread() else [topo.export_queue]
        return current, [q for q in topo.export_queues if q not in current]

    run_child(Role("resolver"), body, topo.reports, queues)
