"""devourer's log: one ``logging`` logger, written by the supervisor only.

Children never write to stderr themselves: they put a ``procs.report.Report``
on the reports queue (``engine.topology``), and the supervisor logs it with the
child's role, so lines of different processes cannot interleave mid-line.

Two formats (``--log-format``):

* ``console`` -- ``devourer: [error: |warning: ]text`` for the supervisor's own
  lines, ``devourer: role: text`` for a child's.
* ``json`` -- one object per line: ``time`` (UTC, ISO 8601), ``level``,
  ``role``, ``pid``, ``message``, plus the structured fields of the line (the
  counters of a stats or summary line), for log shippers.

The destination (``--log-output``) is stderr or a file, appended to and
reopened when logrotate moves it (``WatchedFileHandler``). Nothing logs per
packet: the busiest lines are the periodic stats.
"""

import datetime
import logging
import logging.handlers
import sys

import orjson

from devourer.outputs import open_private

LOGGER_NAME = "devourer"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("console", "json")
SUPERVISOR = "supervisor"

log = logging.getLogger(LOGGER_NAME)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        role = getattr(record, "role", SUPERVISOR)
        parts = ["devourer:"]
        if role != SUPERVISOR:
            parts.append(f"{role}:")  # a child's lines say who speaks; what went wrong is in the text
        elif record.levelno >= logging.ERROR:
            parts.append("error:")
        elif record.levelno >= logging.WARNING:
            parts.append("warning:")
        parts.append(record.getMessage())
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "role": getattr(record, "role", SUPERVISOR),
            "pid": getattr(record, "role_pid", record.process),
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        return orjson.dumps(entry, option=orjson.OPT_NON_STR_KEYS).decode()


class PrivateFileHandler(logging.handlers.WatchedFileHandler):
    """Appends to a log file, reopened when logrotate moves it; 0640 at most, whatever the umask or the file had
    (the log names hosts and addresses)."""

    def _open(self):  # runs as the --user user, who may not read the interpreter: open_private is imported above
        return open(open_private(self.baseFilename), "a", encoding=self.encoding, errors=self.errors)


def configure(level: str = "info", fmt: str = "console", output: str = "stderr", run_as=None) -> logging.Handler:
    """Set the logger up (again); returns its handler. ``output``: 'stderr', 'stdout' or a file path, opened with the
    rights of ``run_as`` (--user) when given.

    Raises OSError when the file cannot be opened."""
    if output in ("stderr", "-"):
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    elif output == "stdout":  # the command line refuses it where the flow records go to stdout
        handler = logging.StreamHandler(sys.stdout)
    else:
        from devourer.privileges import acting_as

        with acting_as(run_as):
            handler = PrivateFileHandler(output, encoding="utf-8")
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
    return handler


def emit(level: str, text: str, role: str = SUPERVISOR, pid: int | None = None, **fields) -> None:
    """Log one line; ``fields`` go into the JSON object (ignored by the console format)."""
    extra = {"role": role, "fields": fields}
    if pid is not None:
        extra["role_pid"] = pid
    log.log(logging.getLevelName(level.upper()), text, extra=extra)


def reopen() -> None:
    """SIGHUP: reopen a log file that was moved or removed, as daemons do (at once, not at the next line)."""
    for h in log.handlers:
        if isinstance(h, PrivateFileHandler):
            h.reopenIfNeeded()


def logs_to_stderr() -> bool:
    return any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr
               and not isinstance(h, logging.FileHandler) for h in log.handlers)
