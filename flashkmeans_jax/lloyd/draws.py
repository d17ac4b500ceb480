"""The draws and distances every seeding is built from, written against a
:class:`~flashkmeans_jax.lloyd.combine.Combine` (one block in memory, or
row blocks inside ``shard_map`` that never gather the points)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.lloyd.combine import Combine

__all__ = ["usable_rows", "dist_to_candidates", "gather_rows", "draw_proportional"]


def usable_rows(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(w, ||x||^2, x)`` with rows holding NaN/Inf neutralised (weight 0, norm 0,
  zero row): such points never become seeds and add nothing to the potential."""
  xf_sq = jnp.sum(jnp.square(x.astype(jnp.float32)), -1)
  finite = jnp.isfinite(xf_sq)
  return (jnp.where(finite, w, 0.0), jnp.where(finite, xf_sq, 0.0),
          jnp.where(finite[:, None], x, jnp.zeros((), x.dtype)))


def dist_to_candidates(x: jax.Array, xsq: jax.Array, cand: jax.Array, metric: str,
                       precision: Any) -> jax.Array:
  """float32 ``[N, L]`` distances from every point to L candidate rows."""
  cf = cand.astype(jnp.float32)
  dots = lax.dot_general(x, cand.astype(x.dtype), (((1,), (1,)), ((), ())),
                         precision=precision, preferred_element_type=jnp.float32)
  if metric == "cosine":
    xn = jnp.sqrt(xsq)[:, None]
    cn = jnp.sqrt(jnp.sum(cf * cf, -1))[None, :]
    denom = xn * cn
    return jnp.where(denom > 0, 1.0 - dots / jnp.where(denom > 0, denom, 1.0), 1.0)
  csq = jnp.sum(cf * cf, -1)
  return jnp.maximum(xsq[:, None] - 2.0 * dots + csq[None, :], 0.0)


def gather_rows(owner: jax.Array, local_idx: jax.Array, x: jax.Array, combine: Combine) -> jax.Array:
  """``float32 [L, D]``: row ``local_idx[l]`` of block ``owner[l]``, on every block."""
  mine = owner == combine.block_index()
  rows = x[local_idx].astype(jnp.float32)
  return combine.sum(jnp.where(mine[:, None], rows, 0.0))


def draw_proportional(key: jax.Array, wd: jax.Array, num: int, combine: Combine):
  """``num`` independent draws with P(row) = wd / sum(wd) over all blocks.

  Returns (owner block, local index) per draw: the block is found on the
  gathered block totals, the row on the block's own cumulative sum.
  """
  n = wd.shape[0]
  cum = jnp.cumsum(wd)
  tots = combine.gather(cum[-1])  # [P]
  incl = jnp.cumsum(tots)
  excl = incl - tots
  r = jax.random.uniform(key, (num,)) * incl[-1]
  s = jnp.searchsorted(incl, r, side="right")
  last_block = combine.n_blocks - 1 - jnp.argmax((tots > 0)[::-1])
  s = jnp.where(s >= combine.n_blocks, last_block, s)  # rounding at the top end
  idx = jnp.searchsorted(cum, r - excl[combine.block_index()])
  last_local = n - 1 - jnp.argmax((wd > 0)[::-1])
  return s, jnp.clip(jnp.minimum(idx, last_local), 0, n - 1)
