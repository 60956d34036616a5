"""One worker's shard of the flow table: ingest packet records, expire, flush.

An open-addressing table (linear probing, backward-shift deletion, no
tombstones) of flow rows (``flow.record``), keyed by the full normalized key and
placed by the key hash that capture computed. The hot loops are compiled; the
``FlowTable`` class around them only sizes buffers, grows the table and evicts.

Time is data: every packet record carries ``clock_us``, capture's running
maximum of packet time, and expiry compares only that clock with the clock
values stored at the flow's first and last packet. A flow is over once the
clock passes ``last + idle`` (idle) or ``first + active`` (active); the next
packet of its key then starts a new flow. ``scan`` finds the same flows early, a bounded number of slots per call,
so records do not depend on when a scan ran, on the batch size or on how many
workers share the key space (see DESIGN.md §3, determinism).
"""

import numba
import numpy as np

from devourer.flow import record as R
from devourer.packet import layout as L

# ingest() stop codes
DONE = 0
NEED_GROW = 1
NEED_EVICT = 2
OUT_FULL = 3

MAX_LOAD = 0.75

# worker counters
K_PACKETS = 0
K_BYTES = 1
K_FLOWS_CREATED = 2
K_EXPIRED_IDLE = 3
K_EXPIRED_ACTIVE = 4
K_FLUSHED = 5
K_EVICTED = 6
K_ACTIVE = 7  # flows in the table now
N_WORKER_COUNTERS = 8


@numba.njit(cache=True, inline="always")
def _emit(tab, s, reason, out, out_n):
    for w in range(R.F_END):
        out[out_n, w] = tab[s, w]
    out[out_n, R.F_END] = reason


@numba.njit(cache=True, inline="always")
def _due(tab, s, clock_us, idle_us, active_us):
    """END_IDLE or END_ACTIVE if the flow in slot s is over at clock_us, else 0.

    The reason is whichever deadline came first, not what holds at clock_us, so
    that a flow found by a scan and one found by its next packet end the same way."""
    idle_at = np.int64(tab[s, R.F_LAST_CLOCK]) + idle_us
    if active_us > 0:
        active_at = np.int64(tab[s, R.F_FIRST_CLOCK]) + active_us
        if active_at < idle_at:
            return R.END_ACTIVE if clock_us > active_at else 0
    return R.END_IDLE if clock_us > idle_at else 0


@numba.njit(cache=True)
def _delete(tab, i):
    """Remove slot i, shifting later members of its probe run back (no tombstones)."""
    mask = tab.shape[0] - 1
    j = i
    while True:
        tab[i, R.F_KEY] = 0
        while True:
            j = (j + 1) & mask
            if tab[j, R.F_KEY] == 0:
                return
            home = np.int64(tab[j, R.F_HASH] & np.uint64(mask))
            if i <= j:
                if i < home <= j:
                    continue
            elif home > i or home <= j:
                continue
            break
        for w in range(R.TABLE_WORDS):
            tab[i, w] = tab[j, w]
        i = j


@numba.njit(cache=True, inline="always")
def _init(tab, s, r64, r16, r8, i, keyw):
    for w in range(4):
        tab[s, R.F_ADDR_A + w] = r64[i, L.W_ADDR_A + w]
    tab[s, R.F_KEY] = keyw
    tab[s, R.F_HASH] = r64[i, L.W_HASH]
    ts = r64[i, L.W_TS]
    tab[s, R.F_FIRST] = ts
    tab[s, R.F_LAST] = ts
    tab[s, R.F_FIRST_CLOCK] = r64[i, L.W_CLOCK]
    tab[s, R.F_LAST_CLOCK] = r64[i, L.W_CLOCK]
    for w in range(R.F_A_BYTES, R.F_MAC_A):
        tab[s, w] = 0
    from_b = (r8[i, L.B_FLAGS] & L.FLAG_FROM_B) != 0
    smac = r64[i, L.W_SRC_MAC]
    dmac = r64[i, L.W_DST_MAC]
    tab[s, R.F_MAC_A] = dmac if from_b else smac
    tab[s, R.F_MAC_B] = smac if from_b else dmac
    tab[s, R.F_STATE] = (np.uint64(R.ST_SRC_IS_B) if from_b else np.uint64(0)) | (
        np.uint64(r8[i, L.B_ICMP_TYPE]) << np.uint64(24)) | (np.uint64(r8[i, L.B_ICMP_CODE]) << np.uint64(32))


@numba.njit(cache=True)
def ingest(tab, count, r64, r16, r8, start, n, idle_us, active_us, max_flows, out, out_n, counters):
    """Add records start..n-1 to the table. Returns (stop_code, next_record, count, out_n)."""
    mask = tab.shape[0] - 1
    grow_at = np.int64(tab.shape[0] * MAX_LOAD)
    out_cap = out.shape[0]
    for i in range(start, n):
        if out_n >= out_cap:
            return OUT_FULL, i, count, out_n
        h = r64[i, L.W_HASH]
        keyw = (np.uint64(r16[i, L.H_PORT_A]) | (np.uint64(r16[i, L.H_PORT_B]) << np.uint64(16))
                | (np.uint64(r16[i, L.H_VLAN]) << np.uint64(32)) | (np.uint64(r8[i, L.B_PROTO]) << np.uint64(48))
                | (np.uint64((r8[i, L.B_FLAGS] >> 1) & 1) << np.uint64(56)) | R.OCCUPIED)
        a0 = r64[i, L.W_ADDR_A]
        a1 = r64[i, L.W_ADDR_A + 1]
        b0 = r64[i, L.W_ADDR_B]
        b1 = r64[i, L.W_ADDR_B + 1]
        s = np.int64(h & np.uint64(mask))
        while True:
            k = tab[s, R.F_KEY]
            if k == 0:
                break
            if k == keyw and tab[s, R.F_HASH] == h and tab[s, 0] == a0 and tab[s, 1] == a1 and tab[s, 2] == b0 and tab[s, 3] == b1:
                break
            s = (s + 1) & mask
        clk = np.int64(r64[i, L.W_CLOCK])
        if tab[s, R.F_KEY] != 0:
            reason = _due(tab, s, clk, idle_us, active_us)
            if reason != 0:  # the old flow is over: emit it, this packet starts a new one in place
                _emit(tab, s, reason, out, out_n)
                out_n += 1
                counters[K_EXPIRED_IDLE if reason == R.END_IDLE else K_EXPIRED_ACTIVE] += 1
                counters[K_FLOWS_CREATED] += 1
                _init(tab, s, r64, r16, r8, i, keyw)
        else:
            if count >= max_flows:
                return NEED_EVICT, i, count, out_n
            if count + 1 > grow_at:
                return NEED_GROW, i, count, out_n
            _init(tab, s, r64, r16, r8, i, keyw)
            count += 1
            counters[K_FLOWS_CREATED] += 1
        # ---- count the packet
        ts = r64[i, L.W_TS]
        if np.int64(ts) > np.int64(tab[s, R.F_LAST]):
            tab[s, R.F_LAST] = ts
        elif np.int64(ts) < np.int64(tab[s, R.F_FIRST]):
            tab[s, R.F_FIRST] = ts
        tab[s, R.F_LAST_CLOCK] = r64[i, L.W_CLOCK]
        wl = np.uint64(r32_wire(r64, i))
        st = tab[s, R.F_STATE]
        from_b = (r8[i, L.B_FLAGS] & L.FLAG_FROM_B) != 0
        tf = np.uint64(r8[i, L.B_TCP_FLAGS])
        if from_b:
            if tab[s, R.F_B_PKTS] == 0:
                tab[s, R.F_MAC_B] = r64[i, L.W_SRC_MAC]
            tab[s, R.F_B_BYTES] += wl
            tab[s, R.F_B_PKTS] += np.uint64(1)
            st |= tf << np.uint64(16)
        else:
            if tab[s, R.F_A_PKTS] == 0:
                tab[s, R.F_MAC_A] = r64[i, L.W_SRC_MAC]
            tab[s, R.F_A_BYTES] += wl
            tab[s, R.F_A_PKTS] += np.uint64(1)
            st |= tf << np.uint64(8)
        if ((st & np.uint64(R.ST_SRC_IS_B)) != 0) != from_b:
            st |= np.uint64(R.ST_ESTABLISHED)
        tab[s, R.F_STATE] = st
        counters[K_PACKETS] += 1
        counters[K_BYTES] += np.int64(wl)
    return DONE, n, count, out_n


@numba.njit(cache=True, inline="always")
def r32_wire(r64, i):
    # wire_len is the low half of word 7 (bytes 56..59)
    return r64[i, 7] & np.uint64(0xFFFFFFFF)


@numba.njit(cache=True)
def scan(tab, count, cursor, budget, clock_us, idle_us, active_us, out, out_n, counters):
    """Expire due flows in up to ``budget`` slots from ``cursor``.

    Returns (cursor, count, out_n, slots_scanned); stops early when ``out`` fills."""
    mask = tab.shape[0] - 1
    out_cap = out.shape[0]
    i = cursor & mask
    done = 0
    while done < budget:
        if out_n >= out_cap:
            break
        while tab[i, R.F_KEY] != 0 and out_n < out_cap:
            reason = _due(tab, i, clock_us, idle_us, active_us)
            if reason == 0:
                break
            _emit(tab, i, reason, out, out_n)
            out_n += 1
            counters[K_EXPIRED_IDLE if reason == R.END_IDLE else K_EXPIRED_ACTIVE] += 1
            _delete(tab, i)  # a later member may now sit at i: look again
            count -= 1
        if out_n >= out_cap and tab[i, R.F_KEY] != 0:
            break  # slot i not finished: resume here
        i = (i + 1) & mask
        done += 1
    return i, count, out_n, done


@numba.njit(cache=True)
def drain(tab, count, start, clock_us, idle_us, active_us, only_before_us, reason_default, out, out_n, counters):
    """Emit and remove every flow from slot ``start`` on (all of them, or with
    ``only_before_us`` >= 0 those whose last packet is at or before it).

    Flows already due are emitted as idle/active, the rest with ``reason_default``
    (shutdown or evicted). Returns (next_slot, count, out_n); next_slot == size when done."""
    size = tab.shape[0]
    out_cap = out.shape[0]
    i = start
    while i < size:
        if out_n >= out_cap:
            return i, count, out_n
        if tab[i, R.F_KEY] != 0 and (only_before_us < 0 or np.int64(tab[i, R.F_LAST_CLOCK]) <= only_before_us):
            reason = _due(tab, i, clock_us, idle_us, active_us)
            if reason == 0:
                reason = reason_default
            _emit(tab, i, reason, out, out_n)
            out_n += 1
            if reason == R.END_IDLE:
                counters[K_EXPIRED_IDLE] += 1
            elif reason == R.END_ACTIVE:
                counters[K_EXPIRED_ACTIVE] += 1
            elif reason == R.END_EVICTED:
                counters[K_EVICTED] += 1
            else:
                counters[K_FLUSHED] += 1
            _delete(tab, i)
            count -= 1
            continue  # slot i may hold a shifted member now
        i += 1
    return i, count, out_n


@numba.njit(cache=True)
def rehash(old, new):
    mask = new.shape[0] - 1
    for i in range(old.shape[0]):
        if old[i, R.F_KEY] != 0:
            s = np.int64(old[i, R.F_HASH] & np.uint64(mask))
            while new[s, R.F_KEY] != 0:
                s = (s + 1) & mask
            for w in range(R.TABLE_WORDS):
                new[s, w] = old[i, w]


class FlowTable:
    """A worker's flow shard. Feed it packet records; collect expired flow rows.

    The core does no I/O and reads no clock: ``ingest`` takes records (whose
    ``clock_us`` is the time), ``tick`` takes the clock, and both hand back rows
    through ``emit`` (a callable taking a (k, FLOW_WORDS) uint64 array)."""

    def __init__(self, idle_timeout_us: int, active_timeout_us: int, max_flows: int, emit,
                 initial_slots: int = 1 << 12, out_rows: int = 4096, scan_slots: int = 2048):
        self.idle_us = int(idle_timeout_us)
        self.active_us = int(active_timeout_us)
        self.max_flows = max(1, int(max_flows))
        self.emit = emit
        self.tab = np.zeros((initial_slots, R.TABLE_WORDS), np.uint64)
        self.count = 0
        self.out = np.zeros((out_rows, R.FLOW_WORDS), np.uint64)
        self.out_n = 0
        self.cursor = 0
        self.scan_slots = scan_slots
        self.counters = np.zeros(N_WORKER_COUNTERS, np.int64)
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
            code, i, self.count, self.out_n = ingest(self.tab, self.count, r64, r16, records, i, n, self.idle_us,
                                                     self.active_us, self.max_flows, self.out, self.out_n,
                                                     self.counters)
            if code == DONE:
                break
            if code == OUT_FULL:
                self._flush_out()
            elif code == NEED_GROW:
                self._grow()
            elif code == NEED_EVICT:
                self._evict()
        self.clock_us = max(self.clock_us, int(r64[n - 1, L.W_CLOCK]))
        self.tick(self.clock_us, budget=max(self.scan_slots, 2 * n))

    def tick(self, clock_us: int, budget: int | None = None) -> None:
        """Expire flows due at ``clock_us`` among the next ``budget`` slots."""
        self.clock_us = max(self.clock_us, int(clock_us))
        budget = self.scan_slots if budget is None else budget
        budget = min(budget, self.tab.shape[0])
        while budget > 0:
            self.cursor, self.count, self.out_n, done = scan(self.tab, self.count, self.cursor, budget,
                                                             self.clock_us, self.idle_us, self.active_us,
                                                             self.out, self.out_n, self.counters)
            budget -= done
            if self.out_n >= len(self.out):
                self._flush_out()
            elif done == 0:
                break
        self.counters[K_ACTIVE] = self.count
        self._flush_out()

    def flush(self) -> None:
        """Emit every flow (end of input or shutdown) and empty the table."""
        self._drain(-1, R.END_SHUTDOWN)
        self.counters[K_ACTIVE] = self.count

    def _drain(self, only_before_us: int, reason: int) -> None:
        i = 0
        size = self.tab.shape[0]
        while i < size:
            i, self.count, self.out_n = drain(self.tab, self.count, i, self.clock_us, self.idle_us, self.active_us,
                                              only_before_us, reason, self.out, self.out_n, self.counters)
            self._flush_out()

    def _grow(self) -> None:
        new = np.zeros((self.tab.shape[0] * 2, R.TABLE_WORDS), np.uint64)
        rehash(self.tab, new)
        self.tab = new
        self.cursor = 0

    def _evict(self) -> None:
        """Table full: expire the oldest-idle eighth early (end_reason evicted)."""
        occupied = self.tab[:, R.F_KEY] != 0
        lasts = self.tab[occupied, R.F_LAST_CLOCK].astype(np.int64)
        k = max(1, len(lasts) // 8)
        threshold = int(np.partition(lasts, k - 1)[k - 1])
        self._drain(threshold, R.END_EVICTED)
