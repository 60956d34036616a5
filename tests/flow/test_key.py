"""The flow key has one home (flow.key): the hash capture writes, the table recomputes and the name map's
fingerprint are all the same functions, for any key."""

import ipaddress

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from devourer import counters as CN
from devourer.flow import key as K
from devourer.flow import record as R
from devourer.flow.table import FlowTable
from devourer.names.table import addr_key
from devourer.packet import layout as L
from devourer.packet.decode import DLT_EN10MB, BatchDecoder
from devourer.packet.tunnels import T_VXLAN
from tests.pcapbuild import ethernet, ipv4, ipv6, tcp, udp, vxlan

v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(0, 65535)


def _decode(frame: bytes, iface: int = 0) -> np.ndarray:
    dec = BatchDecoder(1, 3, np.zeros(CN.N_CAPTURE_COUNTERS, np.int64))
    n = dec.decode(frame, np.array([[1_700_000_000, 0, 0, len(frame)]], np.uint32).tobytes(), None, DLT_EN10MB,
                   262144, iface)
    assert n == 1
    return dec.records[:1].copy()


@given(family=st.sampled_from([4, 6]), data=st.data(), pa=ports, pb=ports, proto=st.sampled_from([6, 17]),
       vlan=st.none() | st.integers(1, 4094), vni=st.none() | st.integers(0, 2**24 - 1),
       iface=st.just(0) | st.integers(0, K.MAX_INTERFACES - 1))
def test_capture_table_and_key_agree_on_the_hash_of_any_key(family, data, pa, pb, proto, vlan, vni, iface):
    addresses = v4 if family == 4 else v6
    a, b = data.draw(addresses), data.draw(addresses)
    l4 = (tcp if proto == 6 else udp)(pa, pb)
    ip = ipv4(a, b, proto, l4) if family == 4 else ipv6(a, b, proto, l4)
    frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800 if family == 4 else 0x86DD, ip, vlan=vlan)
    if vni is not None:  # the same flow inside a VXLAN: its VNI is part of the key
        frame = ethernet("02:00:00:00:01:01", "02:00:00:00:01:02", 0x0800,
                         ipv4("192.0.2.1", "192.0.2.2", 17, udp(40000, 4789, vxlan(vni, frame))))
    record = _decode(frame, iface)
    r64, r16, r8 = record.view(np.uint64)[0], record.view(np.uint16)[0], record[0]
    assert r16[L.H_IFACE] == iface
    word = np.uint64(K.key_word(r16[L.H_PORT_A], r16[L.H_PORT_B], r16[L.H_VLAN], r8[L.B_PROTO], family == 6))
    word |= np.uint64(K.iface_bits(iface))
    vnet = np.uint64(0)
    if vni is not None:
        word |= K.KEY_VNET
        vnet = np.uint64(K.vnet_word(T_VXLAN, vni))
    assert int(word) | 1 << 63 == K.key_word_of(int(r16[L.H_PORT_A]), int(r16[L.H_PORT_B]), vlan or 0, proto,
                                                family == 6, vni is not None, iface)
    assert K.iface_of(word) == iface and (iface != 0 or word == K.key_word(r16[L.H_PORT_A], r16[L.H_PORT_B],
                                                                          r16[L.H_VLAN], r8[L.B_PROTO], family == 6)
                                          | (K.KEY_VNET if vni is not None else 0))
    expected = K.key_hash(r64[L.W_ADDR_A], r64[L.W_ADDR_A + 1], r64[L.W_ADDR_B], r64[L.W_ADDR_B + 1], word, vnet)
    assert r64[L.W_HASH] == expected
    rows = []
    table = FlowTable(10**9, 0, 10, rows.append)
    table.ingest(record)
    table.flush()
    assert rows[0][0, R.F_HASH] == expected  # the table's own recomputation, from the row it kept


@given(address=v4 | v6)
def test_the_fingerprint_of_an_address_is_the_one_computed_per_column_from_row_words(address):
    raw = ipaddress.ip_address(address).packed.ljust(16, b"\0")
    words = np.frombuffer(raw, "<u8").reshape(1, 2)
    is_v6 = np.array([":" in address])
    assert int(K.fingerprints(words, is_v6)[0]) == K.fingerprint(addr_key(address))
