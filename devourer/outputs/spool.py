"""An on-disk spool of output rows: what could not be delivered waits here, oldest first.

Each batch is one file of JSON lines, written whole (to a temporary name, then
renamed), named so that sorting the names gives the order they were written.
Bounded by size: a batch that does not fit is refused and the caller counts it.
Survives restarts: a new run finds and replays what an earlier one left.

Private whatever the umask and whatever was there before: the folder is made (or
set back to) 0700 and every batch file is created 0600, since rows name who
talked to whom. A file in the folder that is not a batch of ours (a stray file, a
damaged batch, a link, a folder) is never a reason to stop: a damaged batch is
moved aside to ``damaged/`` (counted, reported), anything else is left alone.
"""

import os
import re
import stat
import time

import orjson

FOLDER_MODE = 0o700
FILE_MODE = 0o600
BATCH_NAME = re.compile(r"^\d{20}-\d+-\d{6}\.jsonl$")
DAMAGED = "damaged"


class Spool:
    def __init__(self, directory: str, max_bytes: int, report=None):
        self.directory = directory
        self.max_bytes = max_bytes
        self.report = report or (lambda text, level="warning": None)
        self.set_aside = 0  # damaged batch files moved to damaged/ (or, where that fails, skipped)
        self._skipped: set[str] = set()
        self.prepare(directory)
        self._seq = 0

    @staticmethod
    def prepare(directory: str) -> None:
        """Make the folder, or tighten an existing one of ours to 0700; raises OSError."""
        os.makedirs(directory, mode=FOLDER_MODE, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) != FOLDER_MODE and st.st_uid == os.geteuid():
                os.fchmod(fd, FOLDER_MODE)
        finally:
            os.close(fd)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def files(self) -> list[str]:
        """Our batch files, oldest first (regular files with a batch name; nothing else is ours)."""
        found = []
        for name in os.listdir(self.directory):
            if BATCH_NAME.match(name) and name not in self._skipped:
                try:
                    if stat.S_ISREG(os.lstat(self._path(name)).st_mode):
                        found.append(name)
                except FileNotFoundError:
                    pass
        return sorted(found)

    def size(self) -> int:
        total = 0
        for f in self.files():
            try:
                total += os.lstat(self._path(f)).st_size
            except FileNotFoundError:
                pass
        return total

    def rows(self) -> int:
        total = 0
        for f in self.files():
            with open(self._path(f), "rb") as fh:
                total += sum(1 for _ in fh)
        return total

    def put(self, rows: list[dict]) -> bool:
        """Store a batch; False (nothing written) if the spool would exceed its bound."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        if self.size() + len(data) > self.max_bytes:
            return False
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
        tmp = self._path("." + name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        with open(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path(name))
        return True

    def oldest(self) -> tuple[str, list[dict]] | None:
        """(name, rows) of the oldest readable batch, or None when empty; damaged ones are moved aside."""
        for name in self.files():
            try:
                fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                with open(fd, "rb") as fh:
                    rows = [orjson.loads(line) for line in fh if line.strip()]
                if not all(isinstance(r, dict) and "id" in r for r in rows):
                    raise ValueError("a line is not a row")
                return name, rows
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError
                self._set_aside(name, e)
        return None

    def _set_aside(self, name: str, why: Exception) -> None:
        aside = self._path(DAMAGED)
        try:
            os.makedirs(aside, mode=FOLDER_MODE, exist_ok=True)
            os.replace(self._path(name), os.path.join(aside, name))
            where = f"moved to {aside}"
        except OSError:
            self._skipped.add(name)  # cannot move it: skipped for the rest of the run
            where = "left in place and skipped"
        self.set_aside += 1
        reason = getattr(why, "strerror", None) or (str(why).splitlines() or [why.__class__.__name__])[0][:100]
        self.report(f"spool file {name} is not a readable batch ({reason}); {where}, its rows are not sent",
                    "error")

    def done(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
