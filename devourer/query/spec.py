"""What a ``devourer query`` asks, checked: the attributes to group by, the condition, the time window, the
time resolution, the order and how many rows.

Query types are goQuery's names for attribute lists (``talk_conv`` is ``sip,dip``); any comma list of
attributes works too. Times are goQuery's: absolute (RFC 3339, a date, ``YYYY-MM-DD HH:MM``, unix
seconds; no zone given means UTC, the zone of the store's partitions) or relative to now (``-1d``,
``-15d:04h``, ``-90m``). A window holds the flows whose ``first_seen_at`` lies in it, both ends included.
"""

import datetime
import re
from dataclasses import dataclass

from devourer.errors import UsageError
from devourer.query.conditions import Condition

QUERY_TYPES = {
    "talk_src": ("sip",), "talk_dst": ("dip",), "talk_conv": ("sip", "dip"), "apps_port": ("dport", "proto"),
    "agg_talk_port": ("sip", "dip", "dport", "proto"), "raw": ("time", "iface", "sip", "dip", "dport", "proto"),
}
#: what a query can group by: goQuery's attributes, then the record's own fields
ATTRIBUTES = ("sip", "dip", "sport", "dport", "proto", "time", "iface", "sensor", "vlan", "src_names", "dst_names",
              "status", "end_reason", "tunnel")
ALIASES = {"src": "sip", "dst": "dip", "port": "dport", "protocol": "proto", "interface": "iface"}
SORTS = ("bytes", "packets", "time")
RESOLUTIONS = {"5m": 300, "1h": 3600, "1d": 86400}
DEFAULT_WINDOW = datetime.timedelta(days=30)
UTC = datetime.timezone.utc
_RELATIVE = re.compile(r"^-(\d+[dhms])((?::?\d+[dhms])*)$")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
EARLIEST = datetime.datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime.datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    first: datetime.datetime  # aware, UTC
    last: datetime.datetime

    @property
    def seconds(self) -> float:
        return (self.last - self.first).total_seconds()


@dataclass(frozen=True)
class Query:
    attributes: tuple[str, ...]
    condition: Condition | None
    window: Window
    resolution_s: int  # the width of a 'time' bucket; used only with 'time' among the attributes
    sort: str = "bytes"  # one of SORTS
    ascending: bool = False
    limit: int = 0  # rows shown; 0: all
    totals_only: bool = False

    @property
    def side(self) -> str:
        """'src' or 'dst': whose sent and received the counts are, by the first address attribute (sip, dip or
        their names); src where there is none."""
        for a in self.attributes:
            if a in ("sip", "src_names"):
                return "src"
            if a in ("dip", "dst_names"):
                return "dst"
        return "src"


def attributes_of(text: str) -> tuple[str, ...]:
    """A query type or a comma list of attributes -> the attributes; raises UsageError."""
    text = text.strip()
    if text.lower() in QUERY_TYPES:
        return QUERY_TYPES[text.lower()]
    out: list[str] = []
    for word in text.split(","):
        name = ALIASES.get(word.strip().lower(), word.strip().lower())
        if name not in ATTRIBUTES:
            raise UsageError(f"query: {word.strip()!r} is neither a query type ({', '.join(QUERY_TYPES)}) nor an "
                             f"attribute ({', '.join(ATTRIBUTES)})")
        if name in out:
            raise UsageError(f"query: attribute {name} given twice")
        out.append(name)
    return tuple(out)


def parse_time(text: str, now: datetime.datetime, flag: str) -> datetime.datetime:
    """-f/-l value -> an aware UTC time; raises UsageError naming the flag."""
    value = text.strip()
    m = _RELATIVE.match(value)
    if m:
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([dhms])", value))
        if seconds > 100 * 366 * 86400:
            raise UsageError(f"{flag} {text}: more than 100 years back")
        return now - datetime.timedelta(seconds=seconds)
    if value.lower() == "now":
        return now
    try:
        if value.isdigit():
            t = datetime.datetime.fromtimestamp(int(value), UTC)
        else:
            t = datetime.datetime.fromisoformat(value.replace(" ", "T", 1) if len(value) > 10 else value)
            t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"{flag} {text}: not a time (use e.g. 2026-11-30, 2026-11-30T10:00:00Z, "
                         "'2026-11-30 10:00', unix seconds, or -1d, -15d:04h, -90m)") from None
    if not EARLIEST <= t <= LATEST:
        raise UsageError(f"{flag} {text}: outside 1970-9999")
    return t


def window_of(first: str | None, last: str | None, now: datetime.datetime) -> Window:
    """-f/-l -> the window; the default is the last 30 days (goQuery's)."""
    end = parse_time(last, now, "-l/--last") if last else now
    start = parse_time(first, now, "-f/--first") if first else end - DEFAULT_WINDOW
    if start > end:
        raise UsageError(f"-f/--first {start:%Y-%m-%dT%H:%M:%SZ} is after -l/--last {end:%Y-%m-%dT%H:%M:%SZ}")
    return Window(start, end)


def resolution_of(text: str, window: Window) -> int:
    """--resolution 5m|1h|1d|auto -> seconds; auto: 5 minutes up to 2 days, an hour up to 60, else a day."""
    text = text.strip().lower()
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    if text != "auto":
        raise UsageError(f"--resolution {text}: one of {', '.join(RESOLUTIONS)}, auto")
    if window.seconds <= 2 * 86400:
        return 300
    return 3600 if window.seconds <= 60 * 86400 else 86400
