"""The public entry points: validation once per call, then the driver that
fits the input (sharded, streaming or in memory)."""
