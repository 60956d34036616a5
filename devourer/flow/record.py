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
                     24-31 ICMP type; 32-39 ICMP code (of the first packet); bit 40 tunnelled
    15    end_reason one of END_* (rows leaving the table only)
    16-22 tunnel     the tunnel words U_* below (zero unless bit 40 of state)

A tunnelled flow's tunnel (``packet.tunnels``), as its first tunnelled packet showed it, with the
per-direction ids of each side's first tunnelled packet: seven words, kept in the table beside the row
(``flow.table``) and appended to the export row.

    0     vnet       the key's virtual network word (``flow.key.vnet_word``), 0 when the id is not keyed
    1     info       bits 0-7 tunnel type; 8 outer addresses IPv6; 9 outer addresses known; 10 A's id known;
                     11 B's id known; 16-23 tunnels opened (depth)
    2     ids        the tunnel id of A's packets (low 32 bits), of B's (high 32)
    3-4   outer_a    the outer address on A's side (as addr_a)
    5-6   outer_b

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

FLOW_WORDS = 23  # rows sent to the exporter
TABLE_WORDS = 16  # rows kept in the table (T_*)
TUNNEL_WORDS = 7  # a tunnelled flow's tunnel (U_*), beside its table row and at F_TUNNEL of its export row
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
F_TUNNEL = 16

U_VNET = 0
U_INFO = 1
U_IDS = 2
U_OUTER_A = 3
U_OUTER_B = 5
INFO_OUTER_V6 = 1 << 8
INFO_OUTER_IP = 1 << 9
INFO_A_ID = 1 << 10
INFO_B_ID = 1 << 11
INFO_DEPTH_SHIFT = 16

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
ST_TUNNEL = 1 << 40

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
