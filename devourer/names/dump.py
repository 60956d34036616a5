"""`devourer names -r FILE`: the names a capture teaches, printed without running the engine.

The observations come from the engine's own decoder and resolver core, in this process
(``engine.inprocess.observations``); this module prints one row per distinct observation, in the shape of
tshark-derived references: ``source kind name value`` (tab-separated, under a ``#`` header line), or JSON
lines with ``--json`` (the packet's ``time`` in the flow records' ISO form). For checking what devourer
learns from a capture.
"""

import datetime

import orjson

HEADER = "#source\tkind\tname\tvalue\n"


def rows(obs_list) -> list[tuple[str, str, str, str]]:
    """Distinct (source, kind, name, value) rows: value is the address, else the MAC, else '-'; a bind row
    (DHCP's address for a MAC) has the MAC as its name."""
    out = set()
    for _, o in obs_list:
        if o.kind == "bind":
            out.add((o.source, "bind", o.mac or "-", o.addr or "-"))
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


def write(obs_list, as_json: bool, write) -> None:
    """Every observation as a JSON line (``as_json``), else the distinct rows, through ``write(text)``."""
    if as_json:
        for ts, o in obs_list:
            write(orjson.dumps({"time": _iso(ts), **o._asdict()}).decode() + "\n")
    else:
        write(HEADER)
        for r in rows(obs_list):
            write("\t".join(r) + "\n")


def _iso(ts_us: int) -> str:
    """Microseconds since 1970 as the flow records write times: 2004-05-13T10:17:07.311224Z."""
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=int(ts_us))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
