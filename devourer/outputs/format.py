"""Flow rows -> the JSON record of DESIGN.md §4, one line per flow (orjson).

    {"id", "protocol", "src": {"addr", "port", "hw_addr", "names"}, "dst": {...},
     "first_seen_at", "last_seen_at", "src_stat": {"bytes", "packets"}, "dst_stat": {...},
     "status", "end_reason"}

plus the extra fields ``vlan``, ``src_tcp_flags``, ``dst_tcp_flags``, ``icmp_type``,
``icmp_code`` and ``sensor``. The id is a UUIDv5 of (sensor, key, first-seen time),
so exporting the same flow twice gives the same id.
"""

import socket
import time
import uuid

import orjson

from devourer.flow import record as R

PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp4", 58: "icmp6"}
ID_NAMESPACE = uuid.UUID("6f1d2c0e-2b55-4b8e-9a43-64657666f10f")


def format_addr(raw16: bytes, v6: bool) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw16) if v6 else socket.inet_ntop(socket.AF_INET, raw16[:4])


def format_mac(word: int) -> str | None:
    if not word >> 63:
        return None
    return ":".join(f"{(word >> s) & 0xFF:02x}" for s in range(40, -8, -8))


class RecordFormatter:
    """Turns batches of flow rows into JSON-lines bytes. Caches repeated strings."""

    def __init__(self, sensor: str):
        self.sensor = sensor
        self._addr_cache: dict[tuple[bytes, bool], str] = {}
        self._second_cache: dict[int, str] = {}

    def _addr(self, raw: bytes, v6: bool) -> str:
        key = (raw, v6)
        s = self._addr_cache.get(key)
        if s is None:
            if len(self._addr_cache) > 1_000_000:
                self._addr_cache.clear()
            s = self._addr_cache[key] = format_addr(raw, v6)
        return s

    def _time(self, ts_us: int) -> str:
        sec, us = divmod(ts_us, 1_000_000)
        prefix = self._second_cache.get(sec)
        if prefix is None:
            if len(self._second_cache) > 100_000:
                self._second_cache.clear()
            prefix = self._second_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{prefix}.{us:06d}Z"

    def record(self, row) -> dict:
        """One flow row (a sequence of 16 ints) -> the record dict."""
        port_a, port_b, vlan, proto, v6 = R.unpack_key(row[R.F_KEY])
        raw_a = row[0].to_bytes(8, "little") + row[1].to_bytes(8, "little")
        raw_b = row[2].to_bytes(8, "little") + row[3].to_bytes(8, "little")
        addr_a, addr_b = self._addr(raw_a, v6), self._addr(raw_b, v6)
        state = row[R.F_STATE]
        protocol = PROTOCOL_NAMES.get(proto, str(proto))
        a = {"addr": addr_a, "port": port_a, "hw_addr": format_mac(row[R.F_MAC_A]), "names": []}
        b = {"addr": addr_b, "port": port_b, "hw_addr": format_mac(row[R.F_MAC_B]), "names": []}
        a_stat = {"bytes": row[R.F_A_BYTES], "packets": row[R.F_A_PKTS]}
        b_stat = {"bytes": row[R.F_B_BYTES], "packets": row[R.F_B_PKTS]}
        flags_a, flags_b = (state >> 8) & 0xFF, (state >> 16) & 0xFF
        if state & R.ST_SRC_IS_B:
            src, dst, src_stat, dst_stat, src_flags, dst_flags = b, a, b_stat, a_stat, flags_b, flags_a
        else:
            src, dst, src_stat, dst_stat, src_flags, dst_flags = a, b, a_stat, b_stat, flags_a, flags_b
        first = row[R.F_FIRST]
        is_icmp = proto in (1, 58)
        return {
            "id": str(uuid.uuid5(ID_NAMESPACE, f"{self.sensor}|{proto}|{vlan}|{addr_a}|{port_a}|{addr_b}|{port_b}|{first}")),
            "protocol": protocol,
            "src": src,
            "dst": dst,
            "first_seen_at": self._time(first),
            "last_seen_at": self._time(row[R.F_LAST]),
            "src_stat": src_stat,
            "dst_stat": dst_stat,
            "status": "established" if state & R.ST_ESTABLISHED else "init",
            "end_reason": R.END_REASONS.get(row[R.F_END], "unknown"),
            "vlan": vlan or None,
            "src_tcp_flags": src_flags if proto == 6 else None,
            "dst_tcp_flags": dst_flags if proto == 6 else None,
            "icmp_type": (state >> 24) & 0xFF if is_icmp else None,
            "icmp_code": (state >> 32) & 0xFF if is_icmp else None,
            "sensor": self.sensor,
        }

    def lines(self, rows) -> bytes:
        """A (k, FLOW_WORDS) uint64 array -> k JSON lines."""
        dumps = orjson.dumps
        return b"".join(dumps(self.record(row)) + b"\n" for row in rows.tolist())
