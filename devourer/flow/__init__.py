"""Flow layer: the flow row layout, the sharded flow table and its expiry rules."""
