"""An on-disk spool of output rows: what could not be delivered waits here, oldest first.

Each batch is one file of JSON lines, written whole (to a temporary name, then
renamed), named so that sorting the names gives the order they were written.
Bounded by size: a batch that does not fit is refused and the caller counts it.
Survives restarts: a new run finds and replays what an earlier one left.
"""

import os
import time

import orjson


class Spool:
    def __init__(self, directory: str, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._seq = 0

    def files(self) -> list[str]:
        return sorted(f for f in os.listdir(self.directory) if f.endswith(".jsonl"))

    def size(self) -> int:
        return sum(os.path.getsize(os.path.join(self.directory, f)) for f in self.files())

    def rows(self) -> int:
        total = 0
        for f in self.files():
            with open(os.path.join(self.directory, f), "rb") as fh:
                total += sum(1 for _ in fh)
        return total

    def put(self, rows: list[dict]) -> bool:
        """Store a batch; False (nothing written) if the spool would exceed its bound."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        if self.size() + len(data) > self.max_bytes:
            return False
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(self.directory, name))
        return True

    def oldest(self) -> tuple[str, list[dict]] | None:
        """(name, rows) of the oldest batch, or None when empty."""
        files = self.files()
        if not files:
            return None
        with open(os.path.join(self.directory, files[0]), "rb") as fh:
            return files[0], [orjson.loads(line) for line in fh if line.strip()]

    def done(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass
