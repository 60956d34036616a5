"""Record format of DESIGN.md §4: fields, ids, times, and JSON-lines framing."""

import json
import uuid

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from devourer.flow import record as R
from devourer.outputs.format import RecordFormatter


def row(first_us=1_736_937_000_123_456, proto=6, sport=52431, dport=443, src_is_b=False):
    r = np.zeros(R.FLOW_WORDS, np.uint64)
    a = bytes([192, 168, 1, 10]) + bytes(12)
    b = bytes([93, 184, 216, 34]) + bytes(12)
    r[0:2] = np.frombuffer(a, "<u8")
    r[2:4] = np.frombuffer(b, "<u8")
    r[R.F_KEY] = R.key_word(sport, dport, 0, proto, False)
    r[R.F_FIRST] = first_us
    r[R.F_LAST] = first_us + 72_531_865
    r[R.F_A_BYTES], r[R.F_A_PKTS], r[R.F_B_BYTES], r[R.F_B_PKTS] = 12340, 42, 98210, 65
    r[R.F_MAC_A] = (1 << 63) | 0xAABBCCDDEEF0
    r[R.F_STATE] = R.ST_ESTABLISHED | (R.ST_SRC_IS_B if src_is_b else 0)
    r[R.F_END] = R.END_IDLE
    return r


def test_record_matches_design_example():
    (rec,) = [json.loads(x) for x in RecordFormatter("s1").lines(np.array([row()])).splitlines()]
    assert rec["protocol"] == "tcp"
    assert rec["src"] == {"addr": "192.168.1.10", "port": 52431, "hw_addr": "aa:bb:cc:dd:ee:f0", "names": []}
    assert rec["dst"] == {"addr": "93.184.216.34", "port": 443, "hw_addr": None, "names": []}
    assert rec["first_seen_at"] == "2025-01-15T10:30:00.123456Z"
    assert rec["last_seen_at"] == "2025-01-15T10:31:12.655321Z"
    assert rec["src_stat"] == {"bytes": 12340, "packets": 42}
    assert rec["dst_stat"] == {"bytes": 98210, "packets": 65}
    assert (rec["status"], rec["end_reason"]) == ("established", "idle")
    assert uuid.UUID(rec["id"]).version == 8


def test_src_is_the_first_sender_even_when_it_is_b():
    (rec,) = [json.loads(x) for x in RecordFormatter("s1").lines(np.array([row(src_is_b=True)])).splitlines()]
    assert rec["src"]["addr"] == "93.184.216.34" and rec["src_stat"]["packets"] == 65


def test_ids_are_stable_and_depend_on_sensor_key_and_start():
    f = RecordFormatter("s1")
    ids = lambda fmt, r: json.loads(fmt.lines(np.array([r])))["id"]  # noqa: E731
    assert ids(f, row()) == ids(RecordFormatter("s1"), row())
    assert ids(f, row()) != ids(RecordFormatter("s2"), row())
    assert ids(f, row()) != ids(f, row(first_us=1_736_937_000_123_457))
    assert ids(f, row()) != ids(f, row(dport=444))


@given(sensor=st.text(max_size=40))
def test_any_sensor_string_keeps_one_record_per_line(sensor):
    rows = np.array([row(first_us=1_736_937_000_000_000 + i) for i in range(5)])
    lines = RecordFormatter(sensor).lines(rows).splitlines()
    assert len(lines) == 5
    assert all(json.loads(x)["sensor"] == sensor for x in lines)
