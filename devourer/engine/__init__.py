"""The engine: the supervisor that owns shared memory and children, and their wiring."""
