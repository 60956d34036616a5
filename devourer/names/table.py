"""The name map: which names hold for an address (or a MAC) during which time.

Fed with ``extract.Observation``s stamped with their packet's time; asked for
the names of a flow endpoint during the flow. Time is data (microseconds of
packet time); nothing here reads a clock. Bounded: at most ``max_entries``
addresses and MACs each, least recently observed out first (counted), and at
most ``MAX_NAMES_PER_KEY`` names per address or MAC (MACs per address), the least
recently observed out first (counted as capped): anyone who can send a DNS
answer onto the link can give one address any number of names, and every record
of that address would carry them all.

Why 32: a real host rarely has more than a handful of names at once; a DNS answer
names an address with its query, owner and CNAME chain (resolvers follow at most
8-16 links), and a shared CDN or cloud front-end address serves many names, which
a busy network sees a few dozen of within a TTL. 32 keeps those, and bounds a
record's names to 32 x 253 characters per endpoint (``names_for`` cuts a longer
union of address and MAC names to the same bound, counted too).

A name learned for a MAC (DHCP host names, DHCPv6 FQDNs, mDNS/LLMNR/NBNS
announcements) reaches an address only through a binding of that address to
that MAC seen on the wire (a DHCP lease, or the announcement itself) -- never
because a flow's packets came through that MAC, which for remote peers is the
gateway's.

Addresses are keyed by ``addr_key``, the integer of their bytes. The table
also keeps the 64-bit ``fingerprint`` of every address it holds, which the
exporter computes for whole columns of flow rows with numpy: asking "does this
endpoint have a name" is then one set intersection per batch, in C; only the
few endpoints that pass are looked up exactly.
"""

import socket
from collections import OrderedDict

from devourer.flow.key import V6_TAG, fingerprint
from devourer.names.extract import Observation

MAX_INTERVALS = 8
MAX_NAMES_PER_KEY = 32  # names per address or MAC, MACs per address (see above)
ADDRESS_KINDS = {"A", "AAAA", "PTR", "NB", "NBSTAT", "sni"}
MAC_KINDS = {"hostname", "fqdn", "client_fqdn"}



def addr_key(addr: str | int) -> int:
    """Address text -> the integer of its bytes in row order (IPv6 tagged above 2**128)."""
    if isinstance(addr, int):
        return addr
    if ":" in addr:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "little") | V6_TAG
    return int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "little")


def _add_interval(intervals: list, start: int, end: int) -> None:
    """Add [start, end] to a short list of disjoint intervals, merging overlaps."""
    for iv in intervals:
        if start <= iv[1] and iv[0] <= end:
            iv[0], iv[1] = min(iv[0], start), max(iv[1], end)
            return
    intervals.append([start, end])
    if len(intervals) > MAX_INTERVALS:
        intervals.sort()
        a, b = intervals.pop(0), intervals.pop(0)
        intervals.insert(0, [a[0], max(a[1], b[1])])


def _overlaps(intervals: list, start: int, end: int) -> bool:
    for a, b in intervals:
        if a <= end and start <= b:
            return True
    return False


class _Bounded(OrderedDict):
    """key -> {value: intervals}, least recently touched first; each key's values in order of first observation."""

    def __init__(self, limit: int, per_key: int = MAX_NAMES_PER_KEY):
        super().__init__()
        self.limit = limit
        self.per_key = per_key
        self.evicted = 0  # keys pushed out
        self.capped = 0  # values pushed out of a full key

    def add(self, key, value, start: int, end: int) -> None:
        entry = self.get(key)
        if entry is None:
            entry = self[key] = {}
            if len(self) > self.limit:
                self.popitem(last=False)
                self.evicted += 1
        else:
            self.move_to_end(key)
        intervals = entry.get(value)
        if intervals is None:
            if len(entry) >= self.per_key:  # out goes the value whose validity ends first (observed longest ago)
                del entry[min(entry, key=lambda v: max(iv[1] for iv in entry[v]))]
                self.capped += 1
            intervals = entry[value] = []
        _add_interval(intervals, start, end)

    def during(self, key, start: int, end: int) -> list:
        entry = self.get(key)
        if not entry:
            return []
        return [v for v, ivs in entry.items() if _overlaps(ivs, start, end)]


class NameTable:
    def __init__(self, max_entries: int = 1_000_000, default_ttl_s: int = 3600):
        self.default_ttl_us = int(default_ttl_s * 1_000_000)
        self.by_addr = _Bounded(max_entries)
        self.by_mac = _Bounded(max_entries)
        self.bindings = _Bounded(max_entries)  # address -> {mac: intervals}
        self.fingerprints: set[int] = set()  # of every address in by_addr or bindings (maybe a few more)
        self.cut = 0  # names left off a record by the per-endpoint bound

    @property
    def evicted(self) -> int:
        return self.by_addr.evicted + self.by_mac.evicted + self.bindings.evicted

    @property
    def capped(self) -> int:
        """Names (and MAC bindings) dropped by the per-address bound, plus names cut off a record."""
        return self.by_addr.capped + self.by_mac.capped + self.bindings.capped + self.cut

    def observe(self, ts_us: int, obs: Observation) -> None:
        ttl = self.default_ttl_us if obs.ttl_s is None else int(obs.ttl_s) * 1_000_000
        end = ts_us + ttl
        try:
            key = addr_key(obs.addr) if obs.addr else None
        except OSError:  # not an address: the resolver only sends ones it formatted itself
            return
        if obs.kind == "bind":
            if key is not None and obs.mac:
                self.bindings.add(key, obs.mac, ts_us, end)
                self._remember(key)
            return
        if obs.kind in ADDRESS_KINDS and key is not None:
            for name in (*obs.alias, obs.name) if obs.kind in ("A", "AAAA") else (obs.name,):
                self.by_addr.add(key, name, ts_us, end)
            self._remember(key)
        if obs.mac and obs.kind in MAC_KINDS:
            self.by_mac.add(obs.mac, obs.name, ts_us, end)

    def _remember(self, key: int) -> None:
        self.fingerprints.add(fingerprint(key))
        if len(self.fingerprints) > 2 * (len(self.by_addr) + len(self.bindings)) + 4096:
            # evicted addresses left theirs behind: start over from what is held
            self.fingerprints = {fingerprint(k) for k in (*self.by_addr, *self.bindings)}

    def names_for(self, addr: str | int, first_us: int, last_us: int) -> list[str]:
        """Names of addr (text or ``addr_key``) valid at some time during [first_us, last_us], oldest
        observation first."""
        key = addr if type(addr) is int else addr_key(addr)
        entry = self.by_addr.get(key)
        names = [v for v, ivs in entry.items() if _overlaps(ivs, first_us, last_us)] if entry else []
        if key not in self.bindings:
            return names
        for mac in self.bindings.during(key, first_us, last_us):
            for name in self.by_mac.during(mac, first_us, last_us):
                if name not in names:
                    names.append(name)
        if len(names) > MAX_NAMES_PER_KEY:
            self.cut += len(names) - MAX_NAMES_PER_KEY
            del names[MAX_NAMES_PER_KEY:]
        return names
