"""`devourer names -r FILE`: the names a capture teaches, printed without running the engine.

The observations come from the engine's own decoder and resolver core, in this process
(``engine.inprocess.observations``); this module prints one row per distinct observation, in the shape of
tshark-derived references: ``source kind name value`` (tab-separated), or JSON lines with ``--json``. For
checking what devourer learns from a capture.
"""

import orjson


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


def write(obs_list, as_json: bool, write) -> None:
    """Every observation as a JSON line (``as_json``), else the distinct rows, through ``write(text)``."""
    if as_json:
        for ts, o in obs_list:
            write(orjson.dumps({"ts_us": ts, **o._asdict()}).decode() + "\n")
    else:
        for r in rows(obs_list):
            write("\t".join(r) + "\n")
