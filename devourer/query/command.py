"""``devourer query``: the parsed flags (``cli``) -> a ``Query`` -> a source's answer -> text on stdout."""

import datetime
import os
import sys
import time

from devourer.errors import EXIT_OK, UsageError
from devourer.query import conditions, render, spec
from devourer.query.result import result_of
from devourer.query.sources import BigQuerySource, JsonLinesSource, Source, StoreSource, store_span
from devourer.settings import Settings


def _condition(text: str | None, interfaces: str | None) -> conditions.Condition | None:
    tree = None
    if text is not None:
        try:
            tree = conditions.parse(text)
        except conditions.ConditionError as e:
            raise UsageError(f"-c/--condition: {e.pointed(text)}") from None
    if interfaces:
        names = [n.strip() for n in interfaces.split(",") if n.strip()]
        if not names:
            raise UsageError("-i/--iface: no interface named")
        on = [conditions.Comparison("iface", "=", n) for n in names]
        picked = on[0] if len(on) == 1 else conditions.Or(tuple(on))
        tree = picked if tree is None else conditions.And((picked, tree))
    return tree


def query_of(args, now: datetime.datetime) -> spec.Query:
    window = spec.window_of(args.first, args.last, now)
    return spec.Query(attributes=spec.attributes_of(args.query), condition=_condition(args.condition, args.iface),
                      window=window, resolution_s=spec.resolution_of(args.resolution, window), sort=args.sort_by,
                      ascending=args.ascending, limit=args.limit, totals_only=args.sum)


def source_of(args) -> Source:
    if args.bigquery and args.read_file:
        raise UsageError("give one source: --bigquery or -r/--read-file")
    if args.read_file:
        return JsonLinesSource(list(args.read_file))
    if args.bigquery:
        from devourer.cli import apply_bigquery_aliases, check_bigquery_names

        apply_bigquery_aliases(args)
        if not (args.bigquery_project_id and args.bigquery_dataset_id):
            raise UsageError("--bigquery needs --bigquery-project-id and --bigquery-dataset-id")
        check_bigquery_names(args)
        return BigQuerySource(Settings(
            bigquery_project_id=args.bigquery_project_id, bigquery_dataset_id=args.bigquery_dataset_id,
            bigquery_table=args.bigquery_table, bigquery_sa_key_file=args.bigquery_sa_key_file,
            bigquery_sa_key_data=os.environ.get("DEVOURER_BIGQUERY_SA_KEY_DATA"),
            bigquery_endpoint=args.bigquery_endpoint))
    return StoreSource(args.store)


def run(args) -> int:
    started = time.perf_counter()
    query = query_of(args, datetime.datetime.now(datetime.timezone.utc))
    source = source_of(args)
    rows = source.answer(query)
    result = result_of(query, rows, (time.perf_counter() - started) * 1000)
    sys.stdout.write(render.FORMATS[args.format](result))
    if not result.hits and isinstance(source, StoreSource) and args.first is None and args.last is None:
        span = store_span(args.store)  # a replayed capture's flows are as old as the capture
        if span is not None:
            print(f"devourer query: no flows in the last 30 days; the store holds flows from "
                  f"{span[0]:%Y-%m-%dT%H:%MZ} to {span[1]:%Y-%m-%dT%H:%MZ} (choose with -f/-l)", file=sys.stderr)
    return EXIT_OK
