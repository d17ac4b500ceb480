"""The scikit-learn-style estimator and what it is built from.

* :class:`KMeans` (:mod:`.kmeans`): ``fit``, ``partial_fit``, ``predict``,
  ``transform``, ``score``, with scikit-learn's conventions;
* :func:`pairwise_distances_tiled` (:mod:`.distances`): ``transform``'s
  distances, without cancellation;
* :func:`bucket_rows` (:mod:`.rows`): the row buckets that let a new N reuse
  a compiled program;
* :func:`enable_compilation_cache` (:mod:`.compile_cache`): JAX's persistent
  compilation cache, for the estimator and the CLI.
"""

from flashkmeans_jax.estimator.compat import ConvergenceWarning, NotFittedError
from flashkmeans_jax.estimator.compile_cache import (default_cache_dir,
                                                     enable_compilation_cache)
from flashkmeans_jax.estimator.distances import pairwise_distances_tiled
from flashkmeans_jax.estimator.kmeans import KMeans
from flashkmeans_jax.estimator.rows import bucket_rows

__all__ = ["ConvergenceWarning", "KMeans", "NotFittedError", "bucket_rows",
           "default_cache_dir", "enable_compilation_cache", "pairwise_distances_tiled"]
