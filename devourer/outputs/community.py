"""The Community ID of a flow (version 1, as Zeek, Suricata and Arkime compute it), compiled (numba).

A record's ``community_id`` lets a devourer flow join a Zeek ``conn.log`` or a Suricata alert without
matching 5-tuples by hand. Version 1 (github.com/corelight/community-id-spec): SHA-1 over a 2-byte seed, the
two addresses (4 or 16 bytes), the IP protocol, a zero byte and, for TCP, UDP, SCTP, ICMP and ICMPv6, two
ports, both endpoints ordered so that the smaller address (then port) comes first; written as ``1:`` and the
digest in base64. For ICMP the ports are the type and, for a message that has a counterpart (echo and echo
reply, router solicitation and advertisement, ...), the counterpart's type, else the code, and a message
without a counterpart is one-way: never reordered. A record's ICMP type and code are its first packet's, the
source's, so the request and its reply give one id, as Zeek's.

The hash input is at most 40 bytes: one SHA-1 block, so the whole function is one compression round here
(about 0.1 µs a flow), where hashlib from Python would cost more than the rest of the record.
"""

import numpy as np
from numba import njit

from devourer.flow import record as R

VERSION_PREFIX = np.frombuffer(b"1:", np.uint8).copy()
ID_BYTES = 30  # "1:" and 28 base64 characters
_BASE64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8).copy()
_K = np.array([0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6], np.uint32)
_H0 = np.array([0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0], np.uint32)

# the counterpart of an ICMP type (-1: none, a one-way message); Zeek's tables
_ICMP4_PAIR = np.full(256, -1, np.int64)
for _a, _b in ((8, 0), (13, 14), (15, 16), (10, 9), (17, 18)):
    _ICMP4_PAIR[_a], _ICMP4_PAIR[_b] = _b, _a
_ICMP6_PAIR = np.full(256, -1, np.int64)
for _a, _b in ((128, 129), (130, 131), (133, 134), (135, 136), (139, 140), (144, 145)):
    _ICMP6_PAIR[_a], _ICMP6_PAIR[_b] = _b, _a


@njit(cache=True, inline="always")
def _rotl(x, n):
    return ((x << np.uint32(n)) | (x >> np.uint32(32 - n))) & np.uint32(0xFFFFFFFF)


@njit(cache=True)
def sha1_short(message, length, digest):
    """SHA-1 of ``message[:length]`` (at most 55 bytes: one block) into ``digest`` (20 bytes)."""
    block = np.zeros(64, np.uint8)
    block[:length] = message[:length]
    block[length] = 0x80
    bits = length * 8
    block[62] = (bits >> 8) & 0xFF
    block[63] = bits & 0xFF
    w = np.empty(80, np.uint32)
    for i in range(16):
        w[i] = (np.uint32(block[4 * i]) << np.uint32(24)) | (np.uint32(block[4 * i + 1]) << np.uint32(16)) | \
               (np.uint32(block[4 * i + 2]) << np.uint32(8)) | np.uint32(block[4 * i + 3])
    for i in range(16, 80):
        w[i] = _rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1)
    a, b, c, d, e = _H0[0], _H0[1], _H0[2], _H0[3], _H0[4]
    for i in range(80):
        if i < 20:
            f = (b & c) | (~b & d)
        elif i < 40:
            f = b ^ c ^ d
        elif i < 60:
            f = (b & c) | (b & d) | (c & d)
        else:
            f = b ^ c ^ d
        t = (_rotl(a, 5) + f + e + _K[i // 20] + w[i]) & np.uint32(0xFFFFFFFF)
        a, b, c, d, e = t, a, _rotl(b, 30), c, d
    h = (_H0[0] + a, _H0[1] + b, _H0[2] + c, _H0[3] + d, _H0[4] + e)
    for i in range(5):
        v = h[i] & np.uint32(0xFFFFFFFF)
        for j in range(4):
            digest[4 * i + j] = (v >> np.uint32(24 - 8 * j)) & np.uint32(0xFF)


@njit(cache=True, inline="always")
def _addr_byte(row, at, i):
    """Byte ``i`` (network order) of the address stored at row[at], row[at + 1] (two little-endian words)."""
    word = row[at] if i < 8 else row[at + 1]
    return (word >> np.uint64(8 * (i % 8))) & np.uint64(0xFF)


@njit(cache=True)
def put_community_id(buf, pos, row, seed, scratch, digest):
    """Write the row's Community ID ("1:" and base64) at ``buf[pos]``; return the new position. ``scratch``
    (64 bytes) and ``digest`` (20) are work space."""
    key = np.int64(row[R.F_KEY] & np.uint64(0x7FFFFFFFFFFFFFFF))
    state = np.int64(row[R.F_STATE] & np.uint64(0x7FFFFFFFFFFFFFFF))
    proto = (key >> 48) & 0xFF
    alen = 16 if (key >> 56) & 1 else 4
    a_is_src = (state & R.ST_SRC_IS_B) == 0
    src, dst = (R.F_ADDR_A, R.F_ADDR_B) if a_is_src else (R.F_ADDR_B, R.F_ADDR_A)
    sport, dport = (key & 0xFFFF, (key >> 16) & 0xFFFF) if a_is_src else ((key >> 16) & 0xFFFF, key & 0xFFFF)
    has_ports = proto == 6 or proto == 17 or proto == 132 or proto == 1 or proto == 58
    one_way = False
    if proto == 1 or proto == 58:
        itype, icode = (state >> 24) & 0xFF, (state >> 32) & 0xFF
        pair = _ICMP4_PAIR[itype] if proto == 1 else _ICMP6_PAIR[itype]
        sport, dport = itype, (pair if pair >= 0 else icode)
        one_way = pair < 0
    # ordered: the smaller address first, then the smaller port (one-way flows stay as they are)
    swap = False
    if not one_way:
        order = 0
        for i in range(alen):
            x, y = _addr_byte(row, src, i), _addr_byte(row, dst, i)
            if x != y:
                order = -1 if x < y else 1
                break
        swap = order > 0 or (order == 0 and not (has_ports and sport < dport))
    if swap:
        src, dst = dst, src
        sport, dport = dport, sport
    scratch[0] = (seed >> 8) & 0xFF
    scratch[1] = seed & 0xFF
    n = 2
    for at in (src, dst):
        for i in range(alen):
            scratch[n] = _addr_byte(row, at, i)
            n += 1
    scratch[n] = proto
    scratch[n + 1] = 0
    n += 2
    if has_ports:
        for p in (sport, dport):
            scratch[n] = (p >> 8) & 0xFF
            scratch[n + 1] = p & 0xFF
            n += 2
    sha1_short(scratch, n, digest)
    for i in range(2):
        buf[pos + i] = VERSION_PREFIX[i]
    pos += 2
    for i in range(0, 18, 3):  # 6 whole groups of 3 bytes, then the last 2 bytes and '='
        v = (np.int64(digest[i]) << 16) | (np.int64(digest[i + 1]) << 8) | np.int64(digest[i + 2])
        for j in range(4):
            buf[pos + j] = _BASE64[(v >> (18 - 6 * j)) & 63]
        pos += 4
    v = (np.int64(digest[18]) << 16) | (np.int64(digest[19]) << 8)
    buf[pos] = _BASE64[(v >> 18) & 63]
    buf[pos + 1] = _BASE64[(v >> 12) & 63]
    buf[pos + 2] = _BASE64[(v >> 6) & 63]
    buf[pos + 3] = 61  # '='
    return pos + 4


def community_ids(rows: np.ndarray, seed: int = 0) -> list[str]:
    """The Community IDs of flow rows (k, FLOW_WORDS), for callers outside the compiled writers."""
    rows = np.ascontiguousarray(rows, np.uint64)
    buf = np.empty(ID_BYTES, np.uint8)
    scratch = np.empty(64, np.uint8)
    digest = np.empty(20, np.uint8)
    out = []
    for r in range(len(rows)):
        end = put_community_id(buf, 0, rows[r], np.int64(seed), scratch, digest)
        out.append(bytes(buf[:end]).decode())
    return out
