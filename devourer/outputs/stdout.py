"""Writes JSON lines to standard output (the default output)."""

import os

from devourer.outputs import FlowBatch


class StdoutSink:
    def __init__(self, fd: int = 1):
        self._fd = fd

    def write(self, batch: FlowBatch) -> None:
        view = memoryview(batch.lines())
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def flush(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def unsettled(self) -> int:
        return 0  # written at once

    def reopen(self) -> None:
        pass  # SIGHUP: nothing to reopen

    def close(self) -> None:
        pass
