"""The resolver process: name-resolution packets in, timed name observations out.

Capture copies every packet that may carry names (with its packet record) into
the resolver's ring; ``NameExtractor`` is the core that turns such slots into
``Observation``s, and ``ResolverLoop`` sends them to the exporter together with
a watermark: the capture clock up to which every name packet has been handled.
The exporter enriches a flow only once the watermark has passed the flow's last
packet, so replays give the same names whatever the timing.
"""

import struct
import time

import msgpack
import numpy as np

from devourer.errors import DecodeError
from devourer.ipc.ordered import OrderedRings
from devourer.flow.record import format_addr, format_mac
from devourer.names import extract
from devourer.packet import layout as L
from devourer.procs.common import orphaned, put_until

R_PACKETS = 0  # name packets handled
R_OBSERVATIONS = 1  # observations made
R_MALFORMED = 2  # name packets (or names in them) that could not be parsed
R_TRUNCATED = 3  # payloads cut by the slot or the snaplen (parsed as far as they go)
N_RESOLVER_COUNTERS = 4
WATERMARK_DONE = (1 << 63) - 1
GATHER_S = 0.002  # pause after a small read, so the loop runs per batch rather than per packet
SEND_EVERY_S = 0.02  # observations and watermark go out at most this often (and at the end)


class NameExtractor:
    """Slots of the resolver ring -> (ts_us, Observation) pairs. No I/O, no clock."""

    def __init__(self, counters: np.ndarray):
        self.counters = counters
        self._macs: dict[int, str | None] = {}

    def slots(self, slots: np.ndarray) -> list[tuple[int, extract.Observation]]:
        recs = slots[:, :L.RECORD_BYTES].copy().view(L.PACKET_DTYPE).ravel()
        kept = (slots[:, 88].astype(np.int64) | slots[:, 89].astype(np.int64) << 8).tolist()
        on_wire = (slots[:, 90].astype(np.int64) | slots[:, 91].astype(np.int64) << 8).tolist()
        columns = zip(recs["ts_us"].tolist(), recs["flags"].tolist(), recs["proto"].tolist(),
                      recs["port_a"].tolist(), recs["port_b"].tolist(), recs["src_mac"].tolist(), kept, on_wire)
        addr_a, addr_b = recs["addr_a"].tobytes(), recs["addr_b"].tobytes()
        out = []
        for i, (ts, flags, proto, pa, pb, mac, n, n_wire) in enumerate(columns):
            self.counters[R_PACKETS] += 1
            if n < n_wire:
                self.counters[R_TRUNCATED] += 1
            payload = slots[i, L.NAME_PAYLOAD_AT:L.NAME_PAYLOAD_AT + n].tobytes()
            a, b = addr_a[16 * i:16 * i + 16], addr_b[16 * i:16 * i + 16]
            if flags & L.FLAG_FROM_B:
                src, dst, sport, dport = b, a, pb, pa
            else:
                src, dst, sport, dport = a, b, pa, pb
            try:
                obs = self.packet(proto, bool(flags & L.FLAG_V6), src, dst, sport, dport, mac, payload)
            except DecodeError:
                self.counters[R_MALFORMED] += 1
                continue
            if obs:
                out.extend((ts, o) for o in obs)
                self.counters[R_OBSERVATIONS] += len(obs)
        return out

    def _mac(self, word: int) -> str | None:
        text = self._macs.get(word, 0)
        if text == 0:
            if len(self._macs) > 100_000:
                self._macs.clear()
            text = self._macs[word] = format_mac(word)
        return text

    def packet(self, proto: int, v6: bool, src: bytes, dst: bytes, sport: int, dport: int, mac_word: int,
               payload: bytes) -> list[extract.Observation]:
        """Observations from one name packet (its L4 payload and endpoints)."""
        if proto == 6:
            if 53 in (sport, dport):
                if len(payload) < 2:
                    raise DecodeError("TCP DNS message without its length")
                size = struct.unpack_from("!H", payload)[0]
                return extract.dns_observations(payload[2:2 + size], "dns") if _is_response(payload[2:]) else []
            name = extract.tls_sni(payload)
            return [extract.Observation("tls_sni", "sni", name, format_addr(dst, v6))] if name else []
        ports = (sport, dport)
        if 5353 in ports or 5355 in ports or 53 in ports:
            if not _is_response(payload):
                return []  # queries name nothing
            source = "mdns" if 5353 in ports else "llmnr" if 5355 in ports else "dns"
            return extract.dns_observations(payload, source, self._mac(mac_word) if source != "dns" else None)
        if 137 in ports:
            return extract.nbns_observations(payload, format_addr(src, v6), self._mac(mac_word))
        if 67 in ports or 68 in ports:
            return extract.dhcp_observations(payload)
        if 546 in ports or 547 in ports:
            return extract.dhcpv6_observations(payload, self._mac(mac_word),
                                               format_addr(src, v6) if sport == 546 else None)
        return []


def _is_response(msg: bytes) -> bool:
    """A DNS-format message with the QR bit set (a query teaches nothing; a short one is parsed to count it)."""
    return len(msg) < 3 or bool(msg[2] & 0x80)


def encode_names(observations, watermark: int) -> bytes:
    return msgpack.packb({"t": "names", "wm": watermark, "obs": [(ts, *o) for ts, o in observations]})


def decode_names(message: dict):
    """(watermark, [(ts_us, Observation)]) from a decoded names message."""
    obs = [(row[0], extract.Observation(*row[1:7], tuple(row[7]))) for row in message["obs"]]
    return message["wm"], obs


class ResolverLoop:
    """``out_queue``: the exporter's queue, or a callable giving the current one (the exporter may be restarted
    with a new queue; what was sent to the old one is lost with it)."""

    def __init__(self, rings, out_queue, counters, parent_pid: int, resolver_id: int, batch_slots: int = 256,
                 ordered: bool = True, give_up=lambda: False):
        self.input = OrderedRings(rings if isinstance(rings, (list, tuple)) else [rings], ordered)
        self.current_queue = out_queue if callable(out_queue) else (lambda: out_queue)
        self.core = NameExtractor(counters)
        self.parent_pid = parent_pid
        self.resolver_id = resolver_id
        self.buf = np.zeros((batch_slots, L.NAME_SLOT_BYTES), np.uint8)
        self.pending: list = []
        self.sent_wm = -1
        self.give_up = give_up  # the run failed: stop waiting for room in the queue (its reader may be dead)

    def _send(self, message: bytes) -> bool:
        queue = self.current_queue()
        return put_until(queue, message, lambda: orphaned(self.parent_pid) or self.current_queue() is not queue
                         or self.give_up())

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
            clock = self.input.clock_us()  # read first: every name packet up to it is then in or behind us
            n, chunk_ended = self.input.read_into(self.buf)
            if n:
                self.pending.extend(self.core.slots(self.buf[:n]))
            if chunk_ended:
                continue
            if n:
                pause = 1e-4
                if len(self.pending) > 2000 or time.monotonic() - last_send > SEND_EVERY_S:
                    self._flush(self.sent_wm)
                    last_send = time.monotonic()
                if n < len(self.buf) // 4 and len(self.input.rings) == 1 and not self.input.finished():
                    # a trickle: let a batch gather (the ring holds thousands) rather than wake per packet
                    time.sleep(GATHER_S)
                continue
            if self.input.finished():
                break
            if orphaned(self.parent_pid):
                return 1
            if time.monotonic() - last_send > SEND_EVERY_S:
                self._flush(clock)  # drained: everything up to clock is handled
                last_send = time.monotonic()
            time.sleep(pause)
            pause = min(pause * 2, 5e-3)
        self._flush(WATERMARK_DONE)
        self._send(wire.done(self.resolver_id))
        return 0
