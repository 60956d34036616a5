"""Compiled writer of JSON-line flow records (numba): rows in, bytes out.

``render(rows, ...)`` writes the record of docs/architecture.md §4 for each flow row into
one byte buffer, in a single compiled loop: ids (UUIDv8 from a 128-bit hash of
sensor, key and first-seen time), the Community ID (``outputs.community``), addresses (IPv4 dotted, IPv6 as RFC 5952
text like glibc's inet_ntop, IPv4-mapped and -compatible included), MACs, ISO
8601 times, counters. The only strings from the wire -- host names and the
sensor id -- arrive already JSON-encoded by orjson (``outputs.format``), so
nothing here escapes text. At about 0.7 µs a record this replaced a per-column
numpy + %-format path that cost 2.5-7 µs, which made the exporter the slowest
process of a replay.
"""

import numpy as np
from numba import njit

from devourer.flow import record as R
from devourer.flow.key import finish64, iface_of, mix64
from devourer.outputs.community import put_community_id
from devourer.packet.tunnels import TUNNEL_NAMES


def _pieces(*texts: str) -> tuple:
    return tuple(np.frombuffer(t.encode(), np.uint8).copy() for t in texts)


(P_ID, P_PROTO, P_SRC_ADDR, P_PORT, P_HW, P_NAMES, P_DST_ADDR, P_FIRST, P_LAST, P_Z_SRC_STAT, P_PACKETS,
 P_DST_STAT, P_STATUS, P_END, P_VLAN, P_SRC_FLAGS, P_DST_FLAGS, P_ICMP_TYPE, P_ICMP_CODE, P_SENSOR, P_CLOSE,
 P_NULL, P_EMPTY, P_TCP, P_UDP, P_ICMP4, P_ICMP6, P_ESTABLISHED, P_INIT, P_UNKNOWN, P_IDLE, P_ACTIVE,
 P_SHUTDOWN, P_EVICTED) = _pieces(
    '{"id":"', '","protocol":"', '","src":{"addr":"', '","port":', ',"hw_addr":', ',"names":',
    '},"dst":{"addr":"', '},"first_seen_at":"', 'Z","last_seen_at":"', 'Z","src_stat":{"bytes":', ',"packets":',
    '},"dst_stat":{"bytes":', '},"status":"', '","end_reason":"', '","vlan":', ',"src_tcp_flags":',
    ',"dst_tcp_flags":', ',"icmp_type":', ',"icmp_code":', ',"sensor":', '}\n',
    "null", "[]", "tcp", "udp", "icmp4", "icmp6", "established", "init", "unknown", "idle", "active",
    "shutdown", "evicted")
(P_TUNNEL, P_TUNNEL_TYPE, P_TUNNEL_ID, P_TUNNEL_SRC_ID, P_TUNNEL_DST_ID, P_TUNNEL_SRC, P_TUNNEL_DST,
 P_TUNNEL_DEPTH, P_QUOTE, P_BRACE, P_INTERFACE, P_COMMUNITY) = _pieces(
    ',"tunnel":', '{"type":"', '","id":', ',"src_id":', ',"dst_id":', ',"src":', ',"dst":', ',"depth":', '"', '}',
    ',"interface":', '","community_id":"')
_TUNNEL_TYPES = _pieces(*(TUNNEL_NAMES.get(t, "unknown") for t in range(max(TUNNEL_NAMES) + 2)))  # last: unknown
_HEXDIGITS = np.frombuffer(b"0123456789abcdef", np.uint8).copy()

#: Bound on a record without its name lists and sensor (the longest is about 690 bytes: every number
#: at its widest, IPv4-mapped IPv6 both sides; a tunnel adds up to about 190).
MAX_FIXED_BYTES = 1024

_SALT_LO = np.uint64(0x5851F42D4C957F2D)
_SALT_WORD = np.uint64(0xD6E8FEB86659FD93)


@njit(cache=True, inline="always")
def _put(buf, pos, piece):
    for i in range(piece.shape[0]):
        buf[pos + i] = piece[i]
    return pos + piece.shape[0]


@njit(cache=True)
def _put_uint(buf, pos, value):
    v = np.uint64(value)
    n = 1
    t = v // np.uint64(10)
    while t:
        n += 1
        t //= np.uint64(10)
    for i in range(n - 1, -1, -1):
        buf[pos + i] = 48 + np.uint8(v % np.uint64(10))
        v //= np.uint64(10)
    return pos + n


@njit(cache=True)
def _put_padded(buf, pos, value, width):
    for i in range(width - 1, -1, -1):
        buf[pos + i] = 48 + value % 10
        value //= 10
    return pos + width


@njit(cache=True)
def _put_hex(buf, pos, value, digits):
    for i in range(digits - 1, -1, -1):
        buf[pos + i] = _HEXDIGITS[value & 15]
        value >>= 4
    return pos + digits


@njit(cache=True)
def _put_group(buf, pos, group):
    """One IPv6 group: lowercase hex without leading zeros."""
    digits = 1
    while digits < 4 and group >> (4 * digits):
        digits += 1
    return _put_hex(buf, pos, group, digits)


@njit(cache=True)
def _put_ipv4(buf, pos, b0, b1, b2, b3):
    pos = _put_uint(buf, pos, b0)
    buf[pos] = 46
    pos = _put_uint(buf, pos + 1, b1)
    buf[pos] = 46
    pos = _put_uint(buf, pos + 1, b2)
    buf[pos] = 46
    return _put_uint(buf, pos + 1, b3)


@njit(cache=True)
def _put_addr(buf, pos, w0, w1, v6):
    """16 address bytes stored as two little-endian words -> text."""
    if not v6:
        return _put_ipv4(buf, pos, w0 & 0xFF, (w0 >> 8) & 0xFF, (w0 >> 16) & 0xFF, (w0 >> 24) & 0xFF)
    groups = np.empty(8, np.int64)
    for i in range(4):
        groups[i] = ((w0 >> (16 * i)) & 0xFF) << 8 | ((w0 >> (16 * i + 8)) & 0xFF)
        groups[4 + i] = ((w1 >> (16 * i)) & 0xFF) << 8 | ((w1 >> (16 * i + 8)) & 0xFF)
    best, best_len, cur, cur_len = -1, 0, -1, 0  # longest run of zero groups, first on a tie
    for i in range(8):
        if groups[i] == 0:
            if cur < 0:
                cur, cur_len = i, 1
            else:
                cur_len += 1
            if cur_len > best_len:
                best, best_len = cur, cur_len
        else:
            cur, cur_len = -1, 0
    if best_len < 2:
        best = -1
    i = 0
    while i < 8:
        if i == best:
            buf[pos] = 58
            pos += 1
            if best + best_len == 8:
                buf[pos] = 58
                pos += 1
            i += best_len
            continue
        if i > 0:
            buf[pos] = 58
            pos += 1
        if i == 6 and best == 0 and (best_len == 6 or (best_len == 5 and groups[5] == 0xFFFF)):
            # as glibc: IPv4-compatible and IPv4-mapped addresses end in dotted quad
            return _put_ipv4(buf, pos, groups[6] >> 8, groups[6] & 0xFF, groups[7] >> 8, groups[7] & 0xFF)
        pos = _put_group(buf, pos, groups[i])
        i += 1
    return pos


@njit(cache=True)
def _put_mac(buf, pos, word):
    if not word >> np.uint64(63):
        return _put(buf, pos, P_NULL)
    w = np.int64(word & np.uint64(0xFFFFFFFFFFFF))
    buf[pos] = 34
    pos += 1
    for shift in range(40, -8, -8):
        pos = _put_hex(buf, pos, (w >> shift) & 0xFF, 2)
        if shift:
            buf[pos] = 58
            pos += 1
    buf[pos] = 34
    return pos + 1


@njit(cache=True)
def _put_time(buf, pos, micros):
    """Microseconds since the epoch -> YYYY-MM-DDTHH:MM:SS.ffffff (civil date, Hinnant's algorithm)."""
    seconds, us = micros // 1_000_000, micros % 1_000_000
    days, sod = seconds // 86400, seconds % 86400
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    pos = _put_padded(buf, pos, year, 4) if year < 10000 else _put_uint(buf, pos, year)
    buf[pos] = 45
    pos = _put_padded(buf, pos + 1, month, 2)
    buf[pos] = 45
    pos = _put_padded(buf, pos + 1, day, 2)
    buf[pos] = 84
    pos = _put_padded(buf, pos + 1, sod // 3600, 2)
    buf[pos] = 58
    pos = _put_padded(buf, pos + 1, (sod // 60) % 60, 2)
    buf[pos] = 58
    pos = _put_padded(buf, pos + 1, sod % 60, 2)
    buf[pos] = 46
    return _put_padded(buf, pos + 1, us, 6)


@njit(cache=True)
def _put_uuid(buf, pos, row, seed):
    hi = seed
    lo = seed ^ _SALT_LO
    for j in (R.F_ADDR_A, R.F_ADDR_A + 1, R.F_ADDR_B, R.F_ADDR_B + 1, R.F_KEY, R.F_FIRST):
        hi = mix64(hi, row[j])
        lo = mix64(lo, row[j] ^ _SALT_WORD)
    vnet = row[R.F_TUNNEL + R.U_VNET]
    if vnet != 0:  # part of the key: flows of two virtual networks differ (untunnelled ids are as before)
        hi = mix64(hi, vnet)
        lo = mix64(lo, vnet ^ _SALT_WORD)
    lo = finish64(lo ^ hi)
    hi = finish64(hi)
    hi = (hi & np.uint64(0xFFFFFFFFFFFF0FFF)) | np.uint64(0x8000)  # version 8
    lo = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)  # RFC 9562 variant
    pos = _put_hex(buf, pos, np.int64(hi >> np.uint64(32)), 8)
    buf[pos] = 45
    pos = _put_hex(buf, pos + 1, np.int64((hi >> np.uint64(16)) & np.uint64(0xFFFF)), 4)
    buf[pos] = 45
    pos = _put_hex(buf, pos + 1, np.int64(hi & np.uint64(0xFFFF)), 4)
    buf[pos] = 45
    pos = _put_hex(buf, pos + 1, np.int64(lo >> np.uint64(48)), 4)
    buf[pos] = 45
    return _put_hex(buf, pos + 1, np.int64(lo & np.uint64(0xFFFFFFFFFFFF)), 12)


@njit(cache=True)
def _put_small_or_null(buf, pos, value, present):
    return _put_uint(buf, pos, value) if present else _put(buf, pos, P_NULL)


@njit(cache=True)
def _put_names(buf, pos, index, blob, offsets):
    if index < 0:
        return _put(buf, pos, P_EMPTY)
    for i in range(offsets[index], offsets[index + 1]):
        buf[pos] = blob[i]
        pos += 1
    return pos


@njit(cache=True)
def _put_protocol(buf, pos, proto):
    if proto == 6:
        return _put(buf, pos, P_TCP)
    if proto == 17:
        return _put(buf, pos, P_UDP)
    if proto == 1:
        return _put(buf, pos, P_ICMP4)
    if proto == 58:
        return _put(buf, pos, P_ICMP6)
    return _put_uint(buf, pos, proto)


@njit(cache=True)
def _put_end_reason(buf, pos, reason):
    if reason == R.END_IDLE:
        return _put(buf, pos, P_IDLE)
    if reason == R.END_ACTIVE:
        return _put(buf, pos, P_ACTIVE)
    if reason == R.END_SHUTDOWN:
        return _put(buf, pos, P_SHUTDOWN)
    if reason == R.END_EVICTED:
        return _put(buf, pos, P_EVICTED)
    return _put(buf, pos, P_UNKNOWN)


@njit(cache=True)
def _put_endpoint(buf, pos, w0, w1, v6, port, mac, names_index, names_blob, names_offsets):
    """One side's fields after its opening: addr, port, hw_addr, names."""
    pos = _put_addr(buf, pos, w0, w1, v6)
    pos = _put(buf, pos, P_PORT)
    pos = _put_uint(buf, pos, port)
    pos = _put(buf, pos, P_HW)
    pos = _put_mac(buf, pos, mac)
    pos = _put(buf, pos, P_NAMES)
    return _put_names(buf, pos, names_index, names_blob, names_offsets)


@njit(cache=True)
def _put_quoted_addr(buf, pos, w0, w1, v6, known):
    if not known:
        return _put(buf, pos, P_NULL)
    pos = _put(buf, pos, P_QUOTE)
    pos = _put_addr(buf, pos, w0, w1, v6)
    return _put(buf, pos, P_QUOTE)


@njit(cache=True)
def _put_tunnel(buf, pos, row, a_is_src):
    """The record's ``tunnel`` object (docs/architecture.md §4), or null; src/dst as the record's."""
    if (row[R.F_STATE] & np.uint64(R.ST_TUNNEL)) == 0:
        return _put(buf, pos, P_NULL)
    info = np.int64(row[R.F_TUNNEL + R.U_INFO])
    vnet = row[R.F_TUNNEL + R.U_VNET]
    ids = row[R.F_TUNNEL + R.U_IDS]
    id_a, id_b = np.int64(ids & np.uint64(0xFFFFFFFF)), np.int64(ids >> np.uint64(32))
    known_a, known_b = (info & R.INFO_A_ID) != 0, (info & R.INFO_B_ID) != 0
    src_id, src_known, dst_id, dst_known = (id_a, known_a, id_b, known_b) if a_is_src else (id_b, known_b, id_a,
                                                                                            known_a)
    out_s, out_d = (R.F_TUNNEL + R.U_OUTER_A, R.F_TUNNEL + R.U_OUTER_B)
    if not a_is_src:
        out_s, out_d = out_d, out_s
    outer_ip = (info & R.INFO_OUTER_IP) != 0
    outer_v6 = (info & R.INFO_OUTER_V6) != 0
    pos = _put(buf, pos, P_TUNNEL_TYPE)
    pos = _put(buf, pos, _TUNNEL_TYPES[min(info & 0xFF, len(_TUNNEL_TYPES) - 1)])
    pos = _put(buf, pos, P_TUNNEL_ID)
    pos = _put_small_or_null(buf, pos, np.int64(vnet & np.uint64(0xFFFFFFFF)), vnet != 0)
    pos = _put(buf, pos, P_TUNNEL_SRC_ID)
    pos = _put_small_or_null(buf, pos, src_id, src_known)
    pos = _put(buf, pos, P_TUNNEL_DST_ID)
    pos = _put_small_or_null(buf, pos, dst_id, dst_known)
    pos = _put(buf, pos, P_TUNNEL_SRC)
    pos = _put_quoted_addr(buf, pos, np.int64(row[out_s]), np.int64(row[out_s + 1]), outer_v6, outer_ip)
    pos = _put(buf, pos, P_TUNNEL_DST)
    pos = _put_quoted_addr(buf, pos, np.int64(row[out_d]), np.int64(row[out_d + 1]), outer_v6, outer_ip)
    pos = _put(buf, pos, P_TUNNEL_DEPTH)
    pos = _put_uint(buf, pos, (info >> R.INFO_DEPTH_SHIFT) & 0xFF)
    return _put(buf, pos, P_BRACE)


@njit(cache=True)
def render(rows, seed, sensor_json, iface_blob, iface_offsets, src_names, dst_names, names_blob, names_offsets,
           buf, community_seed):
    """Write one JSON line per row of ``rows`` (k, FLOW_WORDS) into ``buf``; return the bytes used.

    ``src_names``/``dst_names`` index a row's endpoint name list (already JSON)
    in ``names_blob`` via ``names_offsets``; -1 means none. Interface id i is called
    ``iface_blob[iface_offsets[i]:iface_offsets[i + 1]]`` (already JSON; null past the table).
    ``buf`` must hold k * MAX_FIXED_BYTES plus the sensor, the interfaces and the name lists.
    ``community_seed``: the Community ID's seed (0-65535)."""
    pos = 0
    seed = np.uint64(seed)
    scratch = np.empty(64, np.uint8)
    digest = np.empty(20, np.uint8)
    for r in range(rows.shape[0]):
        row = rows[r]
        key = np.int64(row[R.F_KEY] & np.uint64(0x7FFFFFFFFFFFFFFF))
        state = np.int64(row[R.F_STATE] & np.uint64(0x7FFFFFFFFFFFFFFF))
        proto = (key >> 48) & 0xFF
        v6 = (key >> 56) & 1
        a_is_src = (state & R.ST_SRC_IS_B) == 0
        s, d = (0, 1) if a_is_src else (1, 0)
        addr = (R.F_ADDR_A, R.F_ADDR_B)
        port = (key & 0xFFFF, (key >> 16) & 0xFFFF)
        mac = (row[R.F_MAC_A], row[R.F_MAC_B])
        nbytes = (row[R.F_A_BYTES], row[R.F_B_BYTES])
        npkts = (row[R.F_A_PKTS], row[R.F_B_PKTS])
        flags = ((state >> 8) & 0xFF, (state >> 16) & 0xFF)
        is_tcp = proto == 6
        is_icmp = proto == 1 or proto == 58
        vlan = (key >> 32) & 0xFFF
        iface = iface_of(row[R.F_KEY])

        pos = _put(buf, pos, P_ID)
        pos = _put_uuid(buf, pos, row, seed)
        pos = _put(buf, pos, P_COMMUNITY)
        pos = put_community_id(buf, pos, row, community_seed, scratch, digest)
        pos = _put(buf, pos, P_PROTO)
        pos = _put_protocol(buf, pos, proto)
        pos = _put(buf, pos, P_SRC_ADDR)
        pos = _put_endpoint(buf, pos, np.int64(row[addr[s]]), np.int64(row[addr[s] + 1]), v6, port[s], mac[s],
                            src_names[r], names_blob, names_offsets)
        pos = _put(buf, pos, P_DST_ADDR)
        pos = _put_endpoint(buf, pos, np.int64(row[addr[d]]), np.int64(row[addr[d] + 1]), v6, port[d], mac[d],
                            dst_names[r], names_blob, names_offsets)
        pos = _put(buf, pos, P_FIRST)
        pos = _put_time(buf, pos, np.int64(row[R.F_FIRST]))
        pos = _put(buf, pos, P_LAST)
        pos = _put_time(buf, pos, np.int64(row[R.F_LAST]))
        pos = _put(buf, pos, P_Z_SRC_STAT)
        pos = _put_uint(buf, pos, nbytes[s])
        pos = _put(buf, pos, P_PACKETS)
        pos = _put_uint(buf, pos, npkts[s])
        pos = _put(buf, pos, P_DST_STAT)
        pos = _put_uint(buf, pos, nbytes[d])
        pos = _put(buf, pos, P_PACKETS)
        pos = _put_uint(buf, pos, npkts[d])
        pos = _put(buf, pos, P_STATUS)
        pos = _put(buf, pos, P_ESTABLISHED if state & R.ST_ESTABLISHED else P_INIT)
        pos = _put(buf, pos, P_END)
        pos = _put_end_reason(buf, pos, row[R.F_END])
        pos = _put(buf, pos, P_VLAN)
        pos = _put_small_or_null(buf, pos, vlan, vlan != 0)
        pos = _put(buf, pos, P_SRC_FLAGS)
        pos = _put_small_or_null(buf, pos, flags[s], is_tcp)
        pos = _put(buf, pos, P_DST_FLAGS)
        pos = _put_small_or_null(buf, pos, flags[d], is_tcp)
        pos = _put(buf, pos, P_ICMP_TYPE)
        pos = _put_small_or_null(buf, pos, (state >> 24) & 0xFF, is_icmp)
        pos = _put(buf, pos, P_ICMP_CODE)
        pos = _put_small_or_null(buf, pos, (state >> 32) & 0xFF, is_icmp)
        pos = _put(buf, pos, P_TUNNEL)
        pos = _put_tunnel(buf, pos, row, a_is_src)
        pos = _put(buf, pos, P_INTERFACE)
        if iface + 1 < iface_offsets.shape[0]:
            for k in range(iface_offsets[iface], iface_offsets[iface + 1]):
                buf[pos] = iface_blob[k]
                pos += 1
        else:
            pos = _put(buf, pos, P_NULL)
        pos = _put(buf, pos, P_SENSOR)
        pos = _put(buf, pos, sensor_json)
        pos = _put(buf, pos, P_CLOSE)
    return pos
