"""Float64 NumPy references and tie-tolerant comparisons used across tests."""

from __future__ import annotations

import numpy as np


def np_distances(x, c, metric: str) -> np.ndarray:
  """float64 ``[N, K]`` distances. The squared-Euclidean expansion in float64
  is ~1e-16 relative to the norms, far below any float32 tolerance, and needs
  no ``[N, K, D]`` temporary."""
  x = np.asarray(x, np.float64)
  c = np.asarray(c, np.float64)
  if metric == "sqeuclidean":
    d = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
    return np.maximum(d, 0.0)
  if metric == "cosine":
    xn = np.linalg.norm(x, axis=1)[:, None]
    cn = np.linalg.norm(c, axis=1)[None, :]
    denom = xn * cn
    cos = np.where(denom > 0, (x @ c.T) / np.where(denom > 0, denom, 1), 0.0)
    return np.where(xn > 0, 1.0 - cos, 1.0)
  if metric == "dot":
    return -(x @ c.T)
  raise ValueError(metric)


def np_assign(x, c, metric: str):
  d = np_distances(x, c, metric)
  lab = d.argmin(1)
  return lab, d[np.arange(len(lab)), lab], d


def assert_labels_match(x, c, labels, metric: str, rtol: float = 1e-5, atol: float = 1e-6,
                        dist=None, dist_rtol: float | None = None, dist_atol: float | None = None):
  """Checks labels against float64 argmin, accepting near-ties.

  A label that differs from the float64 argmin is accepted only when its
  float64 distance is within ``atol + rtol * scale`` of the best one, where
  scale is the magnitude of the distances involved. Optionally checks the
  returned distances against the float64 ones for the returned labels.
  """
  labels = np.asarray(labels)
  ref_lab, ref_best, d = np_assign(x, c, metric)
  assert labels.shape == ref_lab.shape
  assert labels.min() >= 0 and labels.max() < d.shape[1]
  got = d[np.arange(len(labels)), labels]
  x64 = np.asarray(x, np.float64)
  c64 = np.asarray(c, np.float64)
  # The scale of the rounding error of each point's distances: the sizes of
  # the terms the expansion adds up, not the (possibly tiny) result.
  if metric == "sqeuclidean":
    scale = (x64 ** 2).sum(1) + (c64 ** 2).sum(1).max() + 1.0
  elif metric == "dot":
    scale = np.linalg.norm(x64, axis=1) * np.linalg.norm(c64, axis=1).max() + 1.0
  else:
    scale = np.ones(len(labels))
  bad = got - ref_best > atol + rtol * scale
  assert not bad.any(), (
      f"{bad.sum()} labels are not (near-)nearest: e.g. index {np.flatnonzero(bad)[:5]}, "
      f"gap {(got - ref_best)[bad][:5]}")
  if dist is not None:
    dist = np.asarray(dist, np.float64)
    r = rtol if dist_rtol is None else dist_rtol
    a = atol if dist_atol is None else dist_atol
    err = np.abs(dist - got)
    off = err > a * scale + r * np.abs(got)
    assert not off.any(), (
        f"{off.sum()} distances off: index {np.flatnonzero(off)[:5]}, got {dist[off][:5]}, "
        f"want {got[off][:5]}")


def make_blobs(rng, n, d, k, spread=10.0, std=0.5, dtype=np.float32):
  """Well-separated Gaussian blobs: (x [n, d], centers [k, d], true labels [n])."""
  centers = rng.normal(size=(k, d)) * spread
  lab = rng.integers(0, k, size=n)
  return (centers[lab] + rng.normal(size=(n, d)) * std).astype(dtype), centers, lab
