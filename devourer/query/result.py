"""A query's answer as small types: its rows (attribute values and counts), the totals of every group and
the number of groups (hits). Made from a source's plain rows, whichever engine ran the statement."""

import datetime
from dataclasses import dataclass

import orjson

from devourer.query.spec import Query


@dataclass(frozen=True)
class Counts:
    packets_sent: int
    packets_rcvd: int
    bytes_sent: int
    bytes_rcvd: int

    @property
    def packets(self) -> int:
        return self.packets_sent + self.packets_rcvd

    @property
    def bytes(self) -> int:
        return self.bytes_sent + self.bytes_rcvd


@dataclass(frozen=True)
class Row:
    values: tuple  # in the order of Query.attributes: int, str, None, a list of names, or an aware datetime
    counts: Counts


@dataclass(frozen=True)
class Result:
    query: Query
    rows: tuple[Row, ...]
    totals: Counts
    hits: int  # groups, before -n
    elapsed_ms: float


def _value(attribute: str, raw):
    if raw is None:
        return None
    if attribute in ("src_names", "dst_names"):
        return orjson.loads(raw)
    if attribute == "time":
        return datetime.datetime.fromtimestamp(0, datetime.timezone.utc) + datetime.timedelta(microseconds=int(raw))
    return raw


def _counts(values) -> Counts:
    return Counts(*(int(v or 0) for v in values))


def result_of(query: Query, rows: list[tuple], elapsed_ms: float) -> Result:
    """``rows``: those of ``sql.compile_query``'s statement."""
    if query.totals_only:
        hits, *totals = rows[0] if rows else (0, 0, 0, 0, 0)
        return Result(query, (), _counts(totals), int(hits), elapsed_ms)
    n = len(query.attributes)
    out = tuple(Row(tuple(_value(a, v) for a, v in zip(query.attributes, r[:n])), _counts(r[n:n + 4])) for r in rows)
    hits, totals = (int(rows[0][n + 4]), _counts(rows[0][n + 5:n + 9])) if rows else (0, Counts(0, 0, 0, 0))
    return Result(query, out, totals, hits, elapsed_ms)
