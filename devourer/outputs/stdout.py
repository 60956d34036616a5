"""Writes JSON lines to standard output (the default output)."""

import os


class StdoutSink:
    def __init__(self, fd: int = 1):
        self._fd = fd

    def write(self, lines: bytes) -> None:
        view = memoryview(lines)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def flush(self) -> None:
        pass

    def reopen(self) -> None:
        pass  # SIGHUP: nothing to reopen

    def close(self) -> None:
        pass
