"""Public out-of-core calls (see :mod:`flashkmeans_jax.drivers.streaming`)."""

from __future__ import annotations

from flashkmeans_jax.drivers.streaming.driver import assign_streaming, kmeans_streaming

__all__ = ["kmeans_streaming", "assign_streaming"]
