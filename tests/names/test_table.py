"""The name map: lifetimes, bounds, and MAC names reaching only bound addresses."""

from devourer.names.extract import Observation
from devourer.names.table import NameTable

S = 1_000_000


def test_a_name_holds_for_its_ttl():
    t = NameTable()
    t.observe(100 * S, Observation("dns", "A", "example.com", "192.0.2.1", None, 300, ("www.example.com",)))
    assert t.names_for("192.0.2.1", 150 * S, 160 * S) == ["www.example.com", "example.com"]
    assert t.names_for("192.0.2.1", 50 * S, 99 * S) == []  # flow over before the answer
    assert t.names_for("192.0.2.1", 401 * S, 500 * S) == []  # flow began after the TTL ran out
    assert t.names_for("192.0.2.1", 390 * S, 500 * S) == ["www.example.com", "example.com"]


def test_mac_names_reach_only_addresses_bound_to_the_mac():
    t = NameTable()
    router, laptop = "02:00:00:00:00:01", "02:00:00:00:00:02"
    t.observe(0, Observation("dhcp", "hostname", "router", None, router, 3600))
    t.observe(0, Observation("dhcp", "hostname", "laptop", None, laptop, 3600))
    t.observe(0, Observation("dhcp", "bind", "", "192.168.1.1", router, 3600))
    t.observe(0, Observation("dhcp", "bind", "", "192.168.1.20", laptop, 3600))
    assert t.names_for("192.168.1.1", S, 2 * S) == ["router"]
    assert t.names_for("192.168.1.20", S, 2 * S) == ["laptop"]
    assert t.names_for("93.184.216.34", S, 2 * S) == []


def test_the_map_is_bounded_least_recent_out():
    t = NameTable(max_entries=100)
    for i in range(1000):
        t.observe(i, Observation("dns", "A", f"h{i}.example", f"10.0.{i // 256}.{i % 256}", None, 60))
    assert len(t.by_addr) == 100 and t.evicted == 900
    assert t.names_for("10.0.3.231", 0, 2000) == ["h999.example"]
    assert t.names_for("10.0.0.0", 0, 2000) == []


def test_names_per_address_are_bounded_the_longest_expired_out_and_counted():
    from devourer.names.table import MAX_NAMES_PER_KEY

    t = NameTable()
    n = MAX_NAMES_PER_KEY + 10
    for i in range(n):
        t.observe(i * S, Observation("dns", "A", f"n{i}.example", "192.0.2.7", None, 3600, ()))
        if i == MAX_NAMES_PER_KEY - 1:  # seen again while the address is full: it now holds the longest
            t.observe(i * S, Observation("dns", "A", "n0.example", "192.0.2.7", None, 7200, ()))
    names = t.names_for("192.0.2.7", n * S, n * S)
    assert names == ["n0.example", *(f"n{i}.example" for i in range(11, n))]
    assert t.capped == 10


def test_names_of_an_endpoint_are_cut_to_the_bound_when_address_and_mac_names_add_up():
    from devourer.names.table import MAX_NAMES_PER_KEY

    t = NameTable()
    mac = "02:00:00:00:00:09"
    t.observe(0, Observation("dhcp", "bind", "", "192.168.1.9", mac, 3600))
    for i in range(MAX_NAMES_PER_KEY):
        t.observe(0, Observation("dns", "A", f"a{i}.example", "192.168.1.9", None, 3600, ()))
        t.observe(0, Observation("mdns", "hostname", f"m{i}.local", None, mac, 3600))
    names = t.names_for("192.168.1.9", S, S)
    assert len(names) == MAX_NAMES_PER_KEY and t.capped == MAX_NAMES_PER_KEY
