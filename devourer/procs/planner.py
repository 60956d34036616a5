"""The planner process (replay with ``--readers N``): cuts the capture files into chunks and deals them out.

``packet.chunks.plan`` finds the chunk boundaries (and the fragment state each chunk starts with); this
process puts chunk ``c`` on reader ``c % N``'s queue, a few ahead of each reader, so the readers work in
parallel while their rings still hand the workers the packets in file order (``ipc.ordered``). Damage
found while planning is reported, and the run ends with EXIT_DAMAGED after every chunk before it.
"""

import dataclasses
import queue as queue_mod
from typing import TYPE_CHECKING, NoReturn

from devourer.counters import CTL_ABORT, CTL_STOP
from devourer.errors import EXIT_DAMAGED, EXIT_OK
from devourer.packet.chunks import Damage, plan
from devourer.procs.common import run_child
from devourer.procs.report import Reporter, Role
from devourer.settings import Settings

if TYPE_CHECKING:
    from devourer.engine.topology import Topology
    from devourer.procs.capture import Source

WAIT_S = 0.1  # how often a wait on a full (or empty) chunk queue looks whether the run stops


def next_chunk(chunks, stop_requested):
    """A reader's next chunk from the planner, or None when there are no more (or the run stops)."""
    while not stop_requested():
        try:
            return chunks.get(timeout=WAIT_S)
        except queue_mod.Empty:
            continue
    return None


def deal(settings: Settings, sources: list["Source"], topo: "Topology", report) -> int:
    """Cut the files into chunks and deal them to the readers in turn; None on every queue at the end. With
    --count the chunk that holds the last packet to read is cut there, and no chunk follows it."""
    code, n, packets = EXIT_OK, 0, 0
    stopping = lambda: bool(topo.control[CTL_STOP] or topo.control[CTL_ABORT])  # noqa: E731

    def put(q, item) -> bool:
        while not stopping():
            try:
                q.put(item, timeout=WAIT_S)
                return True
            except queue_mod.Full:
                continue
        return False

    for item in plan([s.path for s in sources], [s.datalink for s in sources], settings.chunk_packets,
                     settings.batch_packets, settings.decapsulate):
        if isinstance(item, Damage):
            report(f"capture file {sources[item.source].name} is damaged at byte {item.offset} (a record is "
                   "cut short or impossible); every complete packet before it was counted", "error")
            code = EXIT_DAMAGED
            continue
        last = bool(settings.count) and packets + item.packets >= settings.count
        if last:
            item = dataclasses.replace(item, packets=settings.count - packets)
        if not put(topo.chunk_queues[n % len(topo.chunk_queues)], item):
            break
        n, packets = n + 1, packets + item.packets
        if last:
            break
    for q in topo.chunk_queues:
        if not put(q, None):
            q.cancel_join_thread()  # the readers stop on their own; what is queued is not needed
    return code


def main(topo: "Topology", settings: Settings, sources: list["Source"]) -> NoReturn:
    """The planner's process; its reports read as the capture's (the files are the capture's)."""
    run_child(Role("planner"), lambda parent: deal(settings, sources, topo, Reporter(topo.reports, Role("capture"))),
              topo.reports, lambda: (topo.chunk_queues, []))
