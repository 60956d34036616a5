"""Inter-process plumbing: shared-memory rings and counters, the msgpack wire format."""
