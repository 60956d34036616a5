"""Every packet read is in a flow or in a named counter; flows add up to the file."""

from tests.conftest import capture_records, summary_counts
from tests.pcapbuild import read_pcap_records


def test_generated_capture_conserves_packets_and_bytes(small_capture, tmp_path):
    records, proc = capture_records(small_capture, "--flow-timeout", "3600s", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # 5,000 generated flows; two ICMP flows share a host pair and so a key
    assert len(records) == 4999
    file_records = read_pcap_records(small_capture)
    assert sum(r["src_stat"]["packets"] + r["dst_stat"]["packets"] for r in records) == len(file_records)
    assert sum(r["src_stat"]["bytes"] + r["dst_stat"]["bytes"] for r in records) == sum(w for _, _, w, _ in file_records)
    c = summary_counts(proc.stderr)
    assert c["packets read"] == len(file_records)
    assert c["flows written"] == 4999
    assert c["packets read"] == (c["in flows"] + c["non-IP"] + c["malformed"] + c["unmatched fragments"]
                                 + c["filtered"] + c["dropped"])


def test_counters_add_up_on_a_messy_capture(tmp_path):
    from tests.conftest import PCAPS

    records, proc = capture_records(PCAPS / "goprobe__default.pcap", tmp_path=tmp_path)
    c = summary_counts(proc.stderr)
    assert c["packets read"] == 38642
    assert c["non-IP"] > 0
    assert c["packets read"] == (c["in flows"] + c["non-IP"] + c["malformed"] + c["unmatched fragments"]
                                 + c["filtered"] + c["dropped"])
    assert c["in flows"] == sum(r["src_stat"]["packets"] + r["dst_stat"]["packets"] for r in records)


def test_bpf_filtered_packets_are_counted(tmp_path):
    from tests.conftest import PCAPS

    records, proc = capture_records(PCAPS / "dpkt__http.pcap", "--bpf", "udp", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    c = summary_counts(proc.stderr)
    assert c["packets read"] == 43
    assert c["in flows"] == 2 and c["filtered"] == 41
    assert [r["protocol"] for r in records] == ["udp"]
