"""The frozen settings object every process receives (built only by the CLI)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    read_files: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()  # live: capture all of these at once (-i, repeatable)
    # what each interface id of the run is called in records (``flow.key``: id i is interface_labels[i]):
    # live, the interface names; replaying, each pcapng interface's name (or its index), None for classic pcap.
    # Filled by the supervisor once the sources are open (``procs.capture.interface_labels``)
    interface_labels: tuple = ()
    output: str = "stdout"  # stdout | file | bigquery | parquet
    write_file: str | None = None
    stat_interval_s: float = 0.0  # 0: no periodic stats line
    workers: int = 1
    readers: int = 1  # capture processes reading the files (several: chunks of the files, in order)
    chunk_packets: int = 1 << 16  # with several readers: packets per chunk of a file
    count: int = 0  # stop after this many packets (those --bpf keeps); 0: no limit
    flow_timeout_s: float = 120.0
    active_timeout_s: float = 1800.0  # 0 disables
    max_flows: int = 4_000_000  # per engine, shared out between the workers
    bpf: str | None = None
    decapsulate: bool = True  # open the tunnels packet.tunnels knows (--decapsulate auto); False: none
    snaplen: int = 262144
    promisc: bool = True
    buffer_size: int = 64 << 20  # kernel capture buffer, bytes
    batch_packets: int = 4096
    ring_slots: int = 1 << 16  # per worker ring, packet records
    sensor_id: str = ""
    community_id_seed: int = 0  # the Community ID's seed, 0-65535
    shutdown_timeout_s: float = 60.0
    resolve_names: bool = True
    max_names: int = 1_000_000  # addresses (and MACs) the name map holds at most
    name_lifetime_s: float = 3600.0  # for names the wire gives no lifetime (SNI, NBNS without TTL, ...)
    resolver_ring_slots: int = 1 << 13
    bigquery_project_id: str | None = None
    bigquery_dataset_id: str | None = None
    bigquery_table: str = "flow_logs"
    bigquery_sa_key_file: str | None = None
    bigquery_sa_key_data: str | None = field(default=None, repr=False)  # key material: never in a repr or a log
    bigquery_endpoint: str | None = None
    bigquery_flush_interval_s: float = 5.0
    spool_dir: str = "devourer-spool"
    store_dir: str = "devourer-store"  # -o parquet: the flow store (outputs.store)
    store_flush_interval_s: float = 10.0
    store_retention_s: float = 0.0  # hours older than this are removed; 0: kept
    spool_max_bytes: int = 1 << 30
    rotate_bytes: int = 0  # -o file: a new file past this size; 0: never
    rotate_interval_s: float = 0.0  # -o file: a new file at each multiple of this (wall clock); 0: never
    rotate_keep: int = 0  # rotated files kept; 0: all
    progress: bool = True  # a progress bar when replaying files with stderr on a terminal
    metrics_port: int = 0  # Prometheus metrics over HTTP; 0: off
    metrics_address: str = "127.0.0.1"
    run_as: tuple[int, int, str] | None = None  # --user/--group: (uid, gid, user name) to drop root to

    @property
    def live(self) -> bool:
        return bool(self.interfaces)

    @property
    def capture_processes(self) -> int:
        """Capture processes of the run: --readers of them per interface live, --readers replaying."""
        return self.readers * max(1, len(self.interfaces))

    @property
    def idle_timeout_us(self) -> int:
        return int(self.flow_timeout_s * 1_000_000)

    @property
    def active_timeout_us(self) -> int:
        return int(self.active_timeout_s * 1_000_000)
