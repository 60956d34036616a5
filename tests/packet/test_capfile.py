"""Reading capture files beside libpcap or instead of it: the same packets as libpcap, and a clean stop at damage.

Classic pcap is read without libpcap (``chunks.ChunkReader`` over the whole file): every packet's time, captured
bytes and wire length must be libpcap's. pcapng goes through libpcap, with ``RecordWalker`` walking its blocks
ahead: the walk must agree with what libpcap then returns."""

import struct
import subprocess

import numpy as np
import pcapy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.packet.capfile import PCAPNG_SHB, RecordWalker, describe_pcapng_file
from devourer.packet.chunks import ChunkReader
from devourer.packet.streams import Stream, StreamReader
from tests.conftest import PCAPS, corpus_files
from tests.pcapbuild import pcap_header, pcap_record

PCAPNG = [f for f in corpus_files() if (PCAPS / f).read_bytes()[:4] == PCAPNG_SHB]  # not by name: the corpus
CLASSIC = [f for f in corpus_files() if f not in PCAPNG]  # has a classic file named .pcapng and the reverse


def _libpcap_packets(path: str):
    """[(sec, usec, wire length, bytes)] as libpcap reads them, up to its first error."""
    handle, out = pcapy.open_offline(path), []
    while True:
        try:
            header, data = handle.next()
        except pcapy.PcapError:
            return out
        if header is None:
            return out
        sec, usec = header.getts()  # libpcap reads the seconds as signed; next_batch hands them on as uint32
        out.append((sec % 2**32, usec, header.getlen(), bytes(data)))


def _direct_packets(path: str, batch: int = 64):
    reader, out = ChunkReader(path, None, batch), []
    while (got := reader.next()) is not None:
        window, meta, wire = got
        for (sec, usec, offset, caplen), length in zip(meta.tolist(), wire.tolist()):
            out.append((sec, usec, length, window[offset:offset + caplen].tobytes()))
    damage = reader.damage()
    reader.close()
    return out, damage


@pytest.mark.parametrize("capture", CLASSIC)
def test_classic_pcap_read_directly_is_what_libpcap_reads(capture):
    path = str(PCAPS / capture)
    direct, damage = _direct_packets(path)
    assert direct == _libpcap_packets(path)
    assert (damage is not None) == (capture == "dpkt__truncated_dns_2.pcap")


@settings(max_examples=40, deadline=None)
@given(magic=st.sampled_from([(0xA1B2C3D4, "<"), (0xA1B2C3D4, ">"), (0xA1B23C4D, "<"), (0xA1B23C4D, ">")]),
       snaplen=st.sampled_from([64, 200, 65535]),
       packets=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 999_999_999), st.integers(0, 300),
                                  st.integers(0, 2000)), min_size=1, max_size=10))
def test_byte_orders_nanoseconds_and_long_records_as_libpcap(tmp_path_factory, magic, snaplen, packets):
    """Big- and little-endian files, nanosecond files (libpcap truncates to microseconds), records longer than the
    file's snaplen (libpcap hands on the first snaplen bytes) and wire lengths below the captured one."""
    number, order = magic
    blob = struct.pack(order + "IHHiIII", number, 2, 4, 0, 0, snaplen, 1)
    for sec, frac, caplen, wire in packets:
        frac = frac if number == 0xA1B23C4D else frac // 1000
        blob += struct.pack(order + "IIII", sec, frac, caplen, wire) + bytes(range(256)) * (caplen // 256) + \
            bytes(range(caplen % 256))
    path = tmp_path_factory.mktemp("magic") / "x.pcap"
    path.write_bytes(blob)
    direct, damage = _direct_packets(str(path), batch=3)
    libpcap = _libpcap_packets(str(path))
    assert [(s, u, d) for s, u, _, d in direct] == [(s, u, d) for s, u, _, d in libpcap]
    assert [w for _, _, w, _ in libpcap] == [wire for *_, wire in packets]  # the length as written, as libpcap
    assert [w for _, _, w, _ in direct] == [wire for *_, wire in packets]  # (and tshark) give it, also below caplen
    assert damage is None


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=12), data=st.data())
def test_cut_classic_file_yields_exactly_its_complete_records(tmp_path_factory, sizes, data):
    blob = pcap_header() + b"".join(pcap_record(1.0 + i, bytes([i % 256]) * n) for i, n in enumerate(sizes))
    cut = data.draw(st.integers(24, len(blob)))
    path = tmp_path_factory.mktemp("cut") / "cut.pcap"
    path.write_bytes(blob[:cut])
    ends, pos = [], 24
    for n in sizes:
        pos += 16 + n
        ends.append(pos)
    direct, damage = _direct_packets(str(path), batch=4)
    assert len(direct) == sum(1 for e in ends if e <= cut)
    assert (damage is not None) == (cut not in [24] + ends)


@pytest.mark.parametrize("capture", PCAPNG)
def test_pcapng_walk_agrees_with_libpcap(capture):
    path = str(PCAPS / capture)
    walker = RecordWalker(path, 512)
    handle = pcapy.open_offline(path)
    total = 0
    while True:
        wire, caps, _ = walker.peek(512)
        if len(wire) == 0:
            break
        caps = caps.copy()
        _, meta = handle.next_batch(len(wire))
        m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
        assert m.shape[0] == len(wire)
        known = caps != 0  # simple packet blocks carry no caplen
        assert np.array_equal(m[known, 3], caps[known])
        assert (wire >= m[:, 3]).all()  # no corpus pcapng record is shorter on the wire than captured
        walker.commit(len(wire))
        total += len(wire)
    assert not walker.damaged
    assert handle.next_batch(1)[1] == b""
    walker.close()
    assert total > 0


def _tshark_interfaces(path: str) -> tuple[list[int], dict[int, str]]:
    """tshark's frame.interface_id of every packet, and the interface names it reads ("unknown" where the
    description has none)."""
    out = subprocess.run(["tshark", "-r", path, "-T", "fields", "-e", "frame.interface_id",
                          "-e", "frame.interface_name"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return [int(r[0]) for r in rows], {int(r[0]): r[1] for r in rows}


@pytest.mark.parametrize("capture", PCAPNG)
def test_every_packets_interface_and_its_name_are_tsharks(capture):
    """The walk (files) and the stream index (pipes, compressed files) give each packet's interface as tshark's
    frame.interface_id, and the descriptions name them as tshark does."""
    path = str(PCAPS / capture)
    ids, names = _tshark_interfaces(path)
    walker, walked = RecordWalker(path, 512), []
    while len(got := walker.peek(512)[2]):
        walked.extend(got.tolist())
        walker.commit(len(got))
    walker.close()
    reader, streamed = StreamReader(Stream(path), 512), []
    while (batch := reader.next()) is not None:
        streamed.extend(batch[3].tolist())
    reader.close()
    assert walked == ids and streamed == ids
    described = describe_pcapng_file(path)
    assert {k: described[k].name or "unknown" for k in names} == names


def test_records_longer_than_the_file_snaplen_still_count_their_wire_length(tmp_path):
    """libpcap cuts such records to the snaplen; the flow still counts what was on the wire."""
    from tests.conftest import capture_records
    from tests.pcapbuild import ethernet, ipv4, udp

    frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"x" * 300)))
    path = tmp_path / "long.pcap"
    path.write_bytes(pcap_header(snaplen=128) + pcap_record(1.0, frame) + pcap_record(2.0, frame))
    records, proc = capture_records(path, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (rec,) = records
    assert rec["src_stat"] == {"packets": 2, "bytes": 2 * len(frame)}


@pytest.mark.parametrize("source", ["pcap", "pcapng", "pipe"])
def test_a_record_shorter_on_the_wire_than_captured_counts_its_wire_length_as_tshark_does(tmp_path, source):
    """Bytes captured past the end of a frame (a record whose wire length is less than its captured length): the
    flow counts the wire length (libpcap's len, tshark's frame.len), whichever reader reads the file."""
    import subprocess

    from tests.conftest import DEVOURER, REPO, parse_records, run_devourer
    from tests.pcapbuild import ethernet, ipv4, pcapng_interface, pcapng_packet, pcapng_section, tcp

    frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80)))
    captured = frame + b"\0" * 6  # 60 bytes captured, 54 on the wire
    if source == "pcapng":
        data = pcapng_section() + pcapng_interface() + b"".join(
            pcapng_packet(1_000_000 * (1 + i), captured, wire_len=len(frame)) for i in range(2))
    else:
        data = pcap_header() + b"".join(pcap_record(1.0 + i, captured, wire_len=len(frame)) for i in range(2))
    path = tmp_path / f"short.{source}"
    path.write_bytes(data)
    assert [length for _, _, length, _ in _libpcap_packets(str(path))] == [len(frame)] * 2
    out = tmp_path / "flows.jsonl"
    if source == "pipe":
        proc = subprocess.run([*DEVOURER, "capture", "-r", "-", "-o", "file", "-w", str(out)], input=data,
                              capture_output=True, cwd=REPO, timeout=300)
    else:
        proc = run_devourer("capture", "-r", path, "-o", "file", "-w", out)
    assert proc.returncode == 0, proc.stderr
    (rec,) = parse_records(out.read_text())
    assert rec["src_stat"] == {"packets": 2, "bytes": 2 * len(frame)}
