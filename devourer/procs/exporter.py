"""The exporter process: the only owner of output I/O.

Collects expired-flow batches from every worker, formats them as records
(``outputs.format``) and writes them to the sink. It ends once every worker
said it is done (or the supervisor said the worker is lost).
"""

import queue as queue_mod

from devourer.ipc import wire
from devourer.outputs.format import RecordFormatter
from devourer.procs.common import orphaned

E_FLOWS_WRITTEN = 0
E_BATCHES = 1
E_WRITE_FAILED = 2  # flows that could not be written (dropped at the exporter)
E_QUEUE_DEPTH = 3
N_EXPORTER_COUNTERS = 4


class ExporterLoop:
    def __init__(self, sink, sensor: str, in_queue, n_workers: int, counters, parent_pid: int, report):
        self.sink = sink
        self.formatter = RecordFormatter(sensor)
        self.queue = in_queue
        self.waiting_for = set(range(n_workers))
        self.counters = counters
        self.parent_pid = parent_pid
        self.report = report
        self.failed = False

    def handle(self, message: bytes) -> None:
        kind, worker, rows = wire.decode(message)
        if kind == "flows":
            if self.failed:
                self.counters[E_WRITE_FAILED] += len(rows)
                return
            try:
                self.sink.write(self.formatter.lines(rows))
                self.sink.flush()
            except OSError as e:
                self.failed = True
                self.counters[E_WRITE_FAILED] += len(rows)
                self.report(f"exporter: cannot write output: {e.strerror or e}")
                return
            self.counters[E_FLOWS_WRITTEN] += len(rows)
            self.counters[E_BATCHES] += 1
        else:  # done / lost
            self.waiting_for.discard(worker)

    def run(self) -> int:
        while self.waiting_for:
            try:
                message = self.queue.get(timeout=0.5)
            except queue_mod.Empty:
                if orphaned(self.parent_pid):
                    return 1
                continue
            self.handle(message)
        try:
            self.sink.flush()
            self.sink.close()
        except OSError as e:
            self.report(f"exporter: cannot write output: {e.strerror or e}")
            self.failed = True
        return 1 if self.failed else 0
