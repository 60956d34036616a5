"""Messages to the exporter (msgpack): batches of expired flow rows and control.

    {"t": "flows", "w": worker, "rows": <FLOW_WORDS*8*k bytes>}
    {"t": "done",  "w": worker}          worker drained and flushed everything
    {"t": "lost",  "w": worker}          supervisor: that worker died, stop waiting for it
"""

import msgpack
import numpy as np

from devourer.flow.record import FLOW_WORDS


def flows(worker: int, rows: np.ndarray) -> bytes:
    return msgpack.packb({"t": "flows", "w": worker, "rows": np.ascontiguousarray(rows, np.uint64).tobytes()})


def done(worker: int) -> bytes:
    return msgpack.packb({"t": "done", "w": worker})


def lost(worker: int) -> bytes:
    return msgpack.packb({"t": "lost", "w": worker})


def decode(message: bytes):
    """(kind, worker, rows or None) from an encoded message."""
    m = msgpack.unpackb(message)
    rows = None
    if m["t"] == "flows":
        rows = np.frombuffer(m["rows"], np.uint64).reshape(-1, FLOW_WORDS)
    return m["t"], m["w"], rows
