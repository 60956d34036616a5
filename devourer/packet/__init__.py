"""Packet layer: capture-file record headers, batch decode of L2-L4 into fixed-size records."""
