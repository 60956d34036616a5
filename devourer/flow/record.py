"""The flow row: one flow's state as 16 u64 words, as workers hand it to the exporter.

Workers write expired flows in this layout into their flow ring (one 128-byte
slot each); the exporter turns rows into the record of docs/architecture.md §4
(``outputs.format``). The table keeps a slightly different row (T_* below).

    word  field
    0-1   addr_a     16 address bytes, network order (IPv4 in the first 4)
    2-3   addr_b
    4     key        the key word (``flow.key``): ports, vlan, protocol, v6, occupied bit
    5     key_hash
    6     first_ts   microseconds
    7     last_ts
    8     a_bytes    what endpoint A sent (wire bytes)
    9     b_bytes
    10    a_packets
    11    b_packets
    12    mac_a      A's MAC in the low 48 bits, bit 63 when known
    13    mac_b
    14    state      bit0 src is B; bit1 established; bits 8-15 A's TCP flags; 16-23 B's;
                     24-31 ICMP type; 32-39 ICMP code (of the first packet)
    15    end_reason one of END_* (rows leaving the table only)

Rows inside the table (``flow.table``, T_* below) drop the hash (the table's
index holds its low bits and it can be recomputed from the key) and the end
reason, and add the capture clock (running maximum of packet time) at the
flow's first and last packet: 16 words, 128 bytes. Expiry compares clocks
only, so a capture whose timestamps step backwards (concatenated traces) keeps
grouping packets instead of expiring every flow at once; the reported times
stay the packets' own.

    0-3 addr_a, addr_b   4 key   5 first_ts   6 last_ts   7 a_bytes   8 b_bytes
    9 a_packets   10 b_packets   11 mac_a   12 mac_b   13 state   14 first_clock   15 last_clock
"""

import socket

FLOW_WORDS = 16  # rows sent to the exporter
TABLE_WORDS = 16  # rows kept in the table (T_*)
F_ADDR_A = 0
F_ADDR_B = 2
F_KEY = 4
F_HASH = 5
F_FIRST = 6
F_LAST = 7
F_A_BYTES = 8
F_B_BYTES = 9
F_A_PKTS = 10
F_B_PKTS = 11
F_MAC_A = 12
F_MAC_B = 13
F_STATE = 14
F_END = 15

T_ADDR_A = 0
T_ADDR_B = 2
T_KEY = 4
T_FIRST = 5
T_LAST = 6
T_A_BYTES = 7
T_B_BYTES = 8
T_A_PKTS = 9
T_B_PKTS = 10
T_MAC_A = 11
T_MAC_B = 12
T_STATE = 13
T_FIRST_CLOCK = 14
T_LAST_CLOCK = 15

ST_SRC_IS_B = 1
ST_ESTABLISHED = 2

END_IDLE = 1
END_ACTIVE = 2
END_SHUTDOWN = 3
END_EVICTED = 4
END_REASONS = {END_IDLE: "idle", END_ACTIVE: "active", END_SHUTDOWN: "shutdown", END_EVICTED: "evicted"}


def format_addr(raw16: bytes, v6: bool) -> str:
    """16 address bytes as stored in rows and packet records -> text."""
    return socket.inet_ntop(socket.AF_INET6, raw16) if v6 else socket.inet_ntop(socket.AF_INET, raw16[:4])


def format_mac(word: int) -> str | None:
    """A MAC word (bit 63: known) -> 'aa:bb:cc:dd:ee:ff', or None."""
    if not word >> 63:
        return None
    return ":".join(f"{(word >> s) & 0xFF:02x}" for s in range(40, -8, -8))
