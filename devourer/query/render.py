"""A query's answer as text: ``txt`` (goQuery's table: human units, each row's share in %, the totals and
"N hits in T ms" below), ``csv`` (a header, then a line per row, plain numbers) and ``json`` (one object:
``rows``, ``totals``, ``hits``, the window)."""

import csv
import datetime
import io

import orjson

from devourer.query.result import Counts, Result

_SORTED_BY = {"bytes": "accumulated data volume (sent and received)",
              "packets": "accumulated packets (sent and received)", "time": "first packet time"}


def _time(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "-"
    if isinstance(value, datetime.datetime):
        return _time(value)
    return str(value)


def human_count(n: int) -> str:
    """Packets as goQuery shows them: 950, 2.04 k, 1.20 M."""
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def human_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}" if whole else "0.00"


def _span(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    return f"{days}d{rest // 3600}h{rest % 3600 // 60}m"


def txt(result: Result) -> str:
    q, t = result.query, result.totals
    lines: list[list[str]] = []
    if not q.totals_only:
        lines.append([""] * len(q.attributes) + ["packets", "packets", "", "bytes", "bytes", ""])
        lines.append(list(q.attributes) + ["sent", "rcvd", "%", "sent", "rcvd", "%"])
        for row in result.rows:
            c = row.counts
            lines.append([_text(v) for v in row.values] + [
                human_count(c.packets_sent), human_count(c.packets_rcvd), _share(c.packets, t.packets),
                human_bytes(c.bytes_sent), human_bytes(c.bytes_rcvd), _share(c.bytes, t.bytes)])
        if result.hits > len(result.rows):
            lines.append(["..."] + [""] * (len(q.attributes) - 1) + ["..."] * 2 + [""] + ["..."] * 2 + [""])
        lines.append([""] * len(q.attributes) + [human_count(t.packets_sent), human_count(t.packets_rcvd), "",
                                                 human_bytes(t.bytes_sent), human_bytes(t.bytes_rcvd), ""])
    lines.append(["Totals:"] + [""] * (len(q.attributes) - 1 if not q.totals_only else 0) + [
        "", human_count(t.packets), "", "", human_bytes(t.bytes), ""])
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(max(map(len, lines)))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    w = q.window
    out += ["", f"Timespan    : [{_time(w.first)}, {_time(w.last)}] ({_span(w.seconds)})",
            f"Sorted by   : {_SORTED_BY[q.sort]}{', ascending' if q.ascending else ''}",
            f"Query stats : {result.hits:,} hits in {result.elapsed_ms:.0f} ms"]
    return "\n".join(out) + "\n"


_COUNT_NAMES = ("packets", "packets_sent", "packets_rcvd", "bytes", "bytes_sent", "bytes_rcvd")


def _numbers(c: Counts) -> list[int]:
    return [c.packets, c.packets_sent, c.packets_rcvd, c.bytes, c.bytes_sent, c.bytes_rcvd]


def to_csv(result: Result) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(result.query.attributes) + list(_COUNT_NAMES))
    for row in result.rows:
        w.writerow(["" if v is None else _text(v) for v in row.values] + _numbers(row.counts))
    return buf.getvalue()


def _json_value(value):
    return _time(value) if isinstance(value, datetime.datetime) else value


def to_json(result: Result) -> str:
    q = result.query
    doc = {
        "rows": [{**{a: _json_value(v) for a, v in zip(q.attributes, row.values)},
                  **dict(zip(_COUNT_NAMES, _numbers(row.counts)))} for row in result.rows],
        "totals": dict(zip(_COUNT_NAMES, _numbers(result.totals))),
        "hits": result.hits,
        "window": {"first": _time(q.window.first), "last": _time(q.window.last)},
        "duration_ms": round(result.elapsed_ms, 1),
    }
    return orjson.dumps(doc).decode() + "\n"


FORMATS = {"txt": txt, "csv": to_csv, "json": to_json}
