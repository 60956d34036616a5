"""`devourer names -r`: a header line, DHCP's bind rows (MAC, then address), and --json with the packet's time
in the flow records' form, checked against tshark's packet times."""

import datetime
import json
import subprocess

from tests.conftest import DEVOURER, PCAPS, REPO

DHCP = PCAPS / "zeek__dhcp.pcap"


def test_rows_have_a_header_and_binds_name_the_mac():
    out = subprocess.run([*DEVOURER, "names", "-r", str(DHCP)], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout.splitlines()
    assert out[0] == "#source\tkind\tname\tvalue"
    assert "dhcp\tbind\t90:b1:1c:99:49:29\t128.2.6.189" in out[1:]


def test_json_times_are_the_packets_times_as_flows_write_them():
    out = subprocess.run([*DEVOURER, "names", "-r", str(DHCP), "--json"], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout.splitlines()
    times = {json.loads(x)["time"] for x in out}
    epochs = subprocess.run(["tshark", "-r", str(DHCP), "-T", "fields", "-e", "frame.time_epoch"],
                            capture_output=True, text=True, check=True).stdout.split()
    packet_times = {(datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=round(float(e) * 1e6)))
                    .strftime("%Y-%m-%dT%H:%M:%S.%fZ") for e in epochs}
    assert times and times <= packet_times
