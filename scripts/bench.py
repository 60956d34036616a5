#!/usr/bin/env python3
"""Benchmark devourer side by side with its peers on generated captures, in one run.

    .venv/bin/python scripts/bench.py                 # medium capture (2 M packets, 100 k flows)
    .venv/bin/python scripts/bench.py --capture large # 10 M packets, 1 M flows (4.5 GB of disk)
    .venv/bin/python scripts/bench.py --runs 1 --tools devourer,softflowd
    .venv/bin/python scripts/bench.py --before fac4316 --vxlan   # and the code of a commit, and VXLAN

The capture comes from ../shared/bench/genpcap.py (same seeds as the peers'
figures in ../shared/bench/RESULTS.md) and is kept in bench-data/. Each tool runs
on a hot page cache; the best of --runs is kept. Printed per tool: wall time,
packets/s, CPU seconds (user+sys, children included), peak memory of the whole
process tree (sum of RSS, and sum of PSS, which splits shared pages between the
processes that map them), the flows it reported, and devourer's speed relative to it.

Peers: softflowd (Debian package), NFStream (pip, installed on demand into
bench-data/peers-venv), argus and nfpcapd when installed.

``--before REV`` adds devourer as it was at a commit (a git worktree of it in
bench-data/, run with this checkout's virtual environment), ``--vxlan`` adds
devourer on the capture wrapped in VXLAN (scripts/wrap_vxlan.py, made once): the
code before and after a change, and what opening a tunnel costs, in the same run.
The tools take turns run by run, so a slow phase of a shared machine falls on all
of them; the median is printed beside the best.
"""

import argparse
import os
import re
import resource
import shlex
import shutil
import subprocess
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEVOURER_SHARED", REPO.parent / "shared"))
DATA = REPO / "bench-data"
CAPTURES = {"small": (100_000, 5_000, 1), "medium": (2_000_000, 100_000, 2), "large": (10_000_000, 1_000_000, 3)}


def generate(name: str) -> Path:
    packets, flows, seed = CAPTURES[name]
    path = DATA / f"{name}.pcap"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        print(f"generating {path} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(SHARED / "bench" / "genpcap.py"), "--packets", str(packets), "--flows",
                        str(flows), "--seed", str(seed), str(path)], check=True)
    return path


def _tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(e))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _mem(pids) -> tuple[int, int]:
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def measure(cmd: list[str], env=None, cwd=None) -> dict:
    """Run cmd; wall time, CPU of it and its children, peak summed RSS/PSS of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    peak = [0, 0]

    def sample():
        while proc.poll() is None:
            rss, pss = _mem(_tree(proc.pid))
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    t.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rss_mb": peak[0] / 1024, "pss_mb": peak[1] / 1024, "out": out,
            "rc": proc.returncode}


def before_tree(rev: str) -> Path:
    """A worktree of ``rev`` under bench-data/ (made once)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = DATA / f"before-{sha}"
    if not tree.exists():
        DATA.mkdir(exist_ok=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), sha], check=True,
                       capture_output=True)
    return tree


def vxlan_capture(path: Path) -> Path:
    wrapped = path.with_name(path.stem + "-vxlan.pcap")
    if not wrapped.exists():
        print(f"wrapping {path} in VXLAN ...", file=sys.stderr)
        subprocess.run([sys.executable, str(REPO / "scripts" / "wrap_vxlan.py"), str(path), str(wrapped)],
                       check=True)
    return wrapped


def devourer_cmd(path, args, tree: Path | None = None):
    extra = ["--workers", str(args.workers)] if args.workers else []
    extra += shlex.split(args.devourer_args or "")
    # another tree's code: its package is found first because ``-m`` runs from it (the command's cwd)
    program = [str(REPO / ".venv" / "bin" / "python"), "-m", "devourer"] if tree else [
        str(REPO / ".venv" / "bin" / "devourer")]
    return [*program, "capture", "-r", str(path), "-o", "file", "-w", "/dev/null", *extra]


def devourer_flows(out):
    m = re.search(r"([\d,]+) flows written", out)
    return int(m.group(1).replace(",", "")) if m else None


def peers_python():
    venv = DATA / "peers-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        print("installing nfstream into bench-data/peers-venv ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "nfstream"], check=True)
    return str(py)


def tools(path, args):
    """(name, command, flows-from-output, working directory) for every tool that is available."""
    yield "devourer", devourer_cmd(path, args), devourer_flows, None
    if args.before:
        tree = before_tree(args.before)
        yield f"devourer@{args.before}", devourer_cmd(path, args, tree), devourer_flows, tree
    if args.vxlan:
        yield "devourer VXLAN", devourer_cmd(vxlan_capture(path), args), devourer_flows, None
    if shutil.which("softflowd"):
        yield ("softflowd", ["softflowd", "-r", str(path), "-n", "127.0.0.1:9995", "-d", "-m", "4000000", "-6",
                             "-v", "9"],
               lambda o: int(m.group(1)) if (m := re.search(r"Flows expired: (\d+)", o)) else None, None)
    if shutil.which("argus"):
        yield "argus", ["argus", "-r", str(path), "-w", "/dev/null"], lambda o: None, None
    if shutil.which("nfpcapd"):
        d = DATA / "nfpcapd.out"
        d.mkdir(exist_ok=True)
        yield "nfpcapd", ["nfpcapd", "-r", str(path), "-w", str(d), "-B", "4000000", "-t", "3600"], lambda o: None, None
    if not args.no_nfstream:
        yield ("nfstream", [peers_python(), str(SHARED / "bench" / "nfs.py"), str(path), "1"],
               lambda o: int(m.group(1)) if (m := re.search(r"flows=(\d+)", o)) else None, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", choices=sorted(CAPTURES), default="medium")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", help="comma-separated subset (devourer,softflowd,argus,nfpcapd,nfstream)")
    ap.add_argument("--workers", type=int, help="devourer --workers (default: its own default)")
    ap.add_argument("--devourer-args", help="more devourer flags, e.g. '--idle-timeout 3600' (every flow in the "
                    "table at once)")
    ap.add_argument("--before", metavar="REV", help="also devourer as it was at this commit")
    ap.add_argument("--vxlan", action="store_true", help="also devourer on the capture wrapped in VXLAN")
    ap.add_argument("--no-nfstream", action="store_true", help="skip NFStream (slow: ~15 s per run on medium)")
    args = ap.parse_args()
    path = generate(args.capture)
    packets = CAPTURES[args.capture][0]
    with open(path, "rb") as f:  # hot page cache for every tool
        while f.read(1 << 24):
            pass
    wanted = set(args.tools.split(",")) if args.tools else None
    chosen = [t for t in tools(path, args) if not wanted or t[0].split("@")[0].split(" ")[0] in wanted]
    for name, cmd, _, cwd in chosen:  # compiled once (numba's cache) before anything is timed
        if name.startswith("devourer"):
            subprocess.run([*cmd[:cmd.index("-r") + 1], str(REPO / "samples" / "http.pcap"), *cmd[cmd.index("-r") + 2:]],
                           cwd=cwd, capture_output=True, check=True)
        if name == "devourer VXLAN":
            with open(cmd[cmd.index("-r") + 1], "rb") as f:
                while f.read(1 << 24):
                    pass
    walls: dict[str, list[float]] = {name: [] for name, *_ in chosen}
    best: dict[str, dict] = {}
    for run in range(args.runs):
        for name, cmd, flows_of, cwd in chosen:
            if name == "nfstream" and run:
                continue
            r = measure(cmd, cwd=cwd)
            if r["rc"] != 0:
                print(f"{name} failed ({r['rc']}): {r['out'][-500:]}", file=sys.stderr)
            walls[name].append(r["wall"])
            if name not in best or r["wall"] < best[name]["wall"]:
                r["flows"] = flows_of(r["out"])
                best[name] = r
            print(f"{name}: {r['wall']:.2f} s", file=sys.stderr)
    results = [(name, best[name]) for name, *_ in chosen]
    ours = dict(results).get("devourer")
    print(f"\ncapture: {args.capture} ({path.name}, {packets:,} packets, {path.stat().st_size / 1e9:.2f} GB), "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print(f"{'tool':<20}|{'wall s':>8}|{'median s':>9}|{'packets/s':>12}|{'CPU s':>8}|{'RSS MB':>8}|{'PSS MB':>8}|{'flows':>9}|"
          f"{'devourer speed ÷ tool':>22}")
    for name, r in results:
        ratio = f"{r['wall'] / ours['wall']:.2f}x" if ours and name != "devourer" else "-"
        print(f"{name:<20}|{r['wall']:>8.2f}|{statistics.median(walls[name]):>9.2f}|{packets / r['wall']:>12,.0f}|{r['cpu']:>8.2f}|{r['rss_mb']:>8.0f}|"
              f"{r['pss_mb']:>8.0f}|{r['flows'] if r['flows'] is not None else '-':>9}|{ratio:>22}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
