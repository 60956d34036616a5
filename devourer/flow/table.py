"""One worker's shard of the flow table: ingest packet records, expire, flush.

Two arrays. ``rows`` holds the flows densely, one 16-word table row each
(``flow.record``, T_*), rows 0..count-1 in use; a flow that ends is replaced by
the last row. ``index`` is an open-addressing hash index (linear probing,
backward-shift deletion, no tombstones) of 8-byte entries: the low 32 bits of
the key hash capture computed, and the row number. Probing compares the hash
bits first and reads a row only on a match; growing rehashes only the index.
The rows array is reserved at --max-flows rows but mapped lazily (untouched
pages cost nothing), so memory follows the flows actually held: 128 bytes a row
plus 8-16 bytes of index (docs/architecture.md §7: at most 150 B per flow).

The hot loops are compiled; the ``FlowTable`` class around them only sizes
buffers, grows the index and evicts.

Time is data: every packet record carries ``clock_us``, capture's running
maximum of packet time, and expiry compares only that clock with the clock
values stored at the flow's first and last packet. A flow is over once the
clock passes ``last + idle`` (idle) or ``first + active`` (active); the next
packet of its key then starts a new flow. ``scan`` finds the same flows early, a bounded number of slots per call,
so records do not depend on when a scan ran, on the batch size or on how many
workers share the key space (docs/architecture.md §3, determinism).
"""

import mmap

import numba
import numpy as np

from devourer import counters as CN
from devourer.counters import K_ACTIVE, K_EVICTED, K_EXPIRED_ACTIVE, K_EXPIRED_IDLE, K_FLOWS_CREATED, K_FLUSHED
from devourer.flow import record as R
from devourer.flow.key import KEY_VNET, OCCUPIED, iface_bits, key_hash, key_word, vnet_word
from devourer.packet import layout as L

# ingest() stop codes
DONE = 0
NEED_GROW = 1
NEED_EVICT = 2
OUT_FULL = 3

MAX_LOAD = 0.75

ROW_BYTES = R.TABLE_WORDS * 8
TAG_MASK = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True, inline="always")
def _row_hash(rows, tun, r):
    """The key hash of row r, as capture computed it for the row's packets (``flow.key``)."""
    keyw = rows[r, R.T_KEY] & ~OCCUPIED
    vnet = tun[r, R.U_VNET] if (keyw & KEY_VNET) != 0 else np.uint64(0)
    return key_hash(rows[r, R.T_ADDR_A], rows[r, R.T_ADDR_A + 1], rows[r, R.T_ADDR_B], rows[r, R.T_ADDR_B + 1],
                    keyw, vnet)


@numba.njit(cache=True)
def _slot_of(index, tag, r):
    """The index slot that points at row r (whose hash has low bits ``tag``)."""
    mask = index.shape[0] - 1
    s = np.int64(tag & np.uint64(mask))
    want = np.uint64(r + 1)
    while (index[s] & TAG_MASK) != want:
        s = (s + 1) & mask
    return s


@numba.njit(cache=True)
def _unindex(index, i):
    """Empty index slot i, shifting later members of its probe run back (no tombstones)."""
    mask = index.shape[0] - 1
    j = i
    while True:
        index[i] = 0
        while True:
            j = (j + 1) & mask
            e = index[j]
            if e == 0:
                return
            home = np.int64((e >> np.uint64(32)) & np.uint64(mask))
            if i <= j:
                if i < home <= j:
                    continue
            elif home > i or home <= j:
                continue
            break
        index[i] = index[j]
        i = j


@numba.njit(cache=True)
def _remove(index, rows, tun, count, r):
    """Take row r out (index entry and row; the last row moves into r, with its tunnel words if it has
    them: a row without ST_TUNNEL never reads its tunnel words). Returns the new count."""
    _unindex(index, _slot_of(index, _row_hash(rows, tun, r) & TAG_MASK, r))
    last = count - 1
    if r != last:
        for w in range(R.TABLE_WORDS):
            rows[r, w] = rows[last, w]
        if rows[r, R.T_STATE] & np.uint64(R.ST_TUNNEL):
            for w in range(R.TUNNEL_WORDS):
                tun[r, w] = tun[last, w]
        s = _slot_of(index, _row_hash(rows, tun, r) & TAG_MASK, last)
        index[s] = (index[s] & ~TAG_MASK) | np.uint64(r + 1)
    for w in range(R.TABLE_WORDS):
        rows[last, w] = 0
    return last


@numba.njit(cache=True, inline="always")
def _emit(rows, tun, r, reason, out, out_n):
    """Row r as an export row (flow.record F_*) in out[out_n]."""
    for w in range(4):
        out[out_n, R.F_ADDR_A + w] = rows[r, R.T_ADDR_A + w]
    out[out_n, R.F_KEY] = rows[r, R.T_KEY]
    out[out_n, R.F_HASH] = _row_hash(rows, tun, r)
    tunnelled = (rows[r, R.T_STATE] & np.uint64(R.ST_TUNNEL)) != 0
    for w in range(R.TUNNEL_WORDS):
        out[out_n, R.F_TUNNEL + w] = tun[r, w] if tunnelled else np.uint64(0)
    for w in range(R.T_MAC_B - R.T_FIRST + 1):  # first, last, bytes, packets, MACs
        out[out_n, R.F_FIRST + w] = rows[r, R.T_FIRST + w]
    out[out_n, R.F_STATE] = rows[r, R.T_STATE]
    out[out_n, R.F_END] = reason


@numba.njit(cache=True, inline="always")
def _due(rows, r, clock_us, idle_us, active_us):
    """END_IDLE or END_ACTIVE if the flow in row r is over at clock_us, else 0.

    The reason is whichever deadline came first, not what holds at clock_us, so
    that a flow found by a scan and one found by its next packet end the same way."""
    idle_at = np.int64(rows[r, R.T_LAST_CLOCK]) + idle_us
    if active_us > 0:
        active_at = np.int64(rows[r, R.T_FIRST_CLOCK]) + active_us
        if active_at < idle_at:
            return R.END_ACTIVE if clock_us > active_at else 0
    return R.END_IDLE if clock_us > idle_at else 0


@numba.njit(cache=True, inline="always")
def _init(rows, r, r64, r16, r8, i, keyw):
    for w in range(4):
        rows[r, R.T_ADDR_A + w] = r64[i, L.W_ADDR_A + w]
    rows[r, R.T_KEY] = keyw
    ts = r64[i, L.W_TS]
    rows[r, R.T_FIRST] = ts
    rows[r, R.T_LAST] = ts
    rows[r, R.T_FIRST_CLOCK] = r64[i, L.W_CLOCK]
    rows[r, R.T_LAST_CLOCK] = r64[i, L.W_CLOCK]
    for w in range(R.T_A_BYTES, R.T_MAC_A):
        rows[r, w] = 0
    from_b = (r8[i, L.B_FLAGS] & L.FLAG_FROM_B) != 0
    smac = r64[i, L.W_SRC_MAC]
    dmac = r64[i, L.W_DST_MAC]
    rows[r, R.T_MAC_A] = dmac if from_b else smac
    rows[r, R.T_MAC_B] = smac if from_b else dmac
    rows[r, R.T_STATE] = (np.uint64(R.ST_SRC_IS_B) if from_b else np.uint64(0)) | (
        np.uint64(r8[i, L.B_ICMP_TYPE]) << np.uint64(24)) | (np.uint64(r8[i, L.B_ICMP_CODE]) << np.uint64(32))


@numba.njit(cache=True, inline="always")
def _record_vnet(r64, r8, i):
    """The virtual network word of packet record i (``flow.key``), 0 when its key has none."""
    if (r8[i, L.B_FLAGS] & L.FLAG_KEYED) == 0:
        return np.uint64(0)
    return vnet_word(r8[i, L.B_TUNNEL], r64[i, L.W_TUNNEL_ID] & np.uint64(0xFFFFFFFF))


@numba.njit(cache=True, inline="always")
def _note_tunnel(rows, tun, r, r64, r8, i, from_b):
    """Record i came through a tunnel: the flow's tunnel words take its tunnel if they have none yet, and
    its id as its side's id if that side has none yet."""
    flags = r8[i, L.B_FLAGS]
    if (rows[r, R.T_STATE] & np.uint64(R.ST_TUNNEL)) == 0:
        info = np.uint64(r8[i, L.B_TUNNEL]) | (np.uint64(r8[i, L.B_DEPTH]) << np.uint64(R.INFO_DEPTH_SHIFT))
        if flags & L.FLAG_OUTER_IP:
            info |= np.uint64(R.INFO_OUTER_IP)
            if flags & L.FLAG_OUTER_V6:
                info |= np.uint64(R.INFO_OUTER_V6)
        tun[r, R.U_VNET] = _record_vnet(r64, r8, i)
        tun[r, R.U_INFO] = info
        tun[r, R.U_IDS] = 0
        sender, receiver = (R.U_OUTER_B, R.U_OUTER_A) if from_b else (R.U_OUTER_A, R.U_OUTER_B)
        for w in range(2):
            tun[r, sender + w] = r64[i, L.W_OUTER_SRC + w]
            tun[r, receiver + w] = r64[i, L.W_OUTER_DST + w]
        rows[r, R.T_STATE] |= np.uint64(R.ST_TUNNEL)
    if flags & L.FLAG_TUNNEL_ID:
        known = np.uint64(R.INFO_B_ID if from_b else R.INFO_A_ID)
        if (tun[r, R.U_INFO] & known) == 0:
            tid = r64[i, L.W_TUNNEL_ID] & np.uint64(0xFFFFFFFF)
            tun[r, R.U_IDS] |= tid << np.uint64(32) if from_b else tid
            tun[r, R.U_INFO] |= known


@numba.njit(cache=True)
def ingest(index, rows, tun, count, r64, r16, r8, start, n, idle_us, active_us, max_flows, out, out_n,
           counters):
    """Add records start..n-1 to the table. Returns (stop_code, next_record, count, out_n)."""
    mask = index.shape[0] - 1
    grow_at = np.int64(index.shape[0] * MAX_LOAD)
    out_cap = out.shape[0]
    for i in range(start, n):
        if out_n >= out_cap:
            return OUT_FULL, i, count, out_n
        h = r64[i, L.W_HASH]
        tag = h & TAG_MASK
        vnet = _record_vnet(r64, r8, i)
        keyw = key_word(r16[i, L.H_PORT_A], r16[i, L.H_PORT_B], r16[i, L.H_VLAN], r8[i, L.B_PROTO],
                        (r8[i, L.B_FLAGS] >> 1) & 1) | OCCUPIED | (KEY_VNET if vnet != 0 else np.uint64(0))
        keyw |= iface_bits(r16[i, L.H_IFACE])
        a0 = r64[i, L.W_ADDR_A]
        a1 = r64[i, L.W_ADDR_A + 1]
        b0 = r64[i, L.W_ADDR_B]
        b1 = r64[i, L.W_ADDR_B + 1]
        s = np.int64(tag & np.uint64(mask))
        r = -1
        while True:
            e = index[s]
            if e == 0:
                break
            if (e >> np.uint64(32)) == tag:
                c = np.int64(e & TAG_MASK) - 1
                if (rows[c, R.T_KEY] == keyw and rows[c, 0] == a0 and rows[c, 1] == a1 and rows[c, 2] == b0
                        and rows[c, 3] == b1 and (vnet == 0 or tun[c, R.U_VNET] == vnet)):
                    r = c
                    break
            s = (s + 1) & mask
        clk = np.int64(r64[i, L.W_CLOCK])
        if r >= 0:
            reason = _due(rows, r, clk, idle_us, active_us)
            if reason != 0:  # the old flow is over: emit it, this packet starts a new one in place
                _emit(rows, tun, r, reason, out, out_n)
                out_n += 1
                counters[K_EXPIRED_IDLE if reason == R.END_IDLE else K_EXPIRED_ACTIVE] += 1
                counters[K_FLOWS_CREATED] += 1
                _init(rows, r, r64, r16, r8, i, keyw)
        else:
            if count >= max_flows:
                return NEED_EVICT, i, count, out_n
            if count + 1 > grow_at:
                return NEED_GROW, i, count, out_n
            r = count
            index[s] = (tag << np.uint64(32)) | np.uint64(r + 1)
            _init(rows, r, r64, r16, r8, i, keyw)
            count += 1
            counters[K_FLOWS_CREATED] += 1
        # ---- count the packet
        ts = r64[i, L.W_TS]
        if np.int64(ts) > np.int64(rows[r, R.T_LAST]):
            rows[r, R.T_LAST] = ts
        elif np.int64(ts) < np.int64(rows[r, R.T_FIRST]):
            rows[r, R.T_FIRST] = ts
        rows[r, R.T_LAST_CLOCK] = r64[i, L.W_CLOCK]
        wl = np.uint64(r32_wire(r64, i))
        st = rows[r, R.T_STATE]
        from_b = (r8[i, L.B_FLAGS] & L.FLAG_FROM_B) != 0
        tf = np.uint64(r8[i, L.B_TCP_FLAGS])
        if from_b:
            if rows[r, R.T_B_PKTS] == 0:
                rows[r, R.T_MAC_B] = r64[i, L.W_SRC_MAC]
            rows[r, R.T_B_BYTES] += wl
            rows[r, R.T_B_PKTS] += np.uint64(1)
            st |= tf << np.uint64(16)
        else:
            if rows[r, R.T_A_PKTS] == 0:
                rows[r, R.T_MAC_A] = r64[i, L.W_SRC_MAC]
            rows[r, R.T_A_BYTES] += wl
            rows[r, R.T_A_PKTS] += np.uint64(1)
            st |= tf << np.uint64(8)
        if ((st & np.uint64(R.ST_SRC_IS_B)) != 0) != from_b:
            st |= np.uint64(R.ST_ESTABLISHED)
        rows[r, R.T_STATE] = st
        if r8[i, L.B_TUNNEL] != 0:
            _note_tunnel(rows, tun, r, r64, r8, i, from_b)
        counters[CN.K_PACKETS] += 1
        counters[CN.K_BYTES] += np.int64(wl)
    return DONE, n, count, out_n


@numba.njit(cache=True, inline="always")
def r32_wire(r64, i):
    # wire_len is the low half of word 7 (bytes 56..59)
    return r64[i, 7] & np.uint64(0xFFFFFFFF)


@numba.njit(cache=True)
def scan(index, rows, tun, count, cursor, budget, clock_us, idle_us, active_us, out, out_n, counters):
    """Expire due flows among up to ``budget`` rows from ``cursor`` (wrapping at count).

    Returns (cursor, count, out_n, rows_scanned); stops early when ``out`` fills."""
    out_cap = out.shape[0]
    done = 0
    r = cursor
    while done < budget and count > 0:
        if r >= count:
            r = 0
        if out_n >= out_cap:
            break
        reason = _due(rows, r, clock_us, idle_us, active_us)
        if reason != 0:
            _emit(rows, tun, r, reason, out, out_n)
            out_n += 1
            counters[K_EXPIRED_IDLE if reason == R.END_IDLE else K_EXPIRED_ACTIVE] += 1
            count = _remove(index, rows, tun, count, r)  # the last row moved into r: look at r again
        else:
            r += 1
        done += 1
    return r, count, out_n, done


@numba.njit(cache=True)
def drain(index, rows, tun, count, start, clock_us, idle_us, active_us, only_before_us, reason_default, out, out_n,
          counters):
    """Emit and remove every flow in rows start..0 (or with ``only_before_us`` >= 0,
    those whose last packet clock is at or before it), until ``out`` is full.

    Flows already due are emitted as idle/active, the rest with ``reason_default``
    (shutdown or evicted). Returns (count, out_n, next_row); next_row is -1 when done."""
    out_cap = out.shape[0]
    r = min(start, count - 1)
    while r >= 0:  # from the end: removing row r then moves only rows already looked at
        if out_n >= out_cap:
            return count, out_n, r
        if only_before_us < 0 or np.int64(rows[r, R.T_LAST_CLOCK]) <= only_before_us:
            reason = _due(rows, r, clock_us, idle_us, active_us)
            if reason == 0:
                reason = reason_default
            _emit(rows, tun, r, reason, out, out_n)
            out_n += 1
            if reason == R.END_IDLE:
                counters[K_EXPIRED_IDLE] += 1
            elif reason == R.END_ACTIVE:
                counters[K_EXPIRED_ACTIVE] += 1
            elif reason == R.END_EVICTED:
                counters[K_EVICTED] += 1
            else:
                counters[K_FLUSHED] += 1
            count = _remove(index, rows, tun, count, r)
        r -= 1
    return count, out_n, -1


@numba.njit(cache=True)
def reindex(index, rows, tun, count):
    """Fill an empty index with rows 0..count-1."""
    mask = index.shape[0] - 1
    for r in range(count):
        tag = _row_hash(rows, tun, r) & TAG_MASK
        s = np.int64(tag & np.uint64(mask))
        while index[s] != 0:
            s = (s + 1) & mask
        index[s] = (tag << np.uint64(32)) | np.uint64(r + 1)


def _lazy_rows(n: int, words: int) -> tuple[np.ndarray, mmap.mmap]:
    """An (n, words) zeroed array whose pages are only backed once written."""
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | getattr(mmap, "MAP_NORESERVE", 0)
    m = mmap.mmap(-1, max(1, n) * words * 8, flags=flags)
    return np.frombuffer(m, np.uint64).reshape(max(1, n), words), m


class FlowTable:
    """A worker's flow shard. Feed it packet records; collect expired flow rows.

    The core does no I/O and reads no clock: ``ingest`` takes records (whose
    ``clock_us`` is the time), ``tick`` takes the clock, and both hand back rows
    through ``emit`` (a callable taking a (k, FLOW_WORDS) uint64 array)."""

    def __init__(self, idle_timeout_us: int, active_timeout_us: int, max_flows: int, emit,
                 initial_slots: int = 1 << 12, out_rows: int = 4096, scan_slots: int = 2048,
                 trim_bytes: int = 16 << 20):
        self.idle_us = int(idle_timeout_us)
        self.active_us = int(active_timeout_us)
        self.max_flows = max(1, int(max_flows))
        self.emit = emit
        self.index = np.zeros(max(4, initial_slots), np.uint64)
        self.rows, self._rows_map = _lazy_rows(self.max_flows, R.TABLE_WORDS)
        # the tunnel words of tunnelled flows, row for row: untouched (unbacked) where no flow is tunnelled
        self.tunnels, self._tunnels_map = _lazy_rows(self.max_flows, R.TUNNEL_WORDS)
        self.count = 0
        self.touched = 0  # rows ever used since the last trim: their pages are backed
        self.out = np.zeros((out_rows, R.FLOW_WORDS), np.uint64)
        self.out_n = 0
        self.cursor = 0
        self.scan_slots = scan_slots
        self.trim_bytes = trim_bytes  # unused row pages are given back in pieces at least this big
        self.counters = np.zeros(CN.N_WORKER_COUNTERS, np.int64)
        self.clock_us = 0

    def _flush_out(self):
        if self.out_n:
            self.emit(self.out[: self.out_n].copy())
            self.out_n = 0

    def ingest(self, records: np.ndarray) -> None:
        """Count a (n, RECORD_BYTES) uint8 array of packet records."""
        n = records.shape[0]
        if n == 0:
            return
        r64 = records.view(np.uint64)
        r16 = records.view(np.uint16)
        i = 0
        while True:
            code, i, self.count, self.out_n = ingest(self.index, self.rows, self.tunnels, self.count, r64, r16,
                                                     records, i, n,
                                                     self.idle_us, self.active_us, self.max_flows, self.out,
                                                     self.out_n, self.counters)
            if code == DONE:
                break
            if code == OUT_FULL:
                self._flush_out()
            elif code == NEED_GROW:
                self._grow()
            elif code == NEED_EVICT:
                self._evict()
        self.touched = max(self.touched, self.count)
        self.clock_us = max(self.clock_us, int(r64[n - 1, L.W_CLOCK]))
        self.tick(self.clock_us, budget=max(self.scan_slots, 2 * n))

    def tick(self, clock_us: int, budget: int | None = None) -> None:
        """Expire flows due at ``clock_us`` among the next ``budget`` rows."""
        self.clock_us = max(self.clock_us, int(clock_us))
        budget = self.scan_slots if budget is None else budget
        budget = min(budget, self.count)
        while budget > 0:
            self.cursor, self.count, self.out_n, done = scan(self.index, self.rows, self.tunnels, self.count,
                                                             self.cursor, budget,
                                                             self.clock_us, self.idle_us, self.active_us,
                                                             self.out, self.out_n, self.counters)
            budget -= done
            if self.out_n >= len(self.out):
                self._flush_out()
            elif done == 0:
                break
        self.counters[K_ACTIVE] = self.count
        self._flush_out()
        self._trim()

    def flush(self) -> None:
        """Emit every flow (end of input or shutdown) and empty the table."""
        self._drain(-1, R.END_SHUTDOWN)
        self.counters[K_ACTIVE] = self.count
        self._trim()

    def _drain(self, only_before_us: int, reason: int) -> None:
        r = self.count - 1
        while r >= 0:
            self.count, self.out_n, r = drain(self.index, self.rows, self.tunnels, self.count, r, self.clock_us,
                                              self.idle_us,
                                              self.active_us, only_before_us, reason, self.out, self.out_n,
                                              self.counters)
            self._flush_out()

    def _grow(self) -> None:
        self.index = np.zeros(self.index.shape[0] * 2, np.uint64)
        reindex(self.index, self.rows, self.tunnels, self.count)

    def _trim(self) -> None:
        """Give back the pages of rows no longer used, once they are most of what was touched."""
        keep = -(-self.count * ROW_BYTES // mmap.PAGESIZE) * mmap.PAGESIZE
        if self.touched * ROW_BYTES - keep >= max(self.trim_bytes, keep):
            self._rows_map.madvise(mmap.MADV_DONTNEED, keep, self.touched * ROW_BYTES - keep)
            tunnel_bytes = R.TUNNEL_WORDS * 8
            keep_t = -(-self.count * tunnel_bytes // mmap.PAGESIZE) * mmap.PAGESIZE
            if self.touched * tunnel_bytes > keep_t:
                self._tunnels_map.madvise(mmap.MADV_DONTNEED, keep_t, self.touched * tunnel_bytes - keep_t)
            self.touched = self.count

    def _evict(self) -> None:
        """Table full: expire the oldest-idle eighth early (end_reason evicted)."""
        lasts = self.rows[:self.count, R.T_LAST_CLOCK].astype(np.int64)
        k = max(1, len(lasts) // 8)
        threshold = int(np.partition(lasts, k - 1)[k - 1])
        self._drain(threshold, R.END_EVICTED)


def warm_up() -> None:
    """Compile (or load from numba's cache) the table's loops before the supervisor forks the workers."""
    table = FlowTable(10**9, 10**9, 10, lambda rows: None)
    table.ingest(L.empty_records(1))  # and scans for idle flows
    table._grow()
    table.flush()
