"""Messages on the exporter's queue (msgpack): names and control. Flow rows travel in shared-memory
rings instead (``engine.topology``: one flow ring per worker).

    {"t": "names", "wm": watermark_us, "obs": [[ts_us, *fields], ...]}   from the resolver
    {"t": "done",  "w": id}          the resolver drained and sent everything
    {"t": "lost",  "w": id}          supervisor: that worker (or the resolver) died, stop waiting for it

``decode`` gives one of the three message types below. What an observation's fields are is the names
package's business (``names.observe.observations_of``); here they are a row of plain values.
"""

from typing import NamedTuple

import msgpack

WATERMARK_DONE = (1 << 63) - 1  # the watermark of the resolver's last names message: every name is in


class Names(NamedTuple):
    """Observations, and the capture clock up to which every name packet has been handled."""

    watermark: int
    rows: list


class Done(NamedTuple):
    sender: int


class Lost(NamedTuple):
    sender: int


Message = Names | Done | Lost


def names(rows, watermark: int) -> bytes:
    return msgpack.packb({"t": "names", "wm": watermark, "obs": rows})


def done(sender: int) -> bytes:
    return msgpack.packb({"t": "done", "w": sender})


def lost(sender: int) -> bytes:
    return msgpack.packb({"t": "lost", "w": sender})


def decode(message: bytes) -> Message:
    m = msgpack.unpackb(message)
    if m["t"] == "names":
        return Names(m["wm"], m["obs"])
    return (Done if m["t"] == "done" else Lost)(m["w"])
