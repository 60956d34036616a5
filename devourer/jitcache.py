"""Loading the numba-compiled hot loops from numba's on-disk cache without numba's full set-up.

Before each load from its cache, numba refreshes its compiler contexts: it imports and registers
every implementation it could need to *compile* something (≈ 0.15-0.2 s of a run, more than the
loads themselves). Machine code loaded from the cache needs none of that, only the runtime (NRT)
and the symbols its code links to; a load that misses compiles, and compiling refreshes the
contexts itself. `cached_loads()` skips the refresh for the loads made inside it (the supervisor's
warm-up, before it forks), and leaves numba as it was afterwards.
"""

import contextlib

from numba.core import caching
from numba.core.runtime import rtsys

import numba.cpython.hashing  # noqa: F401  registers the hash-secret symbols that hashing code links to


def _load_overload(self, sig, target_context):
    rtsys.initialize(target_context)
    with self._guard_against_spurious_io_errors():
        return self._load_overload(sig, target_context)


@contextlib.contextmanager
def cached_loads():
    """Load cached machine code without refreshing numba's compiler contexts, inside this block."""
    cache_class = caching.FunctionCache
    usable = all(hasattr(cache_class, name) for name in ("load_overload", "_load_overload",
                                                          "_guard_against_spurious_io_errors"))
    if not usable:  # a numba whose cache is built otherwise: load its own way
        yield
        return
    original = cache_class.load_overload
    cache_class.load_overload = _load_overload
    try:
        yield
    finally:
        cache_class.load_overload = original
