"""Which dead child a live capture carries on without, and how: the restart policy.

A replay never carries on (its records must be whole: the run fails and says what was lost). Live capture
outlives a dead worker (restarted at once, at most ``MAX_RESTARTS`` times in ``RESTART_WINDOW_S``, so a
crash loop ends the run; the flows it held are lost and counted) and a dead exporter or resolver (restarted
together on the next export queue, since the dead one may have held the queue's lock or left half a
message). When those restarts are used up, a dead resolver still leaves capture running, without new names.
"""

import time
from typing import Callable

from devourer.counters import CTL_CHANNEL_GEN, CTL_FLOWS_LOST, CTL_RESTARTS, E_WAITING, K_ACTIVE
from devourer.ipc import wire
from devourer.procs.report import Role

MAX_RESTARTS = 5  # restarts of one worker within RESTART_WINDOW_S before the run gives up (no crash loop)
RESTART_WINDOW_S = 60.0


def count_flows_lost(topo, index: int) -> int:
    """The flows a dead worker held are lost (counted); its counter region starts again from zero."""
    counters = topo.worker_counters[index]
    lost = int(counters[K_ACTIVE])
    counters[K_ACTIVE] = 0
    topo.control[CTL_FLOWS_LOST] += lost
    return lost


class Restarts:
    """``respawn(role)`` starts a successor under the same role and gives its pid; ``say(text)`` logs."""

    def __init__(self, topo, respawn: Callable[[Role], int], say):
        self.topo, self.respawn, self.say = topo, respawn, say
        self.times: dict[Role, list[float]] = {}  # when each worker was restarted, within the window
        self.resolver_lost = False

    def carry_on_without(self, role: Role, pid: int, how: str) -> bool:
        """True if the run goes on after ``role`` (pid) died (``how``: killed or exited); live capture only."""
        if role.kind == "worker":
            return self._restart_worker(role, pid, how)
        if role.kind in ("exporter", "resolver") and self._restart_on_new_channel(role, pid, how):
            return True
        if role.kind == "resolver":
            self.resolver_lost = True
            self.topo.export_queue.put(wire.lost(self.topo.resolver_id))  # the exporter stops waiting for names
            self.say(f"resolver (pid {pid}) {how}; capture goes on without new names (name packets are dropped "
                     "and counted)")
            return True
        return False

    def _restart_worker(self, role: Role, pid: int, how: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self.times.get(role, []) if now - t < RESTART_WINDOW_S]
        if len(recent) >= MAX_RESTARTS:
            self.say(f"{role} died {MAX_RESTARTS + 1} times in {RESTART_WINDOW_S:g}s; giving up")
            return False
        self.times[role] = [*recent, now]
        lost = count_flows_lost(self.topo, role.index)
        self.topo.control[CTL_RESTARTS] += 1
        fresh = self.respawn(role)
        self.say(f"{role} (pid {pid}) {how}; restarted as pid {fresh}; the {lost:,} flows it held are lost "
                 "(counted)")
        return True

    def _restart_on_new_channel(self, role: Role, pid: int, how: str) -> bool:
        """Restart the exporter or the resolver, the two moving to the next export queue. A dead exporter loses
        no flow: rows stay in the flow rings until they are written, sent or spooled, so the new one writes what
        the old one held (a record written just before the death can come twice, with the same id); names are
        learned anew. A dead resolver loses the name packets it had taken and the observations on their way."""
        topo = self.topo
        if topo.channel_generation + 1 >= len(topo.export_queues):
            self.say(f"{role} (pid {pid}) {how}; {len(topo.export_queues) - 1} restarts of the exporter and "
                     "resolver already")
            return False
        topo.control[CTL_CHANNEL_GEN] += 1
        if role.kind == "exporter":
            topo.exporter_counters[E_WAITING] = 0  # the successor counts what it holds itself
            if self.resolver_lost:
                topo.export_queue.put(wire.lost(topo.resolver_id))
        fresh = self.respawn(role)
        what = ("the flows it held are written by the new one (a few may be written twice, with the same id); "
                "names are learned anew" if role.kind == "exporter" else "the name packets it had taken are lost")
        self.say(f"{role} (pid {pid}) {how}; restarted as pid {fresh}; {what}")
        return True
