"""devourer: a bidirectional network flow collector (libpcap -> shared-memory engine -> outputs)."""

__version__ = "0.1.0"
