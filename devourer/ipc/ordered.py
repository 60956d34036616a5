"""One consumer's input from several capture readers, taken in chunk order.

With one reader a worker (or the resolver) reads its single ring. With ``--readers N`` each reader has a ring to
every consumer, and a file is cut into chunks read round-robin (``packet.chunks``): chunk ``c`` comes through the
rings of reader ``c % N`` and ends with a marker record. Taking the rings in that order hands the consumer its
packets exactly as one reader would. Each chunk's records carry its own running maximum of packet time (the
capture clock); the clock of the chunks before it is folded in here, so the records are the same bytes one reader
writes.

A reader that stopped early (a signal, an error) closes its rings without marking its last chunk: its ring is then
passed over, so that every packet read is still counted.

Live capture with several readers (PACKET_FANOUT) has no chunks: the kernel puts both directions of a flow on the
same reader, so the rings are read as they fill.

This module knows of the records only what a ``Framing`` tells it: which byte and bit mark a chunk's end, and
which u64 word holds a record's clock. The end marker is a slot of its own: the mark, and the chunk's clock in its
first 8 bytes.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Framing:
    """Where the records of a ring keep what chunk order needs (the record layout's owner says:
    ``packet.layout.RING_FRAMING``)."""

    flag_byte: int  # the byte whose ``end_flag`` bit marks a chunk's end marker
    end_flag: int
    clock_word: int  # the u64 word with the record's running maximum of packet time


def end_marker(clock_us: int, framing: Framing, slot_bytes: int) -> np.ndarray:
    """The one-slot marker a reader writes to each of its rings after a chunk."""
    slot = np.zeros((1, slot_bytes), np.uint8)
    slot[0, :8] = np.frombuffer(int(clock_us).to_bytes(8, "little", signed=True), np.uint8)
    slot[0, framing.flag_byte] = framing.end_flag
    return slot


class OrderedRings:
    """``ordered``: replay, chunks in turn. Otherwise (live capture with PACKET_FANOUT) the kernel keeps each flow
    on one reader, so the rings are taken as they come, and time is the earliest of the readers' clocks."""

    def __init__(self, rings, framing: Framing, ordered: bool = True):
        self.rings = list(rings)
        self.framing = framing
        self.ordered = ordered
        self.current = 0
        self.clock = 0  # running maximum of packet time over the chunks taken so far

    def clock_us(self) -> int:
        """Time up to which every record is in the rings or taken (read it before reading)."""
        if len(self.rings) == 1:
            return self.rings[0].clock_us()
        return self.clock if self.ordered else min(r.clock_us() for r in self.rings)

    def read_into(self, out: np.ndarray) -> tuple[int, bool]:
        """Copy up to len(out) records of the current chunk into ``out``; (count, whether the chunk ended)."""
        if len(self.rings) == 1:
            return self.rings[0].read_into(out), False
        if not self.ordered:
            for _ in range(len(self.rings)):
                self.current = (self.current + 1) % len(self.rings)
                n = self.rings[self.current].read_into(out)
                if n:
                    return n, False
            return 0, False
        for _ in range(len(self.rings)):
            ring = self.rings[self.current]
            closed = ring.closed()  # read first: once closed, what is in the ring is all there will be
            n = ring.peek_into(out)
            if n or not closed:
                break
            self.current = (self.current + 1) % len(self.rings)  # this reader stopped: pass over it
        else:
            return 0, False
        if n == 0:
            return 0, False
        ends = np.flatnonzero(out[:n, self.framing.flag_byte] & self.framing.end_flag)
        if len(ends):
            k = int(ends[0])
            ring.release(k + 1)
            self._fold_clock(out[:k])
            self.clock = max(self.clock, int(out[k, :8].view(np.int64)[0]))
            self.current = (self.current + 1) % len(self.rings)
            return k, True
        ring.release(n)
        self._fold_clock(out[:n])
        return n, False

    def _fold_clock(self, records: np.ndarray) -> None:
        if len(records) and self.clock:
            clocks = records.view(np.int64)[:, self.framing.clock_word]
            np.maximum(clocks, self.clock, out=clocks)

    def finished(self) -> bool:
        """Every ring closed and emptied."""
        return all(r.closed() and r.pending() == 0 for r in self.rings)
