"""A ``Query`` as one SQL statement over the ``flow_logs`` columns, for DuckDB (the store, JSON lines) or
BigQuery (the table ``-o bigquery`` fills): the same text but for a few functions.

The statement filters the flows (window, condition), turns each into its attribute values and its
packets and bytes as seen from the query's side (``Query.side``), groups by the attributes and sums, and
gives each group with the count of groups and the totals of all of them (window functions), ordered and
limited. Its columns: the attributes in order, then ``packets_sent packets_rcvd bytes_sent bytes_rcvd``,
then ``hits`` and the four totals. Names come as JSON text (a list cannot be grouped by in BigQuery),
times as microseconds since 1970 at the start of their bucket.
"""

from devourer.query.conditions import to_sql
from devourer.query.spec import Query

COUNTS = ("packets_sent", "packets_rcvd", "bytes_sent", "bytes_rcvd")
_PLAIN = {"sip": "src_addr", "dip": "dst_addr", "sport": "src_port", "dport": "dst_port", "proto": "protocol",
          "iface": "interface", "sensor": "sensor", "vlan": "vlan", "status": "status", "end_reason": "end_reason",
          "tunnel": "tunnel_type"}


def _attribute(name: str, query: Query, dialect: str) -> str:
    if name in _PLAIN:
        return _PLAIN[name]
    if name in ("src_names", "dst_names"):
        return f"CAST(to_json({name}) AS VARCHAR)" if dialect == "duckdb" else f"TO_JSON_STRING({name})"
    width = int(query.resolution_s) * 1_000_000  # 'time'
    if dialect == "duckdb":
        return f"(epoch_us(first_seen_at) // {width}) * {width}"
    return f"DIV(UNIX_MICROS(first_seen_at), {width}) * {width}"


def _first_seen_us(dialect: str) -> str:
    return "epoch_us(first_seen_at)" if dialect == "duckdb" else "UNIX_MICROS(first_seen_at)"


def compile_query(query: Query, source: str, source_params: list, dialect: str) -> tuple[str, list | dict]:
    """(SQL, parameters): ``source`` is the FROM item (a table, or a table function with ``?`` placeholders
    whose values are ``source_params``); DuckDB gets a list of positional parameters, BigQuery a dict."""
    where, condition_params = ("TRUE", []) if query.condition is None else to_sql(query.condition, dialect)
    if dialect == "duckdb":
        window, params = "first_seen_at >= ? AND first_seen_at <= ?", [*source_params, query.window.first,
                                                                        query.window.last, *condition_params]
    else:
        window = "first_seen_at >= @window_first AND first_seen_at <= @window_last"
        params = {"window_first": query.window.first, "window_last": query.window.last,
                  **{f"p{i}": v for i, v in enumerate(condition_params)}}
    names = [f"a{i}" for i in range(len(query.attributes))]
    near, far = ("src", "dst") if query.side == "src" else ("dst", "src")
    per_flow = [f"{_attribute(a, query, dialect)} AS {n}" for a, n in zip(query.attributes, names)] + [
        f"{near}_packets AS packets_sent", f"{far}_packets AS packets_rcvd", f"{near}_bytes AS bytes_sent",
        f"{far}_bytes AS bytes_rcvd"]
    by_time = query.sort == "time" and "time" not in query.attributes
    if by_time:
        per_flow.append(f"{_first_seen_us(dialect)} AS first_us")
    sums = [f"SUM({c}) AS {c}" for c in COUNTS] + (["MIN(first_us) AS first_us"] if by_time else [])
    group = f"GROUP BY {', '.join(names)}" if names else ""
    direction = "ASC" if query.ascending else "DESC"
    if query.sort == "time":
        key = "first_us" if by_time else names[query.attributes.index("time")]
    else:
        key = f"({query.sort}_sent + {query.sort}_rcvd)"
    order = ", ".join([f"{key} {direction}"] + [f"{n} ASC NULLS FIRST" for n in names])
    head = (f"WITH flows AS (SELECT {', '.join(per_flow)} FROM {source} WHERE {window} AND {where}), "
            f"grouped AS {'MATERIALIZED ' if dialect == 'duckdb' else ''}(SELECT {', '.join(names + sums)} FROM flows "
            f"{group})")
    if query.totals_only:  # one row: the count of groups and the totals
        return head + f" SELECT COUNT(*) AS hits, {', '.join(f'SUM({c})' for c in COUNTS)} FROM grouped", params
    limit = f" LIMIT {int(query.limit)}" if query.limit else ""
    if dialect == "duckdb":  # the groups made once, read twice (faster than window functions over them)
        return (head + f", shown AS (SELECT {', '.join(names + list(COUNTS))} FROM grouped ORDER BY {order}{limit}), "
                f"summary AS (SELECT COUNT(*) AS hits, {', '.join(f'SUM({c})' for c in COUNTS)} FROM grouped) "
                f"SELECT * FROM shown, summary ORDER BY {order}"), params
    totals = ", ".join(f"SUM({c}) OVER ()" for c in COUNTS)
    return (head + f" SELECT {', '.join(names + list(COUNTS))}, COUNT(*) OVER () AS hits, {totals} FROM grouped "
            f"ORDER BY {order}{limit}"), params
