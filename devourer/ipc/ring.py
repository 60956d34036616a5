"""Single-producer/single-consumer ring of fixed-size slots in shared memory.

The supervisor creates every ring before it forks the processes that use it;
producer and consumer work on the inherited mapping, so no process attaches by
name and the supervisor can unlink the segment as soon as its children run
(nothing of ours stays in /dev/shm, whatever happens to the processes later).

Byte layout of a segment (all words little-endian u64):

    word 0    magic  0x4456524752494E47 ("DVRGRING")
    word 1    version (1)
    word 2    slot_bytes
    word 3    capacity (slots, a power of two)
    word 8    head      slots ever written (producer only)
    word 9    clock_us  producer's packet clock after its last complete batch
    word 10   closed    1 once the producer will write no more
    word 11   dropped   slots the producer could not write (live capture, ring full)
    word 16   tail      slots ever read (consumer only; own cache line)
    byte 256  capacity * slot_bytes of slot data

Synchronization is one store per batch: the producer copies a batch, then
publishes ``head``; the consumer copies what lies below ``head``, then
publishes ``tail``. That order is enough on x86-64 (total store order), which is
what devourer runs on; a weakly ordered CPU (ARM: Graviton, Raspberry Pi) would need
release/acquire fences here, which numpy stores cannot give, so ``check_cpu`` refuses
to start there rather than count wrong.
"""

import mmap
import os
import platform
import time

import numpy as np

#: CPUs whose store order makes the one-store publication above safe (total store order, 64-bit words)
ORDERED_CPUS = ("x86_64", "amd64")
MAGIC = 0x4456524752494E47
VERSION = 1
HEADER_BYTES = 256
H_MAGIC, H_VERSION, H_SLOT, H_CAP = 0, 1, 2, 3
H_HEAD, H_CLOCK, H_CLOSED, H_DROPPED = 8, 9, 10, 11
H_TAIL = 16


SHM_DIR = "/dev/shm"


def check_cpu(machine: str | None = None) -> str | None:
    """Why the rings cannot run on this CPU (one line), or None where they can."""
    machine = (machine if machine is not None else platform.machine()) or "unknown"
    if machine.lower() in ORDERED_CPUS:
        return None
    return (f"this CPU is {machine}: devourer's shared-memory rings rely on x86-64's store order, and on a weakly "
            "ordered CPU they could hand over half-written packets; run it on x86-64 (amd64)")


class _Segment:
    """A shared-memory segment this process creates and, once, unlinks.

    Made directly in /dev/shm (mode 0600) rather than with multiprocessing's
    SharedMemory, whose resource-tracker helper process we do not need (we
    unlink every segment ourselves) and which fails where the interpreter's
    path is not readable by the user devourer runs as."""

    def __init__(self, name: str, size: int):
        self.name = name
        self._path = os.path.join(SHM_DIR, name)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)  # EEXIST if taken
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.unlink(self._path)
            raise
        finally:
            os.close(fd)
        self.buf = memoryview(self._map)
        self._unlinked = False

    def unlink(self) -> None:
        """Remove the name from /dev/shm; mappings already made stay valid."""
        if not self._unlinked:
            self._unlinked = True
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass


class Ring(_Segment):
    """One SPSC ring. Create it in the supervisor; use it in the forked children."""

    def __init__(self, name: str, slots: int, slot_bytes: int):
        if slots & (slots - 1):
            raise ValueError("ring slots must be a power of two")
        super().__init__(name, HEADER_BYTES + slots * slot_bytes)
        self._hdr = np.ndarray((HEADER_BYTES // 8,), np.uint64, self.buf, 0)
        self._data = np.ndarray((slots, slot_bytes), np.uint8, self.buf, HEADER_BYTES)
        self._hdr[:] = 0
        self._hdr[H_MAGIC] = MAGIC
        self._hdr[H_VERSION] = VERSION
        self._hdr[H_SLOT] = slot_bytes
        self._hdr[H_CAP] = slots
        self.capacity = slots
        self._mask = slots - 1

    # ---- producer side
    def free_slots(self) -> int:
        return self.capacity - int(self._hdr[H_HEAD] - self._hdr[H_TAIL])

    def try_write(self, records: np.ndarray) -> bool:
        """Write all records or none (live capture drops a batch that does not fit)."""
        n = records.shape[0]
        if n > self.free_slots():
            self._hdr[H_DROPPED] += n
            return False
        self._copy_in(records)
        return True

    def write(self, records: np.ndarray, should_abort, idle=time.sleep) -> bool:
        """Write all records, waiting for space (lossless replay). False if aborted."""
        return self.write_upto(records, should_abort, idle) == records.shape[0]

    def write_upto(self, records: np.ndarray, should_abort, idle=time.sleep) -> int:
        """Write the records, waiting for space, until all are written or ``should_abort()``; how many were."""
        done = 0
        n = records.shape[0]
        pause = 1e-5
        while done < n:
            free = self.free_slots()
            if free == 0:
                if should_abort():
                    return done
                idle(pause)
                pause = min(pause * 2, 2e-3)
                continue
            k = min(free, n - done)
            self._copy_in(records[done:done + k])
            done += k
            pause = 1e-5
        return done

    def _copy_in(self, records: np.ndarray) -> None:
        head = int(self._hdr[H_HEAD])
        n = records.shape[0]
        at = head & self._mask
        first = min(n, self.capacity - at)
        self._data[at:at + first] = records[:first]
        if first < n:
            self._data[: n - first] = records[first:]
        self._hdr[H_HEAD] = head + n  # publish after the copy

    def publish_clock(self, clock_us: int) -> None:
        self._hdr[H_CLOCK] = max(int(self._hdr[H_CLOCK]), int(clock_us))

    def close_producer(self) -> None:
        self._hdr[H_CLOSED] = 1

    def dropped(self) -> int:
        return int(self._hdr[H_DROPPED])

    # ---- consumer side
    def clock_us(self) -> int:
        return int(self._hdr[H_CLOCK])

    def closed(self) -> bool:
        return bool(self._hdr[H_CLOSED])

    def pending(self) -> int:
        return int(self._hdr[H_HEAD] - self._hdr[H_TAIL])

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to len(out) slots into out and free them; returns how many."""
        n = self.peek_into(out)
        if n:
            self.release(n)  # after the copy
        return n

    def peek_into(self, out: np.ndarray, skip: int = 0) -> int:
        """Copy up to len(out) slots, starting ``skip`` slots after the oldest, without freeing them."""
        start = int(self._hdr[H_TAIL]) + skip
        n = min(int(self._hdr[H_HEAD]) - start, out.shape[0])
        if n <= 0:
            return 0
        at = start & self._mask
        first = min(n, self.capacity - at)
        out[:first] = self._data[at:at + first]
        if first < n:
            out[first:n] = self._data[: n - first]
        return n

    def release(self, n: int) -> None:
        """Free the n oldest slots (the consumer is done with them)."""
        self._hdr[H_TAIL] = int(self._hdr[H_TAIL]) + n


class SharedCounters(_Segment):
    """An int64 array in shared memory, sliced into named regions per process.

    Every process writes only its own region (the arrays its compiled loops
    update in place), the supervisor only reads, so no locking is needed."""

    def __init__(self, name: str, words: int):
        super().__init__(name, max(8, words * 8))
        self.array = np.ndarray((words,), np.int64, self.buf, 0)
        self.array[:] = 0

    def region(self, start: int, length: int) -> np.ndarray:
        return self.array[start:start + length]
