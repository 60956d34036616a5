"""A filter decides which packets are counted in flows, not which names are learned.

`--bpf 'not port 53'` (to leave DNS flows out) or `--bpf tcp` must not take the names with it: the flows a
filter keeps carry the names the same run without the filter gives them, and the flows it removes are gone.
"""

import re

import pytest

from tests.conftest import PCAPS, replay_to_stdout, summary_counts

CAPTURES = ["nfstream__iphone.pcap", "zeek__wikipedia.pcap"]  # DNS answers naming the servers of TCP flows


def _run(*args, stdin=None):
    records, stderr = replay_to_stdout(*args, stdin=stdin)
    counts = summary_counts(stderr)
    names = re.search(r"names: ([\d,]+) packets, ([\d,]+) observations", stderr)
    counts["name packets"], counts["observations"] = (int(g.replace(",", "")) for g in names.groups())
    return records, counts


def _by_flow(records):
    return {r["id"]: r for r in records}


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("bpf, kept", [
    ("tcp", lambda r: r["protocol"] == "tcp"),
    ("not port 53", lambda r: 53 not in (r["src"]["port"], r["dst"]["port"])),
])
@pytest.mark.parametrize("source", ["file", "pipe"])
def test_the_flows_a_filter_keeps_carry_every_name_the_unfiltered_run_gives_them(capture, bpf, kept, source):
    everything, _ = _run("-r", PCAPS / capture)
    wanted = {i: r for i, r in _by_flow(everything).items() if kept(r)}
    assert any(r["dst"]["names"] for r in wanted.values())  # the capture names some of the flows kept
    if source == "file":
        filtered, counts = _run("-r", PCAPS / capture, "--bpf", bpf)
    else:
        filtered, counts = _run("-r", "-", "--bpf", bpf, stdin=(PCAPS / capture).read_bytes())
    assert _by_flow(filtered) == wanted
    assert counts["filtered"] > 0 and counts["packets read"] == counts["in flows"] + counts["filtered"] + \
        counts["non-IP"] + counts["malformed"] + counts["unmatched fragments"]


@pytest.mark.parametrize("bpf", ["tcp", "not port 53", "icmp"])
def test_every_name_packet_reaches_the_resolver_whatever_the_filter(bpf):
    _, plain = _run("-r", PCAPS / CAPTURES[0])
    _, filtered = _run("-r", PCAPS / CAPTURES[0], "--bpf", bpf)
    assert plain["name packets"] > 0
    assert (filtered["name packets"], filtered["observations"]) == (plain["name packets"], plain["observations"])
