"""The capture process: a batch of packets -> batch decode -> one ring per worker.

``open_sources`` runs in the supervisor before any process starts, so a missing
file, a file that is not a capture, an unknown interface or missing privileges
is reported at once as one line (and the handles are inherited by the forked
capture process). ``CaptureLoop`` is the core: read a batch (classic pcap files
straight from a window of the file, ``packet.chunks``; pipes and compressed
files from a window of the stream, ``packet.streams``; pcapng files and
interfaces with pcapy-ng ``next_batch``), decode it (``packet.decode``), split
the records by worker and copy each worker's share into its ring, one copy per
worker per batch.

Replaying files is lossless (a full ring makes capture wait); live capture never
waits on a ring: a batch that does not fit is dropped and counted.

With ``--readers N`` there are N capture processes; each takes its chunks of the
files from a queue the planner fills (``packet.chunks``), reads them itself, and
marks the end of each chunk in all its rings (``ipc.ordered``).
"""

import os
import select
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import pcapy

from devourer import counters as CN
from devourer.counters import CTL_ABORT, CTL_STOP
from devourer.errors import EXIT_DAMAGED, EXIT_OK, DamagedCaptureError, SourceError, UsageError
from devourer.packet import layout as L
from devourer.ipc.ordered import end_marker
from devourer.packet.bpf import compile_filter, live_kernel_filter, run_filter
from devourer.flow.key import MAX_INTERFACES
from devourer.packet.capfile import Interface, RecordWalker, describe_pcapng_file
from devourer.packet.chunks import ChunkReader, chunkable
from devourer.packet.decode import SUPPORTED_DATALINKS, BatchDecoder
from devourer.packet.streams import STREAM_ERRORS, Stream, StreamReader, is_stream
from devourer.privileges import raise_capture_capabilities
from devourer.procs.common import run_child
from devourer.procs.planner import next_chunk
from devourer.procs.report import Reporter, Role
from devourer.settings import Settings

if TYPE_CHECKING:
    from devourer.engine.topology import Topology

LIVE_TIMEOUT_MS = 100
_NO_WIRE = np.zeros(0, np.uint32)  # a batch without wire lengths: the filter's len is the captured length
IDLE_CLOCK_AFTER_S = 1.0  # live: with no packets for this long, packet time advances with the wall clock
KERNEL_STATS_EVERY_S = 1.0
REOPEN_EVERY_S = 1.0  # live: an interface that went down or away is opened again this often


@dataclass
class Source:
    """One opened capture source (a file or an interface)."""

    name: str
    handle: object
    datalink: int
    snaplen: int
    live: bool
    path: str | None = None
    bpf: np.ndarray | None = None  # --bpf's program (``packet.bpf``), run on every packet capture reads
    stream: StreamReader | None = None  # a pipe or a compressed file (``packet.streams``); handle is None
    described: list[Interface] | None = None  # pcapng: the interfaces its first section describes
    iface: int = 0  # the run's id of the interface its packets were captured on (``interface_labels``)
    iface_map: np.ndarray | None = None  # pcapng with several: the run's id of each interface index (u16)
    fanout_group: int | None = None  # live with several readers: the PACKET_FANOUT group of the interface

    def interfaces_of(self, local) -> np.ndarray | None:
        """The run's interface ids of a batch's packets from their pcapng interface indexes, or None when
        they all have ``iface``. An index described after the first packet counts as the first interface."""
        if self.iface_map is None or local is None:
            return None
        return self.iface_map[np.minimum(local, self.iface_map.shape[0] - 1)]


def _damage_message(src: "Source", offset: int, reason: str) -> str:
    return (f"capture file {src.name} is damaged at byte {offset} ({reason}); "
            "every complete packet before it was counted")


def _pcap_reason(e: Exception) -> str:
    return str(e).strip() or e.__class__.__name__


def open_file(path: str, settings: Settings) -> Source:
    if path != "-" and not os.path.exists(path):
        raise SourceError(f"capture file {path}: no such file")
    if path != "-" and os.path.isdir(path):
        raise SourceError(f"capture file {path}: is a directory")
    if path != "-" and not os.access(path, os.R_OK):
        raise SourceError(f"capture file {path}: permission denied")
    if is_stream(path):
        return _open_stream(path, settings)
    try:
        handle = pcapy.open_offline(path)
    except pcapy.PcapError as e:
        raise SourceError(f"capture file {path}: {_pcap_reason(e)}") from None
    datalink = _supported(path, handle.datalink())
    described = describe_pcapng_file(path) if RecordWalker.supports(path) else None
    return Source(path, handle, datalink, 262144, False, path=path, bpf=_file_filter(datalink, settings),
                  described=described)


def _open_stream(path: str, settings: Settings) -> Source:
    """A pipe or a compressed file: its header is read now (from a pipe, this waits for the writer)."""
    name = "stdin" if path == "-" else path
    try:
        stream = Stream(path)
    except OSError as e:
        raise SourceError(f"capture file {name}: {e.strerror or e}") from None
    try:
        reader = StreamReader(stream, settings.batch_packets)
    except (ValueError, *STREAM_ERRORS) as e:
        stream.close()
        what = f"{stream.compression} data, " if stream.compression else ""
        raise SourceError(f"capture file {name}: {what}{e}") from None
    datalink = _supported(name, reader.datalink)
    return Source(path, None, datalink, 262144, False, path=path, bpf=_file_filter(datalink, settings),
                  stream=reader, described=reader.interfaces if reader.pcapng else None)


def _supported(name: str, datalink: int) -> int:
    if datalink not in SUPPORTED_DATALINKS:
        raise SourceError(f"capture file {name}: unsupported link type {datalink}")
    return datalink


def _file_filter(datalink: int, settings: Settings):
    """--bpf compiled for replaying a file of this link type (applied per packet), or None."""
    return compile_filter(datalink, settings.snaplen, settings.bpf) if settings.bpf else None


# pcap_activate() status codes (pcapy-ng returns them instead of raising)
ACTIVATE_ERRORS = {
    -5: "no such device", -6: "monitor mode not supported", -8: "permission denied",
    -9: "interface is not up", -11: "permission denied for promiscuous mode",
}
PERMISSION_HINT = " (run as root, or grant the program CAP_NET_RAW and CAP_NET_ADMIN)"


def open_interface(name: str, settings: Settings, fanout_group: int | None = None) -> Source:
    raise_capture_capabilities()
    try:
        handle = pcapy.create(name)
        handle.set_snaplen(settings.snaplen)
        handle.set_promisc(1 if settings.promisc else 0)
        handle.set_timeout(LIVE_TIMEOUT_MS)
        handle.set_buffer_size(settings.buffer_size)
        status = handle.activate()
    except pcapy.PcapError as e:
        status, reason = -1, _pcap_reason(e)
    else:
        reason = ACTIVATE_ERRORS.get(status, f"cannot activate (libpcap status {status})")
    if status is not None and status < 0:
        if status == -1:  # generic error: open_live raises with libpcap's own message
            try:
                pcapy.open_live(name, settings.snaplen, 0, LIVE_TIMEOUT_MS)
            except pcapy.PcapError as e:
                reason = _pcap_reason(e)
        if status in (-8, -11) or "ermission" in reason or "not permitted" in reason:
            reason += PERMISSION_HINT
        raise SourceError(f"interface {name}: {reason}")
    datalink = handle.datalink()
    if datalink not in SUPPORTED_DATALINKS:
        raise SourceError(f"interface {name}: unsupported link type {datalink}")
    if fanout_group is not None:
        try:
            handle.set_fanout(fanout_group, pcapy.PACKET_FANOUT_HASH)
        except (pcapy.PcapError, OSError) as e:
            raise SourceError(f"interface {name}: cannot share it between --readers (PACKET_FANOUT): "
                              f"{_pcap_reason(e)}") from None
    program = None
    if settings.bpf:
        program = compile_filter(datalink, settings.snaplen, settings.bpf)  # a bad expression: one line, exit 2
        kernel = settings.bpf
        if settings.resolve_names:  # the kernel passes name packets too; the user's filter decides the flows here
            kernel = live_kernel_filter(settings.bpf)
        else:
            program = None
        try:
            handle.setfilter(kernel)
        except pcapy.PcapError as e:
            raise UsageError(f"invalid --bpf filter {settings.bpf!r}: {_pcap_reason(e)}") from None
    return Source(name, handle, datalink, settings.snaplen, True, bpf=program, fanout_group=fanout_group)


def open_sources(settings: Settings) -> list[Source]:
    """Every source of the run, in the order of the capture processes: live, --readers handles per interface
    (interface by interface), replaying, the files in order."""
    if settings.interfaces:
        sources = []
        for j, name in enumerate(settings.interfaces):
            if settings.readers == 1:
                sources.append(open_interface(name, settings))
                continue
            # one handle per reader, in one PACKET_FANOUT group per interface: the kernel hashes each flow
            # (both directions) to one of them
            group = (os.getpid() + j) & 0xFFFF
            sources.extend(open_interface(name, settings, group) for _ in range(settings.readers))
        return sources
    return [open_file(p, settings) for p in settings.read_files]


def interface_labels(sources: list[Source]) -> tuple:
    """Give each source its interface id(s) and return what each id is called in records: an interface's
    name live; replaying, a pcapng interface's if_name (or its index where it has none), None for classic pcap.
    Ids go by first appearance, so a run with one interface keys every flow under 0 (as before interfaces
    were keyed); interfaces of the same name (or index) in several files share an id."""
    labels: list = []

    def id_of(label) -> int:
        if label not in labels:
            if len(labels) >= MAX_INTERFACES:
                return 0  # unreachable for live (-i is checked) and bounded per file (``capfile``)
            labels.append(label)
        return labels.index(label)

    for src in sources:
        if src.live:
            src.iface = id_of(src.name)
        elif not src.described:
            src.iface = id_of(None)
        else:
            ids = [id_of(i.name if i.name is not None else k) for k, i in enumerate(src.described)]
            src.iface = ids[0]
            if any(x != ids[0] for x in ids):
                src.iface_map = np.array(ids, np.uint16)
    return tuple(labels)


class CaptureLoop:
    """Reads sources in order and feeds the worker rings.

    ``stop_requested`` and ``abort_requested`` are callables polled once per
    batch (and while waiting for ring space). ``report(text, level)`` sends one line
    to the supervisor (damage, read errors)."""

    def __init__(self, settings: Settings, rings, counters: np.ndarray, stop_requested, abort_requested, report,
                 name_ring=None):
        self.settings = settings
        self.rings = rings
        self.name_ring = name_ring
        self.counters = counters
        self.stop_requested = stop_requested
        self.abort_requested = abort_requested
        self.report = report
        self.decoder = BatchDecoder(settings.batch_packets, len(rings), counters, want_names=name_ring is not None,
                                    decapsulate=settings.decapsulate)
        self.damaged = False
        # --count: packets still to read (those --bpf keeps), None without a limit; with several readers, those
        # left of the chunk being read (the planner cut the last chunk at the count)
        self.left: int | None = settings.count if settings.count and settings.capture_processes == 1 else None
        self.names_decoder: BatchDecoder | None = None  # for the name packets among those --bpf rejects
        self._dropped_before = 0  # live: kernel drops of the handles closed before this one (``_reopen``)

    # ---- reading
    def _read_pcapng_batch(self, src: Source, walker):
        wire, caps, local = walker.peek(self._batch_size(self.settings.batch_packets))
        k = len(wire)
        if k == 0:
            if walker.damaged:
                raise DamagedCaptureError(_damage_message(src, walker.damage_offset, "the file ends inside a block"))
            return None
        try:
            data, meta = src.handle.next_batch(k)
        except pcapy.PcapError as e:
            return self._salvage(src, walker, k, wire, local, e)
        got = len(meta) // 16
        if got != k:
            raise DamagedCaptureError(f"capture file {src.name}: libpcap returned {got} packets where the "
                                      f"file holds {k}")
        walker.commit(k)
        self._packets_done += k
        return self._filtered(src, data, meta, wire, local)

    def _salvage(self, src: Source, walker, k: int, wire, local, error: Exception):
        """libpcap refused a block inside this batch (a packet on an interface with no description, an interface
        of another link type, a section in the other byte order) and ``next_batch`` gave none of the batch: read
        it again packet by packet with a fresh handle, up to the refused block, so every packet before the damage
        is counted; the damage is raised once they are handed on."""
        self._damage = DamagedCaptureError(f"capture file {src.name}: {_pcap_reason(error)}; every packet before "
                                           "it was counted")
        handle = pcapy.open_offline(src.path)
        frames, meta = [], []
        try:
            for _ in range(self._packets_done):
                handle.next()
            offset = 0
            while len(frames) < k:
                header, frame = handle.next()
                if header is None:
                    break
                sec, usec = header.getts()
                frames.append(frame)
                meta.append((sec & 0xFFFFFFFF, usec, offset, header.getcaplen()))
                offset += header.getcaplen()
        except pcapy.PcapError:
            pass
        walker.commit(len(frames))
        self._packets_done += len(frames)
        if not frames:
            raise self._damage
        return self._filtered(src, b"".join(frames), np.array(meta, np.uint32).tobytes(), wire[:len(frames)].copy(),
                              local[:len(frames)].copy())

    def _filtered(self, src: Source, data, meta, wire, local=None):
        """(data, meta, wire, named, ifaces) of the batch as the flows see it: the packets --bpf keeps (the
        others counted as filtered), and with --count none past the last one to read (those are not read at
        all); ``local`` are the packets' pcapng interface indexes, ``ifaces`` the run's ids of them (None: all
        ``src.iface``). A filter decides what is counted in flows, not what names are learned from: where it
        rejected some packets and names are learned, ``named`` is (meta, wire, ifaces) of every packet read,
        else None."""
        bpf = src.bpf
        ifaces = src.interfaces_of(local)
        if bpf is None and self.left is None:
            return data, meta, wire, None, ifaces
        m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
        keep = np.ones(m.shape[0], np.bool_)
        if bpf is not None:
            packets = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
            run_filter(bpf, packets, m, _NO_WIRE if wire is None else wire, keep)
        if self.left is not None:
            kept_so_far = np.cumsum(keep)
            if kept_so_far.shape[0] and kept_so_far[-1] >= self.left:  # the batch holds the last packet to read
                cut = int(np.searchsorted(kept_so_far, self.left)) + 1
                m, keep, wire = m[:cut], keep[:cut], None if wire is None else wire[:cut]
                ifaces = None if ifaces is None else ifaces[:cut]
            self.left -= int(keep.sum())
        self.counters[CN.C_FILTERED] += int((~keep).sum())
        kept = m[keep] if isinstance(meta, np.ndarray) else m[keep].tobytes()  # as it came: decode is compiled for each
        named = None
        if self.name_ring is not None and not keep.all():
            named = (m if isinstance(meta, np.ndarray) else m.tobytes(), wire, ifaces)
        return data, kept, None if wire is None else wire[keep], named, None if ifaces is None else ifaces[keep]

    def _batch_size(self, wanted: int) -> int:
        """Packets to ask a reader for: no more than --count leaves (--bpf may reject some of them)."""
        return wanted if self.left is None else max(1, min(wanted, self.left))

    # ---- dispatch
    def _dispatch(self, n: int, live: bool) -> None:
        recs = self.decoder.records[:n]
        rings = self.rings
        if len(rings) == 1:
            parts = [(0, recs)]
        else:
            w = self.decoder.worker_of[:n]
            order = np.argsort(w, kind="stable")
            recs = recs[order]
            bounds = np.searchsorted(w[order], np.arange(len(rings) + 1))
            parts = [(i, recs[bounds[i]:bounds[i + 1]]) for i in range(len(rings)) if bounds[i + 1] > bounds[i]]
        for j, (i, part) in enumerate(parts):
            if live:
                if not rings[i].try_write(part):  # the ring counts its own drops too (per worker)
                    self.counters[CN.C_RING_DROPPED] += part.shape[0]
                    continue
            else:
                written = rings[i].write_upto(part, self.abort_requested)
                if written < part.shape[0]:
                    # the run failed (a process died): what did not go in is counted, not handed on
                    self.counters[CN.C_DISPATCHED] += written
                    self.counters[CN.C_ABANDONED] += sum(p.shape[0] for _, p in parts[j:]) - written
                    return
            self.counters[CN.C_DISPATCHED] += part.shape[0]

    def _dispatch_names(self, live: bool, decoder: BatchDecoder | None = None) -> None:
        if self.name_ring is None:
            return
        slots = (decoder or self.decoder).name_packets()
        if len(slots) == 0:
            return
        if live:
            if not self.name_ring.try_write(slots):
                self.counters[CN.C_NAME_DROPPED] += len(slots)
                return
        elif not self.name_ring.write(slots, self.abort_requested):
            return
        self.counters[CN.C_NAME_PACKETS] += len(slots)

    def _all_rings(self):
        return self.rings if self.name_ring is None else [*self.rings, self.name_ring]

    def _publish_clock(self) -> None:
        clock = int(self.decoder.clock[0])
        self.counters[CN.C_CLOCK_US] = clock
        for r in self._all_rings():
            r.publish_clock(clock)

    def _replay(self, src: Source, data, meta, wire, named=None, ifaces=None) -> None:
        """Decode a batch read from a file and hand it on (waiting for ring space: replay loses nothing); with
        ``named`` (the filter rejected some), the name packets come from every packet read (``_names_of``)."""
        n = self.decoder.decode(data, meta, wire, src.datalink, src.snaplen, src.iface, ifaces)
        self._dispatch(n, live=False)
        self._dispatch_names(live=False, decoder=None if named is None else self._names_of(src, data, *named))
        self._publish_clock()

    def _names_of(self, src: Source, data, meta, wire, ifaces=None) -> BatchDecoder:
        """Every packet read, the ones the filter rejected too, decoded for their names alone, in their order
        (so the names are learned as without the filter); nothing of this reaches a flow or the capture clock.
        A decoder of its own, whose counters, clock and fragment table are scratch."""
        if self.names_decoder is None:
            scratch = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
            self.names_decoder = BatchDecoder(self.settings.batch_packets, 1, scratch, want_names=True,
                                              decapsulate=self.settings.decapsulate)
        self.names_decoder.decode(data, meta, wire, src.datalink, src.snaplen, src.iface, ifaces)
        return self.names_decoder

    # ---- loops
    def run_file(self, src: Source) -> None:
        if src.stream is not None:
            self.run_stream(src)
        elif chunkable([src.path]) is None:
            self.run_pcap_file(src)
        else:
            self.run_libpcap_file(src)

    def run_stream(self, src: Source) -> None:
        """A pipe or a compressed file (classic pcap or pcapng), decoded where its packets lie in a window of
        the stream (``packet.streams``); a stop request ends the wait for a pipe's next bytes."""
        reader = src.stream
        reader.window.stopped = lambda: bool(self.stop_requested() or self.abort_requested())
        try:
            done = self._read_through(src, reader, counted_from=0)
            unkeyable = reader.unkeyable  # pcapng times past 2106 (or before 1970): read, but no flow has them
            self.counters[CN.C_READ] += unkeyable
            self.counters[CN.C_MALFORMED] += unkeyable
            if done and (reason := reader.damage()) is not None:
                raise DamagedCaptureError(_damage_message(src, reader.offset, reason))
        finally:
            reader.close()

    def run_pcap_file(self, src: Source) -> None:
        """A classic pcap file, decoded where its packets lie in a window of the file: libpcap would copy each
        packet twice (its stdio buffer, then ``next_batch``'s bytes), in 4 KiB reads, and its records give no
        wire length (the file's headers would be read a second time for it)."""
        reader = ChunkReader(src.path, None, self.settings.batch_packets)
        try:
            if self._read_through(src, reader, counted_from=0) and (reason := reader.damage()) is not None:
                raise DamagedCaptureError(_damage_message(src, reader.position, reason))
        finally:
            reader.close()

    def run_libpcap_file(self, src: Source) -> None:
        """A pcapng file, through libpcap."""
        walker = RecordWalker(src.path, self.settings.batch_packets)
        files_before = int(self.counters[CN.C_INPUT_BYTES])
        self._packets_done = 0  # packets of this file read through libpcap so far
        self._damage = None  # found by _salvage; raised once the packets before it are handed on
        try:
            while not self.abort_requested() and not self.stop_requested() and self.left != 0:
                batch = self._read_pcapng_batch(src, walker)
                if batch is None:
                    break
                self._replay(src, *batch)
                self.counters[CN.C_INPUT_BYTES] = files_before + walker.position
                if self._damage is not None:
                    raise self._damage
        finally:
            walker.close()

    def run_live(self, src: Source) -> None:
        last_packet_mono = time.monotonic()
        last_packet_clock = 0
        last_stats = 0.0
        fd = src.handle.getfd()
        batch_was_full = False
        while not self.stop_requested() and not self.abort_requested() and self.left != 0:
            # libpcap's TPACKET_V3 read waits in poll() with no timeout until a block holds a packet, and
            # retries on EINTR: on a quiet link it would never return (no stop, no idle expiry). So wait
            # here, with the timeout; a full batch may have left packets in the current block: read on.
            if not batch_was_full and not select.select([fd], [], [], LIVE_TIMEOUT_MS / 1000)[0]:
                data, meta = b"", b""
            else:
                try:
                    data, meta = src.handle.next_batch(self._batch_size(self.settings.batch_packets))
                except pcapy.PcapError as e:
                    if self.stop_requested():
                        break
                    if not self._reopen(src, _pcap_reason(e)):
                        break
                    fd, batch_was_full = src.handle.getfd(), False
                    continue
            batch_was_full = len(meta) // 16 >= self.settings.batch_packets
            now = time.monotonic()
            named = None
            if meta and (src.bpf is not None or self.left is not None):
                data, meta, _, named, _ = self._filtered(src, data, meta, None)
            if named is not None:  # the filter rejected name packets the kernel let through for their names
                self._dispatch_names(live=True, decoder=self._names_of(src, data, *named))
            if meta:
                n = self.decoder.decode(data, meta, None, src.datalink, src.snaplen, src.iface)
                self._dispatch(n, live=True)
                if named is None:
                    self._dispatch_names(live=True)
                last_packet_mono = now
                last_packet_clock = int(self.decoder.clock[0])
            elif last_packet_clock and now - last_packet_mono > IDLE_CLOCK_AFTER_S:
                # no traffic: let packet time run on with the wall clock so idle flows expire
                self.decoder.clock[0] = max(int(self.decoder.clock[0]),
                                            last_packet_clock + int((now - last_packet_mono) * 1e6))
            elif not last_packet_clock and not meta:
                self.decoder.clock[0] = max(int(self.decoder.clock[0]), int(time.time() * 1e6))
            self._publish_clock()
            if now - last_stats > KERNEL_STATS_EVERY_S:
                self._kernel_stats(src)
                last_stats = now
        self._kernel_stats(src)

    def _kernel_stats(self, src: Source) -> None:
        try:
            _, drop, ifdrop = src.handle.stats()
        except (pcapy.PcapError, ValueError):  # ValueError: closed (the run stopped while it was down)
            return
        self.counters[CN.C_KERNEL_DROPPED] = self._dropped_before + drop + ifdrop

    def _reopen(self, src: Source, reason: str) -> bool:
        """The interface went down or away (libpcap's read failed): say so once, then open it again every
        REOPEN_EVERY_S until it works (True) or the run stops (False). The other interfaces' readers go on; the
        clock runs on with the wall clock meanwhile, so the flows of the others (and this one's) still expire."""
        self._kernel_stats(src)
        self._dropped_before = int(self.counters[CN.C_KERNEL_DROPPED])
        self.report(f"interface {src.name}: {reason}; opening it again every {REOPEN_EVERY_S:g} s, "
                    "the other interfaces go on", "warning")
        try:
            src.handle.close()
        except (pcapy.PcapError, AttributeError):
            pass
        while True:
            deadline = time.monotonic() + REOPEN_EVERY_S
            while time.monotonic() < deadline:
                if self.stop_requested() or self.abort_requested():
                    return False
                time.sleep(LIVE_TIMEOUT_MS / 1000)
                self.decoder.clock[0] = max(int(self.decoder.clock[0]), int(time.time() * 1e6))
                self._publish_clock()
            try:
                again = open_interface(src.name, self.settings, src.fanout_group)
            except (SourceError, UsageError):
                continue
            if again.datalink != src.datalink:  # not the link it was: flows would be decoded as another
                again.handle.close()
                continue
            src.handle = again.handle
            self.report(f"interface {src.name} is back: capturing again", "info")
            return True

    def run_chunks(self, sources: list[Source], next_chunk) -> int:
        """Read the chunks ``next_chunk()`` gives (None: no more), each ended by a marker in every ring."""
        try:
            while not self.stop_requested() and not self.abort_requested():
                chunk = next_chunk()
                if chunk is None:
                    break
                if self._read_chunk(sources[chunk.source], chunk) or self.left == 0:
                    clock = int(self.decoder.clock[0])
                    for ring in self.rings:
                        ring.write(end_marker(clock, L.RING_FRAMING, L.RECORD_BYTES), self.abort_requested)
                    if self.name_ring is not None:
                        self.name_ring.write(end_marker(clock, L.RING_FRAMING, L.NAME_SLOT_BYTES), self.abort_requested)
        finally:
            self._publish_clock()
            for r in self._all_rings():
                r.close_producer()
        return EXIT_OK

    def _read_chunk(self, src: Source, chunk) -> bool:
        """Decode and hand on one chunk; False if stopped before its end."""
        self.decoder.clock[0] = 0  # the chunk's own running maximum; consumers fold in the chunks before
        self.decoder.frag[:] = 0
        self.decoder.frag[chunk.frag_slots] = chunk.frag_rows
        if self.settings.count:
            self.left = chunk.packets  # the planner cut the last chunk at the count
        reader = ChunkReader(src.path, chunk, self.settings.batch_packets)
        try:
            return self._read_through(src, reader, counted_from=chunk.start)
        finally:
            reader.close()

    def _read_through(self, src: Source, reader: ChunkReader, counted_from: int) -> bool:
        """Decode and hand on every batch ``reader`` gives, counting the file's bytes read from ``counted_from``;
        False if stopped before its end."""
        consumed = counted_from
        while self.left != 0:
            if self.stop_requested() or self.abort_requested():
                return False
            batch = reader.next()
            if batch is None:
                return True
            self._replay(src, *self._filtered(src, *batch))
            self.counters[CN.C_INPUT_BYTES] += reader.position - consumed
            consumed = reader.position
        return False  # --count reached: the rest of the file is not read

    def run(self, sources: list[Source]) -> int:
        """Read every source in order; returns 0, or EXIT_DAMAGED's status if one was damaged.

        A damaged file is reported and the next one is read: a cut last file of a
        rotation should not cost the files after it."""
        try:
            for src in sources:
                if self.stop_requested() or self.abort_requested() or self.left == 0:
                    break
                try:
                    if src.live:
                        self.run_live(src)
                    else:
                        self.run_file(src)
                except DamagedCaptureError as e:
                    self.report(str(e), "error")
                    self.damaged = True
        finally:
            self._publish_clock()
            for r in self._all_rings():
                r.close_producer()
        return EXIT_DAMAGED if self.damaged else EXIT_OK


def main(topo: "Topology", settings: Settings, sources: list[Source], k: int = 0) -> NoReturn:
    """Capture reader ``k``'s process: every source with one reader; live with several, interface ``k``
    (PACKET_FANOUT); replay with several, the chunks the planner deals to ``k``. SIGTERM (the supervisor
    nudging a read blocked on a pipe, or the supervisor's death) stops it as CTL_STOP does."""
    stop = {"flag": False}

    def on_term(signum, frame):
        stop["flag"] = True

    def body(parent: int) -> int:
        stop_requested = lambda: stop["flag"] or bool(topo.control[CTL_STOP])  # noqa: E731
        loop = CaptureLoop(settings, topo.reader_rings[k], topo.reader_counters[k], stop_requested=stop_requested,
                           abort_requested=lambda: bool(topo.control[CTL_ABORT]),
                           report=Reporter(topo.reports, Role("capture")),
                           name_ring=topo.name_rings[k] if topo.name_rings else None)
        if topo.n_readers == 1:
            return loop.run(sources)
        if settings.live:
            return loop.run(sources[k:k + 1])
        return loop.run_chunks(sources, lambda: next_chunk(topo.chunk_queues[k], stop_requested))

    run_child(Role("capture", None if topo.n_readers == 1 else k), body, topo.reports, on_term=on_term)
