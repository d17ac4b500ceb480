"""Row buckets: inputs padded to a few sizes so that a new number of rows
reuses a compiled program.

Every compiled program is specialised to its input shapes, so an estimator
fed batches of varying N (serving, cross-validation) would compile for each
N. The estimator pads N up to the next *bucket* -- four per octave, ``2^p *
{1, 1.25, 1.5, 1.75}``, at most 25 % more rows -- with copies of the last
row that carry weight 0 (they are assigned, never move a centroid, never
become a seed, and their outputs are dropped). Arrays whose padded size
would pass :data:`MAX_BUCKET_BYTES` keep their exact shape: there the run
costs far more than a compilation, and a copy would cost memory.

Host (NumPy) input is padded on the host, which compiles nothing; a JAX
array is padded by one small compiled program per N.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MAX_BUCKET_BYTES", "MIN_BUCKET", "bucket_rows", "pad_rows", "row_weights"]

# Padded arrays up to this size are bucketed; larger ones keep their shape.
MAX_BUCKET_BYTES = 256 * 1024 * 1024
# The smallest bucket (tiny inputs all share one program).
MIN_BUCKET = 16


def bucket_rows(n: int, row_bytes: int = 0) -> int:
  """The padded row count for ``n`` rows of ``row_bytes`` bytes each.

  ``MIN_BUCKET`` for small ``n``; else the smallest ``2^p * m / 4`` (``m`` in
  4..8) that is ``>= n``, unless that many rows would pass
  :data:`MAX_BUCKET_BYTES` (then ``n``).
  """
  n = int(n)
  if n <= MIN_BUCKET:
    b = MIN_BUCKET
  else:
    step = 1 << max(0, (n - 1).bit_length() - 3)  # a quarter of the octave's base
    b = -(-n // step) * step
  return n if b * row_bytes > MAX_BUCKET_BYTES else b


@functools.partial(jax.jit, static_argnames=("rows",))
def _pad_device(x, rows):
  extra = jnp.broadcast_to(x[-1:], (rows - x.shape[0],) + x.shape[1:])
  return jnp.concatenate([x, extra])


def pad_rows(x: Any, rows: int) -> Any:
  """``x [N, ...]`` with its last row repeated up to ``rows`` rows (NumPy in,
  NumPy out, on the host; a JAX array stays on its device)."""
  n = x.shape[0]
  if rows == n:
    return x
  if isinstance(x, jax.Array):
    return _pad_device(x, rows)
  x = np.asarray(x)
  return np.concatenate([x, np.broadcast_to(x[-1:], (rows - n,) + x.shape[1:])])


def row_weights(weights: np.ndarray | None, n: int, rows: int) -> np.ndarray | None:
  """``float32[rows]``: the weights of the ``n`` real rows (ones when None)
  and 0 for the padding; ``None`` when nothing is padded and none were given."""
  if rows == n:
    return weights
  out = np.zeros((rows,), np.float32)
  out[:n] = 1.0 if weights is None else weights
  return out
