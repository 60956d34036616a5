"""devourer: a bidirectional network flow collector (libpcap -> shared-memory engine -> outputs)."""

import os as _os

__version__ = "0.1.0"


def _numba_cache_dir() -> None:
    """Compiled hot loops are cached beside the package; where that is read-only
    (a system install run by an unprivileged user) keep the cache per user instead."""
    if "NUMBA_CACHE_DIR" in _os.environ:
        return
    here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.access(here, _os.W_OK):
        return
    base = _os.environ.get("XDG_CACHE_HOME") or (
        _os.path.join(_os.path.expanduser("~"), ".cache") if _os.access(_os.path.expanduser("~"), _os.W_OK)
        else f"/tmp/devourer-cache-{_os.getuid()}")
    _os.environ["NUMBA_CACHE_DIR"] = _os.path.join(base, "devourer", "numba")


_numba_cache_dir()
# numpy's BLAS starts a thread per core on import, whose spinning took CPU from the capture on small
# machines; devourer does no linear algebra.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
