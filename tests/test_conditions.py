"""The condition language of ``devourer query -c`` (``query.conditions``): round trip, precedence and errors
(hypothesis), and its SQL against a plain-Python filter written here, on a real flow store read by DuckDB."""

import ipaddress
import re

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.query.conditions import And, Comparison, ConditionError, Not, Or, parse, register, to_sql
from tests.conftest import PCAPS, capture_records, run_devourer

_comparisons = st.one_of(
    st.builds(Comparison, st.sampled_from(["dport", "sport"]), st.sampled_from(["=", "!=", "<", ">", "<=", ">="]),
              st.integers(0, 65535)),
    st.builds(Comparison, st.just("proto"), st.sampled_from(["=", "!="]), st.sampled_from([1, 6, 17, 58, 47])),
    st.builds(Comparison, st.sampled_from(["sip", "dip", "host"]), st.sampled_from(["=", "!="]),
              st.ip_addresses().map(str)),
    st.builds(Comparison, st.sampled_from(["net", "snet", "dnet"]), st.sampled_from(["=", "!="]),
              st.ip_addresses(v=4).map(lambda a: str(ipaddress.ip_network(f"{a}/16", strict=False)))),
    st.builds(Comparison, st.sampled_from(["sensor", "iface", "status", "name", "dst_names"]), st.just("="),
              st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12)),
    st.builds(Comparison, st.sampled_from(["name", "src_names", "tunnel"]), st.just("~"),
              st.sampled_from([r"example\.com$", "^www", "a|b", r"it's"])),
)
_trees = st.recursive(_comparisons, lambda inner: st.one_of(
    st.builds(Not, inner),
    st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
    st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs)))), max_leaves=8)


def _flat(tree):
    """And inside And (Or inside Or) is one And: what the text cannot tell apart."""
    if isinstance(tree, (And, Or)):
        out = []
        for o in map(_flat, tree.operands):
            out.extend(o.operands if type(o) is type(tree) else [o])
        return type(tree)(tuple(out))
    if isinstance(tree, Not):
        return Not(_flat(tree.operand))
    return tree


@settings(max_examples=300, deadline=None)
@given(_trees)
def test_a_condition_reads_back_as_the_tree_it_was_written_from(tree):
    assert parse(str(tree)) == _flat(tree)


def test_not_binds_tighter_than_and_and_and_tighter_than_or():
    a, b, c = (Comparison("dport", "=", n) for n in (1, 2, 3))
    assert parse("dport = 1 | dport = 2 & ! dport = 3") == Or((a, And((b, Not(c)))))
    assert parse("(dport = 1 or dport = 2) and not dport = 3") == And((Or((a, b)), Not(c)))
    assert parse("not (dport = 1 and dport = 2)") == Not(And((a, b)))


def test_goquery_words_and_symbols_mean_the_same():
    assert parse("dport eq 443 and sip neq 10.0.0.1 or proto = TCP") == \
        parse("dport = 443 & sip != 10.0.0.1 | proto = 6")
    assert parse("port ge 1024 and dport le 2048") == parse("dport >= 1024 & dport <= 2048")


@pytest.mark.parametrize("text, at, says", [
    ("", 0, "empty"), ("dport =", 7, "ends too early"), ("dport = x", 8, "needs a number"),
    ("bogus = 1", 0, "unknown attribute"), ("(dport = 1", 10, "expected ')'"), ("dport = 1 )", 10, "unexpected"),
    ("sip = 10.0.0.300", 6, "IP address"), ("net = 10.0.0.0/33", 6, "network"), ("dport ~ 80", 8, "text"),
    ("name ~ '('", 7, "regular expression"), ("sip < 10.0.0.1", 6, "= or !="), ("sensor = 'x", 9, "quote"),
    ("dport 443", 6, "operator"), ("proto = 256", 8, "number"), ("dport = 1 and", 13, "ends too early"),
])
def test_a_bad_condition_says_what_and_where(text, at, says):
    with pytest.raises(ConditionError) as e:
        parse(text)
    assert says in str(e.value) and e.value.at == at, (str(e.value), e.value.at)
    assert "\n" not in e.value.pointed(text)


def test_nesting_is_bounded():
    with pytest.raises(ConditionError, match="nested deeper"):
        parse("(" * 100 + "dport = 1" + ")" * 100)
    with pytest.raises(ConditionError, match="longer than"):
        parse("dport = 1 or " * 1000 + "dport = 1")


# ---- the SQL, on a real store, against a plain filter of the same flows' records
def _in(net: str, addr: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network(net)


PLAIN = {
    "dport = 53": lambda r: r["dst"]["port"] == 53,
    "dport >= 1024 and proto = udp": lambda r: r["dst"]["port"] >= 1024 and r["protocol"] == "udp",
    "sport < 1024 or not proto = tcp": lambda r: r["src"]["port"] < 1024 or r["protocol"] != "tcp",
    "proto > 6": lambda r: ({"tcp": 6, "udp": 17, "icmp4": 1, "icmp6": 58}.get(r["protocol"])
                            or int(r["protocol"])) > 6,
    "net = 192.168.0.0/16": lambda r: _in("192.168.0.0/16", r["src"]["addr"]) or _in("192.168.0.0/16",
                                                                                     r["dst"]["addr"]),
    "dnet != 10.0.0.0/8 and snet = 10.0.0.0/8": lambda r: (not _in("10.0.0.0/8", r["dst"]["addr"])
                                                           and _in("10.0.0.0/8", r["src"]["addr"])),
    r"name ~ '\.radb\.net$' or src_names = MacBook-Air": lambda r: (
        any(re.search(r"\.radb\.net$", n) for n in r["src"]["names"] + r["dst"]["names"])
        or "MacBook-Air" in r["src"]["names"]),
    "dst_names != ''": lambda r: any(n != "" for n in r["dst"]["names"]),
    "status = established and end_reason = shutdown": lambda r: (r["status"] == "established"
                                                                 and r["end_reason"] == "shutdown"),
    "vlan = 0": lambda r: r["vlan"] is None,
}


@pytest.fixture(scope="module")
def store_and_records(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conditions")
    records = []
    for capture in ("goprobe__default.pcap", "dpkt__nb6-http.pcap", "nfstream__1kxun.pcap"):
        got, proc = capture_records(PCAPS / capture, "--sensor-id", "s1", tmp_path=tmp)
        assert proc.returncode == 0, proc.stderr
        records += got
        proc = run_devourer("capture", "-r", PCAPS / capture, "--sensor-id", "s1", "-o", "parquet", "--store",
                            tmp / "store")
        assert proc.returncode == 0, proc.stderr
    return tmp / "store", records


@pytest.mark.parametrize("condition", sorted(PLAIN))
def test_the_sql_of_a_condition_selects_what_a_plain_filter_selects(condition, store_and_records):
    store, records = store_and_records
    where, params = to_sql(parse(condition))
    con = duckdb.connect()
    register(con)
    got = sorted(row[0] for row in con.execute(
        f"SELECT id FROM read_parquet('{store}/**/*.parquet', hive_partitioning = true) WHERE {where}",
        params).fetchall())
    expected = sorted(r["id"] for r in records if PLAIN[condition](r))
    assert got == expected
    assert 0 < len(expected) < len(records) or condition in ("dst_names != ''",)


def test_a_flow_is_found_by_its_community_id(store_and_records):
    """A Zeek or Suricata record's community_id finds the flow (quoted: the id holds ':', '+', '/', '=')."""
    store, records = store_and_records
    wanted = records[len(records) // 2]["community_id"]
    where, params = to_sql(parse(f"community_id = '{wanted}'"))
    got = sorted(row[0] for row in duckdb.connect().execute(
        f"SELECT id FROM read_parquet('{store}/**/*.parquet', hive_partitioning = true) WHERE {where}",
        params).fetchall())
    assert got == sorted(r["id"] for r in records if r["community_id"] == wanted) and got


def _sources_selected(condition: str, addresses: list[str]) -> set[str]:
    """The addresses, as src_addr, that the condition's DuckDB SQL keeps."""
    where, params = to_sql(parse(condition))
    con = duckdb.connect()
    register(con)
    return {a for (a,) in con.execute(f"SELECT src_addr FROM (SELECT unnest(?) AS src_addr) WHERE {where}",
                                      [addresses, *params]).fetchall()}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=20), st.ip_addresses(v=4), st.integers(0, 32),
       st.sampled_from(["=", "!="]))
def test_an_ipv4_net_in_sql_is_the_net_of_ipaddress(addresses, base, prefix, operator):
    network = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    addresses += [str(network.network_address), str(network.broadcast_address), "2001:db8::1", "::ffff:10.0.0.1"]
    got = _sources_selected(f"snet {operator} {network}", addresses)
    inside = {a for a in addresses if ipaddress.ip_address(a).version == 4 and ipaddress.ip_address(a) in network}
    assert got == (inside if operator == "=" else set(addresses) - inside)


_V6_TEXT = st.one_of(st.ip_addresses(v=6), st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),
                     st.integers(0, 0xFFFF).map(lambda x: ipaddress.IPv6Address(x << 112)),
                     st.integers(0, 0xFFFF).map(lambda x: ipaddress.IPv6Address(x))).map(str)


@settings(max_examples=300, deadline=None)
@given(st.lists(_V6_TEXT, min_size=1, max_size=20), st.ip_addresses(v=6), st.integers(0, 128),
       st.sampled_from(["=", "!="]))
def test_an_ipv6_net_in_sql_is_the_net_of_ipaddress(addresses, base, prefix, operator):
    """The text forms devourer writes (RFC 5952: '::' anywhere, dotted IPv4-mapped tails) against ipaddress,
    for every prefix 0-128; IPv4 text is in no IPv6 network."""
    network = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    addresses += [str(network.network_address), str(network.broadcast_address), "10.0.0.1", "::", "::1"]
    got = _sources_selected(f"snet {operator} {network}", addresses)
    inside = {a for a in addresses if ipaddress.ip_address(a).version == 6 and ipaddress.ip_address(a) in network}
    assert got == (inside if operator == "=" else set(addresses) - inside)
