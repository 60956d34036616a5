"""Name packets -> timed name observations: the resolver's core, with no I/O and no clock.

Capture copies every packet that may carry names into the resolver's ring, one slot each: the packet record
(``packet.layout``) and its L4 payload, cut to the slot. ``NameExtractor`` turns slots into
``(ts_us, Observation)`` pairs with the parsers of ``names.extract``, choosing the parser by port, and counts
what it could not parse. ``observations_of`` turns the rows of a names message (``ipc.wire``) back into pairs.
"""

import struct

import numpy as np

from devourer import counters as CN
from devourer.errors import DecodeError
from devourer.flow.record import format_addr, format_mac
from devourer.names import extract
from devourer.packet import layout as L

MAC_TEXTS_KEPT = 100_000  # formatted MACs remembered (a bound: the MACs on a link are the sender's to choose)


class NameExtractor:
    """Slots of the resolver ring -> (ts_us, Observation) pairs. No I/O, no clock."""

    def __init__(self, counters: np.ndarray):
        self.counters = counters
        self._macs: dict[int, str | None] = {}

    def slots(self, slots: np.ndarray) -> list[tuple[int, extract.Observation]]:
        recs = slots[:, :L.RECORD_BYTES].copy().view(L.PACKET_DTYPE).ravel()
        kept = _u16(slots, L.NAME_KEPT_AT).tolist()
        on_wire = _u16(slots, L.NAME_ON_WIRE_AT).tolist()
        columns = zip(recs["ts_us"].tolist(), recs["flags"].tolist(), recs["proto"].tolist(),
                      recs["port_a"].tolist(), recs["port_b"].tolist(), recs["src_mac"].tolist(), kept, on_wire)
        addr_a, addr_b = recs["addr_a"].tobytes(), recs["addr_b"].tobytes()
        out = []
        for i, (ts, flags, proto, pa, pb, mac, n, n_wire) in enumerate(columns):
            self.counters[CN.R_PACKETS] += 1
            if n < n_wire:
                self.counters[CN.R_TRUNCATED] += 1
            payload = slots[i, L.NAME_PAYLOAD_AT:L.NAME_PAYLOAD_AT + n].tobytes()
            a, b = addr_a[16 * i:16 * i + 16], addr_b[16 * i:16 * i + 16]
            if flags & L.FLAG_FROM_B:
                src, dst, sport, dport = b, a, pb, pa
            else:
                src, dst, sport, dport = a, b, pa, pb
            try:
                obs = self.packet(proto, bool(flags & L.FLAG_V6), src, dst, sport, dport, mac, payload)
            except DecodeError:
                self.counters[CN.R_MALFORMED] += 1
                continue
            if obs:
                out.extend((ts, o) for o in obs)
                self.counters[CN.R_OBSERVATIONS] += len(obs)
        return out

    def _mac(self, word: int) -> str | None:
        text = self._macs.get(word, 0)
        if text == 0:
            if len(self._macs) > MAC_TEXTS_KEPT:
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
                return extract.dns_observations(payload[2:2 + size], "dns") if is_response(payload[2:]) else []
            name = extract.tls_sni(payload)
            return [extract.Observation("tls_sni", "sni", name, format_addr(dst, v6))] if name else []
        ports = (sport, dport)
        if 5353 in ports or 5355 in ports or 53 in ports:
            if not is_response(payload):
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


def is_response(msg: bytes) -> bool:
    """A DNS-format message with the QR bit set (a query teaches nothing; a short one is parsed to count it)."""
    return len(msg) < 3 or bool(msg[2] & 0x80)




def _u16(slots: np.ndarray, at: int) -> np.ndarray:
    """The little-endian u16 at byte ``at`` of every slot."""
    return slots[:, at].astype(np.int64) | slots[:, at + 1].astype(np.int64) << 8


def observations_of(rows) -> list[tuple[int, extract.Observation]]:
    """The rows of a names message (``ipc.wire.Names``: ts_us and the observation's fields) as pairs."""
    return [(row[0], extract.Observation(*row[1:7], tuple(row[7]))) for row in rows]
