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
