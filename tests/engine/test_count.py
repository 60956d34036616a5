"""--count N (tcpdump's -c): a run reads the first N packets of its input and no more.

The reference for each case is a file that holds exactly those packets, cut from the capture by an
independent reader (the bytes of a classic pcap file's first N records; libpcap's packets for pcapng): the
records of `--count N` on the whole capture must be those of the cut file, whatever the reader, and the
summary must say N packets were read.
"""

import struct

import pcapy
import pytest

from tests.conftest import PCAPS, replay_to_stdout, run_devourer, summary_counts
from tests.pcapbuild import pcap_header, pcap_record

CLASSIC = "nfstream__iphone.pcap"
PCAPNG = "nfstream__alexa-app.pcapng"


def _first_packets_classic(path, n: int, out) -> None:
    """The file's header and its first n records, byte for byte."""
    data = path.read_bytes()
    end = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    for _ in range(n):
        pos += 16 + struct.unpack_from(f"{end}I", data, pos + 8)[0]
    out.write_bytes(data[:pos])


def _first_packets_libpcap(path, n: int, out, keep=lambda frame: True) -> int:
    """A classic pcap file of the packets libpcap reads from path, up to and including the n-th that ``keep``
    accepts; returns how many packets it holds."""
    handle = pcapy.open_offline(str(path))
    records, kept = [], 0
    while kept < n:
        header, frame = handle.next()
        if header is None:
            break
        sec, usec = header.getts()
        records.append(pcap_record(sec + usec / 1e6, frame, header.getlen()))
        kept += bool(keep(frame))
    out.write_bytes(pcap_header(handle.datalink()) + b"".join(records))
    return len(records)


def _records(*args, stdin=None):
    records, stderr = replay_to_stdout(*args, stdin=stdin)
    return sorted(map(str, records)), summary_counts(stderr)


@pytest.mark.parametrize("readers", [1, 2])
def test_count_reads_exactly_the_first_packets_of_a_classic_file(tmp_path, readers):
    cut = tmp_path / "first.pcap"
    _first_packets_classic(PCAPS / CLASSIC, 300, cut)
    expected, _ = _records("-r", cut)
    got, counts = _records("-r", PCAPS / CLASSIC, "--count", 300, "--readers", readers, "--chunk-size", 120)
    assert got == expected and counts["packets read"] == 300


def test_count_reads_exactly_the_first_packets_of_a_pcapng_file_and_of_a_pipe(tmp_path):
    cut = tmp_path / "first.pcap"
    _first_packets_libpcap(PCAPS / PCAPNG, 120, cut)
    expected, _ = _records("-r", cut)
    got, counts = _records("-r", PCAPS / PCAPNG, "--count", 120)
    assert got == expected and counts["packets read"] == 120
    piped, counts = _records("-r", "-", "--count", 120, stdin=(PCAPS / PCAPNG).read_bytes())
    assert piped == expected and counts["packets read"] == 120


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_with_a_filter_count_counts_the_packets_it_keeps(tmp_path, source):
    """As tcpdump -c: the n packets that pass the filter; those it rejected before the n-th are read and counted
    as filtered, none after it is read."""
    bpf = pcapy.compile(pcapy.DLT_EN10MB, 262144, "tcp", 1, 0)
    cut = tmp_path / "first-tcp.pcap"
    held = _first_packets_libpcap(PCAPS / CLASSIC, 250, cut, keep=lambda frame: bpf.filter(frame) != 0)
    expected, reference = _records("-r", cut, "--bpf", "tcp")
    if source == "file":
        got, counts = _records("-r", PCAPS / CLASSIC, "--count", 250, "--bpf", "tcp")
    else:
        got, counts = _records("-r", "-", "--count", 250, "--bpf", "tcp", stdin=(PCAPS / CLASSIC).read_bytes())
    assert got == expected
    assert counts["packets read"] == held == reference["packets read"]
    assert counts["packets read"] - counts["filtered"] == 250


def test_count_must_be_a_number_of_packets():
    proc = run_devourer("capture", "-r", PCAPS / CLASSIC, "--count", "-3")
    assert proc.returncode == 2 and "--count" in proc.stderr
