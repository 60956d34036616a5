"""Strings from the wire (names) and from the user (sensor id) can never break the JSON-lines framing: quotes,
backslashes and non-ASCII are escaped or kept as valid UTF-8; control characters and Unicode line separators
are refused at the resolver (counted as malformed), so no record carries them."""

import json
import struct

from tests.conftest import run_devourer
from tests.pcapbuild import ethernet, ipv4, pcap_header, pcap_record, udp

T0 = 1_700_000_000.0


def dns_answer(labels: list[bytes], address: bytes) -> bytes:
    name = b"".join(bytes([len(p)]) + p for p in labels) + b"\0"
    return (struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0) + name + struct.pack("!HH", 1, 1)
            + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 3600, 4) + address)


def test_hostile_names_and_sensor_keep_every_line_valid_json(tmp_path):
    hostile = {
        b"10.7.0.1": [b'we"ird\\na{me}', "gr\u00fc\u00dfe".encode(), b"example"],  # kept, escaped
        b"10.7.0.2": [b"line\nbreak", b"example"],  # a newline: refused
        b"10.7.0.3": ["sep\u2028arator".encode(), b"example"],  # U+2028: refused
        b"10.7.0.4": [b"\xff\xfe", b"example"],  # not UTF-8: refused
    }
    packets = []
    for i, (addr, labels) in enumerate(hostile.items()):
        raw = bytes(int(x) for x in addr.split(b"."))
        packets.append(pcap_record(T0 + i, ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4(
            "10.7.255.53", "10.7.255.1", 17, udp(53, 40000, dns_answer(labels, raw))))))
        packets.append(pcap_record(T0 + 10 + i, ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4(
            "10.7.255.1", addr.decode(), 6, b"\0" * 20))))
    path = tmp_path / "names.pcap"
    path.write_bytes(pcap_header() + b"".join(packets))
    sensor = 'edge "1"\\\n\u2028'
    proc = run_devourer("capture", "-r", path, "--sensor-id", sensor)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[-1] == "" and all(line.startswith("{") and line.endswith("}") for line in lines[:-1])
    records = [json.loads(line) for line in lines[:-1]]
    assert {r["sensor"] for r in records} == {sensor}
    names = {r["dst"]["addr"]: r["dst"]["names"] for r in records if r["protocol"] == "tcp"}
    assert names == {"10.7.0.1": ['we"ird\\na{me}.gr\u00fc\u00dfe.example'], "10.7.0.2": [], "10.7.0.3": [],
                     "10.7.0.4": []}
    assert "3 malformed, 0 dropped" in proc.stderr.split("names:")[1]
