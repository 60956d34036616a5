"""Passive name resolution: extracting names from packets, and the timed name map."""
