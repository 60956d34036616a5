"""Prometheus metrics (``--metrics-port``), served by the supervisor.

Every process already keeps its counters in the shared counter segment
(``engine.topology``); a scrape reads them there, so serving metrics costs
the engine nothing between scrapes and no process but the supervisor knows
about HTTP. The socket is bound before the supervisor drops root (``--user``), the
server thread started after the children are forked (a fork copies only the
forking thread).
"""

import socket
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from devourer import __version__
from devourer import counters as CN
from devourer.counters import CTL_CHANNEL_GEN, CTL_FLOWS_LOST, CTL_RESTARTS
from devourer.engine.summary import packets_read
from devourer.errors import SourceError

# capture counters that name what happened to a packet that is not in a flow
DISCARDED = {"non_ip": CN.C_NON_IP, "malformed": CN.C_MALFORMED, "unmatched_fragment": CN.C_FRAG_UNMATCHED,
             "filtered": CN.C_FILTERED}


class EngineCollector:
    """Reads the engine's shared counters at each scrape."""

    def __init__(self, topo, settings):
        self.topo = topo
        self.settings = settings

    def collect(self):
        topo, c = self.topo, self.topo.capture_counters
        info = InfoMetricFamily("devourer", "devourer's version and this sensor")
        info.add_metric([], {"version": __version__, "sensor": self.settings.sensor_id,
                             "mode": "live" if self.settings.live else "replay"})
        yield info
        yield _counter("devourer_packets_read", "packets read from libpcap (or the files)",
                       packets_read(c))
        yield _counter("devourer_bytes_read", "wire bytes of the packets read", int(c[CN.C_BYTES]))
        discarded = CounterMetricFamily("devourer_packets_discarded", "packets read that are in no flow, by reason",
                                        labels=["reason"])
        for reason, at in DISCARDED.items():
            discarded.add_metric([reason], int(c[at]))
        yield discarded
        dropped = CounterMetricFamily("devourer_packets_dropped", "packets lost, by stage: the kernel before "
                                      "libpcap read them (not in packets_read), a full worker ring (live), a full "
                                      "resolver ring (name packets, live; still counted in their flows)",
                                      labels=["stage"])
        dropped.add_metric(["kernel"], int(c[CN.C_KERNEL_DROPPED]))
        dropped.add_metric(["ring"], int(c[CN.C_RING_DROPPED]))
        dropped.add_metric(["resolver_ring"], int(c[CN.C_NAME_DROPPED]))
        yield dropped
        if topo.interfaces:
            yield from self._interfaces()
        yield _gauge("devourer_packet_time_seconds", "capture clock: the latest packet time seen",
                     int(c[CN.C_CLOCK_US]) / 1e6)
        yield _counter("devourer_fragments_evicted", "first fragments pushed out of the bounded fragment table "
                       "before their later fragments came (those count as unmatched)", int(c[CN.C_FRAG_EVICTED]))
        yield _counter("devourer_packets_tunnelled", "packets counted in the flow inside a tunnel",
                       int(c[CN.C_TUNNELLED]))
        yield _counter("devourer_tunnels_closed", "tunnelled packets counted in their outer flow: the outer packet "
                       "is a fragment, or one tunnel more than the decoder opens", int(c[CN.C_TUNNEL_CLOSED]))
        yield _counter("devourer_input_bytes", "bytes of the capture files (or pipe) consumed",
                       int(c[CN.C_INPUT_BYTES]))
        yield _counter("devourer_worker_restarts", "worker processes that died and were restarted (live)",
                       int(topo.control[CTL_RESTARTS]))
        yield _counter("devourer_exporter_resolver_restarts", "exporter and resolver processes that died and were "
                       "restarted (live)", int(topo.control[CTL_CHANNEL_GEN]))
        yield _counter("devourer_flows_lost_with_workers", "flows held by workers that died (live)",
                       int(topo.control[CTL_FLOWS_LOST]))
        yield from self._workers()
        yield from self._exporter()
        r = topo.resolver_counters
        yield _counter("devourer_name_packets", "name-resolution packets handed to the resolver",
                       int(c[CN.C_NAME_PACKETS]))
        yield _counter("devourer_name_packets_parsed", "name packets the resolver handled", int(r[CN.R_PACKETS]))
        yield _counter("devourer_name_packets_malformed", "name packets (or names in them) that could not be parsed",
                       int(r[CN.R_MALFORMED]))
        yield _counter("devourer_name_observations", "names learned (address or MAC, name)",
                       int(r[CN.R_OBSERVATIONS]))
        yield _counter("devourer_name_packets_truncated", "name packets cut by the resolver ring's slot or the "
                       "snaplen (parsed as far as they go)", int(r[CN.R_TRUNCATED]))

    def _interfaces(self):
        """Live: each interface's share of the capture numbers."""
        read = CounterMetricFamily("devourer_interface_packets_read", "packets read from each interface",
                                   labels=["interface"])
        nbytes = CounterMetricFamily("devourer_interface_bytes_read", "wire bytes read from each interface",
                                     labels=["interface"])
        dropped = CounterMetricFamily("devourer_interface_packets_dropped", "packets of each interface lost, "
                                      "by stage (as devourer_packets_dropped)", labels=["interface", "stage"])
        for name, c in self.topo.interface_counters():
            read.add_metric([name], packets_read(c))
            nbytes.add_metric([name], int(c[CN.C_BYTES]))
            dropped.add_metric([name, "kernel"], int(c[CN.C_KERNEL_DROPPED]))
            dropped.add_metric([name, "ring"], int(c[CN.C_RING_DROPPED]))
            dropped.add_metric([name, "resolver_ring"], int(c[CN.C_NAME_DROPPED]))
        yield from (read, nbytes, dropped)

    def _workers(self):
        topo = self.topo
        per_worker = {
            "devourer_worker_packets": ("packets counted in flows", CN.K_PACKETS, CounterMetricFamily),
            "devourer_worker_bytes": ("wire bytes counted in flows", CN.K_BYTES, CounterMetricFamily),
            "devourer_flows_created": ("flows started", CN.K_FLOWS_CREATED, CounterMetricFamily),
            "devourer_flows_evicted": ("flows written early because --max-flows was reached", CN.K_EVICTED,
                                       CounterMetricFamily),
            "devourer_flows_active": ("flows in the table now", CN.K_ACTIVE, GaugeMetricFamily),
        }
        for name, (doc, at, kind) in per_worker.items():
            family = kind(name, doc, labels=["worker"])
            for i, counters in enumerate(topo.worker_counters):
                family.add_metric([str(i)], int(counters[at]))
            yield family
        ended = CounterMetricFamily("devourer_flows_ended", "flows ended, by reason", labels=["worker", "reason"])
        for i, counters in enumerate(topo.worker_counters):
            for reason, at in (("idle", CN.K_EXPIRED_IDLE), ("active", CN.K_EXPIRED_ACTIVE), ("shutdown", CN.K_FLUSHED),
                               ("evicted", CN.K_EVICTED)):
                ended.add_metric([str(i), reason], int(counters[at]))
        yield ended
        ring = GaugeMetricFamily("devourer_ring_pending", "packet records waiting in a worker's ring",
                                 labels=["worker"])
        ring_dropped = CounterMetricFamily("devourer_ring_dropped", "packets a full worker ring refused (live)",
                                           labels=["worker"])
        flow_ring = GaugeMetricFamily("devourer_flow_ring_pending", "expired flows waiting in a worker's flow ring "
                                      "for the exporter (the exporter's queue)", labels=["worker"])
        for i, fr in enumerate(topo.flow_rings):
            rings = topo.worker_rings(i)  # one per capture reader
            ring.add_metric([str(i)], sum(r.pending() for r in rings))
            ring_dropped.add_metric([str(i)], sum(r.dropped() for r in rings))
            flow_ring.add_metric([str(i)], fr.pending())
        yield ring
        yield ring_dropped
        yield flow_ring
        if topo.name_rings:
            yield _gauge("devourer_resolver_ring_pending", "name packets waiting for the resolver",
                         sum(r.pending() for r in topo.name_rings))

    def _exporter(self):
        e = self.topo.exporter_counters
        yield _counter("devourer_flows_exported", "flow records written to the output", int(e[CN.E_FLOWS_WRITTEN]))
        yield _counter("devourer_output_writes", "writes (batches of flow records) to the output",
                       int(e[CN.E_BATCHES]))
        yield _counter("devourer_flows_lost_at_output", "flow records the output could not take",
                       int(e[CN.E_WRITE_FAILED]))
        yield _gauge("devourer_exporter_waiting_flows", "expired flows the exporter holds until the resolver has "
                     "seen every name packet before their end", int(e[CN.E_WAITING]))
        yield _counter("devourer_names_evicted", "entries pushed out of the name map by --max-names",
                       int(e[CN.E_NAMES_EVICTED]))
        yield _counter("devourer_names_capped", "names dropped because an address (or MAC) already had the most "
                       "names one may carry, or cut off a record", int(e[CN.E_NAMES_CAPPED]))
        if self.settings.output == "bigquery":
            yield _counter("devourer_bigquery_rows_sent", "rows BigQuery took", int(e[CN.E_BQ_SENT]))
            yield _counter("devourer_bigquery_rows_rejected", "rows BigQuery refused", int(e[CN.E_BQ_REJECTED]))
            yield _gauge("devourer_bigquery_rows_spooled", "rows waiting in the spool", int(e[CN.E_BQ_SPOOLED]))
            yield _counter("devourer_bigquery_rows_spool_dropped", "rows lost because the spool was full",
                           int(e[CN.E_BQ_SPOOL_DROPPED]))
            yield _counter("devourer_bigquery_spool_files_set_aside", "spool files that were not readable batches "
                           "(moved to damaged/)", int(e[CN.E_BQ_SPOOL_SET_ASIDE]))


def _counter(name: str, doc: str, value) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # no line per scrape in devourer's log
        pass


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class MetricsServer:
    """The HTTP server: bound at once (a port in use is a one-line error before anything runs), serving from a
    daemon thread of the supervisor once ``start`` hands it the engine's counters."""

    def __init__(self, settings):
        self.collector = EngineCollector(None, settings)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        server_class = type("_Server", (_Server,), {"address_family": _family(settings.metrics_address)})
        try:
            self.server = make_server(settings.metrics_address, settings.metrics_port, make_wsgi_app(registry),
                                      server_class, _Quiet)
        except OSError as e:
            raise SourceError(f"cannot listen on --metrics-port {settings.metrics_port} "
                              f"(address {settings.metrics_address}): {e.strerror or e}") from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self, topo) -> None:
        self.collector.topo = topo
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
