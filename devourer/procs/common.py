"""What every child process does the same way: signals, parent watch, control words."""

import ctypes
import ctypes.util
import gc
import os
import queue as queue_mod
import signal

# control words (a SharedCounters region written by the supervisor only)
CTL_STOP = 0  # orderly stop: capture stops reading, everyone drains
CTL_ABORT = 1  # a process died: stop waiting for space or peers
CTL_FLOWS_LOST = 2  # flows held by workers that died (live mode restarts them)
CTL_RESTARTS = 3  # worker processes restarted (live mode)
CTL_CHANNEL_GEN = 4  # exporter and resolver restarts so far = which export queue the two now share
CTL_REOPEN = 5  # SIGHUPs so far: the exporter reopens its output file when this changes
CTL_EXPORTER_GONE = 6  # the exporter died and none follows (replay): nobody reads the export queue any more
N_CONTROL = 8


PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl(option: int, arg) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_process_name(name: str) -> None:
    """Name this process in /proc/PID/comm (what top and ps -o comm show), e.g. dvr-worker-0."""
    _prctl(PR_SET_NAME, name.encode()[:15])


def become_child(role: str, handle_term=None) -> int:
    """Set up a freshly forked child (its name and signals); returns the parent's pid.

    Ctrl-C (and a terminal's hangup) reaches the whole process group, but only the supervisor decides how
    to stop, so children ignore SIGINT and SIGHUP; SIGTERM goes to ``handle_term`` or is
    ignored too (the supervisor drains children through the rings instead)."""
    set_process_name(f"dvr-{role}")
    # What the supervisor imported is never garbage: keep the collector off it (and off those shared pages),
    # and collect young objects less often. The name map holds hundreds of thousands of small containers
    # that the default thresholds re-scan all the time (half the cost of taking an observation, measured).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal hangs up the whole group: the supervisor decides
    signal.signal(signal.SIGTERM, handle_term if handle_term else signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if handle_term is not None:
        # if the supervisor dies, stop as if it had asked (also wakes a read blocked on a pipe)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = os.getppid()
    if parent == 1:  # the supervisor died before we got here
        os._exit(1)
    return parent


def orphaned(parent_pid: int) -> bool:
    """True once the supervisor is gone (we were re-parented)."""
    return os.getppid() != parent_pid


def put_until(out_queue, message: bytes, give_up, timeout_s: float = 0.5) -> bool:
    """Put message on a bounded queue, waiting for room; False if ``give_up()`` says
    to stop waiting first (the reader is gone)."""
    while True:
        try:
            out_queue.put(message, timeout=timeout_s)
            return True
        except queue_mod.Full:
            if give_up():
                return False
