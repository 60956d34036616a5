"""Command line: configargparse -> one frozen Settings -> the engine -> exit status.

Every ``capture`` flag can also come from the environment (``DEVOURER_<FLAG>``,
e.g. ``DEVOURER_FLOW_TIMEOUT=60s``) or from a config file (``-c FILE``, lines of
``flag = value``); precedence is flag > environment > config file > default.
A wrong flag or value is one line on stderr and exit status 2.
"""

import argparse
import gc
import os
import re
import socket
import sys

import configargparse

from devourer import __version__, logs
from devourer.errors import (EXIT_DAMAGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, DevourerError, SourceError,
                             UsageError)
from devourer.privileges import resolve_user, scrub_environment
from devourer.settings import Settings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h|d)?\s*$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s|m|h|d)")
_GO_DURATION = re.compile(r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:us|ms|s|m|h|d))+$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(text: str) -> float:
    """'10s', '2m', '1h', '500ms', '1.5' (seconds), and Go's '1m30s', '1h2m3.5s' -> seconds."""
    m = _DURATION.match(str(text))
    if m:
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if _GO_DURATION.match(str(text).strip()):  # as the Go devourer (time.ParseDuration) takes them
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _GO_PART.findall(str(text)))
    raise ValueError(f"not a duration: {text!r} (use e.g. 10s, 2m, 1h, 500ms, 1m30s)")


def parse_size(text: str) -> int:
    """'64M', '1G', '65536' -> bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 65536, 64M, 1G)")
    unit = (m.group(2) or "")[:1].lower()
    return int(m.group(1)) * _SIZE_UNITS[unit]


def _typed(fn, what):
    def convert(text):
        try:
            return fn(text)
        except ValueError as e:
            raise configargparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = what
    return convert


def _show_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 1e-3)):
        if seconds >= size and seconds / size == int(seconds / size):
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"


def _show_size(n: int) -> str:
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _within(parse, lo, hi, show=lambda v: f"{v:,}", zero_ok: bool = False):
    """``parse`` then a range check: every setting has one, and the message gives it (0 may mean "off")."""
    def convert(text):
        v = parse(text)
        if zero_ok and v == 0:
            return v
        if not lo <= v <= hi:
            off = "0 (off) or " if zero_ok else ""
            raise ValueError(f"{text.strip() if isinstance(text, str) else text} is out of range: "
                             f"{off}{show(lo)} to {show(hi)}")
        return v
    return convert


def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None


def _duration_in(lo: float, hi: float, zero_ok: bool = False):
    return _typed(_within(parse_duration, lo, hi, _show_duration, zero_ok), "duration")


def _size_in(lo: int, hi: int, zero_ok: bool = False):
    return _typed(_within(parse_size, lo, hi, _show_size, zero_ok), "size")


def _count_in(lo: int, hi: int, zero_ok: bool = False):
    return _typed(_within(_int, lo, hi, zero_ok=zero_ok), "count")


# The ranges of the settings. Durations end up as int64 microseconds added to packet times (~2**51 today), so a
# decade is far inside what fits; counts are bounded by what the machine can hold (rings and tables are reserved
# at their size) and by libpcap's C ints.
DAY = 86400.0
MAX_TIMEOUT_S = 3650 * DAY
MAX_WORKERS = 256
MAX_READERS = 64
MAX_RING_SLOTS = 1 << 22
MAX_BATCH = 1 << 16
MAX_SNAPLEN = 262144  # libpcap's own maximum for the link types devourer reads
MAX_BUFFER = 2047 << 20  # pcap_set_buffer_size takes a C int
MAX_FLOWS = 100_000_000  # 12.8 GB of table rows
MAX_NAMES = 100_000_000
MAX_COUNT = 1 << 62
MAX_SENSOR_ID = 253  # a host name's limit


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _sensor_id(text: str) -> str:
    """Written into every record (JSON-escaped) and hashed into every flow id: UTF-8 and short."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    if not 1 <= len(text) <= MAX_SENSOR_ID:
        raise ValueError(f"must be 1 to {MAX_SENSOR_ID} characters, got {len(text)}")
    return text


_COMMAND_LINE: list[str] = []  # the arguments being parsed: an error names a setting by where it came from
_BAD_ARGUMENT = re.compile(r"^argument (?:-\w/)?(--[\w-]+):")


def _on_command_line(*options: str) -> bool:
    """Whether the command line itself gives one of a flag's option strings (``--flag``, ``--flag=x``, ``-f``,
    ``-fVALUE``), rather than DEVOURER_* or the config file."""
    def gives(a: str, o: str) -> bool:
        return a == o or a.startswith(o + "=") if o.startswith("--") else a.startswith(o) and not a.startswith("--")

    return any(gives(a, o) for a in _COMMAND_LINE for o in options)


def _config_line_of(word: str, options: list[str]) -> str:
    """'unrecognized arguments: --flow_timout=10s' for a key of the config file: its line, and the nearest of
    ``options`` (configargparse hands config keys on as flags, so a typo there reads as one on the command
    line)."""
    import difflib

    key = word[2:].split("=", 1)[0]
    path = _config_path(_COMMAND_LINE)
    where = path
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if line.split("=", 1)[0].split(":", 1)[0].strip() == key:
                    where = f"{path} line {n}"
                    break
    except OSError:
        pass
    close = difflib.get_close_matches(key.replace("_", "-"), options, n=1, cutoff=0.6)
    return f"{where}: unknown setting {key!r}" + (f" (did you mean {close[0]}?)" if close else "")


def _named_by_source(parser: configargparse.ArgumentParser, message: str) -> str:
    """'argument --workers: ...' for a value that came from the environment names the variable instead
    (DEVOURER_WORKERS=abc is not on the command line, where the user would look); an unknown flag that came
    from the config file names its line."""
    if message.startswith("unrecognized arguments: "):
        capture = getattr(parser, "capture_parser", None)
        from_file = [w for w in message.split(": ", 1)[1].split() if w.startswith("--") and w not in _COMMAND_LINE]
        if capture is not None and from_file and _on_command_line("--config", "-c"):
            options = sorted(o[2:] for a in capture._actions for o in a.option_strings if o.startswith("--"))
            return _config_line_of(from_file[0], options)
        return message
    m = _BAD_ARGUMENT.match(message)
    action = parser._option_string_actions.get(m.group(1)) if m else None
    variable = getattr(action, "env_var", None)
    if variable is None or variable not in os.environ or _on_command_line(*action.option_strings):
        return message
    return f"{variable} ({m.group(1)}):" + message[m.end():]


class _Parser(configargparse.ArgumentParser):
    """argparse prints usage and the error on two lines; we print one."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {_named_by_source(self, message)}\n")
        sys.exit(EXIT_USAGE)


def version_text() -> str:
    """devourer's version and those of what it runs on (for bug reports)."""
    import ctypes
    import ctypes.util
    import platform
    from importlib import metadata

    lines = [f"devourer {__version__}", f"python {platform.python_version()}"]
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("pcap") or "libpcap.so")
        lib.pcap_lib_version.restype = ctypes.c_char_p
        lines.append(lib.pcap_lib_version().decode())
    except (OSError, AttributeError):
        lines.append("libpcap: not found")
    for dist in ("pcapy-ng", "numpy", "numba", "impacket", "orjson", "msgpack", "multiprocess", "ConfigArgParse",
                 "google-cloud-bigquery", "prometheus-client", "tqdm"):
        try:
            lines.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{dist}: not installed")
    return "\n".join(lines)


class _VersionAction(argparse._VersionAction):
    """--version: our version text. An argparse version action, so that configargparse makes no DEVOURER_VERSION
    of it (an image's DEVOURER_VERSION=0.1.0 label would print the version instead of capturing)."""

    def __init__(self, option_strings, dest=configargparse.SUPPRESS, default=configargparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def default_workers() -> int:
    return min(MAX_WORKERS, max(1, (os.cpu_count() or 2) - 1))


def build_parser() -> _Parser:
    parser = _Parser(prog="devourer", description="Bidirectional network flow collector: reads packets with "
                     "libpcap (live or from files), writes one JSON record per flow.")
    parser.add_argument("-V", "--version", action=_VersionAction,
                        help="print the versions of devourer, Python, libpcap and key libraries, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("version", help="print the versions of devourer, Python, libpcap and key libraries")
    nm = sub.add_parser("names", help="print the names a capture file teaches (no flows)",
                        description="Read capture files with the same decoder and name extractors as 'capture' and "
                                    "print one row per distinct name observation: source, kind, name, value.")
    nm.add_argument("-r", "--read-file", action="append", metavar="FILE", required=True,
                    help="pcap or pcapng file; repeat for several")
    nm.add_argument("--json", action="store_true", help="one JSON object per observation, with its packet time")
    cap = sub.add_parser(
        "capture", help="capture packets and write flow records",
        description="Capture packets from an interface (-i) or capture files (-r, repeatable) and write one JSON "
                    "record per bidirectional flow. Every flag can also be set as DEVOURER_<FLAG> in the "
                    "environment or as 'flag = value' in a config file (-c); flag > env > file > default.",
        auto_env_var_prefix="DEVOURER_", args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message="config file of 'flag = value' lines (e.g. conf/devourer.conf)",
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter)
    for add_flags in (_add_input_flags, _add_output_flags, _add_bigquery_flags, _add_flow_flags, _add_operation_flags,
                      _add_engine_flags):
        add_flags(cap)
    cap.add_argument("-V", "--version", action=_VersionAction,
                     help="print the versions and exit (as 'devourer version')")
    _add_query_parser(sub)
    parser.capture_parser = cap  # its flags are the DEVOURER_* variables and the config file's keys
    return parser


def _add_query_parser(sub) -> None:
    q = sub.add_parser(
        "query", help="ask the flows questions, goQuery-style: top talkers, conversations, ports, time series",
        description="Aggregate flows from the flow store (-o parquet), JSON-lines files (-o file) or BigQuery "
                    "(-o bigquery) by the attributes of QUERY and print the groups with the most bytes. The store "
                    "and the BigQuery connection can also be set as DEVOURER_STORE and DEVOURER_BIGQUERY_* "
                    "in the environment, as for capture.",
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("query", metavar="QUERY",
                   help="a query type (talk_src, talk_dst, talk_conv, apps_port, agg_talk_port, raw) or a comma "
                        "list of attributes: sip dip sport dport proto time iface sensor vlan src_names dst_names "
                        "status end_reason tunnel")
    q.add_argument("-c", "--condition", metavar="COND",
                   help="which flows: goQuery's conditions, e.g. \"dport = 443 & (host = 10.0.0.1 | net = "
                        "192.168.0.0/16)\", \"proto = udp and not dnet = 10.0.0.0/8\", \"name ~ 'example\\.com$'\"")
    q.add_argument("-i", "--iface", metavar="IFACES", help="only flows of these interfaces (a comma list)")
    q.add_argument("-f", "--first", metavar="TIME",
                   help="from this time (of a flow's first packet): 2026-11-30, 2026-11-30T10:00:00Z, unix seconds, "
                        "or relative: -1d, -15d:04h, -90m; default: 30 days before --last")
    q.add_argument("-l", "--last", metavar="TIME", help="up to this time (included), as --first; default: now")
    q.add_argument("--resolution", default="auto", metavar="5m|1h|1d|auto",
                   help="with 'time' among the attributes: the width of a time bucket; auto: 5m up to 2 days, "
                        "1h up to 60 days, else 1d")
    q.add_argument("-s", "--sort-by", choices=["bytes", "packets", "time"], default="bytes",
                   help="order the groups by their bytes, packets (sent and received) or time")
    q.add_argument("-a", "--ascending", action="store_true", help="smallest first")
    q.add_argument("-n", "--limit", type=_count_in(1, 1_000_000_000, zero_ok=True), default=20, metavar="N",
                   help="show this many groups; 0: all")
    q.add_argument("--sum", action="store_true", help="print the totals only")
    q.add_argument("-e", "--format", choices=["txt", "csv", "json"], default="txt",
                   help="txt: a table with human units; csv: plain numbers; json: one object with rows, totals, hits")
    src = q.add_argument_group("source (the flow store unless -r or --bigquery)")
    src.add_argument("--store", default="devourer-store", metavar="DIR", env_var="DEVOURER_STORE",
                     help="the flow store that capture -o parquet --store DIR writes")
    src.add_argument("-r", "--read-file", action="extend", nargs="+", metavar="FILE",
                     help="JSON-lines files as capture -o file writes them (rotated .gz ones too)")
    src.add_argument("--bigquery", action="store_true",
                     help="the table that capture -o bigquery fills (with the BigQuery flags below)")
    _add_bigquery_connection_flags(q.add_argument_group("BigQuery (--bigquery; the key as "
                                                        "DEVOURER_BIGQUERY_SA_KEY_DATA or --bigquery-sa-key-file)"))


def _add_input_flags(cap) -> None:
    src = cap.add_argument_group("input")
    src.add_argument("-i", "--interface", action="append", metavar="IFACE",
                     help="capture live from this network interface; repeat it (or give a comma list, as in "
                          "DEVOURER_INTERFACE=eth0,eth1) to capture several at once: each record says its "
                          "'interface', and flows on different interfaces are kept apart")
    src.add_argument("-r", "--read-file", action="extend", nargs="+", metavar="FILE",
                     help="read these pcap or pcapng files ('-' for stdin), in order (-r dir/*.pcap as the shell "
                          "expands it; repeatable); compressed ones too (gzip, zstd, xz, bzip2: known by their bytes), "
                          "and directories (every capture in one, in the order of its first packet, as tcpdump's "
                          "-C/-G rotation writes them)")
    src.add_argument("words", nargs="*", metavar="FILE... EXPRESSION",
                     help="capture files (those that exist), then a BPF filter expression as tcpdump takes it "
                          "(devourer capture -i eth0 tcp port 80); the same as -r and --bpf")
    src.add_argument("--bpf", metavar="FILTER", help="BPF filter expression (tcpdump syntax): the packets counted in "
                     "flows; rejected packets are counted as filtered, and the name packets among them still teach "
                     "names (--bpf 'not port 53' keeps the DNS names). Live, the kernel passes the filter's packets "
                     "and the name ports' (DNS, mDNS, LLMNR, NBNS, DHCP, TLS handshakes over IPv4, untagged or "
                     "under one VLAN tag); names inside tunnels pass only where the filter passes them")
    src.add_argument("--count", type=_count_in(1, MAX_COUNT, zero_ok=True), default=0, metavar="N",
                     help="stop after N packets, as tcpdump's -c (those --bpf keeps; the ones it rejects before the "
                          "Nth are counted as filtered); the flows are written as at the end of the input. Live "
                          "with several readers the run stops once N are read in all, a few more may be counted; "
                          "0: no limit")
    src.add_argument("--decapsulate", choices=["auto", "none"], default="auto",
                     help="auto: count a tunnelled packet in its inner flow (PPPoE, MPLS, GRE, ERSPAN, VXLAN, Geneve, "
                          "GTP-U, L2TP, IP-in-IP; the record's 'tunnel' says which); none: in the outer flow, tunnel "
                          "payloads unopened")
    src.add_argument("--snaplen", type=_count_in(1, MAX_SNAPLEN), default=262144,
                     help="live: bytes captured per packet")
    src.add_argument("--promisc", type=_typed(_bool, "boolean"), default=True, metavar="BOOL",
                     help="live: put the interface in promiscuous mode")
    src.add_argument("--buffer-size", type=_size_in(64 << 10, MAX_BUFFER), default="64M",
                     help="live: kernel capture buffer size")


def _add_output_flags(cap) -> None:
    out = cap.add_argument_group("output")
    out.add_argument("-o", "--output", choices=["stdout", "file", "bigquery", "parquet"], default=None,
                     help="where flow records go (parquet: the local flow store, --store); default stdout, or file "
                          "with -w")
    out.add_argument("-w", "--write-file", metavar="PATH",
                     help="JSON-lines file to append to (-o file; -w alone means -o file, as tcpdump's -w)")
    out.add_argument("--store", default="devourer-store", metavar="DIR",
                     help="with -o parquet: the flow store, Parquet files by date and hour (DIR/date=.../hour=.../)")
    out.add_argument("--store-flush-interval", type=_duration_in(1, 3600), default="10s",
                     help="with -o parquet: flows are in the store's files (queryable) at most this long after "
                          "they end")
    out.add_argument("--store-retention", type=_duration_in(3600, 100 * 366 * DAY, zero_ok=True), default="0",
                     help="with -o parquet: remove the store's hours that ended longer ago than this (e.g. 30d; by "
                          "the wall clock, checked at start and hourly); 0: keep all")
    out.add_argument("-s", "--stat-interval", type=_duration_in(0.1, DAY, zero_ok=True), default="0",
                     help="print a statistics line on stderr this often (e.g. 10s); 0: never")
    out.add_argument("--sensor-id", type=_typed(_sensor_id, "sensor id"), default=socket.gethostname(),
                     help="name of this sensor; part of every flow id and written as 'sensor'")
    out.add_argument("--community-id-seed", type=_count_in(0, 65535, zero_ok=True), default=0,
                     help="the seed of every record's Community ID (as Zeek's and Suricata's community-id seed: "
                          "give theirs to join their logs); 0-65535")
    out.add_argument("--rotate-size", type=_size_in(1, 1 << 40, zero_ok=True), default="0",
                     help="with -o file: start a new file once the current one reaches this size (e.g. 1G); "
                          "the old one is renamed with the time and compressed (gzip); 0: never")
    out.add_argument("--rotate-interval", type=_duration_in(1, 366 * DAY, zero_ok=True), default="0",
                     help="with -o file: start a new file at every multiple of this wall-clock interval (e.g. 1h, "
                          "1d: on the hour, at midnight UTC); 0: never")
    out.add_argument("--rotate-keep", type=_count_in(1, 1_000_000, zero_ok=True), default=0,
                     help="with rotation: keep at most this many old files, deleting the oldest; 0: keep all")


def _add_bigquery_flags(cap) -> None:
    bq = cap.add_argument_group("BigQuery output (-o bigquery)")
    _add_bigquery_connection_flags(bq)
    bq.add_argument("--bigquery-sa-key-data", metavar="JSON",
                    help="the service-account key itself, only as DEVOURER_BIGQUERY_SA_KEY_DATA or in the config "
                         "file (for containers): on the command line every local user could read it with ps")
    bq.add_argument("--bigquery-flush-interval", type=_duration_in(0.01, 3600), default="5s",
                    help="send a partial batch after this long")
    bq.add_argument("--spool-dir", default="devourer-spool", metavar="DIR",
                    help="rows wait here while BigQuery is unreachable, and are sent from here when it is back "
                         "(also after a restart)")
    bq.add_argument("--spool-max-size", type=_size_in(1 << 20, 1 << 40), default="1G",
                    help="the spool's bound; rows that do not fit are counted as dropped")


def _add_bigquery_connection_flags(bq) -> None:
    """The flags that say which table and how to reach it: the capture's, and the query's (--bigquery)."""
    bq.add_argument("--bigquery-project-id", "--bq-project-id", metavar="PROJECT",
                    env_var="DEVOURER_BIGQUERY_PROJECT_ID",
                    help="project of the dataset (env also DEVOURER_BQ_PROJECT_ID)")
    bq.add_argument("--bigquery-dataset-id", "--bq-dataset", metavar="DATASET",
                    env_var="DEVOURER_BIGQUERY_DATASET_ID",
                    help="dataset that holds the table; it must exist (env also DEVOURER_BQ_DATASET)")
    bq.add_argument("--bigquery-table", default="flow_logs", metavar="TABLE", env_var="DEVOURER_BIGQUERY_TABLE",
                    help="table, created DAY-partitioned on first_seen_at if absent")
    bq.add_argument("--bigquery-sa-key-file", "--bq-sa-key-file", metavar="PATH",
                    env_var="DEVOURER_BIGQUERY_SA_KEY_FILE",
                    help="service-account key file; default: application default credentials "
                         "(env also DEVOURER_BQ_SA_KEY_FILE)")
    bq.add_argument("--bigquery-endpoint", metavar="URL", env_var="DEVOURER_BIGQUERY_ENDPOINT",
                    help="API endpoint (an emulator or a private endpoint); anonymous unless a key is given")


def _add_flow_flags(cap) -> None:
    flows = cap.add_argument_group("flows")
    flows.add_argument("--flow-timeout", type=_duration_in(1e-3, MAX_TIMEOUT_S), default="120s",
                       help="a flow idle this long (packet time) is written out")
    flows.add_argument("--active-timeout", type=_duration_in(1e-3, MAX_TIMEOUT_S, zero_ok=True), default="1800s",
                       help="a flow longer than this is cut and written in segments; 0 disables")
    flows.add_argument("--max-flows", type=_count_in(1, MAX_FLOWS), default=4_000_000,
                       help="flows held in memory at most (all workers); when full the longest-idle are "
                            "written early (end_reason evicted)")
    names = cap.add_argument_group("names")
    names.add_argument("--names", type=_typed(_bool, "boolean"), default=True, metavar="BOOL",
                       help="learn host names from DNS, mDNS, LLMNR, NBNS, DHCP, DHCPv6 and TLS SNI and put them "
                            "on flows")
    names.add_argument("--max-names", type=_count_in(1, MAX_NAMES), default=1_000_000,
                       help="addresses (and MACs) the name map holds at most; least recently seen out first")
    names.add_argument("--name-lifetime", type=_duration_in(1, MAX_TIMEOUT_S), default="1h",
                       help="how long a name holds when the packet gives no lifetime (TLS SNI, NBNS, DHCP "
                            "without lease time)")


def _add_operation_flags(cap) -> None:
    ops = cap.add_argument_group("operation")
    ops.add_argument("--log-level", choices=(*logs.LEVELS, "warn"), default=None,
                     help="least severe log line written (stats and the summary are info); default info, "
                          "warning with --quiet")
    ops.add_argument("--log-format", choices=logs.FORMATS, default="console",
                     help="console: 'devourer: ...' lines; json: one JSON object per line with time, level, "
                          "process role and the counters of stats lines")
    ops.add_argument("--log-output", default="stderr", metavar="stderr|stdout|PATH",
                     help="where log lines go: stderr, stdout (when the flows go elsewhere) or a file (appended; "
                          "reopened after logrotate moves it)")
    ops.add_argument("-q", "--quiet", action="store_true", default=False,
                     help="no progress bar, and only warnings and errors in the log (unless --log-level is given)")
    ops.add_argument("--progress", type=_typed(_bool, "boolean"), default=True, metavar="BOOL",
                     help="replaying files with stderr on a terminal: show a progress bar (bytes read, packets/s, "
                          "flows, time left)")
    ops.add_argument("--user", metavar="NAME",
                     help="run as this user once the capture handle, output files and metrics port are open "
                          "(as tcpdump -Z); needs root")
    ops.add_argument("--group", metavar="NAME", help="with --user: run as this group (default: the user's)")
    ops.add_argument("--metrics-port", type=_count_in(1, 65535, zero_ok=True), default=0, metavar="PORT",
                     help="serve Prometheus metrics over HTTP on this port (/metrics); 0: off")
    ops.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDRESS",
                     help="address the metrics server listens on (default: this host only; 0.0.0.0 or :: for every "
                          "interface, for a Prometheus elsewhere)")


def _add_engine_flags(cap) -> None:
    eng = cap.add_argument_group("engine")
    eng.add_argument("--workers", type=_count_in(1, MAX_WORKERS), default=default_workers(),
                     help="flow-table worker processes")
    eng.add_argument("--readers", type=_count_in(1, MAX_READERS), default=1,
                     help="capture processes: replaying classic pcap files, each reads chunks of the files (the "
                          "records are the same as with one); live, each reads its share of the interface's flows "
                          "(PACKET_FANOUT). Pays on many cores, where one reader cannot keep the workers busy")
    eng.add_argument("--chunk-size", type=_count_in(1, 1 << 24), default=65536,
                     help="with several readers: packets per chunk of a file")
    eng.add_argument("--batch-size", type=_count_in(1, MAX_BATCH), default=4096,
                     help="packets read from libpcap per batch")
    eng.add_argument("--ring-size", type=_count_in(1, MAX_RING_SLOTS), default=65536,
                     help="packet records per worker ring (rounded up to a power of two)")
    eng.add_argument("--shutdown-timeout", type=_duration_in(0.1, DAY), default="60s",
                     help="on SIGTERM/SIGINT, wait this long for the orderly drain before killing")


_PROJECT = re.compile(r"^[a-z0-9][a-z0-9.:-]{0,127}$")  # incl. legacy domain-scoped ids (example.com:project)
_DATASET_OR_TABLE = re.compile(r"^\w{1,1024}$")
_ENDPOINT = re.compile(r"^https?://[^\s/?#]+(/[^\s]*)?$")


def apply_bigquery_aliases(args) -> None:
    """The original tool's environment spellings, where the flag and DEVOURER_BIGQUERY_* give nothing."""
    for name, alias in (("bigquery_project_id", "DEVOURER_BQ_PROJECT_ID"), ("bigquery_dataset_id", "DEVOURER_BQ_DATASET"),
                        ("bigquery_sa_key_file", "DEVOURER_BQ_SA_KEY_FILE")):
        if getattr(args, name) is None and os.environ.get(alias):
            setattr(args, name, os.environ[alias])


def check_bigquery_names(args) -> None:
    """Names that BigQuery would refuse at every request are refused here, before any capture."""
    for flag, value, pattern, what in (
            ("--bigquery-project-id", args.bigquery_project_id, _PROJECT,
             "lower-case letters, digits, '-', '.', ':', at most 128"),
            ("--bigquery-dataset-id", args.bigquery_dataset_id, _DATASET_OR_TABLE,
             "letters, digits, '_', at most 1,024"),
            ("--bigquery-table", args.bigquery_table, _DATASET_OR_TABLE, "letters, digits, '_', at most 1,024")):
        if not pattern.match(value):
            raise UsageError(f"{flag} {value!r}: not a BigQuery name ({what})")
    if args.bigquery_endpoint and not _ENDPOINT.match(args.bigquery_endpoint):
        raise UsageError(f"--bigquery-endpoint {args.bigquery_endpoint!r}: not an http:// or https:// URL")


# The words a BPF expression can start with (pcap-filter(7): qualifiers, protocols, the other primitives,
# negation); "tcp[13] & 2 != 0" starts with tcp too.
_BPF_FIRST_WORDS = frozenset("""
    dst src host ether gateway net port portrange less greater ip ip6 proto protochain broadcast multicast vlan mpls
    pppoed pppoes geneve iso clnp esis isis l1 l2 iih lsp snp csnp psnp tcp udp icmp icmp6 igmp igrp pim ah esp vrrp
    carp sctp arp rarp atalk aarp decnet ipx netbeui stp lat moprc mopdl sca llc ifname on rnr rulenum reason rset
    ruleset srnr subrulenum action type subtype dir wlan inbound outbound ifindex len link ppp slip fddi tr radio not
""".split())


def _starts_expression(word: str) -> bool:
    return word[:1] in ("(", "!") or word.split("[", 1)[0].lower() in _BPF_FIRST_WORDS


def _files_and_expression(args) -> tuple[tuple[str, ...], str | None]:
    """The capture files and the filter among the words given after -r and after the options: files up to the
    first word a BPF expression starts with (``host``, ``tcp``, ``not``, ``(`` ...; the first word after -r is
    always a file), then the expression, as tcpdump takes it after its options."""
    given = list(args.read_file or ())
    files, words = given[:1], [*given[1:], *args.words]
    while words and not _starts_expression(words[0]):
        files.append(words.pop(0))
    return tuple(files), " ".join(words) or None


def capture_files(paths) -> tuple[str, ...]:
    """The paths given, each directory replaced by the captures in it in the order of their first packet
    (``packet.archives``, as tcpdump's -C/-G rotation writes them)."""
    files: list[str] = []
    for path in paths:
        if path != "-" and os.path.isdir(path):
            from devourer.packet.archives import capture_files_in  # the compiled readers: not for --help

            try:
                found = capture_files_in(path)
            except OSError as e:
                raise SourceError(f"capture directory {path}: {e.strerror}") from None
            if not found:
                raise SourceError(f"capture directory {path}: no capture files in it (pcap, pcapng, or those "
                                  "compressed with gzip, zstd, xz or bzip2)")
            files.extend(found)
        else:
            files.append(path)
    return tuple(files)


MAX_INTERFACES = 64  # live interfaces one run captures (a capture process each)
IFNAMSIZ = 16  # Linux: an interface name is at most 15 bytes


def _interfaces(given: list[str] | None) -> tuple[str, ...]:
    """-i values (each may be a comma list) -> interface names, checked: none empty, too long or twice."""
    names: list[str] = []
    for value in given or ():
        if not value.strip():  # DEVOURER_INTERFACE= (set, empty): as if not set
            continue
        for name in value.split(","):
            name = name.strip()
            if not name:
                raise UsageError(f"-i/--interface {value!r}: an empty interface name")
            if len(name.encode()) >= IFNAMSIZ or any(c.isspace() or c == "/" for c in name):
                raise UsageError(f"-i/--interface {name!r}: not an interface name (at most {IFNAMSIZ - 1} "
                                 "bytes, no spaces or '/')")
            if name in names:
                raise UsageError(f"-i/--interface {name!r} is given twice")
            names.append(name)
    if len(names) > MAX_INTERFACES:
        raise UsageError(f"-i/--interface: {len(names)} interfaces; at most {MAX_INTERFACES} in one run")
    return tuple(names)


#: DEVOURER_* variables that are no flag's: the query's store, the key, the original tool's spellings, the
#: tests' and benchmarks' shared folder
_OTHER_VARIABLES = {"DEVOURER_STORE", "DEVOURER_BIGQUERY_SA_KEY_DATA", "DEVOURER_BQ_PROJECT_ID",
                    "DEVOURER_BQ_DATASET", "DEVOURER_BQ_SA_KEY_FILE", "DEVOURER_SHARED"}


def unknown_variables(parser: configargparse.ArgumentParser, environ=os.environ) -> list[str]:
    """One warning per DEVOURER_* variable that sets nothing (a misspelt one would be ignored silently),
    naming the closest known one. The known ones are those configargparse gave ``parser``'s flags (after a
    parse) and ``_OTHER_VARIABLES``."""
    import difflib

    known = _OTHER_VARIABLES | {a.env_var for a in parser._actions if getattr(a, "env_var", None)}
    out = []
    for name in sorted(n for n in environ if n.startswith("DEVOURER_") and n not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        out.append(f"{name} in the environment is no setting of devourer's and is ignored{hint}")
    return out


def _given_on_command_line(files_after_options: bool) -> set[str]:
    """Which of the two sources the command line itself gives (rather than DEVOURER_* or the config file)."""
    given = {"read_file"} if files_after_options or _on_command_line("--read-file", "-r") else set()
    return given | ({"interface"} if _on_command_line("--interface", "-i") else set())


def _output_of(args) -> str:
    """-o as given, else file where -w names one (as tcpdump's -w), else stdout."""
    return args.output or ("file" if args.write_file else "stdout")


def settings_from_args(args) -> Settings:
    files, expression = _files_and_expression(args)
    files_after_options = len(files) > len(args.read_file or ())
    files = capture_files(files)
    args.interface = _interfaces(args.interface)
    if expression is not None and args.bpf:
        raise UsageError(f"give the filter once: --bpf {args.bpf!r} or the expression {expression!r} after the "
                         "options")
    if expression is not None and not args.interface and not files:
        raise UsageError("nothing to capture from: give -i INTERFACE or -r FILE (the filter is not a file)")
    bpf = args.bpf or expression
    if args.interface and files:  # one from the environment or the config file: the command line's wins
        on_line = _given_on_command_line(files_after_options)
        if on_line == {"interface"}:
            files = ()
        elif on_line == {"read_file"}:
            args.interface = ()
        else:
            raise UsageError("give either -i/--interface or -r/--read-file, not both")
    if not args.interface and not files:
        raise UsageError("nothing to capture from: give -i INTERFACE or -r FILE")
    args.output = _output_of(args)
    if args.output == "file" and not args.write_file:
        raise UsageError("-o file needs -w/--write-file PATH")
    apply_bigquery_aliases(args)
    if args.output == "bigquery" and not (args.bigquery_project_id and args.bigquery_dataset_id):
        raise UsageError("-o bigquery needs --bigquery-project-id and --bigquery-dataset-id")
    if args.output == "bigquery":
        check_bigquery_names(args)
    if args.write_file and args.output != "file":
        raise UsageError("-w/--write-file is only used with -o file")
    if (args.rotate_size or args.rotate_interval) and args.output != "file":
        raise UsageError("--rotate-size and --rotate-interval are only used with -o file")
    if args.batch_size > args.ring_size:
        raise UsageError(f"--batch-size {args.batch_size} is larger than --ring-size {args.ring_size}: a batch "
                         "must fit in a ring")
    run_as = None
    if args.group and not args.user:
        raise UsageError("--group is only used with --user")
    if args.user:
        run_as = resolve_user(args.user, args.group)
        if os.geteuid() != 0 and (run_as[0], run_as[1]) != (os.geteuid(), os.getegid()):
            raise UsageError(f"--user {args.user}: only root can change to another user")
    ring = 1 << max(0, (args.ring_size - 1).bit_length())
    return Settings(
        read_files=files, interfaces=args.interface, output=args.output, write_file=args.write_file,
        stat_interval_s=args.stat_interval, workers=args.workers, readers=args.readers,
        chunk_packets=args.chunk_size, count=args.count, flow_timeout_s=args.flow_timeout,
        active_timeout_s=args.active_timeout, max_flows=args.max_flows, bpf=bpf,
        decapsulate=args.decapsulate == "auto", snaplen=args.snaplen,
        promisc=args.promisc, buffer_size=args.buffer_size, batch_packets=args.batch_size, ring_slots=ring,
        sensor_id=args.sensor_id, community_id_seed=args.community_id_seed,
        shutdown_timeout_s=args.shutdown_timeout, resolve_names=args.names,
        max_names=args.max_names, name_lifetime_s=args.name_lifetime,
        bigquery_project_id=args.bigquery_project_id, bigquery_dataset_id=args.bigquery_dataset_id,
        bigquery_table=args.bigquery_table, bigquery_sa_key_file=args.bigquery_sa_key_file,
        bigquery_sa_key_data=args.bigquery_sa_key_data, bigquery_endpoint=args.bigquery_endpoint,
        bigquery_flush_interval_s=args.bigquery_flush_interval, spool_dir=args.spool_dir,
        store_dir=args.store, store_flush_interval_s=args.store_flush_interval,
        store_retention_s=args.store_retention,
        spool_max_bytes=args.spool_max_size, rotate_bytes=args.rotate_size, rotate_interval_s=args.rotate_interval,
        rotate_keep=args.rotate_keep, progress=args.progress and not args.quiet,
        metrics_port=args.metrics_port, metrics_address=args.metrics_address, run_as=run_as)


def _configure_logs(args) -> None:
    """The log first, so that every later error is written where and as asked; with --user, the log file is
    opened with that user's rights (root follows no path in a folder the user controls)."""
    level = {"warn": "warning"}.get(args.log_level, args.log_level) or ("warning" if args.quiet else "info")
    try:
        if args.log_output == "stdout" and _output_of(args) == "stdout":
            raise UsageError("--log-output stdout: the flow records go to stdout; log to stderr or a file, or "
                             "write the flows elsewhere (-w PATH, -o parquet, -o bigquery)")
        run_as = resolve_user(args.user, args.group) if args.user and os.geteuid() == 0 else None
        logs.configure(level, args.log_format, args.log_output, run_as)
    except UsageError:
        logs.configure()
        raise
    except OSError as e:
        logs.configure()
        who = f" as user {args.user} (--user)" if run_as else ""
        raise SourceError(f"cannot open --log-output {args.log_output}{who}: {e.strerror}") from None


KEY_VARIABLE = "DEVOURER_BIGQUERY_SA_KEY_DATA"


def _keep_key_out_of_sight(args, argv: list[str]) -> None:
    """Key material never stays where other local users can read it: refused on the command line (argv is in
    every process's /proc/PID/cmdline, for anyone), taken out of the environment once read (children would
    inherit it, and /proc/PID/environ shows it to the same user)."""
    key = args.bigquery_sa_key_data
    if key and any(key in a for a in argv):
        raise UsageError("--bigquery-sa-key-data on the command line is visible to every local user (ps); give the "
                         f"key as {KEY_VARIABLE}, in the config file, or as a file (--bigquery-sa-key-file)")
    if KEY_VARIABLE in os.environ:
        scrub_environment(KEY_VARIABLE)


def _config_path(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return "the config file"


def _relative_times(argv: list[str]) -> list[str]:
    """``query -f -30d`` as goQuery takes it: argparse would read -30d as an option, --first=-30d it reads."""
    if not argv or argv[0] != "query":
        return argv
    out = []
    for arg in argv:
        if out and out[-1] in ("-f", "--first", "-l", "--last") and arg.startswith("-"):
            out[-1] = f"{'--first' if out[-1] in ('-f', '--first') else '--last'}={arg}"
        else:
            out.append(arg)
    return out


def main(argv=None) -> int:
    """The ``devourer`` command. A closed standard output (``devourer names --json | head``) ends it quietly with
    exit 0, as tcpdump, nfdump and jq end: the reader has what it wanted."""
    try:
        return _main(argv)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would raise it again
        return EXIT_OK


def _main(argv=None) -> int:
    parser = build_parser()
    argv = _relative_times(sys.argv[1:] if argv is None else list(argv))
    _COMMAND_LINE[:] = argv
    try:
        args = parser.parse_args(argv)
    except UnicodeDecodeError as e:  # configargparse reads the file as text
        sys.stderr.write(f"devourer: error: {_config_path(argv)}: not a text file (byte {e.object[e.start]:#04x} at "
                         f"offset {e.start} is not UTF-8)\n")
        return EXIT_USAGE
    if args.command == "version":
        print(version_text())
        return EXIT_OK
    if args.command == "names":
        try:
            return _names(Settings(read_files=capture_files(args.read_file)), args.json)
        except DevourerError as e:
            print(f"devourer: error: {e}", file=sys.stderr)
            return e.exit_status
    if args.command == "query":
        try:
            from devourer.query.command import run as run_query

            return run_query(args)
        except DevourerError as e:
            print(f"devourer query: error: {e}", file=sys.stderr)
            return e.exit_status
    if args.command != "capture":
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        _configure_logs(args)
        for text in unknown_variables(parser.capture_parser):
            logs.emit("warning", text)
        _keep_key_out_of_sight(args, argv)
        settings = settings_from_args(args)
        # The engine's imports and warm-up create a few hundred thousand long-lived objects (numba):
        # collecting while they are made only costs time; the supervisor freezes them before forking.
        gc.disable()
        from devourer.engine.supervisor import run

        return run(settings)
    except DevourerError as e:
        logs.emit("error", str(e))
        return e.exit_status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _names(settings: Settings, as_json: bool) -> int:
    """`devourer names`: the observations of the files, printed; EXIT_DAMAGED when a file was damaged."""
    from devourer.engine.inprocess import observations
    from devourer.names import dump

    obs, _, errors = observations(settings)
    dump.write(obs, as_json, sys.stdout.write)
    for e in errors:
        print(f"devourer: {e}", file=sys.stderr)
    return EXIT_DAMAGED if errors else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
