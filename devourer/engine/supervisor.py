"""The supervisor: opens sources, builds the topology, runs and stops the children.

Modelled on gunicorn's arbiter: signal handlers only record the signal; one
loop reacts to signals, reaps children and prints statistics. Shutdown is an
orderly drain -- capture stops reading and closes the rings, workers flush
every flow, the exporter writes them, then everyone exits -- bounded by
``--shutdown-timeout`` after which stragglers are killed.

Exit status: 0 when every process ended cleanly (also after SIGTERM/SIGINT),
EXIT_DAMAGED when a capture file was damaged (flows before the damage are
written), EXIT_FAILURE when a child died or the output failed.
"""

import dataclasses
import gc
import os
import queue as queue_mod
import signal
import time

import multiprocess.connection

from devourer import jitcache, logs
from devourer.engine import progress
from devourer.engine.metrics import MetricsServer
from devourer.engine.progress import ProgressBar
from devourer.engine.topology import Topology, remove_stale_segments
from devourer.errors import EXIT_DAMAGED, EXIT_FAILURE, EXIT_OK, SourceError, UsageError
from devourer.flow import table as T
from devourer.ipc import wire
from devourer.names.table import NameTable
from devourer.outputs import check_output, open_sink
from devourer.packet import layout as L
from devourer.packet.chunks import Damage, chunkable, plan
from devourer.privileges import drop_to, read_private_file
from devourer.procs import capture as capture_proc
from devourer.procs.common import (CTL_ABORT, CTL_CHANNEL_GEN, CTL_EXPORTER_GONE, CTL_FLOWS_LOST, CTL_REOPEN,
                                   CTL_RESTARTS, CTL_STOP, become_child)
from devourer.procs.exporter import (E_BQ_REJECTED, E_BQ_SENT, E_BQ_SPOOL_DROPPED, E_BQ_SPOOL_SET_ASIDE, E_BQ_SPOOLED,
                                     E_FLOWS_WRITTEN, E_NAMES_CAPPED, E_NAMES_EVICTED, E_WAITING, E_WRITE_FAILED,
                                     SINK_COUNTERS, CounterView, ExporterLoop)
from devourer.procs.resolver import R_MALFORMED, R_OBSERVATIONS, ResolverLoop
from devourer.procs.worker import WorkerLoop
from devourer.settings import Settings

TICK_S = 0.1
MAX_RESTARTS = 5  # restarts of one worker within RESTART_WINDOW_S before the run gives up (no crash loop)
RESTART_WINDOW_S = 60.0


def _warm_up_planner() -> None:
    """The planner's fragment-only decoding (several readers only)."""
    import numpy as np

    from devourer.packet.decode import decode_batch, new_fragment_table

    window, meta, wire = np.zeros(64, np.uint8), np.zeros((1, 4), np.uint32), np.zeros(1, np.uint32)
    records = L.empty_records(1)
    decode_batch(window, meta[:0], wire[:0], 1, 262144, records, records.view(np.uint16), records.view(np.uint32),
                 records.view(np.uint64), np.zeros(1, np.int32), 1, new_fragment_table(16),
                 np.zeros(L.N_CAPTURE_COUNTERS, np.int64), np.zeros(1, np.int64), False, np.zeros((2, 3), np.int64),
                 True)


def _warm_up() -> None:
    """Compile (or load from cache) the hot loops once, before forking, so children inherit them: each called
    with the kinds of arrays it gets in the run (a differently typed call would load again, in the child)."""
    import numpy as np

    from devourer.flow.table import FlowTable
    from devourer.packet import capfile, chunks
    from devourer.packet.decode import BatchDecoder

    counters = np.zeros(L.N_CAPTURE_COUNTERS, np.int64)
    dec = BatchDecoder(4, 1, counters, want_names=True)
    pkt = bytes.fromhex("ffffffffffff0200000000010800450000280001000040060000c0a80001c0a80002" "0050d43100000000000000005002000000000000")
    meta = np.array([[1, 0, 0, len(pkt)]], np.uint32)
    n = dec.decode(pkt, meta.tobytes(), np.array([len(pkt)], np.uint32), 1, 262144)  # libpcap's bytes
    dec.name_packets()
    expired = []
    table = FlowTable(10**9, 10**9, 10, expired.append)
    table.ingest(dec.records[:n])  # and scans for idle flows
    table._grow()
    table.flush()
    from devourer.names.table import NameTable
    from devourer.outputs.format import RecordFormatter

    RecordFormatter("warm-up").lines(np.concatenate(expired), NameTable())

    window = np.frombuffer(pkt, np.uint8).copy()  # a classic pcap file's window, decoded in place
    wire = np.zeros(1, np.uint32)
    chunks.index_records(window, 0, True, 0, 0, False, False, 262144, 1, meta, wire)
    dec.decode(window, meta, wire, 1, 262144)
    dec.name_packets()
    out32, out64, state = np.zeros(1, np.uint32), np.zeros(1, np.int64), np.zeros(2, np.bool_)
    capfile.walk_pcapng(window, 0, True, 0, False, 1, 0, out32, out32.copy(), out64, state)


class Supervisor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.signals: list[int] = []
        self.children: dict[str, object] = {}
        self.exit_status = EXIT_OK
        self.stopping_since: float | None = None
        self.last_nudge = 0.0
        self.damaged = False
        self.failed = False
        self.restarts: dict[str, list[float]] = {}
        self.resolver_lost = False
        self.progress: ProgressBar | None = None
        self.metrics: MetricsServer | None = None
        self.workers_died = False  # a worker died: the packets it had not counted are "lost with dead workers"
        self.capture_died = False  # the batch it had decoded but not handed on is abandoned

    def _say(self, text: str, level: str = "error", role: str = logs.SUPERVISOR, pid: int | None = None,
             **fields) -> None:
        """One line of the log, when it happens (an outage should be seen while it lasts)."""
        if self.progress is not None and logs.logs_to_stderr():
            with self.progress.writing():
                logs.emit(level, text, role, pid, **fields)
        else:
            logs.emit(level, text, role, pid, **fields)

    # ---- signals: handlers only record
    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _install_signals(self) -> None:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_signal)

    def _on_hangup(self, topo: Topology) -> None:
        """SIGHUP (a closed terminal, logrotate's postrotate, an operator's reload) stops nothing and loses
        nothing: the log file and the output file are reopened, as daemons do after their files were moved."""
        logs.reopen()
        topo.control[CTL_REOPEN] += 1  # the exporter reopens its output file
        self._say("SIGHUP: log and output files reopened; capture goes on", "info")

    # ---- children
    def _start(self, topo: Topology, sources) -> None:
        ctx = topo.ctx
        keyed = self.settings
        # only the exporter talks to BigQuery: the processes that parse packets get no key material
        settings = dataclasses.replace(keyed, bigquery_sa_key_data=None)

        def reporter(role: str):
            def report(text: str, level: str = "warning") -> None:
                topo.reports.put((role, os.getpid(), level, text))
            return report

        def exporter_main():
            parent = become_child("exporter")
            sink = open_sink(keyed, reporter("exporter"), CounterView(topo.exporter_counters, SINK_COUNTERS))
            names = NameTable(settings.max_names, settings.name_lifetime_s) if settings.resolve_names else None
            loop = ExporterLoop(sink, settings.sensor_id, lambda: topo.export_queue, topo.flow_rings,
                                topo.exporter_counters, parent, reporter("exporter"), names, topo.resolver_id,
                                keep_going=settings.live and settings.output == "file",
                                reopen_requested=lambda: int(topo.control[CTL_REOPEN]))
            code = loop.run()
            for q in (topo.export_queue, topo.reports):  # os._exit skips the queues' feeder threads
                q.close()
                q.join_thread()
            os._exit(code)

        def worker_main(i: int):
            parent = become_child(f"worker-{i}")
            loop = WorkerLoop(i, settings, topo.worker_rings(i), topo.flow_rings[i], topo.worker_counters[i],
                              topo.control, parent)
            os._exit(loop.run())

        def resolver_main():
            parent = become_child("resolver")
            unread = lambda: bool(topo.control[CTL_EXPORTER_GONE])  # noqa: E731
            loop = ResolverLoop(topo.name_rings, lambda: topo.export_queue, topo.resolver_counters, parent,
                                topo.resolver_id, ordered=not settings.live, give_up=unread)
            code = loop.run()
            for q in topo.export_queues:  # flush to the current exporter; what a dead one left is abandoned
                q.close()
                if q is not topo.export_queue or unread():
                    q.cancel_join_thread()
            if not unread():
                topo.export_queue.join_thread()
            os._exit(code)

        def capture_main(k: int = 0):
            stop = {"flag": False}

            def on_term(signum, frame):
                stop["flag"] = True

            become_child("capture" if topo.n_readers == 1 else f"capture-{k}", on_term)
            stop_requested = lambda: stop["flag"] or bool(topo.control[CTL_STOP])  # noqa: E731
            loop = capture_proc.CaptureLoop(
                settings, topo.reader_rings[k], topo.reader_counters[k], stop_requested=stop_requested,
                abort_requested=lambda: bool(topo.control[CTL_ABORT]),
                report=reporter("capture"), name_ring=topo.name_rings[k] if topo.name_rings else None)
            if topo.n_readers == 1:
                code = loop.run(sources)
            elif settings.live:
                code = loop.run(sources[k:k + 1])
            else:
                code = loop.run_chunks(sources, lambda: _next_chunk(topo.chunk_queues[k], stop_requested))
            topo.reports.close()
            topo.reports.join_thread()
            os._exit(code)

        def planner_main():
            become_child("planner")
            code = _plan(settings, sources, topo, reporter("capture"))
            for q in (*topo.chunk_queues, topo.reports):
                q.close()
                q.join_thread()
            os._exit(code)

        self._mains = {"exporter": exporter_main, "resolver": resolver_main}
        self._worker_main = worker_main
        self.children["exporter"] = ctx.Process(target=exporter_main, name="devourer-exporter")
        for i in range(topo.n_workers):
            self.children[f"worker {i}"] = ctx.Process(target=worker_main, args=(i,), name=f"devourer-worker-{i}")
        if topo.name_ring is not None:
            self.children["resolver"] = ctx.Process(target=resolver_main, name="devourer-resolver")
        if topo.n_readers == 1:
            self.children["capture"] = ctx.Process(target=capture_main, name="devourer-capture")
        else:
            if not settings.live:
                self.children["planner"] = ctx.Process(target=planner_main, name="devourer-planner")
            for k in range(topo.n_readers):
                self.children[f"capture {k}"] = ctx.Process(target=capture_main, args=(k,),
                                                            name=f"devourer-capture-{k}")
        for p in self.children.values():
            p.start()

    def _request_stop(self, topo: Topology) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            topo.control[CTL_STOP] = 1
            self._nudge_capture()

    def _nudge_capture(self) -> None:
        """SIGTERM the capture process: it interrupts a read blocked on a pipe. Repeated
        while stopping, in case the first one landed just before the read began."""
        for cap in self._captures():
            if cap.exitcode is None:
                try:
                    os.kill(cap.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self.last_nudge = time.monotonic()

    def _captures(self) -> list:
        return [p for role, p in self.children.items() if role.startswith("capture")]

    def _abort(self, topo: Topology) -> None:
        topo.control[CTL_ABORT] = 1
        self._request_stop(topo)

    def _reap(self, topo: Topology) -> None:
        for role, p in self.children.items():
            if p.exitcode is None or getattr(p, "_devourer_seen", False):
                continue
            p._devourer_seen = True
            code = p.exitcode
            if role.startswith("capture"):
                k = 0 if role == "capture" else int(role.split()[1])
                for r in (*topo.reader_rings[k], *topo.name_rings[k:k + 1]):
                    r.close_producer()  # whatever happened, workers must see the end of their input
            if role.startswith("capture") or role == "planner":
                if code == EXIT_DAMAGED:
                    self.damaged = True
                    continue
            if code == 0:
                continue
            if role.startswith("capture"):
                self.capture_died = True
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if role.startswith("worker"):
                self.workers_died = True
            if self._carry_on_without(topo, role, p.pid, how):
                continue
            if role.startswith("worker"):  # the flows it held go with it (a restarted worker's are counted there)
                counters = topo.worker_counters[int(role.split()[1])]
                topo.control[CTL_FLOWS_LOST] += int(counters[T.K_ACTIVE])
                counters[T.K_ACTIVE] = 0
            self._say(f"{role} (pid {p.pid}) {how}")
            self.failed = True
            if role == "exporter":
                topo.control[CTL_EXPORTER_GONE] = 1  # the resolver stops waiting for room in its queue
            elif role.startswith("worker"):
                self._tell_exporter(topo, wire.lost(int(role.split()[1])))
            elif role == "resolver":
                self._tell_exporter(topo, wire.lost(topo.resolver_id))
            self._abort(topo)

    def _tell_exporter(self, topo: Topology, message: bytes) -> None:
        """Put a message on the export queue without ever blocking the supervisor: a queue nobody reads (the
        exporter died too) is given up on."""
        exporter = self.children.get("exporter")
        while exporter is not None and exporter.exitcode is None:
            try:
                topo.export_queue.put(message, timeout=TICK_S)
                return
            except queue_mod.Full:
                continue

    def _carry_on_without(self, topo: Topology, role: str, pid: int, how: str) -> bool:
        """Live capture outlives a dead worker (restarted at once; the flows it held are lost and counted), and a
        dead exporter or resolver (restarted on a new export queue). When the restarts are used up, a dead
        resolver still leaves capture running, without new names. True if handled. Replays never carry on:
        their records must be whole."""
        if not self.settings.live or self.stopping_since is not None:
            return False
        if role.startswith("worker"):
            now = time.monotonic()
            recent = [t for t in self.restarts.get(role, []) if now - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                self._say(f"{role} died {MAX_RESTARTS + 1} times in {RESTART_WINDOW_S:g}s; giving up")
                return False
            self.restarts[role] = [*recent, now]
            i = int(role.split()[1])
            counters = topo.worker_counters[i]
            lost = int(counters[T.K_ACTIVE])
            counters[T.K_ACTIVE] = 0  # the dead worker's region; its successor counts from here
            topo.control[CTL_FLOWS_LOST] += lost
            topo.control[CTL_RESTARTS] += 1
            fresh = self._respawn(topo, role, self._worker_main, i)
            self._say(f"{role} (pid {pid}) {how}; restarted as pid {fresh.pid}; the {lost:,} flows it held are lost "
                      "(counted)")
            return True
        if role in ("exporter", "resolver") and self._restart_on_new_channel(topo, role, pid, how):
            return True
        if role == "resolver":
            self.resolver_lost = True
            topo.export_queue.put(wire.lost(topo.resolver_id))  # the exporter stops waiting for names
            self._say(f"resolver (pid {pid}) {how}; capture goes on without new names (name packets are dropped "
                      "and counted)")
            return True
        return False

    def _respawn(self, topo: Topology, role: str, target, *args):
        """Start a successor for a child that died, under the same role."""
        fresh = topo.ctx.Process(target=target, args=args, name=f"devourer-{role.replace(' ', '-')}")
        fresh.start()
        self.children[role] = fresh
        return fresh

    def _restart_on_new_channel(self, topo: Topology, role: str, pid: int, how: str) -> bool:
        """Restart the exporter or the resolver, the two moving to the next export queue (the dead one may have
        held its lock or left half a message). A dead exporter loses no flow: rows stay in the flow rings until
        they are written, sent or spooled, so the new one writes what the old one held (a record written just
        before the death can come twice, with the same id); names are learned anew. A dead resolver loses the
        name packets it had taken and the observations on their way."""
        if topo.channel_generation + 1 >= len(topo.export_queues):
            self._say(f"{role} (pid {pid}) {how}; {len(topo.export_queues) - 1} restarts of the exporter and "
                      "resolver already")
            return False
        topo.control[CTL_CHANNEL_GEN] += 1
        if role == "exporter":
            topo.exporter_counters[E_WAITING] = 0  # the successor counts what it holds itself
            if self.resolver_lost:
                topo.export_queue.put(wire.lost(topo.resolver_id))
        fresh = self._respawn(topo, role, self._mains[role])
        what = ("the flows it held are written by the new one (a few may be written twice, with the same id); "
                "names are learned anew" if role == "exporter" else "the name packets it had taken are lost")
        self._say(f"{role} (pid {pid}) {how}; restarted as pid {fresh.pid}; {what}")
        return True

    def _drain_reports(self, topo: Topology) -> None:
        while True:
            try:
                role, pid, level, text = topo.reports.get_nowait()
            except (queue_mod.Empty, OSError, ValueError):
                return
            self._say(text, level, role, pid)
            if role == "exporter" and text.startswith("cannot write output"):  # the output is gone: reading on would only count losses
                if (not self.failed and self.stopping_since is None and not self.settings.live
                        and any(p.exitcode is None for p in self._captures())):
                    self._say("stopped reading the input: the flows of the packets read so far are written or counted "
                              "as lost; the rest of the input is not read")
                self.failed = True
                self._abort(topo)

    # ---- statistics
    def _totals(self, topo: Topology) -> dict:
        c = topo.capture_counters
        packets_in_flows = sum(int(w[T.K_PACKETS]) for w in topo.worker_counters)
        return {
            "read": int(c[L.C_READ]) + int(c[L.C_FILTERED]),
            "bytes": int(c[L.C_BYTES]),
            "in_flows": packets_in_flows,
            "non_ip": int(c[L.C_NON_IP]),
            "malformed": int(c[L.C_MALFORMED]),
            "unmatched_fragments": int(c[L.C_FRAG_UNMATCHED]),
            "filtered": int(c[L.C_FILTERED]),
            "ring_dropped": int(c[L.C_RING_DROPPED]),
            "ring_dropped_per_worker": [sum(r.dropped() for r in topo.worker_rings(i)) for i in range(topo.n_workers)],
            "kernel_dropped": int(c[L.C_KERNEL_DROPPED]),
            "active_flows": sum(int(w[T.K_ACTIVE]) for w in topo.worker_counters),
            "flows_written": int(topo.exporter_counters[E_FLOWS_WRITTEN]),
            "exporter_dropped": int(topo.exporter_counters[E_WRITE_FAILED]),
            "flows_ended": sum(int(w[k]) for w in topo.worker_counters
                               for k in (T.K_EXPIRED_IDLE, T.K_EXPIRED_ACTIVE, T.K_FLUSHED, T.K_EVICTED)),
            "evicted": sum(int(w[T.K_EVICTED]) for w in topo.worker_counters),
            "name_packets": int(c[L.C_NAME_PACKETS]),
            "name_dropped": int(c[L.C_NAME_DROPPED]),
            "name_malformed": int(topo.resolver_counters[R_MALFORMED]),
            "name_observations": int(topo.resolver_counters[R_OBSERVATIONS]),
            "names_evicted": int(topo.exporter_counters[E_NAMES_EVICTED]),
            "names_capped": int(topo.exporter_counters[E_NAMES_CAPPED]),
            "bq_sent": int(topo.exporter_counters[E_BQ_SENT]),
            "bq_rejected": int(topo.exporter_counters[E_BQ_REJECTED]),
            "bq_spooled": int(topo.exporter_counters[E_BQ_SPOOLED]),
            "bq_spool_dropped": int(topo.exporter_counters[E_BQ_SPOOL_DROPPED]),
            "bq_spool_set_aside": int(topo.exporter_counters[E_BQ_SPOOL_SET_ASIDE]),
            "restarts": int(topo.control[CTL_RESTARTS]),
            "flows_lost": int(topo.control[CTL_FLOWS_LOST]),
            # packets a dead worker had in its ring or had taken but not counted (meaningful once the rings are
            # drained: the other workers count all of theirs before they end)
            "packets_lost": max(0, int(c[L.C_DISPATCHED]) - packets_in_flows) if self.workers_died else 0,
            "abandoned": int(c[L.C_ABANDONED]),
        }

    def _final_totals(self, topo: Topology) -> dict:
        """The totals once every process is gone: what a dead exporter (or a failed run) left unwritten is lost
        at the output, whatever counted it so far (the flows the workers let go, less those written)."""
        t = self._totals(topo)
        if self.failed:
            t["exporter_dropped"] = max(t["exporter_dropped"], t["flows_ended"] - t["flows_written"])
        if self.capture_died:  # what it had read and not yet handed on or counted died with it
            c = topo.capture_counters
            accounted = sum(t[k] for k in ("non_ip", "malformed", "unmatched_fragments", "filtered", "ring_dropped",
                                           "abandoned")) + int(c[L.C_DISPATCHED])
            t["abandoned"] += max(0, t["read"] - accounted)
        return t

    def _stats_line(self, prev: dict, now: dict, dt: float) -> str:
        pps = (now["read"] - prev["read"]) / dt
        bps = (now["bytes"] - prev["bytes"]) * 8 / dt
        rings = "" if len(now["ring_dropped_per_worker"]) < 2 else " (" + " ".join(
            f"w{i}:{n:,}" for i, n in enumerate(now["ring_dropped_per_worker"])) + ")"
        return (f"stats: {now['read']:,} packets read, {pps:,.0f} packets/s, {bps / 1e6:,.2f} Mbit/s, "
                f"{now['active_flows']:,} active flows, "
                f"{now['flows_written']:,} flows written; drops: kernel {now['kernel_dropped']:,}, "
                f"ring {now['ring_dropped']:,}{rings}, exporter {now['exporter_dropped']:,}")

    def _update_progress(self, topo: Topology) -> None:
        c = topo.capture_counters
        self.progress.update(int(c[L.C_INPUT_BYTES]), int(c[L.C_READ]) + int(c[L.C_FILTERED]),
                             int(topo.exporter_counters[E_FLOWS_WRITTEN]),
                             sum(int(w[T.K_ACTIVE]) for w in topo.worker_counters))

    def summary_line(self, t: dict) -> str:
        return (f"summary: {t['read']:,} packets read = {t['in_flows']:,} in flows + "
                f"{t['non_ip']:,} non-IP + {t['malformed']:,} malformed + "
                f"{t['unmatched_fragments']:,} unmatched fragments + {t['filtered']:,} filtered + "
                f"{t['ring_dropped']:,} dropped"
                + (f" + {t['packets_lost']:,} lost with dead workers" if self.workers_died else "")
                + (f" + {t['abandoned']:,} abandoned (the run stopped on a failure)" if t["abandoned"] else "")
                + f"; {t['flows_written']:,} flows written "
                f"({t['evicted']:,} evicted early, {t['exporter_dropped']:,} lost at the output"
                + (f", {t['flows_lost']:,} lost with {t['restarts']} restarted workers" if t["restarts"] else
                   f", {t['flows_lost']:,} lost with dead workers" if self.workers_died else "")
                + "); "
                f"kernel dropped {t['kernel_dropped']:,}; names: {t['name_packets']:,} packets, "
                f"{t['name_observations']:,} observations, {t['name_malformed']:,} malformed, "
                f"{t['name_dropped']:,} dropped, {t['names_evicted']:,} evicted from the name map, "
                f"{t['names_capped']:,} over the bound per address"
                + (f"; bigquery: {t['bq_sent']:,} rows sent, {t['bq_rejected']:,} rejected, "
                   f"{t['bq_spooled']:,} waiting in the spool, {t['bq_spool_dropped']:,} dropped (spool full)"
                   + (f", {t['bq_spool_set_aside']:,} damaged spool files set aside" if t["bq_spool_set_aside"] else "")
                   if self.settings.output == "bigquery" else ""))

    def _drop_privileges(self, settings: Settings) -> Settings:
        """--user: become the user once the capture handles are open (tcpdump -Z). Nothing is handed over: the
        output, log and spool were opened with the user's rights (``privileges.acting_as``), and a service-account
        key file was read before (``_read_key_file``)."""
        if settings.run_as is None:
            if settings.live and os.geteuid() == 0:
                self._say("capturing as root; use --user NAME to drop root once the interface is open, or run "
                          "unprivileged with the capabilities CAP_NET_RAW and CAP_NET_ADMIN", "warning")
            return settings
        uid, gid, name = settings.run_as
        try:
            drop_to(uid, gid, name)
        except OSError as e:
            raise UsageError(f"--user {name}: cannot change to uid {uid} gid {gid}: {e.strerror}") from None
        folder = os.path.dirname(os.path.abspath(settings.write_file or "."))
        if (settings.rotate_bytes or settings.rotate_interval_s) and not os.access(folder, os.W_OK):
            raise SourceError(f"--user {name} cannot create files in {folder} (rotation makes new files there)")
        return settings

    @staticmethod
    def _read_key_file(settings: Settings) -> Settings:
        """The service-account key file, read once, by the supervisor, as whoever started devourer (the user of
        --user may not read it): not through a link at its end, and only a regular file of root's or that
        user's (``privileges.read_private_file``). The key travels in the settings, to the exporter alone."""
        if settings.output != "bigquery" or not settings.bigquery_sa_key_file or settings.bigquery_sa_key_data:
            return settings
        try:
            key = read_private_file(settings.bigquery_sa_key_file, settings.run_as)
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot read --bigquery-sa-key-file {settings.bigquery_sa_key_file}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        return dataclasses.replace(settings, bigquery_sa_key_data=key)

    def _choose_readers(self, settings: Settings) -> Settings:
        """Several readers only where the files can be cut into chunks; else one, saying why."""
        if settings.readers == 1 or settings.live:
            return settings
        why = "--bpf filters in one reader" if settings.bpf else chunkable(list(settings.read_files))
        if why is None:
            return settings
        self._say(f"reading with one reader: {why}", "info")
        return dataclasses.replace(settings, readers=1)

    # ---- main loop
    def run(self) -> int:
        signal.signal(signal.SIGHUP, self._on_signal)  # from the start: a hangup during start-up loses nothing either
        settings = self.settings
        sources = capture_proc.open_sources(settings)
        settings = self.settings = self._read_key_file(self._choose_readers(settings))
        check_output(settings, warn=lambda text: self._say(text, "warning"))
        if settings.metrics_port:
            self.metrics = MetricsServer(settings)
        with jitcache.cached_loads():
            _warm_up()
            if settings.readers > 1:
                _warm_up_planner()
        gc.freeze()  # what exists now lives for the whole run: no collection in any process walks it again
        gc.enable()
        if stale := remove_stale_segments():  # before --user: a dead root run's segments are root's
            self._say(f"removed {len(stale)} shared-memory segment(s) left by a killed run "
                      f"(/dev/shm/{stale[0]}{', ...' if len(stale) > 1 else ''})", "warning")
        settings = self.settings = self._drop_privileges(settings)
        topo = Topology(settings)
        self._install_signals()
        try:
            self._start(topo, sources)
            topo.unlink()  # children hold the mappings now; nothing of ours stays in /dev/shm
            if self.metrics is not None:  # after the fork: children get no copy of the thread
                self.metrics.start(topo)
            if progress.wanted(settings):
                self.progress = ProgressBar(progress.input_size(settings.read_files))
            self._loop(topo)
        finally:
            topo.unlink()
            for p in self.children.values():
                if p.exitcode is None:
                    p.kill()
                    p.join(5)
            if self.progress is not None:
                self._update_progress(topo)
                self.progress.close()
                self.progress = None
            if self.metrics is not None:
                self.metrics.close()
            for q in topo.export_queues:  # never wait at exit on a queue whose reader or lock holder is dead
                q.cancel_join_thread()
        self._drain_reports(topo)
        totals = self._final_totals(topo)
        self._say(self.summary_line(totals), "info", **_fields(totals))
        if self.failed:
            return EXIT_FAILURE
        if self.damaged:
            return EXIT_DAMAGED
        return EXIT_OK

    def _loop(self, topo: Topology) -> None:
        settings = self.settings
        interval = settings.stat_interval_s
        last_stats_t = time.monotonic()
        prev = self._totals(topo)
        while True:
            while self.signals:
                if self.signals.pop(0) == signal.SIGHUP:
                    self._on_hangup(topo)
                else:
                    self._request_stop(topo)
            everyone_done = all(p.exitcode is not None for p in self.children.values())
            self._reap(topo)  # after the check: a child that ended in between is still reaped
            self._drain_reports(topo)
            if everyone_done:
                return
            now = time.monotonic()
            if self.stopping_since is not None and now - self.last_nudge > 1.0:
                self._nudge_capture()
            if self.stopping_since is not None and now - self.stopping_since > settings.shutdown_timeout_s:
                self._say(f"shutdown took longer than {settings.shutdown_timeout_s:g}s; "
                                     "killing what is left")
                self.failed = True
                for p in self.children.values():
                    if p.exitcode is None:
                        p.kill()
                continue
            if self.progress is not None:
                self._update_progress(topo)
            if interval > 0 and now - last_stats_t >= interval:
                cur = self._totals(topo)
                self._say(self._stats_line(prev, cur, now - last_stats_t), "info", **_fields(cur))
                prev, last_stats_t = cur, now
            # wake at once when a child ends (its sentinel), else after a tick
            sentinels = [p.sentinel for p in self.children.values() if p.exitcode is None]
            multiprocess.connection.wait(sentinels, timeout=TICK_S)


def _next_chunk(chunks, stop_requested):
    """The reader's next chunk from the planner, or None when there are no more (or the run stops)."""
    while not stop_requested():
        try:
            return chunks.get(timeout=TICK_S)
        except queue_mod.Empty:
            continue
    return None


def _plan(settings: Settings, sources, topo: Topology, report) -> int:
    """The planner: cut the files into chunks and deal them to the readers in turn (a few ahead of each)."""
    code, n = EXIT_OK, 0
    stopping = lambda: bool(topo.control[CTL_STOP] or topo.control[CTL_ABORT])  # noqa: E731

    def put(q, item) -> bool:
        while not stopping():
            try:
                q.put(item, timeout=TICK_S)
                return True
            except queue_mod.Full:
                continue
        return False

    for item in plan([s.path for s in sources], [s.datalink for s in sources], settings.chunk_packets,
                     settings.batch_packets):
        if isinstance(item, Damage):
            report(f"capture file {sources[item.source].name} is damaged at byte {item.offset} (a record is "
                   "cut short or impossible); every complete packet before it was counted", "error")
            code = EXIT_DAMAGED
            continue
        if not put(topo.chunk_queues[n % len(topo.chunk_queues)], item):
            break
        n += 1
    for q in topo.chunk_queues:
        if not put(q, None):
            q.cancel_join_thread()  # the readers stop on their own; what is queued is not needed
    return code


def _fields(totals: dict) -> dict:
    """The counters of a stats or summary line, as fields of its JSON log line."""
    return {"counters": {k: v for k, v in totals.items() if k != "ring_dropped_per_worker"},
            "ring_dropped_per_worker": totals["ring_dropped_per_worker"]}


def run(settings: Settings) -> int:
    return Supervisor(settings).run()
