"""What every child process does the same way: start, wait for work, watch its parent, end.

``run_child`` is each process's top level: it sets the process up (``become_child``), runs its body, turns
any exception that escapes into a report with the role (``procs.report``) and exit status EXIT_FAILURE, and
ends the process (``exit_child``) once what it queued for others is on its way. ``Idle`` is the one poll
back-off of the processes that wait on rings.
"""

import ctypes
import ctypes.util
import gc
import os
import queue as queue_mod
import signal
import time
import traceback
from typing import Callable, NoReturn

from devourer.errors import EXIT_FAILURE, DevourerError
from devourer.procs.report import Reason, Report, Role

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
        os._exit(EXIT_FAILURE)
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


class Idle:
    """Sleeps between polls that found nothing: from 0.1 ms, doubling to 5 ms, back to the start after work.
    A busy process never sleeps; an idle one wakes 200 times a second at most."""

    FIRST_S = 1e-4
    LONGEST_S = 5e-3

    def __init__(self):
        self.pause = self.FIRST_S

    def worked(self) -> None:
        self.pause = self.FIRST_S

    def wait(self) -> None:
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, self.LONGEST_S)


def exit_child(code: int, flush=(), abandon=()) -> NoReturn:
    """End this child: the queues in ``flush`` deliver what was put on them first, those in ``abandon`` are
    given up (their reader is gone). ``os._exit``: no atexit handler or finalizer the supervisor set up runs
    twice, and the queues' feeder threads are waited for only here."""
    for q in abandon:
        q.close()
        q.cancel_join_thread()
    for q in flush:
        q.close()
        q.join_thread()
    os._exit(code)


def run_child(role: Role, body: Callable[[int], int], reports, queues=None, on_term=None) -> NoReturn:
    """A child process's top level. ``body(parent_pid)`` returns the exit status; ``queues()`` (called after
    it) says which queues to flush and which to abandon, besides the reports queue, which is always flushed.
    An exception that escapes the body is a report with the role and the error, and exit status EXIT_FAILURE
    (not the multiprocess library's traceback on stderr)."""
    parent = become_child(role.process_name, on_term)
    try:
        code = body(parent)
    except Exception as e:  # the process's top level: every failure becomes a report and an exit status
        if isinstance(e, DevourerError):  # a failure we name ourselves: its message is for the user as it is
            text = str(e)
        else:
            where = traceback.extract_tb(e.__traceback__)[-1]
            text = f"unexpected error: {type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})"
        reports.put(Report(role, os.getpid(), "error", text, Reason.CRASHED))
        code = EXIT_FAILURE
    flush, abandon = queues() if queues is not None else ((), ())
    exit_child(code, (*flush, reports), abandon)
