"""Byte layout of the fixed-size packet record that capture hands to the workers.

One record per packet, ``RECORD_BYTES`` long, written by ``packet.decode`` and read
by ``flow.table``. The same bytes are viewed as u64/u32/u16/u8 columns; the offsets
below are the contract between the two sides (and the ring's slot size).

    offset size field
    0      8    ts_us        packet timestamp, microseconds since the epoch
    8      8    clock_us     capture's running maximum of ts_us up to this packet
    16     16   addr_a       normalized endpoint A (network order; IPv4 in the first 4 bytes)
    32     16   addr_b       normalized endpoint B
    48     8    key_hash     64-bit hash of the key (worker choice and table slot)
    56     4    wire_len     bytes on the wire (pcap ``len``)
    60     2    port_a
    62     2    port_b
    64     2    vlan         outermost 802.1Q/802.1ad id, 0 when untagged
    66     1    proto        IP protocol number (ICMPv6 is 58)
    67     1    flags        bit0: sent by B; bit1: IPv6; bit2: outer IPv6; bit3: outer addresses known;
                             bit4: the tunnel id is keyed; bit5: a tunnel id; bit7: a chunk's end marker
                             (``ipc.ordered``)
    68     1    tcp_flags
    69     1    icmp_type
    70     1    icmp_code
    71     1    tunnel       the tunnel the packet came through (``packet.tunnels`` T_*), 0 when none
    72     8    src_mac      sender's MAC in the low 48 bits, bit 63 set when known
    80     8    dst_mac      receiver's MAC, same encoding
    88     16   outer_src    the tunnel's outer source address (the sender's side), as addr_a
    104    16   outer_dst
    120    4    tunnel_id    VNI, session, key, label or TEID (flag bit5)
    124    1    depth        tunnels opened to reach this packet's flow
    125    1    (pad)
    126    2    interface    the run's id of the interface the packet was captured on (``flow.key``), 0 with one

The tunnel fields (71, 88-127) mean something only where ``tunnel`` is not 0.
"""

import numpy as np

from devourer.ipc.ordered import Framing

RECORD_BYTES = 128

# u64 word indexes
W_TS = 0
W_CLOCK = 1
W_ADDR_A = 2  # and 3
W_ADDR_B = 4  # and 5
W_HASH = 6
W_SRC_MAC = 9
W_DST_MAC = 10
W_OUTER_SRC = 11  # and 12; these four words are written (and read) only when B_TUNNEL is not 0
W_OUTER_DST = 13  # and 14
W_TUNNEL_ID = 15  # tunnel_id in the low 32 bits
# u32 index
D_WIRE_LEN = 14
D_TUNNEL_ID = 30
# u16 indexes
H_PORT_A = 30
H_PORT_B = 31
H_VLAN = 32
H_IFACE = 63
# u8 offsets
B_PROTO = 66
B_FLAGS = 67
B_TCP_FLAGS = 68
B_ICMP_TYPE = 69
B_ICMP_CODE = 70
B_TUNNEL = 71
B_DEPTH = 124

FLAG_FROM_B = 1
FLAG_V6 = 2
FLAG_OUTER_V6 = 4
FLAG_OUTER_IP = 8
FLAG_KEYED = 16
FLAG_TUNNEL_ID = 32
FLAG_CHUNK_END = 0x80
MAC_PRESENT = np.uint64(1 << 63)

PACKET_DTYPE = np.dtype(
    {
        "names": ["ts_us", "clock_us", "addr_a", "addr_b", "key_hash", "wire_len", "port_a", "port_b",
                  "vlan", "proto", "flags", "tcp_flags", "icmp_type", "icmp_code", "tunnel", "src_mac", "dst_mac",
                  "outer_src", "outer_dst", "tunnel_id", "depth", "interface"],
        "formats": ["<i8", "<i8", ("u1", 16), ("u1", 16), "<u8", "<u4", "<u2", "<u2",
                    "<u2", "u1", "u1", "u1", "u1", "u1", "u1", "<u8", "<u8", ("u1", 16), ("u1", 16), "<u4", "u1", "<u2"],
        "offsets": [0, 8, 16, 32, 48, 56, 60, 62, 64, 66, 67, 68, 69, 70, 71, 72, 80, 88, 104, 120, 124, 126],
        "itemsize": RECORD_BYTES,
    }
)

# Slots of the resolver ring: the packet's record, then its L4 payload (cut to fit).
#   0   RECORD_BYTES  the packet record above
#   128 u16           payload length in this slot
#   130 u16           payload length on the wire (more than the slot holds: cut)
#   132 ...           payload
NAME_SLOT_BYTES = 2048
NAME_KEPT_AT = RECORD_BYTES
NAME_ON_WIRE_AT = RECORD_BYTES + 2
NAME_PAYLOAD_AT = RECORD_BYTES + 4
NAME_PAYLOAD_MAX = NAME_SLOT_BYTES - NAME_PAYLOAD_AT


#: what ``ipc.ordered`` needs to know of both rings' slots (a name slot starts with the packet record)
RING_FRAMING = Framing(B_FLAGS, FLAG_CHUNK_END, W_CLOCK)


def empty_records(n: int) -> np.ndarray:
    """A zeroed (n, RECORD_BYTES) uint8 buffer of packet records."""
    return np.zeros((n, RECORD_BYTES), np.uint8)
