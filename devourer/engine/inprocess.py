"""The engine's cores in this one process, without rings or children: ``devourer names`` and the benchmarks.

Capture's core (``procs.capture.CaptureLoop``) writes to rings. Here its rings are stand-ins that hand what
they are given straight on: ``Discard`` drops it, ``ToNames`` gives name slots to the resolver's core
(``names.observe``), ``ToTable`` gives packet records to a flow table, ``Keep`` keeps copies. The decoding
is the engine's own, so what this reads is what a run would see.
"""

import numpy as np

from devourer import counters as CN
from devourer.flow.table import FlowTable
from devourer.names.observe import NameExtractor
from devourer.procs.capture import CaptureLoop, open_sources
from devourer.settings import Settings


class Discard:
    """A producer-side ring stand-in: takes whatever it is given (``take`` says where it goes)."""

    def take(self, records: np.ndarray) -> None:
        pass

    def write(self, records, should_abort) -> bool:
        self.take(records)
        return True

    def write_upto(self, records, should_abort) -> int:
        self.take(records)
        return records.shape[0]

    def try_write(self, records) -> bool:
        self.take(records)
        return True

    def publish_clock(self, clock_us) -> None:
        pass

    def close_producer(self) -> None:
        pass


class ToNames(Discard):
    """Name slots straight to the resolver's core; its observations are kept, in order."""

    def __init__(self):
        self.counters = np.zeros(CN.N_RESOLVER_COUNTERS, np.int64)
        self.extractor = NameExtractor(self.counters)
        self.observations: list = []

    def take(self, records: np.ndarray) -> None:
        self.observations.extend(self.extractor.slots(records))


class ToTable(Discard):
    """Packet records straight into one flow table; the flow rows it lets go are kept."""

    def __init__(self, settings: Settings):
        self.rows: list[np.ndarray] = []
        self.table = FlowTable(settings.idle_timeout_us, settings.active_timeout_us, settings.max_flows,
                               self.rows.append)

    def take(self, records: np.ndarray) -> None:
        self.table.ingest(records)


class Keep(Discard):
    """Copies of every batch it is given."""

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def take(self, records: np.ndarray) -> None:
        self.batches.append(records.copy())


def read(settings: Settings, flows: Discard, names: Discard | None = None) -> tuple[np.ndarray, list[str]]:
    """Read the capture files of ``settings`` into the stand-ins (one worker's ring and the resolver's);
    returns the capture counters and what capture reported (damage, read errors)."""
    counters = np.zeros(CN.N_CAPTURE_COUNTERS, np.int64)
    errors: list[str] = []
    loop = CaptureLoop(settings, [flows], counters, stop_requested=lambda: False, abort_requested=lambda: False,
                       report=lambda text, level="error": errors.append(text), name_ring=names)
    loop.run(open_sources(settings))
    return counters, errors


def observations(settings: Settings) -> tuple[list, np.ndarray, list[str]]:
    """[(ts_us, Observation)] from the capture files of settings, the resolver counters, capture's reports."""
    names = ToNames()
    _, errors = read(settings, Discard(), names)
    return names.observations, names.counters, errors
