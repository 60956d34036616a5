"""`devourer names -r FILE`: the names a capture teaches, without running the engine.

Reads the files in this process through the same capture decoder and resolver
core the engine uses, and prints one row per distinct observation, in the
shape of tshark-derived references: ``source kind name value`` (tab-separated),
or JSON lines with ``--json``. For checking what devourer learns from a capture.
"""

import sys

import orjson

from devourer.procs.capture import CaptureLoop, open_sources
from devourer.procs.resolver import N_RESOLVER_COUNTERS, NameExtractor
from devourer.settings import Settings


class _Discard:
    """A producer-side ring stand-in that drops what it is given (the flows)."""

    def write(self, records, should_abort) -> bool:
        return True

    def write_upto(self, records, should_abort) -> int:
        return records.shape[0] if self.write(records, should_abort) else 0

    def try_write(self, records) -> bool:
        return True

    def publish_clock(self, clock_us) -> None:
        pass

    def close_producer(self) -> None:
        pass


class _Collect(_Discard):
    """A producer-side ring stand-in that hands name slots straight to the resolver core."""

    def __init__(self, extractor: NameExtractor):
        self.extractor = extractor
        self.observations = []

    def write(self, records, should_abort) -> bool:
        self.observations.extend(self.extractor.slots(records))
        return True


def observations(settings: Settings):
    """[(ts_us, Observation)] from the capture files of settings, and the resolver counters."""
    import numpy as np

    from devourer.packet import layout as L

    counters = np.zeros(N_RESOLVER_COUNTERS, np.int64)
    sink = _Collect(NameExtractor(counters))
    errors = []
    loop = CaptureLoop(settings, [_Discard()], np.zeros(L.N_CAPTURE_COUNTERS, np.int64), stop_requested=lambda: False,
                       abort_requested=lambda: False,
                       report=lambda text, level="error": errors.append(text), name_ring=sink)
    loop.run(open_sources(settings))
    return sink.observations, counters, errors


def rows(obs_list) -> list[tuple[str, str, str, str]]:
    """Distinct (source, kind, name, value) rows: value is the address, else the MAC, else '-'."""
    out = set()
    for _, o in obs_list:
        if o.kind == "bind":
            out.add((o.source, "bind", o.addr, o.mac))
            continue
        if o.kind == "CNAME":
            for alias in o.alias:
                out.add((o.source, "CNAME", alias, o.name))
            continue
        if o.kind == "PTR":
            out.add((o.source, "PTR", o.alias[0] if o.alias else "-", o.name))
            continue
        out.add((o.source, o.kind, o.name, o.addr or o.mac or "-"))
    return sorted(out)


def main(settings: Settings, as_json: bool) -> int:
    obs, counters, errors = observations(settings)
    write = sys.stdout.write
    if as_json:
        for ts, o in obs:
            write(orjson.dumps({"ts_us": ts, **o._asdict()}).decode() + "\n")
    else:
        for r in rows(obs):
            write("\t".join(r) + "\n")
    for e in errors:
        print(f"devourer: {e}", file=sys.stderr)
    return 4 if errors else 0
