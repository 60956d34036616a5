"""Names from name-resolution packets: DNS, mDNS, LLMNR, NBNS, DHCP, DHCPv6, TLS SNI.

Each ``*_observations`` function takes one packet's L4 payload (and what the
packet says about its endpoints) and returns ``Observation``s; bytes it cannot
parse raise ``DecodeError`` and nothing else. impacket decodes NetBIOS names
(its first-level decoding); DNS-format messages, DHCP options and the TLS
ClientHello are parsed here, because impacket's DNS parser follows compression
pointers without a bound (a two-pointer loop recurses until Python gives up)
and walks every section again for each one, and its DHCP structure parser is
slow and raises bare exceptions.

Every name leaving this module is sanitized (``clean_name``): valid UTF-8,
printable, at most 253 characters; anything else is a ``DecodeError`` that the
resolver counts as malformed.
"""

import ipaddress
import socket
import struct
from typing import NamedTuple

from impacket import nmb

from devourer.errors import DecodeError

MAX_NAME_CHARS = 253
MAX_LABELS = 127
MAX_POINTER_JUMPS = 32
MAX_RECORDS = 512

T_A, T_CNAME, T_PTR, T_AAAA = 1, 5, 12, 28
NB_TYPE, NBSTAT_TYPE = 0x20, 0x21


class Observation(NamedTuple):
    """One thing a packet said about a name.

    source: dns | mdns | llmnr | nbns | dhcp | dhcpv6 | tls_sni
    kind:   A | AAAA | CNAME | PTR | NB | NBSTAT | hostname | fqdn | client_fqdn | sni | bind
    name:   the (sanitized) name; for ``bind``, empty
    addr:   the IP address (text) the name is for, if any
    mac:    the MAC address (text) the name is for, if any
    ttl_s:  how long it holds (None: the resolver's default)
    alias:  for DNS: the other names of the same answer chain (query name, CNAMEs)"""

    source: str
    kind: str
    name: str
    addr: str | None = None
    mac: str | None = None
    ttl_s: int | None = None
    alias: tuple = ()


def clean_name(raw: bytes | str) -> str:
    """The printable text of a name, or DecodeError."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("name is not UTF-8") from None
    else:
        text = raw
    if not text:
        raise DecodeError("empty name")
    if len(text) > MAX_NAME_CHARS:
        raise DecodeError("name longer than 253 characters")
    if not text.isprintable():
        raise DecodeError("name holds control characters")
    return text


# ---------------------------------------------------------------- DNS wire format
def read_name(msg: bytes, offset: int) -> tuple[str, int]:
    """A possibly compressed domain name at offset -> (text, offset after it)."""
    labels = []
    jumps = 0
    end = None
    total = 0
    while True:
        if offset >= len(msg):
            raise DecodeError("name runs past the message")
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(msg):
                raise DecodeError("truncated compression pointer")
            jumps += 1
            if jumps > MAX_POINTER_JUMPS:
                raise DecodeError("compression pointer loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | msg[offset + 1]
            continue
        if length & 0xC0:
            raise DecodeError("unknown label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(msg):
            raise DecodeError("label runs past the message")
        labels.append(msg[offset:offset + length])
        total += length + 1
        if len(labels) > MAX_LABELS or total > 255:
            raise DecodeError("name too long")
        offset += length
    return (clean_name(b".".join(labels)) if labels else "."), (end if end is not None else offset)


class DnsRecord(NamedTuple):
    name: str
    rtype: int
    ttl: int
    rdata_at: int
    rdlen: int


def parse_dns(msg: bytes) -> tuple[int, list[str], list[DnsRecord], bool]:
    """(flags, question names, resource records of every section, complete).

    A message cut short (snaplen) yields the records before the cut with
    complete=False; a header or question that cannot be read is a DecodeError."""
    if len(msg) < 12:
        raise DecodeError("DNS message shorter than its header")
    _, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    offset = 12
    questions = []
    for _ in range(min(qd, MAX_RECORDS)):
        name, offset = read_name(msg, offset)
        offset += 4
        questions.append(name)
    records = []
    try:
        for _ in range(min(an + ns + ar, MAX_RECORDS)):
            name, offset = read_name(msg, offset)
            if offset + 10 > len(msg):
                raise DecodeError("record header cut short")
            rtype, _, ttl, rdlen = struct.unpack_from("!HHIH", msg, offset)
            offset += 10
            if offset + rdlen > len(msg):
                raise DecodeError("record data cut short")
            records.append(DnsRecord(name, rtype, ttl, offset, rdlen))
            offset += rdlen
    except DecodeError:
        if not records and not questions:
            raise
        return flags, questions, records, False
    return flags, questions, records, True


def _ptr_address(owner: str) -> str | None:
    """The address a reverse-lookup name stands for (1.2.0.192.in-addr.arpa -> 192.0.2.1)."""
    low = owner.lower().rstrip(".")
    try:
        if low.endswith(".in-addr.arpa"):
            parts = low[: -len(".in-addr.arpa")].split(".")
            if len(parts) == 4:
                return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        elif low.endswith(".ip6.arpa"):
            nibbles = low[: -len(".ip6.arpa")].split(".")
            if len(nibbles) == 32:
                return str(ipaddress.IPv6Address(bytes.fromhex("".join(reversed(nibbles)))))
    except ValueError:
        return None
    return None


def dns_observations(msg: bytes, source: str = "dns", sender_mac: str | None = None) -> list[Observation]:
    """Names from a DNS-format response (DNS, mDNS, LLMNR); queries give nothing.

    An A/AAAA answer binds its address to its owner name and, through the CNAME
    records of the same message, to the names that lead to it (the query name
    among them). mDNS and LLMNR answers also name the sender's MAC."""
    flags, questions, records, _ = parse_dns(msg)
    if not flags & 0x8000:
        return []
    out = []
    cname_sources: dict[str, list[str]] = {}
    for r in records:
        if r.rtype == T_CNAME:
            target, _ = read_name(msg, r.rdata_at)
            cname_sources.setdefault(target.lower(), []).append(r.name)
            out.append(Observation(source, "CNAME", target, None, None, r.ttl, (r.name,)))
    for r in records:
        if r.rtype in (T_A, T_AAAA):
            if r.rtype == T_A and r.rdlen == 4:
                addr = socket.inet_ntop(socket.AF_INET, msg[r.rdata_at:r.rdata_at + 4])
            elif r.rtype == T_AAAA and r.rdlen == 16:
                addr = socket.inet_ntop(socket.AF_INET6, msg[r.rdata_at:r.rdata_at + 16])
            else:
                continue
            if r.ttl == 0 and source == "mdns":
                continue  # a goodbye packet
            chain, todo, seen = [], [r.name], {r.name.lower()}
            while todo and len(chain) < 16:
                for src in cname_sources.get(todo.pop().lower(), []):
                    if src.lower() not in seen:
                        seen.add(src.lower())
                        chain.append(src)
                        todo.append(src)
            for q in questions:
                if q.lower() in seen and q not in chain and q != r.name:
                    chain.append(q)
            out.append(Observation(source, "A" if r.rtype == T_A else "AAAA", r.name, addr, None, r.ttl,
                                   tuple(chain)))
            if sender_mac and source in ("mdns", "llmnr"):
                out.append(Observation(source, "bind", "", addr, sender_mac, r.ttl))
        elif r.rtype == T_PTR:
            target, _ = read_name(msg, r.rdata_at)
            out.append(Observation(source, "PTR", target, _ptr_address(r.name), None, r.ttl, (r.name,)))
    return out


# ---------------------------------------------------------------- NetBIOS name service
def _netbios_name(msg: bytes, offset: int) -> tuple[str, int]:
    """First-level decoded NetBIOS name (suffix byte stripped) and the offset after it."""
    if offset + 1 < len(msg) and msg[offset] & 0xC0 == 0xC0:  # compressed: points at an earlier name
        target = ((msg[offset] & 0x3F) << 8) | msg[offset + 1]
        if target >= offset:
            raise DecodeError("NetBIOS name pointer does not point backwards")
        name, _ = _netbios_name(msg, target)
        return name, offset + 2
    if offset >= len(msg):
        raise DecodeError("NetBIOS name runs past the message")
    try:
        end, decoded, _ = nmb.decode_name(msg[offset:])
    except Exception as e:  # impacket asserts and indexes freely; any failure is malformed input
        raise DecodeError(f"bad NetBIOS name: {e.__class__.__name__}") from None
    return _netbios_text(decoded), offset + end


def _netbios_text(decoded: str) -> str:
    return clean_name(decoded[:15].rstrip(" ").rstrip("\x00"))


def nbns_observations(msg: bytes, src_addr: str | None, sender_mac: str | None) -> list[Observation]:
    """Names from NBNS registrations (and refreshes), positive name-query responses,
    and node-status responses (the names the responding host holds)."""
    if len(msg) < 12:
        raise DecodeError("NBNS message shorter than its header")
    _, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    response = bool(flags & 0x8000)
    opcode = (flags >> 11) & 0xF
    rcode = flags & 0xF
    offset = 12
    for _ in range(min(qd, 4)):
        _, offset = _netbios_name(msg, offset)
        offset += 4
    out = []
    for _ in range(min(an + ns + ar, 16)):
        name, offset = _netbios_name(msg, offset)
        if offset + 10 > len(msg):
            raise DecodeError("NBNS record cut short")
        rtype, _, ttl, rdlen = struct.unpack_from("!HHIH", msg, offset)
        offset += 10
        rdata = msg[offset:offset + rdlen]
        offset += rdlen
        if len(rdata) < rdlen:
            raise DecodeError("NBNS record data cut short")
        if rtype == NB_TYPE and (opcode in (5, 8, 9) and not response or response and opcode == 0 and rcode == 0):
            for i in range(0, rdlen - 5, 6):
                addr = socket.inet_ntop(socket.AF_INET, rdata[i + 2:i + 6])
                out.append(Observation("nbns", "NB", name, addr, None, ttl or None))
                if sender_mac and addr == src_addr:
                    out.append(Observation("nbns", "bind", "", addr, sender_mac, ttl or None))
        elif rtype == NBSTAT_TYPE and response and rdlen >= 1:
            count = rdata[0]
            for i in range(min(count, (rdlen - 1) // 18)):
                entry = rdata[1 + 18 * i:1 + 18 * i + 16]
                try:
                    text = entry[:15].decode("ascii").rstrip(" ").rstrip("\x00")
                    out.append(Observation("nbns", "NBSTAT", clean_name(text), src_addr))
                except (UnicodeDecodeError, DecodeError):
                    continue
    return out


# ---------------------------------------------------------------- DHCP
DHCP_MAGIC = b"\x63\x82\x53\x63"
DHCPACK = 5


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _dns_wire_name(data: bytes) -> str:
    """An uncompressed DNS-format name that may lack its final zero (DHCP option 81, DHCPv6 39)."""
    labels, i = [], 0
    while i < len(data):
        n = data[i]
        if n == 0:
            break
        if n & 0xC0 or i + 1 + n > len(data):
            raise DecodeError("bad label in FQDN option")
        labels.append(data[i + 1:i + 1 + n])
        i += 1 + n
    return clean_name(b".".join(labels))


def dhcp_observations(msg: bytes) -> list[Observation]:
    """Host name (option 12) and client FQDN (option 81) for the client's MAC;
    a DHCPACK also binds the leased address to that MAC for the lease time."""
    if len(msg) < 240 or msg[236:240] != DHCP_MAGIC:
        raise DecodeError("not a DHCP message")
    htype, hlen = msg[1], msg[2]
    if htype != 1 or hlen != 6:
        return []
    mac = _mac_text(msg[28:34])
    yiaddr = socket.inet_ntop(socket.AF_INET, msg[16:20])
    names, msg_type, lease = [], None, None
    i = 240
    while i < len(msg):
        code = msg[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            break
        if i + 1 >= len(msg) or i + 2 + msg[i + 1] > len(msg):
            raise DecodeError("DHCP option runs past the message")
        value = msg[i + 2:i + 2 + msg[i + 1]]
        i += 2 + msg[i + 1]
        if code == 53 and value:
            msg_type = value[0]
        elif code == 51 and len(value) == 4:
            lease = struct.unpack("!I", value)[0]
        elif code == 12 and value:
            names.append(("hostname", clean_name(value.rstrip(b"\x00"))))
        elif code == 81 and len(value) > 3:
            flags, data = value[0], value[3:]
            text = _dns_wire_name(data) if flags & 0x04 else clean_name(data.rstrip(b"\x00"))
            names.append(("fqdn", text))
    out = [Observation("dhcp", kind, name, None, mac, lease) for kind, name in names]
    if msg_type == DHCPACK and yiaddr != "0.0.0.0":
        out.append(Observation("dhcp", "bind", "", yiaddr, mac, lease))
    return out


def dhcpv6_observations(msg: bytes, sender_mac: str | None, src_addr: str | None, depth: int = 0) -> list[Observation]:
    """Client FQDN (option 39), for the client's MAC (from its DUID, else the sender's)."""
    if len(msg) < 4:
        raise DecodeError("DHCPv6 message shorter than its header")
    msg_type = msg[0]
    if msg_type in (12, 13):  # relay-forward/reply: options start after link and peer addresses
        offset = 34
    else:
        offset = 4
    fqdn, duid_mac, inner = None, None, []
    while offset + 4 <= len(msg):
        code, length = struct.unpack_from("!HH", msg, offset)
        value = msg[offset + 4:offset + 4 + length]
        if len(value) < length:
            raise DecodeError("DHCPv6 option runs past the message")
        offset += 4 + length
        if code == 39 and length >= 1:
            fqdn = _dns_wire_name(value[1:])
        elif code == 1 and length >= 4:
            duid_type = struct.unpack_from("!H", value)[0]
            if duid_type == 1 and length == 14:
                duid_mac = _mac_text(value[8:14])
            elif duid_type == 3 and length == 10:
                duid_mac = _mac_text(value[4:10])
        elif code == 9 and depth < 4:
            inner.extend(dhcpv6_observations(value, None, None, depth + 1))
    out = list(inner)
    if fqdn:
        mac = duid_mac or (sender_mac if msg_type not in (12, 13) else None)
        out.append(Observation("dhcpv6", "client_fqdn", fqdn, None, mac))
        if mac and sender_mac == mac and src_addr:
            out.append(Observation("dhcpv6", "bind", "", src_addr, mac))
    return out


# ---------------------------------------------------------------- TLS
def tls_sni(payload: bytes) -> str | None:
    """The server name of a TLS ClientHello at the start of payload, or None if it
    holds none; DecodeError when it is not a ClientHello. A ClientHello cut short
    by the end of the segment gives its name only if the name came before the cut."""
    if len(payload) < 6 or payload[0] != 0x16 or payload[1] != 3 or payload[5] != 1:
        raise DecodeError("not a TLS ClientHello")
    p = 5 + 4 + 2 + 32  # record header, handshake header, version, random
    if p + 1 > len(payload):
        return None
    p += 1 + payload[p]  # session id
    if p + 2 > len(payload):
        return None
    p += 2 + struct.unpack_from("!H", payload, p)[0]  # cipher suites
    if p + 1 > len(payload):
        return None
    p += 1 + payload[p]  # compression methods
    if p + 2 > len(payload):
        return None
    end = min(len(payload), p + 2 + struct.unpack_from("!H", payload, p)[0])
    p += 2
    while p + 4 <= end:
        ext, length = struct.unpack_from("!HH", payload, p)
        p += 4
        if ext == 0:
            q = p + 2  # server name list length
            while q + 3 <= min(end, p + length):
                kind, n = payload[q], struct.unpack_from("!H", payload, q + 1)[0]
                if q + 3 + n > len(payload):
                    return None
                if kind == 0:
                    return clean_name(payload[q + 3:q + 3 + n])
                q += 3 + n
            return None
        p += length
    return None
