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
    67     1    flags        bit0: sent by B; bit1: IPv6
    68     1    tcp_flags
    69     1    icmp_type
    70     1    icmp_code
    71     1    (pad)
    72     8    src_mac      sender's MAC in the low 48 bits, bit 63 set when known
    80     8    dst_mac      receiver's MAC, same encoding
"""

import numpy as np

RECORD_BYTES = 88

# u64 word indexes
W_TS = 0
W_CLOCK = 1
W_ADDR_A = 2  # and 3
W_ADDR_B = 4  # and 5
W_HASH = 6
W_SRC_MAC = 9
W_DST_MAC = 10
# u32 index
D_WIRE_LEN = 14
# u16 indexes
H_PORT_A = 30
H_PORT_B = 31
H_VLAN = 32
# u8 offsets
B_PROTO = 66
B_FLAGS = 67
B_TCP_FLAGS = 68
B_ICMP_TYPE = 69
B_ICMP_CODE = 70

FLAG_FROM_B = 1
FLAG_V6 = 2
MAC_PRESENT = np.uint64(1 << 63)

PACKET_DTYPE = np.dtype(
    {
        "names": ["ts_us", "clock_us", "addr_a", "addr_b", "key_hash", "wire_len", "port_a", "port_b",
                  "vlan", "proto", "flags", "tcp_flags", "icmp_type", "icmp_code", "src_mac", "dst_mac"],
        "formats": ["<i8", "<i8", ("u1", 16), ("u1", 16), "<u8", "<u4", "<u2", "<u2",
                    "<u2", "u1", "u1", "u1", "u1", "u1", "<u8", "<u8"],
        "offsets": [0, 8, 16, 32, 48, 56, 60, 62, 64, 66, 67, 68, 69, 70, 72, 80],
        "itemsize": RECORD_BYTES,
    }
)

# Capture-side counters (indexes into the capture's counter array / stats segment).
C_READ = 0  # packets handed to us by libpcap (or found in the file, with a filter)
C_BYTES = 1  # wire bytes of those packets
C_NON_IP = 2  # not IPv4/IPv6 after the link layer (ARP, STP, PPPoE, MPLS, ...)
C_MALFORMED = 3  # IP packets too short or inconsistent to key
C_FRAG_UNMATCHED = 4  # non-first fragments whose first fragment was not seen
C_RING_DROPPED = 5  # packets dropped because a worker's ring was full (live only)
C_KERNEL_DROPPED = 6  # libpcap ps_drop + ps_ifdrop (live only)
C_FILTERED = 7  # packets in the files that the BPF filter rejected
C_DISPATCHED = 8  # packets written to worker rings
C_FRAG_EVICTED = 9  # first-fragment entries pushed out of the bounded fragment table
C_CLOCK_US = 10  # capture clock (running max of packet time), for stats
C_NAME_PACKETS = 11  # name-resolution packets copied to the resolver ring
C_NAME_DROPPED = 12  # ... that did not fit (live only: the resolver fell behind)
C_INPUT_BYTES = 13  # bytes of the capture files (or pipe) consumed so far, for progress
C_ABANDONED = 14  # decoded for a flow but not handed on: the run was stopped by a failure (a dead process)
N_CAPTURE_COUNTERS = 16


# Slots of the resolver ring: the packet's record, then its L4 payload (cut to fit).
#   0   RECORD_BYTES  the packet record above
#   88  u16           payload length in this slot
#   90  u16           payload length on the wire (more than the slot holds: cut)
#   92  ...           payload
NAME_SLOT_BYTES = 2048
NAME_PAYLOAD_AT = 92
NAME_PAYLOAD_MAX = NAME_SLOT_BYTES - NAME_PAYLOAD_AT


def empty_records(n: int) -> np.ndarray:
    """A zeroed (n, RECORD_BYTES) uint8 buffer of packet records."""
    return np.zeros((n, RECORD_BYTES), np.uint8)
