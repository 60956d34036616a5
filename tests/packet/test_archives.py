"""Archives (issue 15): compressed captures, directories of rotated captures, and pipes, read as streams by
``packet.streams`` with the direct readers. Each is checked against the same capture read as a plain file
(classic pcap through devourer's own reader, pcapng through libpcap): the same records, line for line."""

import bz2
import gzip
import lzma
import re
import subprocess

import pytest
import zstandard

from tests.conftest import DEVOURER, PCAPS, REPO, capture_records, parse_records, summary_counts
from tests.pcapbuild import read_pcap_records

COMPRESS = {
    "gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress,
    "zstd": lambda data: zstandard.ZstdCompressor(level=3).compress(data),
}
CAPTURES = ["goprobe__default.pcap", "ndpi__sites.pcapng", "zeek__pcapng-multi-interface.pcapng",
            "nfstream__1kxun.pcap"]  # the last is pcapng under a .pcap name


def _same(records):
    return sorted((r["id"], r["src_stat"]["packets"], r["dst_stat"]["packets"], r["src_stat"]["bytes"],
                   r["dst_stat"]["bytes"], tuple(r["src"]["names"]), tuple(r["dst"]["names"])) for r in records)


def _plain(capture, tmp_path):
    records, proc = capture_records(PCAPS / capture, "--sensor-id", "t", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return records


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("compression", list(COMPRESS))
def test_a_compressed_capture_gives_the_records_of_the_plain_one(capture, compression, tmp_path):
    packed = tmp_path / "capture.bin"  # recognized by its bytes, not its name
    packed.write_bytes(COMPRESS[compression]((PCAPS / capture).read_bytes()))
    records, proc = capture_records(packed, "--sensor-id", "t", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _same(records) == _same(_plain(capture, tmp_path))


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_pipe_gives_the_records_of_the_file(capture, tmp_path):
    with open(PCAPS / capture, "rb") as f:
        proc = subprocess.run([*DEVOURER, "capture", "-r", "-", "--sensor-id", "t"], stdin=f, capture_output=True,
                              text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _same(parse_records(proc.stdout)) == _same(_plain(capture, tmp_path))


@pytest.mark.parametrize("compression", ["gzip", "zstd", "xz", "bzip2"])
def test_a_truncated_compressed_capture_gives_the_flows_before_the_break_and_exit_4(compression, tmp_path):
    data = (PCAPS / "goprobe__default.pcap").read_bytes()
    packed = COMPRESS[compression](data)
    cut = tmp_path / "cut.pcap.z"
    cut.write_bytes(packed[:len(packed) // 2])
    records, proc = capture_records(cut, tmp_path=tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert "is damaged" in proc.stderr and str(cut) in proc.stderr
    counts = summary_counts(proc.stderr)
    total = len(list(read_pcap_records(PCAPS / "goprobe__default.pcap")))
    assert 0 < counts["packets read"] < total
    assert records and sum(r["src_stat"]["packets"] + r["dst_stat"]["packets"] for r in records) == counts["in flows"]


def test_a_directory_is_read_in_the_order_of_first_packets(tmp_path):
    """A rotation split in three, named so that text order is wrong, one part compressed, and a file that is
    not a capture: the records of the whole capture."""
    recs = list(read_pcap_records(PCAPS / "goprobe__default.pcap"))
    raw = (PCAPS / "goprobe__default.pcap").read_bytes()
    header = raw[:24]
    bodies, at = [], 24
    for _, caplen, _, _ in recs:
        bodies.append(raw[at:at + 16 + caplen])
        at += 16 + caplen
    third = len(bodies) // 3
    parts = [bodies[:third], bodies[third:2 * third], bodies[2 * third:]]
    rotation = tmp_path / "rotation"
    rotation.mkdir()
    (rotation / "dump.pcap10").write_bytes(header + b"".join(parts[0]))
    (rotation / "dump.pcap2").write_bytes(gzip.compress(header + b"".join(parts[1])))
    (rotation / "dump.pcap1").write_bytes(header + b"".join(parts[2]))
    (rotation / "README.txt").write_text("not a capture\n")
    records, proc = capture_records(rotation, "--sensor-id", "t", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _same(records) == _same(_plain("goprobe__default.pcap", tmp_path))


@pytest.mark.parametrize("capture", CAPTURES + ["tcpreplay__test.pcap", "nfstream__alexa-app.pcapng"])
def test_the_first_packet_time_of_a_capture_is_tsharks(capture, tmp_path):
    """The time a directory is ordered by: the first packet's, as tshark reads it (microseconds), for the plain
    and the compressed file alike."""
    from devourer.packet.archives import first_packet_time

    out = subprocess.run(["tshark", "-r", str(PCAPS / capture), "-c", "1", "-T", "fields", "-e",
                          "frame.time_epoch"], capture_output=True, text=True, check=True).stdout.strip()
    sec, _, frac = out.partition(".")
    expected = int(sec) * 1_000_000 + int((frac + "000000")[:6])
    packed = tmp_path / "capture.gz"
    packed.write_bytes(gzip.compress((PCAPS / capture).read_bytes()))
    assert first_packet_time(str(PCAPS / capture)) == expected
    assert first_packet_time(str(packed)) == expected


def test_an_empty_directory_is_refused(tmp_path):
    from tests.conftest import run_devourer

    (tmp_path / "empty").mkdir()
    proc = run_devourer("capture", "-r", tmp_path / "empty")
    assert proc.returncode in (2, 3) and "no capture" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_the_progress_of_a_compressed_file_is_its_own_size(tmp_path):
    from devourer.packet.streams import Stream, StreamReader

    packed = tmp_path / "c.pcap.zst"
    packed.write_bytes(COMPRESS["zstd"]((PCAPS / "goprobe__default.pcap").read_bytes()))
    reader = StreamReader(Stream(str(packed)), 4096)
    packets = 0
    try:
        while (batch := reader.next()) is not None:
            packets += len(batch[1])
        assert reader.damage() is None
        assert reader.position == packed.stat().st_size
    finally:
        reader.close()
    assert packets == len(list(read_pcap_records(PCAPS / "goprobe__default.pcap")))


def test_a_pipe_is_read_as_it_comes(tmp_path):
    """A writer that stops half way (tcpdump -U on a quiet link): what it wrote is counted before it ends."""
    raw = (PCAPS / "goprobe__default.pcap").read_bytes()
    half = len(raw) // 2
    out = tmp_path / "f.jsonl"
    proc = subprocess.Popen([*DEVOURER, "capture", "-r", "-", "-o", "file", "-w", out, "-s", "0.2"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        proc.stdin.write(raw[:half])
        proc.stdin.flush()
        while True:  # stats lines until one counts the packets of the first half (the writer waits meanwhile)
            line = proc.stderr.readline().decode()
            assert line, "devourer ended before the pipe did"
            read = re.search(r"stats: ([\d,]+) packets read", line)
            if read and int(read.group(1).replace(",", "")) > 0:
                break
        proc.stdin.write(raw[half:])
        proc.stdin.close()
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(parse_records(out.read_text())) == len(_plain("goprobe__default.pcap", tmp_path))
