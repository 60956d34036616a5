"""BigQuery output (the only module importing google.cloud): table, batches, retries, spool.

- ``prepare`` runs in the supervisor before any capture: it checks the dataset
  (missing, or not readable with these credentials: a clear error naming it),
  creates ``flow_logs`` (DAY-partitioned on ``first_seen_at``) or adds the
  columns an older table lacks, and refuses a table whose column has another
  type. An unreachable service is not an error: capture starts and rows spool.
- ``BigQuerySink`` runs in the exporter: rows go out with ``insertAll``
  (``insertId`` = flow id, so a resend is not stored twice), in batches bounded
  by rows, bytes and ``--bigquery-flush-interval``. Transient failures (5xx,
  429, refused connections, timeouts) are retried with exponential back-off and
  jitter for a bounded time; then the batch goes to the on-disk spool, which is
  replayed oldest first once BigQuery answers again (also after a restart).
  Rows the service rejects are counted and reported once each, the others of
  the batch are stored (``skipInvalidRows``).

Why insertAll and not the Storage Write API: insertAll's insertId gives the
idempotence the spool replay needs with one request per batch, the emulator the
tests use implements it fully, and at devourer's row sizes its 10 MB / 50 k-row
requests are far from being the bottleneck (the exporter's formatting is).
Key material is never put in a message: errors about keys name the flag only.
"""

import datetime
import json
import random
import time

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.oauth2 import service_account

from devourer.errors import SourceError, UsageError
from devourer.outputs import FlowBatch
from devourer.outputs.spool import Spool
from devourer.settings import Settings

MAX_BATCH_ROWS = 500
MAX_BATCH_BYTES = 5 << 20  # well under insertAll's 10 MB request limit
RETRY_FOR_S = 10.0
REQUEST_TIMEOUT_S = 30.0
MAX_REPORTED_IDS = 100_000  # rejected flow ids reported once each, remembered up to this many
RESPOOL_EVERY_S = 5.0  # while BigQuery is away, how often to try the oldest spooled batch

SCHEMA = [
    ("id", "STRING", "NULLABLE"), ("community_id", "STRING", "NULLABLE"), ("protocol", "STRING", "NULLABLE"),
    ("src_addr", "STRING", "NULLABLE"), ("dst_addr", "STRING", "NULLABLE"),
    ("src_port", "INTEGER", "NULLABLE"), ("dst_port", "INTEGER", "NULLABLE"),
    ("src_hw_addr", "STRING", "NULLABLE"), ("dst_hw_addr", "STRING", "NULLABLE"),
    ("src_names", "STRING", "REPEATED"), ("dst_names", "STRING", "REPEATED"),
    ("first_seen_at", "TIMESTAMP", "NULLABLE"), ("last_seen_at", "TIMESTAMP", "NULLABLE"),
    ("src_bytes", "INTEGER", "NULLABLE"), ("dst_bytes", "INTEGER", "NULLABLE"),
    ("src_packets", "INTEGER", "NULLABLE"), ("dst_packets", "INTEGER", "NULLABLE"),
    ("status", "STRING", "NULLABLE"), ("end_reason", "STRING", "NULLABLE"),
    ("vlan", "INTEGER", "NULLABLE"), ("src_tcp_flags", "INTEGER", "NULLABLE"),
    ("dst_tcp_flags", "INTEGER", "NULLABLE"), ("icmp_type", "INTEGER", "NULLABLE"),
    ("icmp_code", "INTEGER", "NULLABLE"), ("sensor", "STRING", "NULLABLE"),
    # the record's tunnel object, flat; all null for a flow that came through none (tables made before
    # these columns are widened)
    ("tunnel_type", "STRING", "NULLABLE"), ("tunnel_id", "INTEGER", "NULLABLE"),
    ("tunnel_src_id", "INTEGER", "NULLABLE"), ("tunnel_dst_id", "INTEGER", "NULLABLE"),
    ("tunnel_src", "STRING", "NULLABLE"), ("tunnel_dst", "STRING", "NULLABLE"),
    ("tunnel_depth", "INTEGER", "NULLABLE"),
    # the interface the flow was captured on: its name, or a pcapng file's interface index as text
    ("interface", "STRING", "NULLABLE"),
]
_TUNNEL_FIELDS = ("type", "id", "src_id", "dst_id", "src", "dst", "depth")
# what an outage looks like (the service, or the token endpoint of a service-account key, unreachable or
# overloaded): capture goes on and rows spool
TRANSIENT = (gexc.ServerError, gexc.TooManyRequests, gexc.RetryError, ConnectionError, TimeoutError, OSError,
             auth_exc.TransportError)


def _refused_key(e: auth_exc.RefreshError) -> SourceError:
    """The token endpoint answered and refused the key (revoked, wrong, clock far off): not an outage. The
    endpoint's text is left out: it may quote what was sent."""
    return SourceError(f"the token endpoint refused the service-account key ({e.__class__.__name__}); check the key "
                       "(--bigquery-sa-key-file or DEVOURER_BIGQUERY_SA_KEY_DATA)")


def _retryable(e: Exception) -> bool:
    return isinstance(e, TRANSIENT) or (isinstance(e, auth_exc.RefreshError) and getattr(e, "retryable", False))


def row_of(record: dict) -> dict:
    """A JSON record (docs/architecture.md §4) -> a flow_logs row."""
    src, dst = record["src"], record["dst"]
    return {
        "id": record["id"], "community_id": record["community_id"], "protocol": record["protocol"],
        "src_addr": src["addr"], "dst_addr": dst["addr"], "src_port": src["port"], "dst_port": dst["port"],
        "src_hw_addr": src["hw_addr"], "dst_hw_addr": dst["hw_addr"],
        "src_names": src["names"], "dst_names": dst["names"],
        "first_seen_at": record["first_seen_at"], "last_seen_at": record["last_seen_at"],
        "src_bytes": record["src_stat"]["bytes"], "dst_bytes": record["dst_stat"]["bytes"],
        "src_packets": record["src_stat"]["packets"], "dst_packets": record["dst_stat"]["packets"],
        "status": record["status"], "end_reason": record["end_reason"], "vlan": record["vlan"],
        "src_tcp_flags": record["src_tcp_flags"], "dst_tcp_flags": record["dst_tcp_flags"],
        "icmp_type": record["icmp_type"], "icmp_code": record["icmp_code"], "sensor": record["sensor"],
        **{f"tunnel_{k}": (record["tunnel"] or {}).get(k) for k in _TUNNEL_FIELDS},
        "interface": None if record["interface"] is None else str(record["interface"]),
    }


def _credentials(settings: Settings):
    if settings.bigquery_sa_key_data:  # given, or read from --bigquery-sa-key-file by the supervisor
        where = (f"--bigquery-sa-key-file {settings.bigquery_sa_key_file}" if settings.bigquery_sa_key_file
                 else "--bigquery-sa-key-data")
        try:
            return service_account.Credentials.from_service_account_info(json.loads(settings.bigquery_sa_key_data))
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{where} is not a valid service-account key") from None
    if settings.bigquery_sa_key_file:
        try:
            return service_account.Credentials.from_service_account_file(settings.bigquery_sa_key_file)
        except OSError as e:
            raise SourceError(f"cannot read --bigquery-sa-key-file {settings.bigquery_sa_key_file}: "
                              f"{e.strerror}") from None
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"--bigquery-sa-key-file {settings.bigquery_sa_key_file} is not a valid "
                             "service-account key") from None
    if settings.bigquery_endpoint:
        return AnonymousCredentials()  # emulators and private endpoints without Google auth
    return None  # application default credentials


def client(settings: Settings) -> bigquery.Client:
    options = {"api_endpoint": settings.bigquery_endpoint} if settings.bigquery_endpoint else None
    return bigquery.Client(project=settings.bigquery_project_id, credentials=_credentials(settings),
                           client_options=options)


def run_query(settings: Settings, sql: str, params: dict) -> list[tuple]:
    """``devourer query --bigquery``: the rows of ``sql`` with its named parameters (int, str or an aware
    datetime); raises SourceError in one line."""
    kinds = {int: "INT64", str: "STRING", datetime.datetime: "TIMESTAMP"}
    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter(name, kinds[type(value)], value) for name, value in params.items()])
    try:
        job = client(settings).query(sql, job_config=config, timeout=REQUEST_TIMEOUT_S)
        return [tuple(row.values()) for row in job.result(timeout=600)]
    except gexc.NotFound:
        raise SourceError(f"BigQuery table {table_id(settings)}: not found (the project, dataset and table that "
                          "capture -o bigquery writes: --bigquery-project-id, --bigquery-dataset-id, "
                          "--bigquery-table)") from None
    except gexc.GoogleAPICallError as e:
        first = (e.message or e.__class__.__name__).splitlines()[0]
        raise SourceError(f"BigQuery query on {table_id(settings)} failed: {first}") from None
    except TRANSIENT as e:
        raise SourceError(f"BigQuery unreachable ({e.__class__.__name__})") from None


def table_id(settings: Settings) -> str:
    return f"{settings.bigquery_project_id}.{settings.bigquery_dataset_id}.{settings.bigquery_table}"


def ensure_table(bq: bigquery.Client, settings: Settings) -> None:
    """Dataset must exist; table is created, or widened, or refused. Raises the API's errors."""
    where = f"{settings.bigquery_project_id}:{settings.bigquery_dataset_id}"
    try:
        bq.get_dataset(f"{settings.bigquery_project_id}.{settings.bigquery_dataset_id}", retry=None,
                       timeout=REQUEST_TIMEOUT_S)
    except gexc.NotFound:
        raise SourceError(f"BigQuery dataset {where} does not exist") from None
    except (gexc.Forbidden, gexc.Unauthorized):
        raise SourceError(f"these credentials cannot read BigQuery dataset {where}") from None
    wanted = [bigquery.SchemaField(name, kind, mode=mode) for name, kind, mode in SCHEMA]
    try:
        table = bq.get_table(table_id(settings), retry=None, timeout=REQUEST_TIMEOUT_S)
    except gexc.NotFound:
        table = bigquery.Table(table_id(settings), schema=wanted)
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                            field="first_seen_at")
        bq.create_table(table, exists_ok=True, retry=None, timeout=REQUEST_TIMEOUT_S)
        return
    have = {f.name: f for f in table.schema}
    for field in wanted:
        old = have.get(field.name)
        if old is not None and (old.field_type.upper() not in _same_type(field.field_type)
                                or (old.mode or "NULLABLE").upper() != field.mode):
            raise SourceError(f"BigQuery table {table_id(settings)}: column {field.name} is "
                              f"{old.mode or 'NULLABLE'} {old.field_type}, devourer writes {field.mode} "
                              f"{field.field_type}")
    missing = [f for f in wanted if f.name not in have]
    if missing:
        table.schema = list(table.schema) + missing
        bq.update_table(table, ["schema"], retry=None, timeout=REQUEST_TIMEOUT_S)


def _same_type(kind: str) -> set[str]:
    return {"INTEGER": {"INTEGER", "INT64"}, "TIMESTAMP": {"TIMESTAMP"}, "STRING": {"STRING"}}[kind]


def prepare(settings: Settings, warn) -> bool:
    """Check/create the table before capturing. Returns False if BigQuery did not answer."""
    try:
        ensure_table(client(settings), settings)
        return True
    except (*TRANSIENT, auth_exc.RefreshError) as e:
        if not _retryable(e):
            raise _refused_key(e) from None
        warn(f"BigQuery does not answer ({e.__class__.__name__}); capturing anyway, rows are spooled "
             f"in {settings.spool_dir} until it does")
        return False


class BigQuerySink:
    """Rows to BigQuery, through the spool when it is away. Used in the exporter only."""

    def __init__(self, settings: Settings, report, counters: dict, clock=time.monotonic, sleep=time.sleep):
        self.settings = settings
        self.report = report
        self.counters = counters  # sent, rejected, spooled, spool_dropped (a dict-like of ints)
        self.clock, self.sleep = clock, sleep
        self.bq = client(settings)
        self.table = table_id(settings)
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes, report)
        self.pending: list[dict] = []
        self.pending_bytes = 0
        self.last_flush = clock()
        self.table_ready = False
        self.healthy = True
        self.next_attempt = 0.0
        self.reported_ids: set[str] = set()
        self.outage_reported = False

    # ---- exporter interface
    def write(self, batch: FlowBatch) -> None:
        for rec in batch.records():
            row = row_of(rec)
            self.pending.append(row)
            self.pending_bytes += 400 + 40 * (len(row["src_names"]) + len(row["dst_names"]))
            if len(self.pending) >= MAX_BATCH_ROWS or self.pending_bytes >= MAX_BATCH_BYTES:
                self._flush_pending()
        self.tick()

    def flush(self) -> None:
        pass  # batches leave by size here, by time in tick()

    def reopen(self) -> None:
        pass  # SIGHUP: nothing to reopen (the spool's files are opened per batch)

    def unsettled(self) -> int:
        """Rows taken but neither sent nor spooled yet (held in memory): the oldest rows handed over last."""
        return len(self.pending)

    def tick(self) -> None:
        now = self.clock()
        if self.pending and now - self.last_flush >= self.settings.bigquery_flush_interval_s:
            self._flush_pending()
        if self.spool.files() and now >= self.next_attempt:
            self._replay(until=now + 1.0)

    def close(self, deadline_s: float = 20.0) -> None:
        """Send what can be sent before the deadline (spool first, oldest first), spool the rest.
        While BigQuery is known to be away, one attempt only: the spool keeps the rows."""
        end = self.clock() + deadline_s
        if not self.healthy:
            end = self.clock()
        self._flush_pending(until=end)
        self._replay(until=end)

    # ---- sending
    def _flush_pending(self, until: float | None = None) -> None:
        rows, self.pending, self.pending_bytes = self.pending, [], 0
        self.last_flush = self.clock()
        if not rows:
            return
        if self.healthy and not self.spool.files() and self._send(rows, until):
            return
        self._to_spool(rows)

    def _to_spool(self, rows: list[dict]) -> None:
        if self.spool.put(rows):
            self.counters["spooled"] += len(rows)
        else:
            self.counters["spool_dropped"] += len(rows)
            self.report(f"spool {self.settings.spool_dir} is full: {len(rows)} rows dropped", "error")

    def _replay(self, until: float) -> None:
        while True:
            oldest = self.spool.oldest()
            self.counters["spool_set_aside"] = self.spool.set_aside
            if oldest is None:
                return
            name, rows = oldest
            if not self._send(rows, until):
                return
            self.spool.done(name)
            self.counters["spooled"] -= len(rows)
            if self.clock() >= until:
                return

    def _send(self, rows: list[dict], until: float | None = None) -> bool:
        """insertAll with retries; True once BigQuery took the batch (bad rows counted)."""
        give_up = min(until if until is not None else float("inf"), self.clock() + RETRY_FOR_S)
        delay = 0.25  # one attempt at least, even past the deadline
        while True:
            try:
                if not self.table_ready:
                    ensure_table(self.bq, self.settings)
                    self.table_ready = True
                errors = self.bq.insert_rows_json(self.table, rows, row_ids=[r["id"] for r in rows],
                                                  skip_invalid_rows=True, retry=None, timeout=REQUEST_TIMEOUT_S)
                self._rejected(rows, errors)
                self.counters["sent"] += len(rows) - len({e["index"] for e in errors if _is_invalid(e)})
                if not self.healthy:
                    self.report("BigQuery answers again; sending the spool, oldest first", "info")
                self.healthy = True
                self.outage_reported = False
                return True
            except gexc.NotFound:
                self.table_ready = False  # table dropped under us: create it again
            except (*TRANSIENT, auth_exc.RefreshError) as e:
                if not _retryable(e):
                    self.report(str(_refused_key(e)), "error")
                elif not self.outage_reported:
                    self.outage_reported = True
                    self.report(f"BigQuery unavailable ({e.__class__.__name__}); retrying, then spooling "
                                f"in {self.settings.spool_dir}")
            except SourceError as e:
                self.report(str(e), "error")
            if self.clock() + delay > give_up:
                self.healthy = False
                self.next_attempt = self.clock() + RESPOOL_EVERY_S
                return False
            self.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 4.0)

    def _rejected(self, rows: list[dict], errors: list) -> None:
        for e in errors:
            if not _is_invalid(e):
                continue
            self.counters["rejected"] += 1
            row_id = rows[e["index"]]["id"]
            if row_id not in self.reported_ids:
                if len(self.reported_ids) >= MAX_REPORTED_IDS:  # a bound: rows are rejected for what is in them
                    self.reported_ids.clear()
                self.reported_ids.add(row_id)
                reason = "; ".join(f"{x.get('location', '')}: {x.get('message', '')}" for x in e["errors"]
                                   if x.get("reason") != "stopped")
                self.report(f"BigQuery rejected flow {row_id}: {reason}")


def _is_invalid(error: dict) -> bool:
    return any(x.get("reason") not in ("stopped",) for x in error.get("errors", []))
