#!/usr/bin/env python3
"""Live capture at increasing rates: the highest rate devourer takes with zero drops, and what drops first.

    sudo .venv/bin/python scripts/bench_live.py [--rates 100000,200000,400000,top] [--seconds 5]
        [--interfaces 1|2] [--devourer-cpus 1] [--devourer-args '--buffer-size 8M']

Creates network namespaces and veth pairs of its own (removed afterwards), runs
``devourer capture -i`` on the host ends, and sends into each namespace end with
trafgen (netsniff-ng), which sends from a memory-mapped ring and so outruns
tcpreplay (about 400 k packets/s here): 4,096 UDP flows of 64-byte frames,
``--rate`` packets/s (or as fast as it can: ``top``) for ``--seconds``. The frames
travel only over those veth pairs. For each rate it prints what trafgen sent and
devourer's own accounting from its summary line: packets read, dropped by the
kernel (libpcap's ps_drop: the socket buffer was full), by the worker rings, and by
the resolver ring (none here: no name ports). With two interfaces, the same rate
goes into each. It also prints the CPU time all devourer processes used, and per packet
read after taking off what a run of the same length without traffic uses (start-up,
idle polling): what a packet costs devourer itself. The kernel's part of receiving
(the copy into the capture ring) runs on the sending CPU and is not in it.
"""

import argparse
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# 4,096 UDP flows (source ports 1024-5119) to a port that carries no names, 64-byte frames
TRAFGEN_PACKET = """{
  eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02),
  ipv4(saddr=10.254.90.2, daddr=10.254.90.1, ttl=64),
  udp(sp=dinc(1024, 5119), dp=9000),
  fill(0x61, 22)
}
"""


STARTUP_S = 3.0
SAMPLE = "http.pcap"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Links:
    """``n`` veth pairs, the far end of each in a namespace of its own."""

    def __init__(self, n: int):
        tag = f"dvb{os.getpid() % 10000}"
        self.pairs = [(f"{tag}n{j}", f"{tag}h{j}", f"{tag}p{j}") for j in range(n)]

    def __enter__(self):
        for ns, host_if, ns_if in self.pairs:
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", ns)
            sh("sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1")
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{ns_if}.disable_ipv6=1")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        return self

    def __exit__(self, *exc):
        for ns, host_if, _ in self.pairs:
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def number(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1).replace(",", "")) if m else -1


def _start_sender(ns: str, ns_if: str, config: str, speed: list[str], processes: int) -> subprocess.Popen:
    # a session of its own: trafgen forks its sending processes, and all must hear the SIGINT
    return subprocess.Popen(["ip", "netns", "exec", ns, "trafgen", "-o", ns_if, "-i", config, "-P", str(processes), "-Q",
                             *speed], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int, timeout: float, group: bool) -> str:
    """Signal ``proc`` (or its whole process group), wait for it (its group killed after ``timeout``) and
    return what it wrote to the pipe it has."""
    try:
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return out or err or ""


def one_rate(links: Links, rate: str, seconds: float, extra: list[str], config: str, cpus: str,
             senders_per_link: int) -> dict:
    ifaces = [a for _, host_if, _ in links.pairs for a in ("-i", host_if)]
    speed = [] if rate == "top" else ["-b", f"{rate}pps"]
    pin = ["taskset", "-c", cpus] if cpus else []
    dev = subprocess.Popen([*pin, str(REPO / ".venv" / "bin" / "devourer"), "capture", *ifaces, "-o", "file", "-w",
                            "/dev/null", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    senders = []
    try:
        time.sleep(STARTUP_S)  # started and capturing
        if rate != "0":
            senders = [_start_sender(ns, ns_if, config, speed, senders_per_link) for ns, _, ns_if in links.pairs]
        time.sleep(seconds)
    finally:
        outputs = [_stop(s, signal.SIGINT, 10, group=True) for s in senders]
        time.sleep(1.0)  # what is in the socket buffers is read
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        err = _stop(dev, signal.SIGTERM, 120, group=False)  # the supervisor stops its children
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sent = sum(max(0, number(r"([\d,]+) packets outgoing", o)) for o in outputs)
    return {
        "rate": rate,
        "sent": sent,
        "sent_pps": int(sent / seconds),
        "read": number(r"([\d,]+) packets read", err),
        "kernel": number(r"kernel dropped ([\d,]+);", err),
        "ring": number(r"\+ ([\d,]+) dropped", err),
        "names": number(r"observations, [\d,]+ malformed, ([\d,]+) dropped", err),
        "per_interface": re.findall(r"; (\S+): ([\d,]+) read, kernel dropped ([\d,]+), ring dropped ([\d,]+)", err),
        # every devourer process's CPU time (they are all waited for, so it is the supervisor's children's)
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "stderr": err,
        "returncode": dev.returncode,
    }


def _warm_up() -> None:
    """One replay of the sample, so the decoder is compiled before the first rate, not during it."""
    subprocess.run([str(REPO / ".venv" / "bin" / "devourer"), "capture", "-r", str(REPO / "samples" / SAMPLE),
                    "-o", "file", "-w", "/dev/null"], check=True, capture_output=True, timeout=600)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="100000,200000,300000,400000,top",
                    help="packets/s per interface, comma-separated; top: as fast as trafgen sends")
    ap.add_argument("--seconds", type=float, default=5.0, help="how long each rate is sent")
    ap.add_argument("--interfaces", type=int, choices=[1, 2], default=1)
    ap.add_argument("--devourer-cpus", default="",
                    help="run devourer on these CPUs only (taskset list, e.g. 1); trafgen sends from CPU 0")
    ap.add_argument("--senders", type=int, default=1,
                    help="trafgen processes per interface, pinned to CPUs 0, 1, ... (more than 1 takes CPU from "
                         "devourer: the rate then says how far the box goes)")
    ap.add_argument("--devourer-args", default="", help="more devourer flags, e.g. '--buffer-size 256M'")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_live.py needs root (network namespaces, veth pairs, live capture)", file=sys.stderr)
        return 2
    _warm_up()
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as cfg, Links(args.interfaces) as links:
        cfg.write(TRAFGEN_PACKET)
        cfg.flush()
        print(f"machine: {os.cpu_count()} CPUs; {args.interfaces} interface(s), {args.senders} trafgen process(es) each; devourer {args.devourer_args or '(defaults)'}"
              f"{' on CPUs ' + args.devourer_cpus if args.devourer_cpus else ''}",
              flush=True)
        idle = one_rate(links, "0", args.seconds, shlex.split(args.devourer_args), cfg.name, args.devourer_cpus, args.senders)
        print(f"idle (no traffic, same seconds): {idle['cpu_s']:.1f} CPU s, the part of each rate's CPU that is "
              f"not per packet", flush=True)
        print(f"{'rate pkt/s':>11}|{'sent':>10}|{'sent pkt/s':>11}|{'read':>10}|{'kernel drop':>12}|{'ring drop':>10}|"
              f"{'name drop':>10}|{'CPU s':>6}|{'µs/pkt':>7}| per interface (read/kernel/ring)", flush=True)
        for rate in args.rates.split(","):
            r = one_rate(links, rate, args.seconds, shlex.split(args.devourer_args), cfg.name, args.devourer_cpus, args.senders)
            if r["read"] < 0:
                print(f"devourer said no summary at {rate} (exit status {r['returncode']}):\n{r['stderr']}",
                      file=sys.stderr)
            per = " ".join(f"{n}:{a}/{b}/{c}" for n, a, b, c in r["per_interface"])
            print(f"{r['rate']:>11}|{r['sent']:>10,}|{r['sent_pps']:>11,}|{r['read']:>10,}|{r['kernel']:>12,}|"
                  f"{r['ring']:>10,}|{r['names']:>10,}|{r['cpu_s']:>6.1f}|{1e6 * (r['cpu_s'] - idle['cpu_s']) / max(1, r['read']):>7.2f}| {per}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
