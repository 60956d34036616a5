"""The shared-memory ring keeps order across wrap-around and never overwrites unread slots."""

import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from devourer.ipc.ring import Ring

_count = [0]


def new_ring(slots, width=8):
    _count[0] += 1
    return Ring(f"devourer-test-{os.getpid()}-{_count[0]}", slots, width)


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), min_size=1, max_size=60))
def test_order_preserved_and_never_overwritten(ops):
    ring = new_ring(16)
    try:
        written, read, nxt = [], [], 0
        out = np.zeros((40, 8), np.uint8)
        for is_write, n in ops:
            if is_write:
                batch = np.array([[(nxt + i) % 256] * 8 for i in range(n)], np.uint8)
                if ring.try_write(batch):
                    written.extend(range(nxt, nxt + n))
                    nxt += n
                else:
                    assert n > ring.free_slots()
            else:
                k = ring.read_into(out[:n])
                read.extend(int(x) for x in out[:k, 0])
        k = ring.read_into(out)
        while k:
            read.extend(int(x) for x in out[:k, 0])
            k = ring.read_into(out)
        assert read == [w % 256 for w in written]
    finally:
        ring.unlink()


def test_blocking_write_waits_for_the_reader_and_can_be_aborted():
    ring = new_ring(4)
    try:
        assert ring.write(np.ones((4, 8), np.uint8), should_abort=lambda: False)
        calls = []
        assert not ring.write(np.ones((1, 8), np.uint8), should_abort=lambda: calls.append(1) or len(calls) > 3,
                              idle=lambda s: None)
        ring.close_producer()
        assert ring.closed() and ring.pending() == 4
    finally:
        ring.unlink()
    assert not os.path.exists(f"/dev/shm/{ring.name}")


def test_a_weakly_ordered_cpu_is_refused_with_a_reason():
    from devourer.ipc.ring import check_cpu

    assert check_cpu("x86_64") is None and check_cpu("AMD64") is None
    for machine in ("aarch64", "armv7l", "riscv64", "ppc64le", "i686", ""):
        why = check_cpu(machine)
        assert why is not None and "x86-64" in why and "\n" not in why
