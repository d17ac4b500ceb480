"""Meshes and placement of row-sharded points.

Points are split along axis 0 over one or more mesh axes (the *data* axes);
centroids are replicated. Uneven N: a ``jax.Array`` sharded over P devices
always has P | N. Unsharded data (NumPy, one device) whose N is not a
multiple of P is padded with zero rows of weight 0 before placing: padded
rows count in no sum, count, tolerance, inertia or seeding draw.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


__all__ = ["DEFAULT_AXIS", "as_axes", "n_shards", "row_split", "is_row_sharded",
           "data_mesh", "resolve", "place", "prepare"]

DEFAULT_AXIS = "data"


# ----------------------------------------------------------------------------
# Mesh and placement
# ----------------------------------------------------------------------------

def as_axes(axis_name) -> tuple[str, ...]:
  return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def n_shards(mesh: Mesh, axes: tuple[str, ...]) -> int:
  return int(math.prod(mesh.shape[a] for a in axes))


def row_split(x) -> tuple[Mesh, tuple[str, ...]] | None:
  """(mesh, data axes) when x is a concrete jax.Array whose axis 0 is split."""
  if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
    return None
  sh = getattr(x, "sharding", None)
  if not isinstance(sh, NamedSharding) or len(sh.spec) == 0 or sh.spec[0] is None:
    return None
  axes = as_axes(sh.spec[0])
  if n_shards(sh.mesh, axes) <= 1:
    return None
  return sh.mesh, axes


def is_row_sharded(x: Any) -> bool:
  """Whether ``x`` is a concrete ``jax.Array`` with a ``NamedSharding`` that
  splits axis 0 over more than one device (what makes :func:`kmeans`,
  :func:`assign` and :func:`update` take the data-parallel path)."""
  return row_split(x) is not None


def data_mesh(devices: Sequence[jax.Device] | None = None,
              axis_name: str = DEFAULT_AXIS) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all of ``jax.devices()``, every
  process's) with one data axis."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (axis_name,))


def resolve(x, mesh, axis_name) -> tuple[Mesh, tuple[str, ...]]:
  split = row_split(x)
  if mesh is None and axis_name is None and split is not None:
    return split
  if mesh is None:
    if split is not None and (axis_name is None or as_axes(axis_name) == split[1]):
      return split
    mesh = data_mesh(axis_name=axis_name or DEFAULT_AXIS)
    return mesh, (axis_name or DEFAULT_AXIS,)
  if axis_name is None:
    if split is not None and split[0] == mesh:
      return mesh, split[1]
    if len(mesh.axis_names) != 1:
      raise ValueError(
          f"mesh has axes {mesh.axis_names}: pass axis_name= to say which split the points")
    axis_name = mesh.axis_names[0]
  axes = as_axes(axis_name)
  for a in axes:
    if a not in mesh.axis_names:
      raise ValueError(f"axis_name {a!r} is not an axis of the mesh {mesh.axis_names}")
  return mesh, axes


def place(a, n_pad, sharding, fill=0):
  """``a`` padded on axis 0 to ``n_pad`` rows and put in ``sharding``."""
  if a is None:
    return None
  n = a.shape[0]
  if n_pad != n:
    widths = ((0, n_pad - n),) + ((0, 0),) * (a.ndim - 1)
    a = (np.pad(a, widths, constant_values=fill) if isinstance(a, np.ndarray)
         else jnp.pad(a, widths, constant_values=fill))
  if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
    return a
  return jax.device_put(a, sharding)


def prepare(x, weights, mesh, axes):
  """Places x (and weights) row-sharded; pads with weight-0 rows if needed."""
  n = x.shape[0]
  p = n_shards(mesh, axes)
  n_pad = -(-n // p) * p
  if n_pad != n and weights is None:
    weights = np.ones((n,), np.float32)
  xs = place(x, n_pad, NamedSharding(mesh, P(axes, None)))
  ws = place(weights, n_pad, NamedSharding(mesh, P(axes)))
  return xs, ws, n_pad
