"""The small-D assignment op (``D < SMALL_D``): one entry point over its paths.

* ``D = 1``: the exact sorted-centroid search (:mod:`.sorted_search`, XLA
  ops) under every ``impl``, unless a config turns ``d1_search`` off (then
  the FMA kernel, for comparison).
* ``2 <= D < 16``: the register-tiled FMA kernel (:mod:`.pallas_triton`) for
  ``impl="pallas"`` / ``"pallas_interpret"``, the fused XLA path
  (:mod:`.xla`) for ``impl="xla"``.

Results follow :mod:`.reference` (labels ``int32``, distances ``float32``,
the metrics and conventions of ``ops.assign``). The float32 arithmetic is
the same whatever the matmul precision, so there is no ``precision``
argument: float32 points get true float32 products (as ``"highest"``),
16-bit points exact ones. Arguments are trusted (validated at the public
entry).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flashkmeans_jax.ops.assign_small_d import config as config_mod
from flashkmeans_jax.ops.assign_small_d import sorted_search
from flashkmeans_jax.ops.assign_small_d import xla

__all__ = ["assign_small_d", "handles", "SMALL_D"]

# Feature counts below this go to this op: a tensor-core tile has a
# contraction of at least 16.
SMALL_D = 16


def handles(d: int, config=None) -> bool:
  """Whether this op can take a ``[N, d]`` assignment for ``ops.assign``:
  ``d < SMALL_D`` and no config of the tensor-core kernel (``AssignConfig``)
  given. (``ops.assign`` also keeps the float32 half-operand precisions,
  which ask for 16-bit products, on its own paths.)"""
  return d < SMALL_D and (config is None or isinstance(config, config_mod.SmallDConfig))


def _batched(x, centroids, metric, impl, config):
  d = x.shape[-1]
  cfg = config or config_mod.small_d_config(x.shape[1], centroids.shape[1], d)
  if d == 1 and cfg.d1_search:
    return sorted_search.search_1d(x, centroids, metric=metric)
  if impl == "xla":
    return xla.assign_fma_xla(x, centroids, metric=metric)
  # Imported here so that the CPU path never imports the Triton lowering.
  from flashkmeans_jax.ops.assign_small_d import pallas_triton
  return pallas_triton.assign_fma_pallas(x, centroids, metric=metric, config=cfg,
                                         interpret=(impl == "pallas_interpret"))


@functools.partial(jax.jit, static_argnames=("metric", "impl", "config"))
def assign_small_d(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
                   impl: str = "xla", config: config_mod.SmallDConfig | None = None
                   ) -> tuple[jax.Array, jax.Array]:
  """Nearest centroid and its distance for ``D < SMALL_D``, one problem or a batch.

  Args:
    x: ``[N, D]`` or ``[B, N, D]`` points (float16, bfloat16, float32;
      float64 with ``impl="xla"`` or ``D = 1``).
    centroids: ``[K, D]``, or ``[B, K, D]`` with a batch of points (``[K, D]``
      is then shared by every problem); cast to ``x.dtype``.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.
    impl: ``"xla"``, ``"pallas"`` or ``"pallas_interpret"`` (resolved).
    config: :class:`config.SmallDConfig`; ``None`` picks one from the shapes.

  Returns:
    ``labels int32[..., N]`` (ties to the lowest index) and ``dist
    float32[..., N]``. Under ``jax.vmap`` the kernel's batching rule adds a
    grid axis (one launch); a ``[B, N, D]`` batch is one grid already.
  """
  if x.ndim == 2:
    labels, dist = _batched(x[None], centroids[None], metric, impl, config)
    return labels[0], dist[0]
  if centroids.ndim == 2:
    centroids = jnp.broadcast_to(centroids[None], (x.shape[0],) + centroids.shape)
  return _batched(x, centroids, metric, impl, config)
