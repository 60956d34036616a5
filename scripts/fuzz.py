#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris / libFuzzer) of every decoder that sees packet bytes.

    .venv/bin/python scripts/fuzz.py TARGET [libFuzzer options]     # e.g. -max_total_time=600
    .venv/bin/python scripts/fuzz.py all --seconds 600              # every target in turn
    .venv/bin/python scripts/fuzz.py seed                           # rebuild tests/fuzz/corpus from ../shared/pcaps

Targets: dns, nbns, dhcp, dhcpv6, tls (the name extractors of ``devourer.names.extract``,
instrumented for coverage) and decode (the compiled batch decoder of
``devourer.packet.decode``, fed one frame per input under every link type; numba
code cannot be instrumented, so libFuzzer mutates it blind). The rule checked:
only the project's ``DecodeError`` may escape an extractor, and the batch decoder
accounts for every frame (a record, or one of its counters). Anything else
crashes the run and libFuzzer writes the input as ``crash-*``.

The seed corpus (``tests/fuzz/corpus/TARGET``) holds the payloads the real
captures carry, plus what earlier runs found interesting; new inputs go to a
temporary folder unless ``--save`` is given. The test suite runs each target
for a few thousand inputs (``tests/test_fuzz.py``); this script is the long run.
"""

import hashlib
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fuzz" / "corpus"
TARGETS = ("dns", "nbns", "dhcp", "dhcpv6", "tls", "decode")
SEEDS_PER_TARGET = 40
NAME_PORTS = {53: "dns", 5353: "dns", 5355: "dns", 137: "nbns", 67: "dhcp", 68: "dhcp", 546: "dhcpv6", 547: "dhcpv6"}


def make_target(name: str):
    import atheris

    with atheris.instrument_imports(include=["devourer.names", "devourer.errors"]):
        from devourer.errors import DecodeError
        from devourer.names import extract

    calls = {
        "dns": lambda d: (extract.dns_observations(d, "dns"), extract.dns_observations(d, "mdns", "02:00:00:00:00:01")),
        "nbns": lambda d: extract.nbns_observations(d, "10.0.0.1", "02:00:00:00:00:01"),
        "dhcp": lambda d: extract.dhcp_observations(d),
        "dhcpv6": lambda d: extract.dhcpv6_observations(d, "02:00:00:00:00:01", "fe80::1"),
        "tls": lambda d: extract.tls_sni(d),
    }
    if name == "decode":
        return _decode_target()
    call = calls[name]

    def one_input(data: bytes) -> None:
        try:
            call(data)
        except DecodeError:
            pass

    return one_input


def _decode_target():
    import numpy as np

    from devourer import counters as CN
    from devourer.packet.decode import SUPPORTED_DATALINKS, BatchDecoder

    links = sorted(SUPPORTED_DATALINKS)
    counters = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
    decoder = BatchDecoder(1, 2, counters, want_names=True)

    def one_input(data: bytes) -> None:
        if not data:
            return
        link, frame = links[data[0] % len(links)], data[1:]
        counters[:] = 0
        meta = np.array([[1_700_000_000, 0, 0, len(frame)]], np.uint32).tobytes()
        wire = np.array([len(frame) + (data[0] >> 4) * 100], np.uint32)  # sometimes a wire length beyond caplen
        n = decoder.decode(frame, meta, wire, link, 262144)
        decoder.name_packets()
        accounted = n + counters[CN.C_NON_IP] + counters[CN.C_MALFORMED] + counters[CN.C_FRAG_UNMATCHED]
        if counters[CN.C_READ] != 1 or accounted != 1:
            raise AssertionError(f"frame not accounted for: records {n}, counters {counters.tolist()}")

    return one_input


def seed() -> None:
    """Payloads of name-resolution packets (and whole frames) from the real captures."""
    pcaps = REPO.parent / "shared" / "pcaps"
    found: dict[str, list[bytes]] = {t: [] for t in TARGETS}
    for path in sorted(pcaps.glob("*.pcap")):
        data = path.read_bytes()
        if data[:4] != b"\xd4\xc3\xb2\xa1" or struct.unpack_from("<I", data, 20)[0] != 1:
            continue  # little-endian Ethernet pcaps are plenty
        at = 24
        while at + 16 <= len(data):
            caplen = struct.unpack_from("<I", data, at + 8)[0]
            frame = data[at + 16:at + 16 + caplen]
            at += 16 + caplen
            found["decode"].append(b"\x01" + frame[:600])  # first byte 1 picks Ethernet
            payload, port, tcp = _l4_payload(frame)
            if payload is None:
                continue
            if tcp and payload[:1] == b"\x16":
                found["tls"].append(payload)
            elif not tcp and port in NAME_PORTS:
                found[NAME_PORTS[port]].append(payload)
    for target, items in found.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        unique = {hashlib.sha1(x).hexdigest()[:16]: x for x in items}
        for key in sorted(unique)[:SEEDS_PER_TARGET]:  # a sample: libFuzzer grows it
            (folder / key).write_bytes(unique[key])
        print(f"{target}: {min(len(unique), SEEDS_PER_TARGET)} seeds")


def _l4_payload(frame: bytes):
    if len(frame) < 14:
        return None, 0, False
    etype, at = struct.unpack_from("!H", frame, 12)[0], 14
    while etype in (0x8100, 0x88A8) and len(frame) >= at + 4:
        etype, at = struct.unpack_from("!H", frame, at + 2)[0], at + 4
    if etype == 0x0800 and len(frame) >= at + 20:
        proto, l4 = frame[at + 9], at + (frame[at] & 15) * 4
    elif etype == 0x86DD and len(frame) >= at + 40:
        proto, l4 = frame[at + 6], at + 40
    else:
        return None, 0, False
    if proto == 17 and len(frame) >= l4 + 8:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        return frame[l4 + 8:], min(sport, dport) if min(sport, dport) in NAME_PORTS else max(sport, dport), False
    if proto == 6 and len(frame) >= l4 + 20:
        return frame[l4 + (frame[l4 + 12] >> 4) * 4:], 0, True
    return None, 0, False


def main() -> int:
    args = sys.argv[1:]
    if not args or args[0] not in (*TARGETS, "all", "seed"):
        print(__doc__, file=sys.stderr)
        return 2
    if args[0] == "seed":
        seed()
        return 0
    if args[0] == "all":
        seconds = args[args.index("--seconds") + 1] if "--seconds" in args else "60"
        status = 0
        for target in TARGETS:
            print(f"== {target}", flush=True)
            status |= subprocess.run([sys.executable, __file__, target, f"-max_total_time={seconds}"]).returncode
        return status
    target, rest = args[0], [a for a in args[1:] if a != "--save"]
    import atheris

    found = CORPUS / target if "--save" in args else Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    one_input = make_target(target)
    atheris.Setup([sys.argv[0], *rest, str(found), str(CORPUS / target)], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
