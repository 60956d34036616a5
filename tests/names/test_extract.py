"""Name extractors: arbitrary bytes raise only DecodeError; hostile names are refused."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.errors import DecodeError
from devourer.names import extract


def _safe(fn, *args):
    try:
        fn(*args)
    except DecodeError:
        pass


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_dns_extractor_only_raises_decode_error(data):
    _safe(extract.dns_observations, data, "dns")
    _safe(extract.dns_observations, data, "mdns", "02:00:00:00:00:01")


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_nbns_dhcp_dhcpv6_tls_extractors_only_raise_decode_error(data):
    _safe(extract.nbns_observations, data, "10.0.0.1", "02:00:00:00:00:01")
    _safe(extract.dhcp_observations, data)
    _safe(extract.dhcp_observations, b"\x01\x01\x06\x00" + bytes(232) + b"\x63\x82\x53\x63" + data)
    _safe(extract.dhcpv6_observations, data, "02:00:00:00:00:01", "fe80::1")
    _safe(extract.tls_sni, data)
    _safe(extract.tls_sni, b"\x16\x03\x01\x00\x50\x01" + data)


@settings(max_examples=200)
@given(header=st.binary(min_size=12, max_size=12), tail=st.binary(max_size=200))
def test_dns_responses_with_random_bodies(header, tail):
    msg = bytes([header[0], header[1], 0x81, 0x80]) + header[4:] + tail
    _safe(extract.dns_observations, msg, "dns")


def _response(answers: bytes, qd=1, an=1, question=b"\x07example\x03com\x00\x00\x01\x00\x01") -> bytes:
    return struct.pack("!HHHHHH", 1, 0x8180, qd, an, 0, 0) + question + answers


def test_compression_loop_is_malformed():
    loop = b"\xc0\x1d" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)  # pointer to itself
    msg = _response(b"\xc0\x2f\x00" + loop)
    with pytest.raises(DecodeError):
        extract.dns_observations(struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0e\xc0\x0c\x00\x01\x00\x01")
    _safe(extract.dns_observations, msg)


def test_binary_and_overlong_names_are_refused():
    with pytest.raises(DecodeError):
        extract.clean_name(b"bad\x01name")
    with pytest.raises(DecodeError):
        extract.clean_name(b"\xff\xfe")
    with pytest.raises(DecodeError):
        extract.clean_name("a" * 254)
    many_labels = b"".join(b"\x01a" for _ in range(130)) + b"\x00"
    with pytest.raises(DecodeError):
        extract.read_name(many_labels, 0)
    assert extract.clean_name("Luca’s iMac") == "Luca’s iMac"


def test_cname_chain_names_the_address():
    q = b"\x03www\x07example\x03com\x00"
    answers = (b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 300, 6) + b"\x03cdn\xc0\x10"
               + b"\xc0\x2d" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 7]))
    msg = struct.pack("!HHHHHH", 1, 0x8180, 1, 2, 0, 0) + q + b"\x00\x01\x00\x01" + answers
    obs = extract.dns_observations(msg)
    (a,) = [o for o in obs if o.kind == "A"]
    assert (a.name, a.addr, a.ttl_s) == ("cdn.example.com", "192.0.2.7", 60)
    assert "www.example.com" in a.alias


def test_queries_teach_nothing():
    q = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"
    assert extract.dns_observations(q) == []
