"""The run's numbers, added up from the shared counters: the stats line, the summary, their JSON fields.

``totals`` reads every process's counters (``devourer.counters``) into one dict; the stats line, the final
summary, the progress bar and the metrics endpoint (``engine.metrics``) all take their numbers from here,
so they never disagree. The summary is an equation: every packet read is in a flow or in a named counter,
also after a child died.
"""

from devourer import counters as CN


def packets_read(capture) -> int:
    """Packets read: those decoded and those the BPF filter rejected (libpcap counts only the former)."""
    return int(capture[CN.C_READ]) + int(capture[CN.C_FILTERED])


def _worker_sum(topo, *indexes: int) -> int:
    return sum(int(w[k]) for w in topo.worker_counters for k in indexes)


def totals(topo, workers_died: bool = False) -> dict:
    """Every number of the stats and summary lines, as the counters say now."""
    c, e = topo.capture_counters, topo.exporter_counters
    packets_in_flows = _worker_sum(topo, CN.K_PACKETS)
    return {
        "read": packets_read(c),
        "bytes": int(c[CN.C_BYTES]),
        "in_flows": packets_in_flows,
        "non_ip": int(c[CN.C_NON_IP]),
        "malformed": int(c[CN.C_MALFORMED]),
        "unmatched_fragments": int(c[CN.C_FRAG_UNMATCHED]),
        "filtered": int(c[CN.C_FILTERED]),
        "tunnelled": int(c[CN.C_TUNNELLED]),
        "tunnels_closed": int(c[CN.C_TUNNEL_CLOSED]),
        "ring_dropped": int(c[CN.C_RING_DROPPED]),
        "ring_dropped_per_worker": [sum(r.dropped() for r in topo.worker_rings(i)) for i in range(topo.n_workers)],
        "kernel_dropped": int(c[CN.C_KERNEL_DROPPED]),
        "active_flows": _worker_sum(topo, CN.K_ACTIVE),
        "flows_written": int(e[CN.E_FLOWS_WRITTEN]),
        "exporter_dropped": int(e[CN.E_WRITE_FAILED]),
        "flows_ended": _worker_sum(topo, CN.K_EXPIRED_IDLE, CN.K_EXPIRED_ACTIVE, CN.K_FLUSHED, CN.K_EVICTED),
        "evicted": _worker_sum(topo, CN.K_EVICTED),
        "name_packets": int(c[CN.C_NAME_PACKETS]),
        "name_dropped": int(c[CN.C_NAME_DROPPED]),
        "name_malformed": int(topo.resolver_counters[CN.R_MALFORMED]),
        "name_observations": int(topo.resolver_counters[CN.R_OBSERVATIONS]),
        "names_evicted": int(e[CN.E_NAMES_EVICTED]),
        "names_capped": int(e[CN.E_NAMES_CAPPED]),
        "bq_sent": int(e[CN.E_BQ_SENT]),
        "bq_rejected": int(e[CN.E_BQ_REJECTED]),
        "bq_spooled": int(e[CN.E_BQ_SPOOLED]),
        "bq_spool_dropped": int(e[CN.E_BQ_SPOOL_DROPPED]),
        "bq_spool_set_aside": int(e[CN.E_BQ_SPOOL_SET_ASIDE]),
        "restarts": int(topo.control[CN.CTL_RESTARTS]),
        "flows_lost": int(topo.control[CN.CTL_FLOWS_LOST]),
        # packets a dead worker had in its ring or had taken but not counted (meaningful once the rings are
        # drained: the other workers count all of theirs before they end)
        "packets_lost": max(0, int(c[CN.C_DISPATCHED]) - packets_in_flows) if workers_died else 0,
        "abandoned": int(c[CN.C_ABANDONED]),
        # live with several interfaces: each one's share of the capture numbers
        "interfaces": {name: {"read": packets_read(ic), "bytes": int(ic[CN.C_BYTES]),
                              "kernel_dropped": int(ic[CN.C_KERNEL_DROPPED]), "ring_dropped": int(ic[CN.C_RING_DROPPED])}
                       for name, ic in topo.interface_counters()} if len(topo.interfaces) > 1 else {},
    }


def final_totals(topo, workers_died: bool, capture_died: bool, failed: bool) -> dict:
    """The totals once every process is gone: what a dead exporter (or a failed run) left unwritten is lost
    at the output, whatever counted it so far (the flows the workers let go, less those written)."""
    t = totals(topo, workers_died)
    if failed:
        t["exporter_dropped"] = max(t["exporter_dropped"], t["flows_ended"] - t["flows_written"])
    if capture_died:  # what it had read and not yet handed on or counted died with it
        accounted = sum(t[k] for k in ("non_ip", "malformed", "unmatched_fragments", "filtered", "ring_dropped",
                                       "abandoned")) + int(topo.capture_counters[CN.C_DISPATCHED])
        t["abandoned"] += max(0, t["read"] - accounted)
    return t


def progress(topo) -> tuple[int, int, int, int]:
    """What the progress bar shows: input bytes consumed, packets read, flows written, flows active."""
    c = topo.capture_counters
    return (int(c[CN.C_INPUT_BYTES]), packets_read(c), int(topo.exporter_counters[CN.E_FLOWS_WRITTEN]),
            _worker_sum(topo, CN.K_ACTIVE))


def stats_line(prev: dict, now: dict, dt: float) -> str:
    pps = (now["read"] - prev["read"]) / dt
    bps = (now["bytes"] - prev["bytes"]) * 8 / dt
    rings = "" if len(now["ring_dropped_per_worker"]) < 2 else " (" + " ".join(
        f"w{i}:{n:,}" for i, n in enumerate(now["ring_dropped_per_worker"])) + ")"
    return (f"stats: {now['read']:,} packets read, {pps:,.0f} packets/s, {bps / 1e6:,.2f} Mbit/s, "
            f"{now['active_flows']:,} active flows, "
            f"{now['flows_written']:,} flows written; drops: kernel {now['kernel_dropped']:,}, "
            f"ring {now['ring_dropped']:,}{rings}, exporter {now['exporter_dropped']:,}" + _per_interface(now))


def _per_interface(t: dict) -> str:
    """"; per interface: eth0 N read, K kernel-dropped, R ring-dropped; ..." (live, several interfaces)."""
    return "".join(f"; {name}: {i['read']:,} read, kernel dropped {i['kernel_dropped']:,}, ring dropped "
                   f"{i['ring_dropped']:,}" for name, i in t["interfaces"].items())


def summary_line(t: dict, workers_died: bool, bigquery: bool) -> str:
    return (f"summary: {t['read']:,} packets read = {t['in_flows']:,} in flows + "
            f"{t['non_ip']:,} non-IP + {t['malformed']:,} malformed + "
            f"{t['unmatched_fragments']:,} unmatched fragments + {t['filtered']:,} filtered + "
            f"{t['ring_dropped']:,} dropped"
            + (f" + {t['packets_lost']:,} lost with dead workers" if workers_died else "")
            + (f" + {t['abandoned']:,} abandoned (the run stopped on a failure)" if t["abandoned"] else "")
            + f"; {t['flows_written']:,} flows written "
            f"({t['evicted']:,} evicted early, {t['exporter_dropped']:,} lost at the output"
            + (f", {t['flows_lost']:,} lost with {t['restarts']} restarted workers" if t["restarts"] else
               f", {t['flows_lost']:,} lost with dead workers" if workers_died else "")
            + "); "
            + (f"tunnels: {t['tunnelled']:,} packets counted in inner flows, {t['tunnels_closed']:,} left closed "
               "(fragmented outer packet or too deep); " if t["tunnelled"] or t["tunnels_closed"] else "")
            + f"kernel dropped {t['kernel_dropped']:,}; names: {t['name_packets']:,} packets, "
            f"{t['name_observations']:,} observations, {t['name_malformed']:,} malformed, "
            f"{t['name_dropped']:,} dropped, {t['names_evicted']:,} evicted from the name map, "
            f"{t['names_capped']:,} over the bound per address"
            + (f"; bigquery: {t['bq_sent']:,} rows sent, {t['bq_rejected']:,} rejected, "
               f"{t['bq_spooled']:,} waiting in the spool, {t['bq_spool_dropped']:,} dropped (spool full)"
               + (f", {t['bq_spool_set_aside']:,} damaged spool files set aside" if t["bq_spool_set_aside"] else "")
               if bigquery else "")
            + _per_interface(t))


def log_fields(t: dict) -> dict:
    """The counters of a stats or summary line, as fields of its JSON log line."""
    fields = {"counters": {k: v for k, v in t.items() if k not in ("ring_dropped_per_worker", "interfaces")},
              "ring_dropped_per_worker": t["ring_dropped_per_worker"]}
    if t["interfaces"]:
        fields["interfaces"] = t["interfaces"]
    return fields


def say_final(say, topo, workers_died: bool, capture_died: bool, failed: bool, bigquery: bool) -> None:
    """The run's summary line through ``say`` (the supervisor's log), with its counters as fields."""
    totals = final_totals(topo, workers_died, capture_died, failed)
    say(summary_line(totals, workers_died, bigquery), "info", **log_fields(totals))
