"""Flow rows -> the columns of the ``flow_logs`` schema (``outputs.bigquery.SCHEMA``), as an Arrow table.

The flow store (issue 16) keeps flows as Parquet with BigQuery's flat columns, so one query compiles
to both. Going through the JSON lines would cost more than the whole replay (pyarrow's JSON reader
takes 3.4 s for large's 1 M records on the 2-core VM, writing its Parquet 0.9 s), so the columns are
made from the rows themselves: numbers and times with numpy, the text columns (ids, addresses, MACs,
outer addresses) by one compiled loop that reuses the JSON writer's pieces (``outputs.render``:
the same text, byte for byte), the name lists in Python for the endpoints that have names (most have
none). ``row_of`` of the record the JSON writer makes is the reference: the tests compare the two.
"""

import numpy as np
import orjson
import pyarrow as pa
from numba import njit

from devourer.flow import record as R
from devourer.outputs import render as W
from devourer.outputs.community import put_community_id
from devourer.packet.tunnels import TUNNEL_NAMES

#: the text columns ``_texts`` writes, in order
TEXT_COLUMNS = ("id", "src_addr", "dst_addr", "src_hw_addr", "dst_hw_addr", "tunnel_src", "tunnel_dst", "community_id")
TEXT_BYTES = 45  # a text column of a row at its longest: an IPv4-mapped IPv6 address (an id is 36, a MAC 17)
PROTOCOL_NAMES = [{6: "tcp", 17: "udp", 1: "icmp4", 58: "icmp6"}.get(p, str(p)) for p in range(256)]
TIMESTAMP = pa.timestamp("us", tz="UTC")


@njit(cache=True)
def _put_bare_mac(buf, pos, word):
    """A known MAC as aa:bb:cc:dd:ee:ff (the caller leaves unknown ones null)."""
    w = np.int64(word & np.uint64(0xFFFFFFFFFFFF))
    for shift in range(40, -8, -8):
        pos = W._put_hex(buf, pos, (w >> shift) & 0xFF, 2)
        if shift:
            buf[pos] = 58
            pos += 1
    return pos


@njit(cache=True)
def _texts(rows, seed, community_seed, buf, offsets, valid):
    """The text columns of each row into ``buf``: column c of row r is buf[offsets[c, r]:offsets[c, r + 1]]
    (one buffer per column: ``buf[c]``), null where ``valid[c, r]`` is 0."""
    scratch = np.empty(64, np.uint8)
    digest = np.empty(20, np.uint8)
    for c in range(offsets.shape[0]):
        offsets[c, 0] = 0
    at = np.zeros(offsets.shape[0], np.int64)
    for r in range(rows.shape[0]):
        row = rows[r]
        key = np.int64(row[R.F_KEY] & np.uint64(0x7FFFFFFFFFFFFFFF))
        state = np.int64(row[R.F_STATE] & np.uint64(0x7FFFFFFFFFFFFFFF))
        v6 = (key >> 56) & 1
        a_is_src = (state & R.ST_SRC_IS_B) == 0
        src, dst = (R.F_ADDR_A, R.F_ADDR_B) if a_is_src else (R.F_ADDR_B, R.F_ADDR_A)
        src_mac, dst_mac = (row[R.F_MAC_A], row[R.F_MAC_B]) if a_is_src else (row[R.F_MAC_B], row[R.F_MAC_A])
        info = np.int64(row[R.F_TUNNEL + R.U_INFO])
        tunnelled = (row[R.F_STATE] & np.uint64(R.ST_TUNNEL)) != 0
        outer_known = tunnelled and (info & R.INFO_OUTER_IP) != 0
        outer_v6 = (info & R.INFO_OUTER_V6) != 0
        out_s, out_d = R.F_TUNNEL + R.U_OUTER_A, R.F_TUNNEL + R.U_OUTER_B
        if not a_is_src:
            out_s, out_d = out_d, out_s
        at[0] = W._put_uuid(buf[0], at[0], row, seed)
        valid[0, r] = 1
        at[1] = W._put_addr(buf[1], at[1], np.int64(row[src]), np.int64(row[src + 1]), v6)
        valid[1, r] = 1
        at[2] = W._put_addr(buf[2], at[2], np.int64(row[dst]), np.int64(row[dst + 1]), v6)
        valid[2, r] = 1
        for c, mac in ((3, src_mac), (4, dst_mac)):
            known = (mac >> np.uint64(63)) != 0
            if known:
                at[c] = _put_bare_mac(buf[c], at[c], mac)
            valid[c, r] = 1 if known else 0
        for c, w in ((5, out_s), (6, out_d)):
            if outer_known:
                at[c] = W._put_addr(buf[c], at[c], np.int64(row[w]), np.int64(row[w + 1]), outer_v6)
            valid[c, r] = 1 if outer_known else 0
        at[7] = put_community_id(buf[7], at[7], row, community_seed, scratch, digest)
        valid[7, r] = 1
        for c in range(offsets.shape[0]):
            offsets[c, r + 1] = at[c]


def _text_arrays(rows: np.ndarray, seed: int, community_seed: int) -> dict[str, pa.Array]:
    k = len(rows)
    buf = np.empty((len(TEXT_COLUMNS), max(1, k * TEXT_BYTES)), np.uint8)
    offsets = np.empty((len(TEXT_COLUMNS), k + 1), np.int32)
    valid = np.zeros((len(TEXT_COLUMNS), k), np.uint8)
    _texts(rows, np.uint64(seed), np.int64(community_seed), buf, offsets, valid)
    out = {}
    for c, name in enumerate(TEXT_COLUMNS):
        used = int(offsets[c, k])
        mask = None if valid[c].all() else pa.py_buffer(np.packbits(valid[c], bitorder="little"))
        out[name] = pa.StringArray.from_buffers(k, pa.py_buffer(offsets[c].copy()), pa.py_buffer(buf[c, :used].copy()),
                                                mask)
    return out


def _small(values: np.ndarray, present: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), mask=~present)


def _named(codes: np.ndarray, words: list[str], present: np.ndarray | None = None) -> pa.Array:
    """Text from a small vocabulary: ``words[code]`` per row (null where not ``present``)."""
    indices = pa.array(codes.astype(np.int32), mask=None if present is None else ~present)
    return pa.DictionaryArray.from_arrays(indices, pa.array(words, pa.string())).cast(pa.string())


def flow_table(formatter, rows: np.ndarray, names=None, named: tuple[pa.Array, pa.Array] | None = None) -> pa.Table:
    """The ``flow_logs`` columns of flow rows (k, FLOW_WORDS), named as ``formatter.lines`` names them (or
    with ``named``, ``name_columns`` of the rows taken earlier). A call costs about 1 ms beside its rows'
    cost, so callers that can gather rows pass many at once."""
    rows = np.ascontiguousarray(rows, np.uint64)
    k = len(rows)
    key = rows[:, R.F_KEY] & np.uint64(0x7FFFFFFFFFFFFFFF)
    state = rows[:, R.F_STATE] & np.uint64(0x7FFFFFFFFFFFFFFF)
    proto = ((key >> np.uint64(48)) & np.uint64(0xFF)).astype(np.int64)
    a_is_src = (state & np.uint64(R.ST_SRC_IS_B)) == 0
    port_a = (key & np.uint64(0xFFFF)).astype(np.int64)
    port_b = ((key >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.int64)
    flags_a = ((state >> np.uint64(8)) & np.uint64(0xFF)).astype(np.int64)
    flags_b = ((state >> np.uint64(16)) & np.uint64(0xFF)).astype(np.int64)

    def sided(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.where(a_is_src, a, b), np.where(a_is_src, b, a)

    src_port, dst_port = sided(port_a, port_b)
    src_bytes, dst_bytes = sided(rows[:, R.F_A_BYTES].astype(np.int64), rows[:, R.F_B_BYTES].astype(np.int64))
    src_pkts, dst_pkts = sided(rows[:, R.F_A_PKTS].astype(np.int64), rows[:, R.F_B_PKTS].astype(np.int64))
    src_flags, dst_flags = sided(flags_a, flags_b)
    is_tcp = proto == 6
    is_icmp = (proto == 1) | (proto == 58)
    vlan = ((key >> np.uint64(32)) & np.uint64(0xFFF)).astype(np.int64)
    texts = _text_arrays(rows, formatter.seed, formatter.community_seed)
    src_names, dst_names = named if named is not None else name_columns(formatter, rows, names)

    tunnelled = (rows[:, R.F_STATE] & np.uint64(R.ST_TUNNEL)) != 0
    info = rows[:, R.F_TUNNEL + R.U_INFO].astype(np.int64)
    vnet = rows[:, R.F_TUNNEL + R.U_VNET]
    ids = rows[:, R.F_TUNNEL + R.U_IDS]
    id_a, id_b = (ids & np.uint64(0xFFFFFFFF)).astype(np.int64), (ids >> np.uint64(32)).astype(np.int64)
    known_a, known_b = tunnelled & ((info & R.INFO_A_ID) != 0), tunnelled & ((info & R.INFO_B_ID) != 0)
    src_id, dst_id = sided(id_a, id_b)
    src_id_known, dst_id_known = sided(known_a, known_b)
    type_names = [TUNNEL_NAMES.get(t, "unknown") for t in range(max(TUNNEL_NAMES) + 1)] + ["unknown"]
    tunnel_type = np.minimum(info & 0xFF, len(type_names) - 1)

    labels = list(formatter.interfaces)
    words = rows[:, R.F_KEY]  # flow.key.iface_of, for a column
    iface = (((words >> np.uint64(44)) & np.uint64(0xF)) | (((words >> np.uint64(58)) & np.uint64(0x1F)) << np.uint64(4))
             ).astype(np.int64)
    named = np.array([label is not None for label in labels] + [False], bool)  # classic pcap: None
    iface = np.minimum(iface, len(labels))
    iface_text = _named(iface, [str(x) for x in labels] + [""], named[iface])
    ends = [R.END_REASONS.get(e, "unknown") for e in range(max(R.END_REASONS) + 2)]

    columns = {
        "id": texts["id"], "community_id": texts["community_id"], "protocol": _named(proto, PROTOCOL_NAMES),
        "src_addr": texts["src_addr"], "dst_addr": texts["dst_addr"],
        "src_port": pa.array(src_port), "dst_port": pa.array(dst_port),
        "src_hw_addr": texts["src_hw_addr"], "dst_hw_addr": texts["dst_hw_addr"],
        "src_names": src_names, "dst_names": dst_names,
        "first_seen_at": pa.array(rows[:, R.F_FIRST].astype(np.int64), TIMESTAMP),
        "last_seen_at": pa.array(rows[:, R.F_LAST].astype(np.int64), TIMESTAMP),
        "src_bytes": pa.array(src_bytes), "dst_bytes": pa.array(dst_bytes),
        "src_packets": pa.array(src_pkts), "dst_packets": pa.array(dst_pkts),
        "status": _named(((state & np.uint64(R.ST_ESTABLISHED)) != 0).astype(np.int32), ["init", "established"]),
        "end_reason": _named(np.minimum(rows[:, R.F_END], np.uint64(len(ends) - 1)), ends),
        "vlan": _small(vlan, vlan != 0),
        "src_tcp_flags": _small(src_flags, is_tcp), "dst_tcp_flags": _small(dst_flags, is_tcp),
        "icmp_type": _small((state >> np.uint64(24)) & np.uint64(0xFF), is_icmp),
        "icmp_code": _small((state >> np.uint64(32)) & np.uint64(0xFF), is_icmp),
        "sensor": _named(np.zeros(k, np.int32), [formatter.sensor]),
        "tunnel_type": _named(tunnel_type, type_names, tunnelled),
        "tunnel_id": _small(vnet & np.uint64(0xFFFFFFFF), tunnelled & (vnet != 0)),
        "tunnel_src_id": _small(src_id, src_id_known), "tunnel_dst_id": _small(dst_id, dst_id_known),
        "tunnel_src": texts["tunnel_src"], "tunnel_dst": texts["tunnel_dst"],
        "tunnel_depth": _small((info >> R.INFO_DEPTH_SHIFT) & 0xFF, tunnelled),
        "interface": iface_text,
    }
    return pa.table(columns)


def name_columns(formatter, rows: np.ndarray, names) -> tuple[pa.Array, pa.Array]:
    """Each row's src and dst name lists (empty lists where an endpoint has none)."""
    k = len(rows)
    src_index = np.full(k, -1, np.int32)
    dst_index = np.full(k, -1, np.int32)
    blob: list[bytes] = []
    offsets = [0]
    if names is not None:
        formatter.name_lists(names, rows, src_index, dst_index, blob, offsets)
    # each distinct list once, and an empty one last; the rows take theirs by index (C++, not a Python loop)
    distinct = pa.array([orjson.loads(b) for b in blob] + [[]], pa.list_(pa.string()))
    empty = len(blob)
    return (distinct.take(pa.array(np.where(src_index >= 0, src_index, empty))),
            distinct.take(pa.array(np.where(dst_index >= 0, dst_index, empty))))
