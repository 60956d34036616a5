"""Batch decode: one batch of packets -> fixed-size packet records, keyed and routed.

``decode_batch`` walks every packet of a batch once, in compiled code: the link
layer (Ethernet with any number of 802.1Q/802.1ad tags, Linux SLL and SLL2, raw
IP, BSD loopback), IPv4 with options, IPv6 with extension headers, fragments,
then the transport ports (TCP, UDP, SCTP, UDP-Lite, DCCP) or the ICMP type/code.
It writes one record per keyed packet (layout in ``packet.layout``), with the
key normalized so both directions of a conversation give the same bytes, and
picks the worker from the key's hash. Everything else is a counter: non-IP,
malformed, unmatched fragment. No Python object is made per packet.

Non-first IP fragments carry no ports: they join the flow of their first
fragment through a small bounded table (v6, src, dst, protocol, IP id) that
lives in the capture process.
"""

import numba
import numpy as np

from devourer.packet import layout as L

# libpcap DLT_* values as pcap_datalink() returns them
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 12
DLT_RAW_OPENBSD = 14
DLT_RAW_LINKTYPE = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276
SUPPORTED_DATALINKS = {
    DLT_NULL: "BSD loopback", DLT_EN10MB: "Ethernet", DLT_RAW: "raw IP", DLT_RAW_OPENBSD: "raw IP",
    DLT_RAW_LINKTYPE: "raw IP", DLT_LOOP: "OpenBSD loopback", DLT_LINUX_SLL: "Linux cooked (SLL)",
    DLT_IPV4: "raw IPv4", DLT_IPV6: "raw IPv6", DLT_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD

FRAG_SLOTS = 1 << 14  # first fragments remembered at once
FRAG_WORDS = 8
FRAG_PROBE = 8
FRAG_TTL_US = 60_000_000  # a first fragment older than this no longer adopts later ones
MAX_IPV6_EXT_HEADERS = 16

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, inline="always")
def _be16(b, p):
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@numba.njit(cache=True, inline="always")
def _be32(b, p):
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@numba.njit(cache=True, inline="always")
def _mac(b, p):
    v = np.uint64(0)
    for k in range(6):
        v = (v << np.uint64(8)) | np.uint64(b[p + k])
    return v | L.MAC_PRESENT


@numba.njit(cache=True, inline="always")
def _le64(b, p, n):
    """Little-endian u64 from n (<= 8) bytes at p, zero-padded."""
    v = np.uint64(0)
    for k in range(n):
        v |= np.uint64(b[p + k]) << np.uint64(8 * k)
    return v


@numba.njit(cache=True, inline="always")
def mix64(h, w):
    """One step of the key hash: fold word w into h (splitmix64-style)."""
    h = (h ^ w) * _M1
    h ^= h >> np.uint64(29)
    return h


@numba.njit(cache=True, inline="always")
def finish64(h):
    h ^= h >> np.uint64(30)
    h *= _M2
    h ^= h >> np.uint64(27)
    h *= _M3
    h ^= h >> np.uint64(31)
    return h


@numba.njit(cache=True)
def _frag_slot(frag, v6, w0, w1, w2, w3, tag, ts, create):
    """Find (or, with create, claim) the fragment-table slot for a datagram; -1 if none."""
    h = finish64(mix64(mix64(mix64(mix64(mix64(np.uint64(v6), w0), w1), w2), w3), tag))
    mask = frag.shape[0] - 1
    base = np.int64(h & np.uint64(mask))
    free = -1
    oldest = -1
    oldest_ts = np.int64(1) << np.int64(62)
    for k in range(FRAG_PROBE):
        s = (base + k) & mask
        used = (frag[s, 4] >> np.uint64(63)) != 0
        if used and ts - np.int64(frag[s, 6]) <= FRAG_TTL_US:
            if frag[s, 4] == tag and frag[s, 0] == w0 and frag[s, 1] == w1 and frag[s, 2] == w2 and frag[s, 3] == w3:
                return s
            if np.int64(frag[s, 6]) < oldest_ts:
                oldest_ts = np.int64(frag[s, 6])
                oldest = s
        elif free < 0:
            free = s
    if not create:
        return -1
    return free if free >= 0 else oldest


@numba.njit(cache=True, inline="always")
def _name_port(p):
    return p == 53 or p == 5353 or p == 5355 or p == 137 or p == 67 or p == 68 or p == 546 or p == 547


@numba.njit(cache=True, inline="always")
def _dns_port(p):
    return p == 53 or p == 5353 or p == 5355


@numba.njit(cache=True, inline="always")
def _dns_query(data, msg, end):
    """A DNS-format message at msg (up to end) with its QR bit clear: a query, which names nothing. Shorter
    messages are handed on (the resolver counts them malformed)."""
    return msg + 3 <= end and (data[msg + 2] & 0x80) == 0


@numba.njit(cache=True)
def decode_batch(data, meta, wire, datalink, snaplen, rec8, rec16, rec32, rec64, worker_of, n_workers,
                 frag, counters, clock, want_names, cand, frag_only=False):
    """Decode one batch. Returns the number of records written to rec*/worker_of.

    data: packet bytes (uint8), meta: (n, 4) uint32 rows (sec, usec, offset, caplen);
    wire: wire lengths per packet, or an empty array when the source has none;
    rec8/16/32/64: views of one (n, RECORD_BYTES) buffer; frag: fragment table;
    counters: capture counters (packet.layout C_*); clock: [running max ts_us].
    With want_names, packets that may carry names (UDP to or from a name port,
    TCP DNS, a TLS ClientHello; not DNS-format queries) are listed in cand: (n, 3) int64 rows of
    (record index, payload offset in data, payload length); cand[n, 0] holds the count.
    With frag_only, only the clock and the fragment table are brought up to date (a chunk's planning:
    ``packet.chunks``); nothing is written and the counters are the caller's scratch."""
    n = meta.shape[0]
    n_cand = 0
    has_wire = wire.shape[0] == n
    out = 0
    clk = clock[0]
    for i in range(n):
        ts = np.int64(meta[i, 0]) * 1_000_000 + np.int64(meta[i, 1])
        p = np.int64(meta[i, 2])
        cap = np.int64(meta[i, 3])
        end = p + cap
        wl = np.int64(wire[i]) if has_wire else np.int64(0)
        counters[L.C_READ] += 1
        if ts > clk:
            clk = ts
        # ---- link layer
        smac = np.uint64(0)
        dmac = np.uint64(0)
        vlan = 0
        etype = -1
        q = p
        if datalink == DLT_EN10MB:
            if cap < 14:
                counters[L.C_NON_IP] += 1
                counters[L.C_BYTES] += max(wl, cap)
                continue
            dmac = _mac(data, p)
            smac = _mac(data, p + 6)
            etype = _be16(data, p + 12)
            q = p + 14
            while (etype == 0x8100 or etype == 0x88A8 or etype == 0x9100) and q + 4 <= end:
                if vlan == 0:
                    vlan = _be16(data, q) & 0xFFF
                etype = _be16(data, q + 2)
                q += 4
        elif datalink == DLT_LINUX_SLL:
            if cap >= 16:
                etype = _be16(data, p + 14)
                if _be16(data, p + 2) == 1 and _be16(data, p + 4) == 6:
                    smac = _mac(data, p + 6)
            q = p + 16
        elif datalink == DLT_LINUX_SLL2:
            if cap >= 20:
                etype = _be16(data, p)
                if _be16(data, p + 8) == 1 and data[p + 11] == 6:
                    smac = _mac(data, p + 12)
            q = p + 20
        else:
            if datalink == DLT_NULL or datalink == DLT_LOOP:
                q = p + 4
            if q < end:
                ver = data[q] >> 4
                etype = ETH_IPV4 if ver == 4 else (ETH_IPV6 if ver == 6 else -1)
        if etype != ETH_IPV4 and etype != ETH_IPV6:
            counters[L.C_NON_IP] += 1
            counters[L.C_BYTES] += max(wl, cap)
            continue
        # ---- network layer
        v6 = etype == ETH_IPV6
        frag_off = 0
        more_frags = False
        ip_id = np.int64(0)
        if not v6:
            if q + 20 > end or (data[q] >> 4) != 4 or (data[q] & 15) < 5 or q + (data[q] & 15) * 4 > end:
                counters[L.C_MALFORMED] += 1
                counters[L.C_BYTES] += max(wl, cap)
                continue
            ihl = np.int64(data[q] & 15) * 4
            ip_len = _be16(data, q + 2)
            fw = _be16(data, q + 6)
            more_frags = (fw & 0x2000) != 0
            frag_off = fw & 0x1FFF
            ip_id = _be16(data, q + 4)
            proto = np.int64(data[q + 9])
            saddr = q + 12
            daddr = q + 16
            alen = 4
            l4 = q + ihl
        else:
            if q + 40 > end or (data[q] >> 4) != 6:
                counters[L.C_MALFORMED] += 1
                counters[L.C_BYTES] += max(wl, cap)
                continue
            ip_len = 40 + _be16(data, q + 4)
            nh = np.int64(data[q + 6])
            saddr = q + 8
            daddr = q + 24
            alen = 16
            l4 = q + 40
            bad = False
            for _ in range(MAX_IPV6_EXT_HEADERS + 1):
                if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140 or nh == 51:
                    if l4 + 2 > end:
                        bad = True
                        break
                    # AH counts its length in 4-byte units less 2, the others in 8-byte units less 1
                    hl = (np.int64(data[l4 + 1]) + 2) * 4 if nh == 51 else (np.int64(data[l4 + 1]) + 1) * 8
                    nh = np.int64(data[l4])
                    l4 += hl
                elif nh == 44:
                    if l4 + 8 > end:
                        bad = True
                        break
                    fw = _be16(data, l4 + 2)
                    frag_off = fw >> 3
                    more_frags = (fw & 1) != 0
                    ip_id = _be32(data, l4 + 4)
                    nh = np.int64(data[l4])
                    l4 += 8
                    if frag_off > 0:
                        break
                else:
                    break
            else:
                bad = True  # extension-header chain too long
            if bad or l4 > end:
                counters[L.C_MALFORMED] += 1
                counters[L.C_BYTES] += max(wl, cap)
                continue
            proto = nh
        if frag_only and not (more_frags and frag_off == 0):
            continue
        if wl == 0:  # no record header: the packet was cut only if it filled the snaplen
            wl = cap if cap < snaplen else max(cap, (q - p) + ip_len)
        # ---- transport layer
        sport = 0
        dport = 0
        tflags = 0
        itype = 0
        icode = 0
        if frag_off > 0 or more_frags:
            w0 = _le64(data, saddr, min(alen, 8))
            w1 = _le64(data, saddr + 8, 8) if v6 else np.uint64(0)
            w2 = _le64(data, daddr, min(alen, 8))
            w3 = _le64(data, daddr + 8, 8) if v6 else np.uint64(0)
            tag = np.uint64(ip_id) | (np.uint64(proto) << np.uint64(32)) | (np.uint64(v6) << np.uint64(40)) | (np.uint64(1) << np.uint64(63))
        if frag_off > 0:
            s = _frag_slot(frag, v6, w0, w1, w2, w3, tag, ts, False)
            if s < 0:
                counters[L.C_FRAG_UNMATCHED] += 1
                counters[L.C_BYTES] += wl
                continue
            sport = np.int64(frag[s, 5] & np.uint64(0xFFFF))
            dport = np.int64((frag[s, 5] >> np.uint64(16)) & np.uint64(0xFFFF))
        else:
            if proto == 6 or proto == 17 or proto == 132 or proto == 136 or proto == 33:
                if l4 + 4 > end:
                    counters[L.C_MALFORMED] += 1
                    counters[L.C_BYTES] += wl
                    continue
                sport = _be16(data, l4)
                dport = _be16(data, l4 + 2)
                if proto == 6 and l4 + 14 <= end:
                    tflags = data[l4 + 13]
            elif proto == 1 or proto == 58:
                if l4 + 2 > end:
                    counters[L.C_MALFORMED] += 1
                    counters[L.C_BYTES] += wl
                    continue
                itype = data[l4]
                icode = data[l4 + 1]
            if more_frags:
                s = _frag_slot(frag, v6, w0, w1, w2, w3, tag, ts, True)
                if (frag[s, 4] >> np.uint64(63)) != 0 and ts - np.int64(frag[s, 6]) <= FRAG_TTL_US:
                    if frag[s, 4] != tag or frag[s, 0] != w0 or frag[s, 1] != w1 or frag[s, 2] != w2 or frag[s, 3] != w3:
                        counters[L.C_FRAG_EVICTED] += 1
                frag[s, 0] = w0
                frag[s, 1] = w1
                frag[s, 2] = w2
                frag[s, 3] = w3
                frag[s, 4] = tag
                frag[s, 5] = np.uint64(sport) | (np.uint64(dport) << np.uint64(16))
                frag[s, 6] = np.uint64(ts)
        if frag_only:
            continue
        # ---- normalized key: A is the smaller (address bytes, port)
        order = 0
        for k in range(alen):
            a = data[saddr + k]
            b = data[daddr + k]
            if a != b:
                order = -1 if a < b else 1
                break
        if order == 0:
            order = -1 if sport <= dport else 1
        from_b = order > 0
        if from_b:
            pa, pb, aa, ab = dport, sport, daddr, saddr
        else:
            pa, pb, aa, ab = sport, dport, saddr, daddr
        # ---- write the record
        for k in range(16, 48):
            rec8[out, k] = 0
        for k in range(alen):
            rec8[out, 16 + k] = data[aa + k]
            rec8[out, 32 + k] = data[ab + k]
        rec64[out, L.W_TS] = ts
        rec64[out, L.W_CLOCK] = clk
        rec32[out, L.D_WIRE_LEN] = wl
        rec16[out, L.H_PORT_A] = pa
        rec16[out, L.H_PORT_B] = pb
        rec16[out, L.H_VLAN] = vlan
        rec8[out, L.B_PROTO] = proto
        rec8[out, L.B_FLAGS] = (L.FLAG_FROM_B if from_b else 0) | (L.FLAG_V6 if v6 else 0)
        rec8[out, L.B_TCP_FLAGS] = tflags
        rec8[out, L.B_ICMP_TYPE] = itype
        rec8[out, L.B_ICMP_CODE] = icode
        rec8[out, 71] = 0
        rec64[out, L.W_SRC_MAC] = smac
        rec64[out, L.W_DST_MAC] = dmac
        h = np.uint64(0x243F6A8885A308D3)
        for k in range(L.W_ADDR_A, L.W_ADDR_B + 2):
            h = mix64(h, np.uint64(rec64[out, k]))
        keyword = (np.uint64(pa) | (np.uint64(pb) << np.uint64(16)) | (np.uint64(vlan) << np.uint64(32))
                   | (np.uint64(proto) << np.uint64(48)) | (np.uint64(v6) << np.uint64(56)))
        h = finish64(mix64(h, keyword))
        rec64[out, L.W_HASH] = h
        worker_of[out] = np.int32(((h >> np.uint64(32)) * np.uint64(n_workers)) >> np.uint64(32))
        counters[L.C_BYTES] += wl
        if want_names and frag_off == 0:
            ip_end = min(end, q + ip_len) if ip_len > 0 else end
            pay = -1
            if proto == 17 and l4 + 8 <= ip_end and (_name_port(sport) or _name_port(dport)):
                if not ((_dns_port(sport) or _dns_port(dport)) and _dns_query(data, l4 + 8, ip_end)):
                    pay = l4 + 8
            elif proto == 6 and l4 + 20 <= ip_end:
                p0 = l4 + (np.int64(data[l4 + 12]) >> 4) * 4
                if sport == 53 or dport == 53:
                    if p0 < ip_end and not _dns_query(data, p0 + 2, ip_end):  # after the 2-byte length
                        pay = p0
                elif p0 + 6 <= ip_end and data[p0] == 0x16 and data[p0 + 1] == 3 and data[p0 + 5] == 1:
                    pay = p0
            if pay >= 0:
                cand[n_cand, 0] = out
                cand[n_cand, 1] = pay
                cand[n_cand, 2] = ip_end - pay
                n_cand += 1
        out += 1
    clock[0] = clk
    cand[n, 0] = n_cand
    return out


@numba.njit(cache=True)
def pack_name_slots(data, rec8, cand, slots):
    """Copy each candidate's record and L4 payload into a resolver-ring slot. Returns the count."""
    n = cand[cand.shape[0] - 1, 0]
    for i in range(n):
        r = cand[i, 0]
        for k in range(L.RECORD_BYTES):
            slots[i, k] = rec8[r, k]
        off = cand[i, 1]
        length = cand[i, 2]
        keep = min(length, L.NAME_PAYLOAD_MAX)
        slots[i, 88] = keep & 0xFF
        slots[i, 89] = keep >> 8
        slots[i, 90] = min(length, 65535) & 0xFF
        slots[i, 91] = min(length, 65535) >> 8
        for k in range(keep):
            slots[i, L.NAME_PAYLOAD_AT + k] = data[off + k]
    return n


def new_fragment_table(slots: int = FRAG_SLOTS) -> np.ndarray:
    return np.zeros((slots, FRAG_WORDS), np.uint64)


class BatchDecoder:
    """Owns the output buffers and fragment table of one capture process."""

    def __init__(self, batch_packets: int, n_workers: int, counters: np.ndarray, want_names: bool = False):
        self.records = L.empty_records(batch_packets)
        self._r16 = self.records.view(np.uint16)
        self._r32 = self.records.view(np.uint32)
        self._r64 = self.records.view(np.uint64)
        self.worker_of = np.zeros(batch_packets, np.int32)
        self.n_workers = n_workers
        self.frag = new_fragment_table()
        self.counters = counters
        self.clock = np.zeros(1, np.int64)
        self._no_wire = np.zeros(0, np.uint32)
        self.want_names = want_names
        self.candidates = np.zeros((batch_packets + 1, 3), np.int64)
        self.name_slots = np.zeros((batch_packets if want_names else 1, L.NAME_SLOT_BYTES), np.uint8)
        self._data = None
        self._batch_n = 0

    def decode(self, data: bytes, meta: bytes, wire, datalink: int, snaplen: int) -> int:
        buf = np.frombuffer(data, np.uint8)
        m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
        if m.shape[0] > self.records.shape[0]:
            raise ValueError("batch larger than the decoder's buffers")
        self._data = buf
        self._batch_n = m.shape[0]
        cand = self.candidates[: m.shape[0] + 1]
        return decode_batch(buf, m, self._no_wire if wire is None else wire, datalink, snaplen,
                            self.records, self._r16, self._r32, self._r64, self.worker_of,
                            self.n_workers, self.frag, self.counters, self.clock, self.want_names, cand)

    def name_packets(self) -> np.ndarray:
        """Resolver-ring slots for the name candidates of the batch just decoded."""
        if not self.want_names or self._data is None:
            return self.name_slots[:0]
        count = pack_name_slots(self._data, self.records, self.candidates[: self._batch_n + 1], self.name_slots)
        return self.name_slots[:count]
