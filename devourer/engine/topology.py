"""What the engine is made of for one run: rings, counters, queues, and their names.

    capture --packet ring (per worker)--> worker --flow ring (per worker)--> exporter
    capture --name ring--> resolver --export queue (names, control)--> exporter

With ``--readers N`` (replay) there are N capture processes, each with its own
packet ring to every worker, name ring and counters (``ipc.ordered`` merges them);
live, N per interface (``Settings.capture_processes``), reader k on interface
k // N (``interface_counters``).

Built by the supervisor before it forks; every child gets the pieces it uses.
Shared-memory names are ``devourer-<supervisor pid>-<random token>-<what>``: the
pid says whose a segment is, the token (128 bits from the kernel's random pool) makes
the names impossible for another local user to take in advance. A name that is
taken all the same is never opened: the segments are made anew under another token.
"""

import os
import secrets
import stat

import multiprocess

from devourer import counters as CN
from devourer.counters import (CTL_CHANNEL_GEN, N_CONTROL, N_EXPORTER_COUNTERS, N_RESOLVER_COUNTERS,
                               N_WORKER_COUNTERS)
from devourer.flow.record import FLOW_WORDS
from devourer.ipc.ring import SHM_DIR, Ring, SharedCounters
from devourer.packet import layout as L
from devourer.settings import Settings

EXPORT_QUEUE_MESSAGES = 256
FLOW_RING_SLOTS = 1 << 16  # per worker: 8 MiB of expired flow rows on their way to the exporter
SHM_PREFIX = "devourer-"
MAX_CHANNEL_RESTARTS = 6  # exporter + resolver restarts per run (live mode); each gets a queue of its own
CHUNKS_AHEAD = 4  # chunks planned but not yet taken, per reader
NAME_ATTEMPTS = 8  # tokens tried when a segment name is already taken


def remove_stale_segments(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink our own segments of runs whose supervisor is gone; returns their names.

    A run unlinks its segments as soon as its children are forked, so only one
    killed (SIGKILL, power loss) during start-up leaves any. A supervisor pid
    that is alive again as another program is stale too: ours run python. Only
    regular files owned by this user are ours: a name another user made (anyone
    can create files in /dev/shm) is neither trusted nor removed, even by root."""
    removed = []
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(SHM_PREFIX):
            continue
        pid = name[len(SHM_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _is_devourer(int(pid)):
            continue
        path = os.path.join(shm_dir, name)
        try:
            st = os.lstat(path)
            if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
                continue
            os.unlink(path)
            removed.append(name)
        except OSError:  # already gone
            pass
    return removed


def _is_devourer(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"devourer" in f.read()
    except OSError:
        return False


class CaptureTotals:
    """The capture counters of every reader, read as one: sums, and the latest clock."""

    def __init__(self, regions):
        self.regions = regions

    def __getitem__(self, i: int) -> int:
        if i == CN.C_CLOCK_US:
            return max(int(r[i]) for r in self.regions)
        return sum(int(r[i]) for r in self.regions)


class Topology:
    def __init__(self, settings: Settings):
        self.ctx = multiprocess.get_context("fork")
        self.n_workers = settings.workers
        self.n_readers = settings.capture_processes
        self.interfaces = settings.interfaces  # live; reader k captures interfaces[k // readers_per_interface]
        self.readers_per_interface = settings.readers
        self.reader_rings: list[list[Ring]] = []  # [reader][worker]
        self.name_rings: list[Ring] = []  # [reader]
        self.flow_rings: list[Ring] = []
        self.export_queues, self.chunk_queues = [], []
        try:
            for attempt in range(NAME_ATTEMPTS):
                try:
                    self._make_segments(settings, f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(16)}")
                    break
                except FileExistsError:  # someone made one of these names: none of ours is opened, try anew
                    self.unlink()
                    if attempt == NAME_ATTEMPTS - 1:
                        raise
            self._make_queues(settings)
        except BaseException:
            self.unlink()  # whatever failed (EMFILE, ENOMEM), no segment of ours stays in /dev/shm
            raise
        self._carve_counters()

    def _make_segments(self, settings: Settings, tag: str) -> None:
        self.reader_rings, self.name_rings, self.flow_rings = [], [], []  # an earlier attempt's are unlinked
        # with several readers each ring needs to hold only a few chunks' share, and there are readers x workers
        share = 1 << max(0, (self.n_readers - 1).bit_length())
        ring_slots = max(4096, settings.ring_slots // share)
        name_slots = max(1024, settings.resolver_ring_slots // share)
        for k in range(self.n_readers):
            sub = "" if self.n_readers == 1 else f"r{k}-"
            self.reader_rings.append([])
            for i in range(self.n_workers):
                self.reader_rings[k].append(Ring(f"{tag}-{sub}ring{i}", ring_slots, L.RECORD_BYTES))
            if settings.resolve_names:
                self.name_rings.append(Ring(f"{tag}-{sub}names", name_slots, L.NAME_SLOT_BYTES))
        for i in range(self.n_workers):
            self.flow_rings.append(Ring(f"{tag}-flows{i}", FLOW_RING_SLOTS, FLOW_WORDS * 8))
        words = (N_CONTROL + self.n_readers * CN.N_CAPTURE_COUNTERS + self.n_workers * N_WORKER_COUNTERS
                 + N_EXPORTER_COUNTERS + N_RESOLVER_COUNTERS)
        self.shared = SharedCounters(f"{tag}-counters", words)

    def _make_queues(self, settings: Settings) -> None:
        # names and control messages for the exporter: a fresh queue each time the exporter or the resolver is
        # restarted, because the dead one may have held the queue's lock or left half a message in its pipe
        self.export_queues = [self.ctx.Queue(EXPORT_QUEUE_MESSAGES) for _ in range(1 + MAX_CHANNEL_RESTARTS)]
        self.reports = self.ctx.Queue()
        # chunks for the readers (several readers only): one queue each, filled by the planner
        if self.n_readers > 1 and not settings.live:
            self.chunk_queues = [self.ctx.Queue(CHUNKS_AHEAD) for _ in range(self.n_readers)]

    def _carve_counters(self) -> None:
        at = 0
        self.control = self.shared.region(at, N_CONTROL)
        at += N_CONTROL
        self.reader_counters = []
        for _ in range(self.n_readers):
            self.reader_counters.append(self.shared.region(at, CN.N_CAPTURE_COUNTERS))
            at += CN.N_CAPTURE_COUNTERS
        self.capture_counters = (self.reader_counters[0] if self.n_readers == 1
                                 else CaptureTotals(self.reader_counters))
        self.worker_counters = []
        for _ in range(self.n_workers):
            self.worker_counters.append(self.shared.region(at, N_WORKER_COUNTERS))
            at += N_WORKER_COUNTERS
        self.exporter_counters = self.shared.region(at, N_EXPORTER_COUNTERS)
        at += N_EXPORTER_COUNTERS
        self.resolver_counters = self.shared.region(at, N_RESOLVER_COUNTERS)
        self.resolver_id = self.n_workers  # the resolver's id in wire messages, after the workers'

    def interface_counters(self) -> list[tuple[str, CaptureTotals]]:
        """Live: (name, the capture counters of its readers read as one) of every interface, in -i order."""
        per = self.readers_per_interface
        return [(name, CaptureTotals(self.reader_counters[j * per:(j + 1) * per]))
                for j, name in enumerate(self.interfaces)]

    def worker_rings(self, w: int) -> list[Ring]:
        """Worker w's input: one ring per reader, in reader order."""
        return [rings[w] for rings in self.reader_rings]

    @property
    def name_ring(self):
        return self.name_rings[0] if self.name_rings else None

    @property
    def channel_generation(self) -> int:
        return int(self.control[CTL_CHANNEL_GEN])

    @property
    def export_queue(self):
        """The queue the exporter now reads and the resolver writes."""
        return self.export_queues[self.channel_generation]

    def unlink(self) -> None:
        """Remove every segment name (mappings held by live processes stay valid)."""
        for r in (*(r for rings in self.reader_rings for r in rings), *self.name_rings, *self.flow_rings):
            r.unlink()
        if hasattr(self, "shared"):
            self.shared.unlink()
