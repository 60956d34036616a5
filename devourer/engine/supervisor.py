"""The supervisor: spawns the children, reaps them, restarts what may be restarted, stops the run.

Modelled on gunicorn's arbiter: signal handlers only record the signal; one loop reacts to signals, reaps
children, writes their reports and prints statistics. Getting ready (``engine.startup``), the children's
bodies (``procs``) and the numbers (``engine.summary``) live elsewhere. Shutdown is an orderly drain --
capture stops reading and closes the rings, workers flush every flow, the exporter writes them, then
everyone exits -- bounded by ``--shutdown-timeout``, after which stragglers are killed.

Exit status: EXIT_OK when every process ended cleanly (also after SIGTERM/SIGINT, or a closed pipe), EXIT_DAMAGED
when a capture file was damaged (flows before it written), EXIT_FAILURE when a child died or the output failed."""

import dataclasses
import gc
import os
import queue as queue_mod
import signal
import time
from typing import Callable

import multiprocess.connection

from devourer import logs
from devourer.counters import CTL_ABORT, CTL_EXPORTER_GONE, CTL_REOPEN, CTL_STOP
from devourer.engine import progress, startup, summary
from devourer.engine.metrics import MetricsServer
from devourer.engine.progress import ProgressBar
from devourer.engine.restarts import Restarts, count_flows_lost
from devourer.engine.topology import Topology, remove_stale_segments
from devourer.errors import EXIT_DAMAGED, EXIT_FAILURE, EXIT_OK
from devourer.ipc import wire
from devourer.outputs import check_output
from devourer.procs import capture, exporter, planner, resolver, worker
from devourer.procs.report import Reason, Report, Role
from devourer.settings import Settings

TICK_S = 0.1


@dataclasses.dataclass
class Child:
    """A process of the run: its role, the ``main(topo, settings, *args)`` it runs, and the process now."""

    role: Role
    main: Callable
    args: tuple = ()
    process: object = None
    reaped: bool = False


class Supervisor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.signals: list[int] = []
        self.children: dict[Role, Child] = {}
        self.stopping_since: float | None = None
        self.last_nudge = 0.0
        self.damaged = False
        self.failed = False
        self.restarts: Restarts | None = None
        self.progress: ProgressBar | None = None
        self.metrics: MetricsServer | None = None
        self.workers_died = False  # a worker died: the packets it had not counted are "lost with dead workers"
        self.capture_died = False  # the batch it had decoded but not handed on is abandoned
        self.output_closed = False  # the reader of standard output went away: the run ends quietly, exit 0

    def _say(self, text: str, level: str = "error", role: str = logs.SUPERVISOR, pid: int | None = None,
             **fields) -> None:
        """One line of the log, when it happens (an outage should be seen while it lasts)."""
        if self.progress is not None and logs.logs_to_stderr():
            with self.progress.writing():
                logs.emit(level, text, role, pid, **fields)
        else:
            logs.emit(level, text, role, pid, **fields)

    # ---- the run
    def run(self) -> int:
        startup.refuse_unordered_cpu()
        signal.signal(signal.SIGHUP, self._on_signal)  # from the start: a hangup during start-up loses nothing either
        sources = capture.open_sources(self.settings)
        self.settings = dataclasses.replace(self.settings, interface_labels=capture.interface_labels(sources))
        settings = self.settings = startup.read_key_file(startup.choose_readers(self.settings, self._say))
        check_output(settings, warn=lambda text: self._say(text, "warning"))
        if settings.metrics_port:
            self.metrics = MetricsServer(settings)
        startup.warm_up(settings)
        gc.freeze()  # what exists now lives for the whole run: no collection in any process walks it again
        gc.enable()
        if stale := remove_stale_segments():  # before --user: a dead root run's segments are root's
            self._say(f"removed {len(stale)} shared-memory segment(s) left by a killed run "
                      f"(/dev/shm/{stale[0]}{', ...' if len(stale) > 1 else ''})", "warning")
        self.settings = startup.drop_privileges(settings, self._say)
        topo = Topology(self.settings)
        self.restarts = Restarts(topo, lambda role: self._spawn(topo, self.children[role]).process.pid, self._say)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_signal)
        try:
            for child in self._children(topo, sources):
                self._spawn(topo, child)
            topo.unlink()  # children hold the mappings now; nothing of ours stays in /dev/shm
            if self.metrics is not None:  # after the fork: children get no copy of the thread
                self.metrics.start(topo)
            if progress.wanted(self.settings):
                self.progress = ProgressBar(progress.input_size(self.settings.read_files))
            self._loop(topo)
        finally:
            self._clean_up(topo)
        self._drain_reports(topo)
        if self.failed or not self.output_closed:  # a closed pipe (| head) ends without one, as tcpdump ends
            summary.say_final(self._say, topo, self.workers_died, self.capture_died, self.failed,
                              self.settings.output == "bigquery")
        return EXIT_FAILURE if self.failed else EXIT_DAMAGED if self.damaged else EXIT_OK

    def _loop(self, topo: Topology) -> None:
        interval = self.settings.stat_interval_s
        last_stats_t = time.monotonic()
        prev = summary.totals(topo)
        while True:
            while self.signals:
                if self.signals.pop(0) == signal.SIGHUP:
                    self._on_hangup(topo)
                else:
                    self._request_stop(topo)
            everyone_done = all(c.process.exitcode is not None for c in self.children.values())
            self._reap(topo)  # after the check: a child that ended in between is still reaped
            self._drain_reports(topo)
            if everyone_done:
                return
            now = time.monotonic()
            if self.stopping_since is not None and now - self.last_nudge > 1.0:
                self._nudge_capture()
            if self.stopping_since is not None and now - self.stopping_since > self.settings.shutdown_timeout_s:
                self._say(f"shutdown took longer than {self.settings.shutdown_timeout_s:g}s; killing what is left")
                self.failed = True
                self._kill_all()
                continue
            if self.progress is not None:
                self.progress.update(*summary.progress(topo))
            if self._counted_enough(topo):
                self._request_stop(topo)
            if interval > 0 and now - last_stats_t >= interval:
                cur = summary.totals(topo, self.workers_died)
                self._say(summary.stats_line(prev, cur, now - last_stats_t), "info", **summary.log_fields(cur))
                prev, last_stats_t = cur, now
            # wake at once when a child ends (its sentinel), else after a tick
            multiprocess.connection.wait([c.process.sentinel for c in self.children.values()
                                          if c.process.exitcode is None], timeout=TICK_S)

    def _counted_enough(self, topo: Topology) -> bool:
        """--count live with several readers: each reads its share of the flows, so the run stops once they read
        N in all (a reader stops by itself otherwise)."""
        s = self.settings
        return (bool(s.count) and s.live and s.capture_processes > 1 and self.stopping_since is None
                and summary.packets_read(topo.capture_counters) >= s.count)

    def _clean_up(self, topo: Topology) -> None:
        topo.unlink()
        self._kill_all(wait_s=5)
        if self.progress is not None:
            self.progress.update(*summary.progress(topo))
            self.progress.close()
            self.progress = None
        if self.metrics is not None:
            self.metrics.close()
        for q in topo.export_queues:  # never wait at exit on a queue whose reader or lock holder is dead
            q.cancel_join_thread()

    # ---- signals: handlers only record
    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _on_hangup(self, topo: Topology) -> None:
        """SIGHUP (a closed terminal, logrotate's postrotate, an operator's reload) stops nothing and loses
        nothing: the log file and the output file are reopened, as daemons do after their files were moved."""
        logs.reopen()
        topo.control[CTL_REOPEN] += 1  # the exporter reopens its output file
        self._say("SIGHUP: log and output files reopened; capture goes on", "info")

    # ---- spawn
    def _children(self, topo: Topology, sources) -> list[Child]:
        """Every process of the run, the exporter first (it is ready to write before anything ends)."""
        children = [Child(Role("exporter"), exporter.main)]
        children += [Child(Role("worker", i), worker.main, (i,)) for i in range(topo.n_workers)]
        if topo.name_ring is not None:
            children.append(Child(Role("resolver"), resolver.main))
        if topo.n_readers == 1:
            return children + [Child(Role("capture"), capture.main, (sources,))]
        if not self.settings.live:
            children.append(Child(Role("planner"), planner.main, (sources,)))
        return children + [Child(Role("capture", k), capture.main, (sources, k)) for k in range(topo.n_readers)]

    def _spawn(self, topo: Topology, child: Child) -> Child:
        # only the exporter talks to BigQuery: the processes that parse packets get no key material
        settings = (self.settings if child.role.kind == "exporter"
                    else dataclasses.replace(self.settings, bigquery_sa_key_data=None))
        child.process = topo.ctx.Process(target=child.main, args=(topo, settings, *child.args),
                                         name=f"devourer-{child.role.process_name}")
        child.process.start()
        child.reaped = False
        self.children[child.role] = child
        return child

    # ---- reap
    def _reap(self, topo: Topology) -> None:
        for child in list(self.children.values()):
            if child.process.exitcode is not None and not child.reaped:
                child.reaped = True
                self._on_exit(topo, child.role, child.process.pid, child.process.exitcode)

    def _on_exit(self, topo: Topology, role: Role, pid: int, code: int) -> None:
        if role.kind == "capture":
            k = role.index or 0
            for r in (*topo.reader_rings[k], *topo.name_rings[k:k + 1]):
                r.close_producer()  # whatever happened, workers must see the end of their input
        if role.kind in ("capture", "planner") and code == EXIT_DAMAGED:
            self.damaged = True
            return
        if code == 0:
            return
        self.capture_died |= role.kind == "capture"
        self.workers_died |= role.kind == "worker"
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        if self.settings.live and self.stopping_since is None and self.restarts.carry_on_without(role, pid, how):
            return
        if role.kind == "worker":  # the flows it held go with it (a restarted worker's are counted there)
            count_flows_lost(topo, role.index)
        self._drain_reports(topo)  # its last words (the cause: "cannot write output: ...") before its death
        self._say(f"{role} (pid {pid}) {how}")
        self.failed = True
        if role.kind == "exporter":
            topo.control[CTL_EXPORTER_GONE] = 1  # the resolver stops waiting for room in its queue
        elif role.kind == "worker":
            self._tell_exporter(topo, wire.lost(role.index))
        elif role.kind == "resolver":
            self._tell_exporter(topo, wire.lost(topo.resolver_id))
        self._abort(topo)

    def _tell_exporter(self, topo: Topology, message: bytes) -> None:
        """Put a message on the export queue without ever blocking the supervisor: a queue nobody reads (the
        exporter died too) is given up on."""
        exporter_child = self.children.get(Role("exporter"))
        while exporter_child is not None and exporter_child.process.exitcode is None:
            try:
                topo.export_queue.put(message, timeout=TICK_S)
                return
            except queue_mod.Full:
                continue

    # ---- stop
    def _request_stop(self, topo: Topology) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            topo.control[CTL_STOP] = 1
            self._nudge_capture()

    def _nudge_capture(self) -> None:
        """SIGTERM the capture processes: it interrupts a read blocked on a pipe. Repeated while stopping, in
        case the first one landed just before the read began."""
        for child in self.children.values():
            if child.role.kind == "capture" and child.process.exitcode is None:
                try:
                    os.kill(child.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self.last_nudge = time.monotonic()

    def _abort(self, topo: Topology) -> None:
        topo.control[CTL_ABORT] = 1
        self._request_stop(topo)

    def _kill_all(self, wait_s: float = 0.0) -> None:
        for child in self.children.values():
            if child.process.exitcode is None:
                child.process.kill()
                if wait_s:
                    child.process.join(wait_s)

    # ---- reports
    def _drain_reports(self, topo: Topology) -> None:
        while True:
            try:
                report: Report = topo.reports.get_nowait()
            except (queue_mod.Empty, OSError, ValueError):
                return
            self._say(report.text, report.level, str(report.role), report.pid)
            if report.reason is Reason.OUTPUT_CLOSED:  # | head got what it wanted: stop, say nothing
                self.output_closed = True
                self._abort(topo)
            if report.reason is Reason.OUTPUT_FAILED:  # the output is gone: reading on would only count losses
                if (not self.failed and self.stopping_since is None and not self.settings.live
                        and any(c.role.kind == "capture" and c.process.exitcode is None
                                for c in self.children.values())):
                    self._say("stopped reading the input: the flows of the packets read so far are written or counted "
                              "as lost; the rest of the input is not read")
                self.failed = True
                self._abort(topo)


def run(settings: Settings) -> int:
    return Supervisor(settings).run()
