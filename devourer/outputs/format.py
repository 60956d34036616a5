"""Flow rows -> the JSON record of docs/architecture.md §4, one line per flow.

    {"id", "protocol", "src": {"addr", "port", "hw_addr", "names"}, "dst": {...},
     "first_seen_at", "last_seen_at", "src_stat": {"bytes", "packets"}, "dst_stat": {...},
     "status", "end_reason"}

plus the extra fields ``vlan``, ``src_tcp_flags``, ``dst_tcp_flags``, ``icmp_type``,
``icmp_code``, ``tunnel``, ``interface`` and ``sensor``.

The compiled loop in ``outputs.render`` writes every line; this module gives it
what only Python has: each endpoint's names from the name map, JSON-encoded by
orjson (strings from the wire are never written unescaped). The id is a UUID
(version 8, RFC 9562) made from a 128-bit hash of (sensor, key, first-seen
time), so exporting the same flow twice gives the same id.
"""

import hashlib

import numpy as np
import orjson

from devourer.flow import record as R
from devourer.flow.key import V6_TAG, fingerprints
from devourer.outputs.render import MAX_FIXED_BYTES, render

class RecordFormatter:
    """Turns batches of flow rows into JSON-lines bytes."""

    def __init__(self, sensor: str, interfaces: tuple = (), community_seed: int = 0):
        """``interfaces``: what each interface id of the run is called in records (``Settings.interface_labels``);
        ``community_seed``: the Community ID's seed (``--community-id-seed``, 0-65535)."""
        self.sensor = sensor
        self.community_seed = community_seed
        self.interfaces = tuple(interfaces)
        self.seed = self._seed = int.from_bytes(hashlib.blake2b(sensor.encode(), digest_size=8).digest(), "little")
        self._sensor_json = np.frombuffer(orjson.dumps(sensor), np.uint8).copy()
        labels = [orjson.dumps(label) for label in interfaces]
        self._iface_blob = np.frombuffer(bytearray(b"".join(labels) or b" "), np.uint8)
        self._iface_offsets = np.cumsum([0] + [len(x) for x in labels], dtype=np.int64)
        self._iface_longest = max((len(x) for x in labels), default=0)

    def records(self, rows: np.ndarray, names=None) -> list[dict]:
        """A (k, FLOW_WORDS) uint64 array -> k record dicts (for outputs that want objects)."""
        if len(rows) == 0:
            return []
        return [orjson.loads(line) for line in self.lines(rows, names).splitlines()]

    def lines(self, rows: np.ndarray, names=None) -> bytes:
        """A (k, FLOW_WORDS) uint64 array -> k JSON lines. ``names`` (a
        ``names.table.NameTable``) gives each endpoint's names (none without it)."""
        k = len(rows)
        if k == 0:
            return b""
        rows = np.ascontiguousarray(rows, np.uint64)
        blob, offsets = [], [0]
        if names is None:
            src_names = dst_names = np.full(k, -1, np.int32)
        else:
            src_names = np.full(k, -1, np.int32)
            dst_names = np.full(k, -1, np.int32)
            self.name_lists(names, rows, src_names, dst_names, blob, offsets)
        names_blob = np.frombuffer(bytearray(b"".join(blob)), np.uint8)  # writable: one compiled variant
        size = k * (MAX_FIXED_BYTES + len(self._sensor_json) + self._iface_longest)
        if len(names_blob):  # exactly what the lists take: a shared list is written once per row that has it
            lengths = np.diff(np.asarray(offsets, np.int64))
            size += int(lengths[src_names[src_names >= 0]].sum() + lengths[dst_names[dst_names >= 0]].sum())
        buf = np.empty(size, np.uint8)
        used = render(rows, np.uint64(self._seed), self._sensor_json, self._iface_blob, self._iface_offsets,
                      src_names, dst_names, names_blob, np.asarray(offsets, np.int64), buf,
                      np.int64(self.community_seed))
        return buf[:used].tobytes()

    @staticmethod
    def name_lists(names, rows, src_names, dst_names, blob: list, offsets: list) -> None:
        """Fill the per-row indexes of each endpoint's JSON name list (``blob``/``offsets``).

        Rows with the same names share one encoded list."""
        v6 = ((rows[:, R.F_KEY] >> np.uint64(56)) & np.uint64(1)).astype(bool)
        src_is_b = (rows[:, R.F_STATE] & np.uint64(R.ST_SRC_IS_B)).astype(bool)
        names_for = names.names_for
        encoded: dict[tuple, int] = {}
        for at, is_dst in ((R.F_ADDR_A, False), (R.F_ADDR_B, True)):
            fps = fingerprints(rows[:, at:at + 2], v6)
            named = names.fingerprints.intersection(fps.tolist())  # in C: most endpoints have no name
            if not named:
                continue
            idx = np.flatnonzero(np.isin(fps, np.fromiter(named, np.uint64, len(named))))
            to_src, to_dst = ([], []), ([], [])
            for i, w0, w1, first, last, is_v6, b_first in zip(
                    idx.tolist(), rows[idx, at].tolist(), rows[idx, at + 1].tolist(), rows[idx, R.F_FIRST].tolist(),
                    rows[idx, R.F_LAST].tolist(), v6[idx].tolist(), src_is_b[idx].tolist()):
                found = names_for(w0 | w1 << 64 | V6_TAG if is_v6 else w0 & 0xFFFFFFFF, first, last)
                if not found:
                    continue
                key = tuple(found)
                j = encoded.get(key)
                if j is None:
                    j = encoded[key] = len(blob)
                    blob.append(orjson.dumps(found))
                    offsets.append(offsets[-1] + len(blob[-1]))
                # side A is the src unless the row says B sent the first packet
                side = to_dst if is_dst != b_first else to_src
                side[0].append(i)
                side[1].append(j)
            src_names[to_src[0]] = to_src[1]
            dst_names[to_dst[0]] = to_dst[1]


def warm_up() -> None:
    """Compile (or load from numba's cache) the record writer before the supervisor forks the exporter."""
    from devourer.names.table import NameTable

    RecordFormatter("warm-up").lines(np.zeros((1, R.FLOW_WORDS), np.uint64), NameTable())
