"""flashkmeans-jax: exact k-means for JAX with Pallas GPU kernels.

The algorithm rests on two pure functions, :func:`assign` (nearest centroid,
fused distance + argmin) and :func:`update` (means of the clusters, by
sort-inverse aggregation on GPU), which :func:`kmeans` runs inside one
compiled ``lax.while_loop``.
"""

from flashkmeans_jax._version import __version__
from flashkmeans_jax.api.balanced import balanced_kmeans
from flashkmeans_jax.api.checked import checked_batched_kmeans, checked_kmeans
from flashkmeans_jax.api.hierarchical import hierarchical_kmeans
from flashkmeans_jax.api.kmeans import batched_kmeans, kmeans
from flashkmeans_jax.api.ops import (Certification, assign, certification, cluster_sums,
                                     finalize_centroids, init_kmeans_plusplus, init_random,
                                     update)
from flashkmeans_jax.api.order import ClusterOrder, cluster_order
from flashkmeans_jax.api.sharded import (allreduce_sums, psum_sums, sharded_assign,
                                         sharded_init_kmeans_plusplus, sharded_kmeans,
                                         sharded_update)
from flashkmeans_jax.api.topk import assign_topk
from flashkmeans_jax.api.streaming import (assign_streaming, kmeans_streaming,
                                           pinned_memory_held, release_pinned_memory,
                                           transfer_rates)
from flashkmeans_jax.api.training import (CodebookTransform, EMAState, MiniBatchState,
                                          VQResult, ema_codebook, minibatch_codebook,
                                          vector_quantize)
from flashkmeans_jax.core.precision import Certified
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.estimator.compile_cache import enable_compilation_cache
from flashkmeans_jax.ops.assign.config import AssignConfig
from flashkmeans_jax.ops.cluster_sums.config import UpdateConfig

__all__ = [
    "AssignConfig",
    "Certification",
    "Certified",
    "ClusterOrder",
    "CodebookTransform",
    "EMAState",
    "KMeans",
    "KMeansResult",
    "__version__",
    "allreduce_sums",
    "assign",
    "assign_topk",
    "assign_streaming",
    "balanced_kmeans",
    "batched_kmeans",
    "certification",
    "checked_batched_kmeans",
    "checked_kmeans",
    "cluster_order",
    "cluster_sums",
    "ema_codebook",
    "enable_compilation_cache",
    "finalize_centroids",
    "hierarchical_kmeans",
    "init_kmeans_plusplus",
    "init_random",
    "kmeans",
    "kmeans_streaming",
    "MiniBatchState",
    "minibatch_codebook",
    "pinned_memory_held",
    "psum_sums",
    "release_pinned_memory",
    "sharded_assign",
    "sharded_init_kmeans_plusplus",
    "sharded_kmeans",
    "sharded_update",
    "transfer_rates",
    "update",
    "UpdateConfig",
    "VQResult",
    "vector_quantize",
]


def __getattr__(name: str):
  """``KMeans`` is imported on first use (PEP 562): it brings scikit-learn,
  about 2 s of start-up that the CLI and the functional API never need."""
  if name == "KMeans":
    from flashkmeans_jax.estimator import KMeans
    globals()["KMeans"] = KMeans
    return KMeans
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
