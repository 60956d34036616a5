"""Every shared counter of the engine, by the process that writes it.

Each process owns one region of the shared counter segment (``engine.topology``)
and is its only writer; the supervisor, the progress bar and the metrics endpoint
only read (``engine.report`` turns them into the stats line, the summary and the
JSON log fields; ``engine.metrics`` into Prometheus metrics). The control words
are the one region written the other way: by the supervisor, read by the
children. An index is a plain ``int``, so the compiled loops can use it as a
constant.

Every counter here is shown somewhere: the summary or stats line, or a metric.
"""

# ---- capture (one region per reader; the supervisor sums them): packet.decode, procs.capture
C_READ = 0  # packets handed to us by libpcap (or found in the file, with a filter)
C_BYTES = 1  # wire bytes of those packets
C_NON_IP = 2  # no IPv4/IPv6 after the link layer and the tunnels opened (ARP, STP, PPP control, ...)
C_MALFORMED = 3  # IP packets too short or inconsistent to key
C_FRAG_UNMATCHED = 4  # non-first fragments whose first fragment was not seen
C_RING_DROPPED = 5  # packets dropped because a worker's ring was full (live only)
C_KERNEL_DROPPED = 6  # libpcap ps_drop + ps_ifdrop (live only)
C_FILTERED = 7  # packets in the files that the BPF filter rejected
C_DISPATCHED = 8  # packets written to worker rings
C_FRAG_EVICTED = 9  # first-fragment entries pushed out of the bounded fragment table
C_CLOCK_US = 10  # capture clock (running max of packet time), for stats
C_NAME_PACKETS = 11  # name-resolution packets copied to the resolver ring
C_NAME_DROPPED = 12  # ... that did not fit (live only: the resolver fell behind)
C_INPUT_BYTES = 13  # bytes of the capture files (or pipe) consumed so far, for progress
C_ABANDONED = 14  # decoded for a flow but not handed on: the run was stopped by a failure (a dead process)
C_TUNNELLED = 15  # packets counted in the flow inside a tunnel (packet.tunnels)
C_TUNNEL_CLOSED = 16  # tunnels left closed: the outer packet is a fragment, or one tunnel too many
N_CAPTURE_COUNTERS = 20

# ---- worker (one region each): flow.table
K_PACKETS = 0  # packets counted in flows
K_BYTES = 1
K_FLOWS_CREATED = 2
K_EXPIRED_IDLE = 3
K_EXPIRED_ACTIVE = 4
K_FLUSHED = 5  # ended by the end of the input or a stop
K_EVICTED = 6  # ended early: --max-flows was reached
K_ACTIVE = 7  # flows in the table now
N_WORKER_COUNTERS = 8

# ---- resolver: names.observe
R_PACKETS = 0  # name packets handled
R_OBSERVATIONS = 1  # observations made
R_MALFORMED = 2  # name packets (or names in them) that could not be parsed
R_TRUNCATED = 3  # payloads cut by the slot or the snaplen (parsed as far as they go)
N_RESOLVER_COUNTERS = 4

# ---- exporter: procs.exporter and the outputs (through ``SINK_COUNTERS``)
E_FLOWS_WRITTEN = 0
E_BATCHES = 1  # writes to the output (each of up to READ_ROWS flows)
E_WRITE_FAILED = 2  # flows that could not be written (dropped at the exporter)
E_WAITING = 3  # flows waiting for the resolver's watermark
E_NAMES_EVICTED = 4  # name-map entries pushed out by its bound
E_BQ_SENT = 5  # rows BigQuery took
E_BQ_REJECTED = 6  # rows BigQuery refused (reported one by one)
E_BQ_SPOOLED = 7  # rows waiting in the spool now
E_BQ_SPOOL_DROPPED = 8  # rows lost because the spool was full
E_BQ_SPOOL_SET_ASIDE = 9  # spool files that were not readable batches, moved aside
E_NAMES_CAPPED = 10  # names dropped by the per-address bound or cut off a record (names.table)
N_EXPORTER_COUNTERS = 12
#: the exporter counters an output sink may set, by the names it uses (``procs.exporter.CounterView``)
SINK_COUNTERS = {"sent": E_BQ_SENT, "rejected": E_BQ_REJECTED, "spooled": E_BQ_SPOOLED,
                 "spool_dropped": E_BQ_SPOOL_DROPPED, "spool_set_aside": E_BQ_SPOOL_SET_ASIDE}

# ---- control words: written by the supervisor only, read by the children
CTL_STOP = 0  # orderly stop: capture stops reading, everyone drains
CTL_ABORT = 1  # a process died: stop waiting for space or peers
CTL_FLOWS_LOST = 2  # flows held by workers that died (live mode restarts them)
CTL_RESTARTS = 3  # worker processes restarted (live mode)
CTL_CHANNEL_GEN = 4  # exporter and resolver restarts so far = which export queue the two now share
CTL_REOPEN = 5  # SIGHUPs so far: the exporter reopens its output file when this changes
CTL_EXPORTER_GONE = 6  # the exporter died and none follows (replay): nobody reads the export queue any more
N_CONTROL = 8
