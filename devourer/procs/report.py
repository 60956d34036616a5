"""Who a process is, and what it tells the supervisor: ``Role`` and ``Report``.

A child never writes to the log itself: it puts a ``Report`` on the reports
queue and the supervisor writes the line (with the child's role and pid), so
lines of several processes never interleave and a progress bar can step aside
for them. The supervisor acts on a report's ``reason``, never on its text.
"""

import dataclasses
import enum
import os
from typing import Literal, NamedTuple

Kind = Literal["capture", "planner", "worker", "resolver", "exporter"]


@dataclasses.dataclass(frozen=True)
class Role:
    """One process of the engine: its kind, and its number where there are several (workers, readers)."""

    kind: Kind
    index: int | None = None

    def __str__(self) -> str:
        """As the log writes it: ``worker 3``, ``capture``, ``capture 1``."""
        return self.kind if self.index is None else f"{self.kind} {self.index}"

    @property
    def process_name(self) -> str:
        """As ps and top show it (``dvr-worker-3``) and multiprocess names it (``devourer-worker-3``)."""
        return self.kind if self.index is None else f"{self.kind}-{self.index}"


class Reason(enum.Enum):
    """Why a child reports."""

    NOTE = "note"  # a line for the log, nothing more
    OUTPUT_FAILED = "output failed"  # the exporter cannot write: reading on would only count losses
    OUTPUT_CLOSED = "output closed"  # the reader of a pipe went away (| head): stop quietly, as tcpdump does
    CRASHED = "crashed"  # an unexpected exception reached the process's top level; it exits with EXIT_FAILURE


class Report(NamedTuple):
    role: Role
    pid: int
    level: str  # a logging level name: "info", "warning", "error"
    text: str
    reason: Reason = Reason.NOTE


class Reporter:
    """The callable a process (and the output sinks it drives) reports through: ``report(text, level)``."""

    def __init__(self, reports, role: Role):
        self.reports, self.role = reports, role

    def __call__(self, text: str, level: str = "warning", reason: Reason = Reason.NOTE) -> None:
        self.reports.put(Report(self.role, os.getpid(), level, text, reason))
