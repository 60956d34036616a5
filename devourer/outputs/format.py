"""Flow rows -> the JSON record of DESIGN.md §4, one line per flow (orjson).

    {"id", "protocol", "src": {"addr", "port", "hw_addr", "names"}, "dst": {...},
     "first_seen_at", "last_seen_at", "src_stat": {"bytes", "packets"}, "dst_stat": {...},
     "status", "end_reason"}

plus the extra fields ``vlan``, ``src_tcp_flags``, ``dst_tcp_flags``, ``icmp_type``,
``icmp_code`` and ``sensor``.

Work that is the same for every row (ids, timestamps, key fields, the choice of
src and dst) is done on whole columns with numpy; each line is then one
%-format of a fixed template. The id is
a UUID (version 8, RFC 9562) made from a 128-bit hash of (sensor, key,
first-seen time), so exporting the same flow twice gives the same id.
"""

import hashlib
import itertools
import socket

import numpy as np
import orjson

from devourer.flow import record as R
from devourer.flow.record import format_mac

PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp4", 58: "icmp6"}
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_UUID_DASHES = (8, 13, 18, 23)
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    h = (h ^ w) * _M1
    return h ^ (h >> np.uint64(29))


def _finish(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(30))) * _M2
    h = (h ^ (h >> np.uint64(27))) * _M3
    return h ^ (h >> np.uint64(31))


def flow_ids(rows: np.ndarray, sensor_seed: int) -> list[str]:
    """Deterministic UUIDv8 strings from (sensor, key words, first-seen time), one per row."""
    key_words = [rows[:, i] for i in (R.F_ADDR_A, R.F_ADDR_A + 1, R.F_ADDR_B, R.F_ADDR_B + 1, R.F_KEY, R.F_FIRST)]
    with np.errstate(over="ignore"):
        hi = np.full(len(rows), np.uint64(sensor_seed), np.uint64)
        lo = np.full(len(rows), np.uint64(sensor_seed) ^ np.uint64(0x5851F42D4C957F2D), np.uint64)
        for w in key_words:
            hi = _mix(hi, w)
            lo = _mix(lo, w ^ np.uint64(0xD6E8FEB86659FD93))
        hi, lo = _finish(hi), _finish(lo ^ hi)
    hi = (hi & np.uint64(0xFFFFFFFFFFFF0FFF)) | np.uint64(0x8000)  # version 8
    lo = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)  # RFC 9562 variant
    big_endian = np.empty((len(rows), 2), ">u8")
    big_endian[:, 0] = hi
    big_endian[:, 1] = lo
    raw = big_endian.view(np.uint8).reshape(-1, 16)
    hexed = np.empty((len(rows), 32), np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 15]
    text = np.insert(hexed, [8, 12, 16, 20], ord("-"), axis=1)
    return text.view("S36").ravel().astype(str).tolist()


def second_prefixes(us: np.ndarray) -> tuple[list[str], list[int]]:
    """Microseconds -> ('YYYY-MM-DDTHH:MM:SS' per row, microsecond part per row).

    Flows of a batch share few distinct seconds, so each is formatted once."""
    seconds, micros = np.divmod(us.astype(np.int64), 1_000_000)
    distinct, inverse = np.unique(seconds, return_inverse=True)
    text = np.datetime_as_string(distinct.astype("datetime64[s]"), unit="s").astype(object)
    return text[inverse].tolist(), micros.tolist()


def _token_table(n: int) -> np.ndarray:
    """Object array of JSON tokens: '0'..str(n-1), and 'null' at index n."""
    return np.array([str(i) for i in range(n)] + ["null"], dtype=object)


_SMALL_TOKENS = _token_table(256)
_VLAN_TOKENS = _token_table(4096)


def _json_small(values: np.ndarray, present: np.ndarray, table: np.ndarray = _SMALL_TOKENS) -> list[str]:
    """JSON tokens for small integers: the number where present, else null."""
    n = table.shape[0] - 1
    return table[np.where(present, values.astype(np.int64), n)].tolist()


class RecordFormatter:
    """Turns batches of flow rows into JSON-lines bytes."""

    def __init__(self, sensor: str):
        self.sensor = sensor
        self._seed = int.from_bytes(hashlib.blake2b(sensor.encode(), digest_size=8).digest(), "little")
        self._sensor_json = orjson.dumps(sensor).decode()
        self._addr_cache: dict[tuple[bytes, bool], str] = {}
        self._mac_cache: dict[int, str] = {}

    def _addrs(self, words: np.ndarray, v6: np.ndarray) -> list[str]:
        """(k, 2) address words -> k address strings (cached: flows share their hosts)."""
        cache = self._addr_cache
        if len(cache) > 1_000_000:
            cache.clear()
        # IPv4 keys are the address as an int (fast to hash); IPv6 keys the 16 bytes
        keys = (words[:, 0] & np.uint64(0xFFFFFFFF)).tolist()
        if v6.any():
            blob = np.ascontiguousarray(words).tobytes()
            for i in np.flatnonzero(v6).tolist():
                keys[i] = blob[16 * i:16 * i + 16]
        out = []
        get = cache.get
        for key in keys:
            text = get(key)
            if text is None:
                if isinstance(key, int):
                    text = socket.inet_ntop(socket.AF_INET, key.to_bytes(4, "little"))
                else:
                    text = socket.inet_ntop(socket.AF_INET6, key)
                cache[key] = text
            out.append(text)
        return out

    def _macs_json(self, words: np.ndarray) -> list[str]:
        """MAC words -> JSON tokens: '"aa:bb:cc:dd:ee:ff"' or 'null'."""
        cache = self._mac_cache
        if len(cache) > 100_000:
            cache.clear()
        out = []
        for w in words.tolist():
            s = cache.get(w)
            if s is None:
                m = format_mac(w)
                s = cache[w] = "null" if m is None else f'"{m}"'
            out.append(s)
        return out

    def _columns(self, rows: np.ndarray) -> dict:
        """Every field of the batch's records as a list, src/dst already resolved."""
        key = rows[:, R.F_KEY]
        u = np.uint64
        proto = ((key >> u(48)) & u(0xFF)).astype(np.int64)
        v6 = ((key >> u(56)) & u(1)).astype(bool)
        state = rows[:, R.F_STATE]
        src_is_b = (state & u(R.ST_SRC_IS_B)).astype(bool)
        a_is_src = ~src_is_b

        def src_dst(a, b):
            """(src column, dst column) from the A and B columns."""
            sel = a_is_src[:, None] if a.ndim == 2 else a_is_src
            return np.where(sel, a, b), np.where(sel, b, a)

        src_addr, dst_addr = src_dst(rows[:, R.F_ADDR_A:R.F_ADDR_A + 2], rows[:, R.F_ADDR_B:R.F_ADDR_B + 2])
        src_port, dst_port = src_dst(key & u(0xFFFF), (key >> u(16)) & u(0xFFFF))
        src_mac, dst_mac = src_dst(rows[:, R.F_MAC_A], rows[:, R.F_MAC_B])
        src_bytes, dst_bytes = src_dst(rows[:, R.F_A_BYTES], rows[:, R.F_B_BYTES])
        src_pkts, dst_pkts = src_dst(rows[:, R.F_A_PKTS], rows[:, R.F_B_PKTS])
        src_flags, dst_flags = src_dst((state >> u(8)) & u(0xFF), (state >> u(16)) & u(0xFF))
        is_tcp = proto == 6
        is_icmp = (proto == 1) | (proto == 58)
        vlan = ((key >> u(32)) & u(0xFFFF)).astype(np.int64)
        return {
            "id": flow_ids(rows, self._seed),
            "protocol": [PROTOCOL_NAMES.get(p) or str(p) for p in proto.tolist()],
            "src_addr": self._addrs(src_addr, v6), "dst_addr": self._addrs(dst_addr, v6),
            "src_port": src_port.tolist(), "dst_port": dst_port.tolist(),
            "src_mac": self._macs_json(src_mac), "dst_mac": self._macs_json(dst_mac),
            "first": second_prefixes(rows[:, R.F_FIRST]), "last": second_prefixes(rows[:, R.F_LAST]),
            "src_bytes": src_bytes.tolist(), "src_pkts": src_pkts.tolist(),
            "dst_bytes": dst_bytes.tolist(), "dst_pkts": dst_pkts.tolist(),
            "status": np.where((state & u(R.ST_ESTABLISHED)) != 0, "established", "init").tolist(),
            "end_reason": [R.END_REASONS.get(r, "unknown") for r in rows[:, R.F_END].tolist()],
            "vlan": _json_small(vlan, vlan != 0, _VLAN_TOKENS),
            "src_tcp_flags": _json_small(src_flags, is_tcp), "dst_tcp_flags": _json_small(dst_flags, is_tcp),
            "icmp_type": _json_small((state >> u(24)) & u(0xFF), is_icmp),
            "icmp_code": _json_small((state >> u(32)) & u(0xFF), is_icmp),
        }

    def records(self, rows: np.ndarray, names=None) -> list[dict]:
        """A (k, FLOW_WORDS) uint64 array -> k record dicts (for outputs that want objects)."""
        if len(rows) == 0:
            return []
        return [orjson.loads(line) for line in self.lines(rows, names).splitlines()]

    def lines(self, rows: np.ndarray, names=None) -> bytes:
        """A (k, FLOW_WORDS) uint64 array -> k JSON lines.

        Every value is computed per column (numpy, or one list comprehension), then
        each line is one %-format of a template: no dict per record. Strings that
        come from the wire go through orjson (only the sensor id today; host names
        once the resolver lands); the rest are addresses, numbers, UUIDs and
        timestamps, which need no escaping. ``names`` (a ``names.table.NameTable``)
        gives each endpoint's names (none without it)."""
        if len(rows) == 0:
            return b""
        c = self._columns(rows)
        sensor = self._sensor_json
        (first_s, first_us), (last_s, last_us) = c["first"], c["last"]
        if names is None:
            src_names = dst_names = itertools.repeat("[]")
        else:
            firsts, lasts = rows[:, R.F_FIRST].tolist(), rows[:, R.F_LAST].tolist()
            src_names = self._names_column(names, c["src_addr"], firsts, lasts)
            dst_names = self._names_column(names, c["dst_addr"], firsts, lasts)
        text = "".join([RECORD_TEMPLATE % fields for fields in zip(
            c["id"], c["protocol"], c["src_addr"], c["src_port"], c["src_mac"], src_names, c["dst_addr"],
            c["dst_port"], c["dst_mac"], dst_names, first_s, first_us, last_s, last_us, c["src_bytes"], c["src_pkts"],
            c["dst_bytes"], c["dst_pkts"], c["status"], c["end_reason"], c["vlan"], c["src_tcp_flags"],
            c["dst_tcp_flags"], c["icmp_type"], c["icmp_code"], itertools.repeat(sensor))])
        return text.encode()

    @staticmethod
    def _names_column(names, addrs: list[str], firsts: list[int], lasts: list[int]) -> list[str]:
        """JSON name lists per endpoint; ``names`` is a NameTable (``knows``, ``names_for``)."""
        knows, names_for, dumps = names.knows, names.names_for, orjson.dumps
        out = []
        for a, f, t in zip(addrs, firsts, lasts):
            found = names_for(a, f, t) if knows(a) else None
            out.append(dumps(found).decode() if found else "[]")
        return out


RECORD_TEMPLATE = (
    '{"id":"%s","protocol":"%s",'
    '"src":{"addr":"%s","port":%d,"hw_addr":%s,"names":%s},'
    '"dst":{"addr":"%s","port":%d,"hw_addr":%s,"names":%s},'
    '"first_seen_at":"%s.%06dZ","last_seen_at":"%s.%06dZ",'
    '"src_stat":{"bytes":%d,"packets":%d},"dst_stat":{"bytes":%d,"packets":%d},'
    '"status":"%s","end_reason":"%s","vlan":%s,"src_tcp_flags":%s,"dst_tcp_flags":%s,'
    '"icmp_type":%s,"icmp_code":%s,"sensor":%s}\n')
