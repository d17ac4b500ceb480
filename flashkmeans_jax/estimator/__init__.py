"""The scikit-learn-style estimator and what it is built from.

* :class:`KMeans` (:mod:`.kmeans`): ``fit``, ``partial_fit``, ``predict``,
  ``transform``, ``score``, with scikit-learn's conventions;
* :func:`pairwise_distances_tiled` (:mod:`.distances`): ``transform``'s
  distances, without cancellation;
* :func:`bucket_rows` (:mod:`.rows`): the row buckets that let a new N reuse
  a compiled program;
* :func:`enable_compilation_cache` (:mod:`.compile_cache`): JAX's persistent
  compilation cache, for the estimator and the CLI.
* :func:`host_cluster_order` (:mod:`.order`): ``order_``/``offsets_``/
  ``sizes_`` of labels on the host, also the CLI's ``--order-out``.

``KMeans``, ``ConvergenceWarning`` and ``NotFittedError`` are loaded on first
use: they come with scikit-learn (about 2 s to import), which the CLI and the
functional API never need.
"""

from typing import Any

from flashkmeans_jax.estimator.compile_cache import (default_cache_dir,
                                                     enable_compilation_cache)
from flashkmeans_jax.estimator.distances import pairwise_distances_tiled
from flashkmeans_jax.estimator.order import host_cluster_order
from flashkmeans_jax.estimator.rows import bucket_rows

__all__ = ["ConvergenceWarning", "KMeans", "NotFittedError", "bucket_rows",
           "default_cache_dir", "enable_compilation_cache", "host_cluster_order",
           "pairwise_distances_tiled"]

_LAZY = ("ConvergenceWarning", "KMeans", "NotFittedError")


def __getattr__(name: str) -> Any:
  """The scikit-learn-backed names, imported when first asked for (PEP 562)."""
  if name == "KMeans":
    from flashkmeans_jax.estimator.kmeans import KMeans as value
  elif name in _LAZY:
    from flashkmeans_jax.estimator import compat
    value = getattr(compat, name)
  else:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  globals()[name] = value  # later look-ups skip this function
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
