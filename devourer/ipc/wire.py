"""Messages on the exporter's queue (msgpack): names and control. Flow rows travel in shared-memory
rings instead (``engine.topology``: one flow ring per worker).

    {"t": "names", "wm": watermark_us, "obs": [...]}   from the resolver (procs.resolver)
    {"t": "done",  "w": id}          the resolver drained and sent everything
    {"t": "lost",  "w": id}          supervisor: that worker (or the resolver) died, stop waiting for it
"""

import msgpack


def done(sender: int) -> bytes:
    return msgpack.packb({"t": "done", "w": sender})


def lost(sender: int) -> bytes:
    return msgpack.packb({"t": "lost", "w": sender})


def decode(message: bytes):
    """(kind, sender, payload) from an encoded message: payload is the whole message for names, else None."""
    m = msgpack.unpackb(message)
    if m["t"] == "names":
        return "names", None, m
    return m["t"], m["w"], None
