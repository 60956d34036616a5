"""Messages to the exporter (msgpack): batches of expired flow rows, names, control.

    {"t": "flows", "w": worker, "rows": <FLOW_WORDS*8*k bytes>}
    {"t": "names", "wm": watermark_us, "obs": [...]}   from the resolver (procs.resolver)
    {"t": "done",  "w": worker}          a worker (or the resolver) drained and flushed everything
    {"t": "lost",  "w": worker}          supervisor: that process died, stop waiting for it
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
    """(kind, worker, payload) from an encoded message: payload is the rows of a
    flows message, the whole message for names, else None."""
    m = msgpack.unpackb(message)
    if m["t"] == "flows":
        return "flows", m["w"], np.frombuffer(m["rows"], np.uint64).reshape(-1, FLOW_WORDS)
    if m["t"] == "names":
        return "names", None, m
    return m["t"], m["w"], None
