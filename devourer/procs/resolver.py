"""The resolver process: name-resolution packets in, timed name observations out.

Capture copies every packet that may carry names (with its packet record) into
the resolver's ring; ``NameExtractor`` is the core that turns such slots into
``Observation``s, and ``ResolverLoop`` sends them to the exporter together with
a watermark: the capture clock up to which every name packet has been handled.
The exporter enriches a flow only once the watermark has passed the flow's last
packet, so replays give the same names whatever the timing.
"""

import queue as queue_mod
import struct
import time

import msgpack
import numpy as np

from devourer.errors import DecodeError
from devourer.flow.record import format_addr, format_mac
from devourer.names import extract
from devourer.packet import layout as L
from devourer.procs.common import orphaned

R_PACKETS = 0  # name packets handled
R_OBSERVATIONS = 1  # observations made
R_MALFORMED = 2  # name packets (or names in them) that could not be parsed
R_TRUNCATED = 3  # payloads cut by the slot or the snaplen (parsed as far as they go)
N_RESOLVER_COUNTERS = 4
WATERMARK_DONE = (1 << 63) - 1
SEND_EVERY_S = 0.05


class NameExtractor:
    """Slots of the resolver ring -> (ts_us, Observation) pairs. No I/O, no clock."""

    def __init__(self, counters: np.ndarray):
        self.counters = counters

    def slots(self, slots: np.ndarray) -> list[tuple[int, extract.Observation]]:
        recs = slots[:, :L.RECORD_BYTES].copy().view(L.PACKET_DTYPE).ravel()
        out = []
        for i in range(len(slots)):
            self.counters[R_PACKETS] += 1
            kept = int(slots[i, 88]) | int(slots[i, 89]) << 8
            on_wire = int(slots[i, 90]) | int(slots[i, 91]) << 8
            if kept < on_wire:
                self.counters[R_TRUNCATED] += 1
            payload = slots[i, L.NAME_PAYLOAD_AT:L.NAME_PAYLOAD_AT + kept].tobytes()
            try:
                obs = self.packet(recs[i], payload)
            except DecodeError:
                self.counters[R_MALFORMED] += 1
                continue
            ts = int(recs[i]["ts_us"])
            out.extend((ts, o) for o in obs)
            self.counters[R_OBSERVATIONS] += len(obs)
        return out

    def packet(self, rec, payload: bytes) -> list[extract.Observation]:
        flags = int(rec["flags"])
        v6 = bool(flags & L.FLAG_V6)
        a, b = rec["addr_a"].tobytes(), rec["addr_b"].tobytes()
        pa, pb = int(rec["port_a"]), int(rec["port_b"])
        if flags & L.FLAG_FROM_B:
            src, dst, sport, dport = b, a, pb, pa
        else:
            src, dst, sport, dport = a, b, pa, pb
        src_addr, dst_addr = format_addr(src, v6), format_addr(dst, v6)
        mac = format_mac(int(rec["src_mac"]))
        if int(rec["proto"]) == 6:
            if 53 in (sport, dport):
                if len(payload) < 2:
                    raise DecodeError("TCP DNS message without its length")
                size = struct.unpack_from("!H", payload)[0]
                return extract.dns_observations(payload[2:2 + size], "dns")
            name = extract.tls_sni(payload)
            return [extract.Observation("tls_sni", "sni", name, dst_addr)] if name else []
        ports = (sport, dport)
        if 5353 in ports:
            return extract.dns_observations(payload, "mdns", mac)
        if 5355 in ports:
            return extract.dns_observations(payload, "llmnr", mac)
        if 53 in ports:
            return extract.dns_observations(payload, "dns")
        if 137 in ports:
            return extract.nbns_observations(payload, src_addr, mac)
        if 67 in ports or 68 in ports:
            return extract.dhcp_observations(payload)
        if 546 in ports or 547 in ports:
            return extract.dhcpv6_observations(payload, mac, src_addr if sport == 546 else None)
        return []


def encode_names(observations, watermark: int) -> bytes:
    return msgpack.packb({"t": "names", "wm": watermark, "obs": [(ts, *o) for ts, o in observations]})


def decode_names(message: dict):
    """(watermark, [(ts_us, Observation)]) from a decoded names message."""
    obs = [(row[0], extract.Observation(*row[1:7], tuple(row[7]))) for row in message["obs"]]
    return message["wm"], obs


class ResolverLoop:
    def __init__(self, ring, out_queue, counters, parent_pid: int, resolver_id: int, batch_slots: int = 256):
        self.ring = ring
        self.queue = out_queue
        self.core = NameExtractor(counters)
        self.parent_pid = parent_pid
        self.resolver_id = resolver_id
        self.buf = np.zeros((batch_slots, L.NAME_SLOT_BYTES), np.uint8)
        self.pending: list = []
        self.sent_wm = -1

    def _send(self, message: bytes) -> bool:
        while True:
            try:
                self.queue.put(message, timeout=0.5)
                return True
            except queue_mod.Full:
                if orphaned(self.parent_pid):
                    return False

    def _flush(self, watermark: int) -> None:
        if self.pending or watermark > self.sent_wm:
            self._send(encode_names(self.pending, watermark))
            self.pending = []
            self.sent_wm = watermark

    def run(self) -> int:
        from devourer.ipc import wire

        pause = 1e-4
        last_send = time.monotonic()
        while True:
            clock = self.ring.clock_us()  # read first: every name packet up to it is then in or behind us
            n = self.ring.read_into(self.buf)
            if n:
                self.pending.extend(self.core.slots(self.buf[:n]))
                pause = 1e-4
                if len(self.pending) > 2000 or time.monotonic() - last_send > SEND_EVERY_S:
                    self._flush(self.sent_wm)
                    last_send = time.monotonic()
                continue
            if self.ring.closed() and self.ring.pending() == 0:
                break
            if orphaned(self.parent_pid):
                return 1
            self._flush(clock)  # drained: everything up to clock is handled
            last_send = time.monotonic()
            time.sleep(pause)
            pause = min(pause * 2, 5e-3)
        self._flush(WATERMARK_DONE)
        self._send(wire.done(self.resolver_id))
        return 0
