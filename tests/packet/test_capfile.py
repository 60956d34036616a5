"""Record-header walker: agrees with libpcap on every corpus file and stops cleanly at damage."""

import numpy as np
import pcapy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.packet.capfile import RecordWalker
from tests.conftest import PCAPS, corpus_files
from tests.pcapbuild import pcap_header, pcap_record


@pytest.mark.parametrize("capture", [f for f in corpus_files() if f != "dpkt__truncated_dns_2.pcap"])
def test_walker_agrees_with_libpcap(capture):
    path = str(PCAPS / capture)
    walker = RecordWalker(path, 512)
    handle = pcapy.open_offline(path)
    total = 0
    while True:
        wire, caps = walker.peek(512)
        if len(wire) == 0:
            break
        caps = caps.copy()
        _, meta = handle.next_batch(len(wire))
        m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
        assert m.shape[0] == len(wire)
        known = caps != 0  # simple packet blocks carry no caplen
        assert np.array_equal(m[known, 3], caps[known])
        assert (wire >= m[:, 3]).all()
        walker.commit(len(wire))
        total += len(wire)
    assert not walker.damaged
    assert handle.next_batch(1)[1] == b""
    walker.close()
    assert total > 0


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=12), data=st.data())
def test_cut_file_yields_exactly_its_complete_records(tmp_path_factory, sizes, data):
    blob = pcap_header() + b"".join(pcap_record(1.0 + i, bytes([i % 256]) * n) for i, n in enumerate(sizes))
    cut = data.draw(st.integers(24, len(blob)))
    path = tmp_path_factory.mktemp("cut") / "cut.pcap"
    path.write_bytes(blob[:cut])
    ends, pos = [], 24
    for n in sizes:
        pos += 16 + n
        ends.append(pos)
    complete = sum(1 for e in ends if e <= cut)
    walker = RecordWalker(str(path), 4)
    seen = 0
    while True:
        wire, _ = walker.peek(4)
        if len(wire) == 0:
            break
        walker.commit(len(wire))
        seen += len(wire)
    assert seen == complete
    assert walker.damaged == (cut not in [24] + ends)
    walker.close()


@pytest.mark.parametrize("capture", ["goprobe__default.pcap", "zeek__tcp-timestamp.pcap", "nfstream__iphone.pcap"])
def test_gather_after_libpcap_equals_walking_the_headers(capture):
    path = str(PCAPS / capture)
    walked, gathered = RecordWalker(path, 300), RecordWalker(path, 300)
    handle = pcapy.open_offline(path)
    while True:
        _, meta = handle.next_batch(300)
        if not meta:
            break
        caplens = np.frombuffer(meta, np.uint32).reshape(-1, 4)[:, 3]
        wire, _ = walked.peek(len(caplens))
        assert np.array_equal(gathered.gather(caplens), wire)
        walked.commit(len(caplens))
    walked.close()
    gathered.close()


def test_records_longer_than_the_file_snaplen_still_count_their_wire_length(tmp_path):
    """libpcap cuts such records to the snaplen; the walk falls back to reading the headers."""
    from tests.conftest import capture_records
    from tests.pcapbuild import ethernet, ipv4, udp

    frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"x" * 300)))
    path = tmp_path / "long.pcap"
    path.write_bytes(pcap_header(snaplen=128) + pcap_record(1.0, frame) + pcap_record(2.0, frame))
    records, proc = capture_records(path, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (rec,) = records
    assert rec["src_stat"] == {"packets": 2, "bytes": 2 * len(frame)}
