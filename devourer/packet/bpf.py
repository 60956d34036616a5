"""BPF filters run by devourer itself: libpcap compiles the expression, a compiled interpreter runs it.

``--bpf`` decides which packets are counted in flows, not which names are learned
(docs/architecture.md §3, filters), so the filter is applied where capture decodes:
replaying, to every packet read; live, to what the kernel let through, which is
the user's filter *or* the packets that may carry names (``live_kernel_filter``).
libpcap compiles the expression (``pcap_compile`` through pcapy, with the capture's
link type, as tcpdump would) and ``run_filter`` interprets the classic BPF program
over a whole batch in compiled code, as libpcap's ``bpf_filter`` does: loads past
the captured bytes reject the packet, ``len`` is the wire length; a batch is one
compiled call instead of a Python call into libpcap per packet.
"""

import numba
import numpy as np
import pcapy

from devourer.errors import UsageError

#: what may carry a name, in BPF: the name ports over UDP (DNS, mDNS, LLMNR, NBNS, DHCP, DHCPv6), DNS over
#: TCP and a TLS handshake record (IPv4: libpcap indexes tcp[] of IPv4 only), untagged or under one VLAN tag
NAME_PACKETS = ("udp port 53 or udp port 5353 or udp port 5355 or udp port 137 or udp port 67 or udp port 68 "
                "or udp port 546 or udp port 547 or tcp port 53 or (tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16)")


def live_kernel_filter(expression: str) -> str:
    """The filter the kernel applies live when names are learned: the user's, or a packet that may carry
    names; the user's filter then decides in capture which packets are counted in flows."""
    return f"({expression}) or ({NAME_PACKETS}) or (vlan and ({NAME_PACKETS}))"


def compile_filter(datalink: int, snaplen: int, expression: str) -> np.ndarray:
    """The classic BPF program of ``expression`` for this link type: (n, 4) int64 rows (code, jt, jf, k)."""
    try:
        program = pcapy.compile(datalink, snaplen, expression, 1, 0).get_bpf()
    except pcapy.PcapError as e:
        raise UsageError(f"invalid --bpf filter {expression!r}: {str(e).strip() or e.__class__.__name__}") from None
    return np.array(program, np.int64).reshape(-1, 4)


# opcode classes and fields (pcap/bpf.h)
_LD, _LDX, _ST, _STX, _ALU, _JMP, _RET, _MISC = 0, 1, 2, 3, 4, 5, 6, 7
_W, _H, _B = 0x00, 0x08, 0x10
_IMM, _ABS, _IND, _MEM, _LEN, _MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
_ADD, _SUB, _MUL, _DIV, _OR, _AND, _LSH, _RSH, _NEG, _MOD, _XOR = (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
                                                                   0x70, 0x80, 0x90, 0xA0)
_JA, _JEQ, _JGT, _JGE, _JSET = 0x00, 0x10, 0x20, 0x30, 0x40
_X = 0x08
_A = 0x10
_TXA = 0x80
_MASK32 = 0xFFFFFFFF


@numba.njit(cache=True, inline="always")
def _load(data, p, cap, at, size):
    """size bytes big-endian at packet offset ``at``; -1 when past the captured bytes."""
    if at < 0 or at + size > cap:
        return np.int64(-1)
    v = np.int64(0)
    for i in range(size):
        v = (v << 8) | np.int64(data[p + at + i])
    return v


@numba.njit(cache=True, inline="always")
def _run(prog, data, p, cap, wirelen, mem):
    """One packet through the program: the value of its RET (0: rejected). ``mem``: the 16 scratch words."""
    a = np.int64(0)
    x = np.int64(0)
    pc = 0
    n = prog.shape[0]
    for _ in range(n + 1):  # classic BPF only jumps forward: at most one pass over the program
        if pc >= n:
            return np.int64(0)
        code, jt, jf, k = prog[pc, 0], prog[pc, 1], prog[pc, 2], prog[pc, 3]
        cls = code & 7
        pc += 1
        if cls == _RET:
            return (a if (code & 0x18) == _A else k) & _MASK32
        if cls == _LD or cls == _LDX:
            mode = code & 0xE0
            size = 4 if (code & 0x18) == _W else (2 if (code & 0x18) == _H else 1)
            if mode == _IMM:
                v = k & _MASK32
            elif mode == _LEN:
                v = wirelen
            elif mode == _MEM:
                v = mem[k & 15]
            elif mode == _ABS or mode == _IND:
                v = _load(data, p, cap, (k & _MASK32) + (x if mode == _IND else 0), size)
                if v < 0:
                    return np.int64(0)
            elif mode == _MSH:
                v = _load(data, p, cap, k & _MASK32, 1)
                if v < 0:
                    return np.int64(0)
                v = (v & 0xF) << 2
            else:
                return np.int64(0)
            if cls == _LD:
                a = v
            else:
                x = v
        elif cls == _ST:
            mem[k & 15] = a
        elif cls == _STX:
            mem[k & 15] = x
        elif cls == _ALU:
            op = code & 0xF0
            v = x if code & _X else (k & _MASK32)
            if op == _ADD:
                a = (a + v) & _MASK32
            elif op == _SUB:
                a = (a - v) & _MASK32
            elif op == _MUL:
                a = (a * v) & _MASK32
            elif op == _DIV:
                if v == 0:
                    return np.int64(0)
                a = a // v
            elif op == _MOD:
                if v == 0:
                    return np.int64(0)
                a = a % v
            elif op == _OR:
                a = a | v
            elif op == _AND:
                a = a & v
            elif op == _XOR:
                a = a ^ v
            elif op == _LSH:
                a = (a << (v & 31)) & _MASK32 if v < 32 else np.int64(0)
            elif op == _RSH:
                a = a >> v if v < 32 else np.int64(0)
            elif op == _NEG:
                a = (-a) & _MASK32
            else:
                return np.int64(0)
        elif cls == _JMP:
            op = code & 0xF0
            if op == _JA:
                pc += k & _MASK32
                continue
            v = x if code & _X else (k & _MASK32)
            if op == _JEQ:
                taken = a == v
            elif op == _JGT:
                taken = a > v
            elif op == _JGE:
                taken = a >= v
            elif op == _JSET:
                taken = (a & v) != 0
            else:
                return np.int64(0)
            pc += jt if taken else jf
        else:  # MISC
            if (code & 0xF8) == _TXA:
                a = x
            else:
                x = a
    return np.int64(0)


@numba.njit(cache=True)
def run_filter(prog, data, meta, wire, keep):
    """``keep[i]``: whether packet i of the batch (meta rows: sec, usec, offset, caplen; wire lengths, or an
    empty array: the caplen) passes the program."""
    has_wire = wire.shape[0] == meta.shape[0]
    mem = np.zeros(16, np.int64)
    for i in range(meta.shape[0]):
        cap = np.int64(meta[i, 3])
        wl = np.int64(wire[i]) if has_wire else cap
        keep[i] = _run(prog, data, np.int64(meta[i, 2]), cap, wl, mem) != 0


def warm_up() -> None:
    """Compile (or load from numba's cache) the interpreter for the kinds of batches capture gives it (bytes
    from libpcap, a file's writable window) before the supervisor forks."""
    prog = compile_filter(1, 262144, "tcp")
    meta = np.zeros((1, 4), np.uint32)
    keep = np.zeros(1, np.bool_)
    for data in (np.frombuffer(bytes(64), np.uint8), np.zeros(64, np.uint8)):
        for wire in (np.zeros(0, np.uint32), np.zeros(1, np.uint32)):
            run_filter(prog, data, np.frombuffer(meta.tobytes(), np.uint32).reshape(-1, 4), wire, keep)
            run_filter(prog, data, meta, wire, keep)
