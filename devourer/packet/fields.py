"""Compiled readers of header fields: big-endian integers and MAC addresses at a byte offset.

Shared by the decoder (``packet.decode``) and the tunnel headers (``packet.tunnels``);
inlined into both, so a field read costs what the expression costs.
"""

import numba
import numpy as np

from devourer.packet.layout import MAC_PRESENT


@numba.njit(cache=True, inline="always")
def be16(b, p):
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@numba.njit(cache=True, inline="always")
def be24(b, p):
    return (np.int64(b[p]) << 16) | (np.int64(b[p + 1]) << 8) | np.int64(b[p + 2])


@numba.njit(cache=True, inline="always")
def be32(b, p):
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@numba.njit(cache=True, inline="always")
def mac(b, p):
    """The 6 bytes at p as a MAC word: the address in the low 48 bits, MAC_PRESENT set."""
    v = np.uint64(0)
    for k in range(6):
        v = (v << np.uint64(8)) | np.uint64(b[p + k])
    return v | MAC_PRESENT


@numba.njit(cache=True, inline="always")
def le64(b, p, n):
    """Little-endian u64 from n (<= 8) bytes at p, zero-padded."""
    v = np.uint64(0)
    for k in range(n):
        v |= np.uint64(b[p + k]) << np.uint64(8 * k)
    return v
