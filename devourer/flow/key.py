"""The flow key: its words, its hash and the address fingerprint, in one place.

A flow is keyed by the normalized 5-tuple plus VLAN, plus the virtual network of
a tunnel that names one (``packet.tunnels``: VXLAN and Geneve VNI, PPPoE session,
GRE key): endpoint A is the smaller (address bytes, port) of the two, so both
directions of a conversation give the same key. The key is stored as five u64
words, everywhere the same: the two 16-byte addresses as two little-endian words
each (IPv4 in the low four bytes of the first), and one key word::

    bits  0-15 port_a   16-31 port_b   32-43 vlan   44-47 interface (low 4 bits)   48-55 protocol   56 IPv6
    57 virtual network   58-62 interface (high 5 bits)   63 occupied (table rows only)

The interface is the run's id of the interface a packet was captured on (``iface_bits``: up to
``MAX_INTERFACES``, split over two spare fields so that interface 0 -- every run with one interface --
leaves the key, its hash and the flow ids what they were before interfaces were keyed),

and, where bit 57 is set, a sixth word, the virtual network (``vnet_word``: the
tunnel type and its id), kept beside the row (``flow.table``).

The key hash is splitmix64's mixer folded over those five words (and the sixth
where there is one) from a fixed seed. Capture computes it once per packet (``packet.decode``): its high bits
choose the worker, its low bits the flow table's slot (``flow.table``), which
recomputes it from a row when it moves one. The record writer uses the same
mixer for flow ids (``outputs.render``), and the name map a cheaper digest of
one address (``fingerprint``) to ask "has this endpoint a name" per column.

Everything compiled here is inlined into its callers (``inline="always"``), so
one definition costs nothing on the hot path.
"""

import numba
import numpy as np

M1 = np.uint64(0x9E3779B97F4A7C15)
M2 = np.uint64(0xBF58476D1CE4E5B9)
M3 = np.uint64(0x94D049BB133111EB)
SEED = np.uint64(0x243F6A8885A308D3)
OCCUPIED = np.uint64(1 << 63)  # in a table row's key word: the row holds a flow
KEY_VNET = np.uint64(1 << 57)  # in a key word: the key has a virtual network word
MAX_INTERFACES = 512  # interfaces one run keys apart (9 bits of the key word)

MASK64 = (1 << 64) - 1
V6_TAG = 1 << 128  # an IPv6 address key is tagged above 2**128 (``names.table.addr_key``)
FP_V6 = 1 << 63  # an IPv6 fingerprint has bit 63 set; an IPv4 one is the address itself
_M1_INT = int(M1)


@numba.njit(cache=True, inline="always")
def mix64(h, w):
    """One step of the hash: fold word w into h (splitmix64-style)."""
    h = (h ^ w) * M1
    h ^= h >> np.uint64(29)
    return h


@numba.njit(cache=True, inline="always")
def finish64(h):
    """The final avalanche of the hash."""
    h ^= h >> np.uint64(30)
    h *= M2
    h ^= h >> np.uint64(27)
    h *= M3
    h ^= h >> np.uint64(31)
    return h


@numba.njit(cache=True, inline="always")
def key_word(port_a, port_b, vlan, proto, v6):
    """The key word of a flow (without the occupied bit)."""
    return (np.uint64(port_a) | (np.uint64(port_b) << np.uint64(16)) | (np.uint64(vlan) << np.uint64(32))
            | (np.uint64(proto) << np.uint64(48)) | (np.uint64(v6) << np.uint64(56)))


@numba.njit(cache=True, inline="always")
def iface_bits(iface):
    """The interface id's bits in a key word: its low 4 bits at 44, its high 5 at 58."""
    i = np.uint64(iface)
    return ((i & np.uint64(0xF)) << np.uint64(44)) | ((i >> np.uint64(4)) << np.uint64(58))


@numba.njit(cache=True, inline="always")
def iface_of(keyword):
    """The interface id a key word holds (``iface_bits`` read back)."""
    w = np.uint64(keyword)
    return np.int64(((w >> np.uint64(44)) & np.uint64(0xF)) | (((w >> np.uint64(58)) & np.uint64(0x1F)) << np.uint64(4)))


@numba.njit(cache=True, inline="always")
def vnet_word(tunnel_type, tunnel_id):
    """The virtual network word of a keyed tunnel: its id, its type above, never 0."""
    return np.uint64(tunnel_id) | (np.uint64(tunnel_type) << np.uint64(32)) | (np.uint64(1) << np.uint64(40))


@numba.njit(cache=True, inline="always")
def key_hash(a0, a1, b0, b1, keyword, vnet):
    """The 64-bit key hash of the key words (``keyword`` without the occupied bit; ``vnet`` 0 when the key
    has no virtual network, which leaves the hash of an untunnelled flow what it always was)."""
    h = mix64(mix64(mix64(mix64(mix64(SEED, a0), a1), b0), b1), keyword)
    if vnet != 0:
        h = mix64(h, vnet)
    return finish64(h)


def key_word_of(port_a: int, port_b: int, vlan: int, proto: int, v6: bool, vnet: bool = False,
                iface: int = 0) -> int:
    """The key word as a Python int, with the occupied bit (as rows carry it)."""
    return (port_a | port_b << 16 | vlan << 32 | proto << 48 | int(v6) << 56 | int(vnet) << 57 | 1 << 63
            | (iface & 0xF) << 44 | (iface >> 4) << 58)


def fingerprint(addr_key: int) -> int:
    """64-bit digest of an address key (``names.table.addr_key``): IPv4 its own value, IPv6 a mix of its two
    words with bit 63 set. Equal to ``fingerprints`` of the address's row words."""
    if addr_key < V6_TAG:
        return addr_key
    w0, w1 = addr_key & MASK64, (addr_key >> 64) & MASK64
    return ((w0 ^ (w1 * _M1_INT)) & MASK64) | FP_V6


def fingerprints(words: np.ndarray, v6: np.ndarray) -> np.ndarray:
    """(k, 2) address words of rows -> k ``fingerprint`` values, computed per column."""
    w0, w1 = words[:, 0], words[:, 1]
    with np.errstate(over="ignore"):
        mixed = (w0 ^ (w1 * M1)) | np.uint64(FP_V6)
    return np.where(v6, mixed, w0 & np.uint64(0xFFFFFFFF))
