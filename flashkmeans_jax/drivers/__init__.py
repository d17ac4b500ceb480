"""Drivers of the Lloyd core: sharded (``shard_map`` + ``psum``), streaming
(host memory, chunk by chunk) and checked (``checkify``)."""
