"""How partial results of row blocks meet.

Every driver runs Lloyd's algorithm on *blocks* of rows: in memory there is one
block (all of x), sharded there is one block per device of the data axes, and
streaming folds chunk after chunk on the host. The statistics core
(:mod:`flashkmeans_jax.lloyd.stats`) and the seeding
(:mod:`flashkmeans_jax.lloyd.seeding`) are written once against a
:class:`Combine`, which says how values of all blocks are summed and gathered:

* :data:`LOCAL`: one block; ``sum`` is the identity, ``gather`` adds a leading
  axis of size 1;
* :func:`across`: the blocks are the shards of ``shard_map`` over mesh axes;
  ``sum`` is ``lax.psum`` and ``gather`` ``lax.all_gather``.

Only these two collectives ever cross devices, and only on O(K * D) values.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
from jax import lax

__all__ = ["Combine", "LOCAL", "across"]


class Combine(NamedTuple):
  """The reductions over row blocks (hashable: it keys jit caches).

  Attributes:
    sum: pytree -> the same pytree summed over all blocks.
    gather: array ``[...]`` -> ``[P, ...]``, every block's value in block order.
    block_index: ``() -> int32[]``, this block's position in that order.
    n_blocks: ``P``, the number of blocks.
    axes: the mesh axes of the blocks (``()`` in memory).
  """

  sum: Callable[[Any], Any]
  gather: Callable[[Any], Any]
  block_index: Callable[[], Any]
  n_blocks: int
  axes: tuple[str, ...]


def _identity(tree):
  return tree


def _stack_one(a):
  return jnp.asarray(a)[None]


def _zero():
  return jnp.int32(0)


LOCAL = Combine(sum=_identity, gather=_stack_one, block_index=_zero, n_blocks=1, axes=())


def across(axes: tuple[str, ...], n_blocks: int) -> Combine:
  """Blocks are the shards of ``shard_map`` over the mesh ``axes`` (``n_blocks``
  devices in all); use inside the mapped function only."""
  axes = tuple(axes)
  return Combine(sum=lambda tree: lax.psum(tree, axes),
                 gather=lambda a: lax.all_gather(a, axes),
                 block_index=lambda: lax.axis_index(axes),
                 n_blocks=int(n_blocks), axes=axes)
