"""Quick matplotlib views of a clustering: inertia curve, cluster sizes, 2-D map.

matplotlib is an optional dependency (``pip install "flashkmeans-jax[plot]"``);
it is imported when a function is called, not when this module is. Every
function draws on ``ax`` (or on a new figure's axes) and returns the Axes.
Arguments are checked with the library's checks
(:mod:`flashkmeans_jax.core.validation`) before anything is drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flashkmeans_jax.core import validation

__all__ = ["plot_inertia", "plot_cluster_sizes", "plot_clusters_2d", "pca_2d"]


def _pyplot():
  try:
    import matplotlib.pyplot as plt
  except ImportError as e:
    raise ImportError(
        "flashkmeans_jax.plotting needs matplotlib: pip install \"flashkmeans-jax[plot]\" "
        "(or pip install matplotlib)") from e
  return plt


def _axes(ax):
  if ax is not None:
    return ax
  _, ax = _pyplot().subplots()
  return ax


def _points(x: Any, name: str = "x") -> np.ndarray:
  """``x`` as a float64 NumPy ``[N, D]`` array, checked (integers allowed)."""
  if not (hasattr(x, "shape") or isinstance(x, (list, tuple))):
    raise TypeError(f"{name} must be an array [N, D], got {type(x).__name__}")
  x = np.asarray(x)
  validation.check_points(x, name, numeric=True)
  return x.astype(np.float64)


def _labels(labels: Any, n: int | None = None, k: int | None = None) -> np.ndarray:
  """Integer labels ``[n]`` (in ``[0, k)`` with ``k``), from an array, a
  :class:`KMeansResult` or a fitted :class:`flashkmeans_jax.KMeans`."""
  for attr in ("labels_", "labels"):
    if hasattr(labels, attr) and not hasattr(labels, "shape"):
      labels = getattr(labels, attr)
      break
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D (one per point), got shape {labels.shape}")
  validation.check_labels(labels, labels.size if n is None else n, k=k)
  return labels


def _history(result_or_history: Any) -> np.ndarray:
  """Finite inertia values from a KMeansResult, a fitted KMeans or an array."""
  h = result_or_history
  for attr in ("inertia_history_", "inertia_history"):
    if hasattr(h, attr):
      h = getattr(h, attr)
      break
  h = np.asarray(h)
  if not (np.issubdtype(h.dtype, np.number) and not np.issubdtype(h.dtype, np.complexfloating)):
    raise TypeError("expected an inertia history (a KMeansResult, a fitted KMeans or a "
                    f"1-D array of numbers), got {type(result_or_history).__name__} "
                    f"of dtype {h.dtype}")
  h = h.astype(np.float64)
  if h.ndim != 1:
    raise ValueError(
        f"expected one clustering's inertia history (1-D), got shape {h.shape}; "
        "index a batched result first")
  return h[np.isfinite(h)]


def plot_inertia(result_or_history: Any, ax: Any = None, **line_kw) -> Any:
  """Inertia against iteration.

  Args:
    result_or_history: a :class:`KMeansResult`, a fitted
      :class:`flashkmeans_jax.KMeans`, or a 1-D array of inertia values (NaN
      entries, the unused tail of ``inertia_history``, are dropped).
    ax: matplotlib Axes to draw on; a new figure when None.
    line_kw: passed to ``ax.plot``.
  """
  h = _history(result_or_history)
  ax = _axes(ax)
  ax.plot(np.arange(len(h)), h, marker="o", markersize=3, **line_kw)
  ax.set_xlabel("iteration")
  ax.set_ylabel("inertia")
  ax.set_title("k-means inertia")
  return ax


def plot_cluster_sizes(labels: Any, k: int, ax: Any = None, **bar_kw) -> Any:
  """Bar chart of the number of points in each of the ``k`` clusters.

  ``labels``: integer ``[N]`` in ``[0, k)``, a :class:`KMeansResult` or a
  fitted :class:`flashkmeans_jax.KMeans`.
  """
  k = validation.check_k(k)
  labels = _labels(labels, k=k)
  counts = np.bincount(labels.astype(np.int64), minlength=k)[:k]
  ax = _axes(ax)
  ax.bar(np.arange(k), counts, **bar_kw)
  ax.set_xlabel("cluster")
  ax.set_ylabel("points")
  ax.set_title(f"cluster sizes (K={k})")
  return ax


def pca_2d(x: Any, centroids: Any = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
  """Projects x (and centroids) on x's first two principal axes.

  Returns ``(x2 [N, 2], centroids2 [K, 2] or None, components [2, D])``;
  computed with NumPy's SVD of the centred data (float64).
  """
  x = _points(x)
  if centroids is not None:
    validation.check_centroids(_points(centroids, "centroids"), x.shape[1])
  mean = x.mean(axis=0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  comp = vt[:2]
  if comp.shape[0] < 2:  # one feature: pad a zero axis
    comp = np.vstack([comp, np.zeros_like(comp)])
  x2 = (x - mean) @ comp.T
  c2 = None
  if centroids is not None:
    c2 = (np.asarray(centroids, dtype=np.float64) - mean) @ comp.T
  return x2, c2, comp


def plot_clusters_2d(x: Any, labels: Any, centroids: Any = None, ax: Any = None,
                     max_points: int | None = 20_000, seed: int = 0) -> Any:
  """Scatter plot of the points on their first two principal axes, coloured by label.

  Centroids, when given, are projected on the same axes and drawn as black
  crosses. At most ``max_points`` points are drawn (a random subset, for
  speed); the projection uses all of them.
  """
  x2, c2, _ = pca_2d(x, centroids)
  labels = _labels(labels, n=len(x2))
  if max_points is not None and len(x2) > max_points:
    idx = np.sort(np.random.default_rng(seed).choice(len(x2), max_points, replace=False))
    x2, labels = x2[idx], labels[idx]
  ax = _axes(ax)
  ax.scatter(x2[:, 0], x2[:, 1], c=labels, s=6, cmap="tab20", alpha=0.7, linewidths=0)
  if c2 is not None:
    ax.scatter(c2[:, 0], c2[:, 1], c="black", marker="x", s=60, linewidths=2,
               label="centroids")
    ax.legend(loc="best")
  ax.set_xlabel("PC 1")
  ax.set_ylabel("PC 2")
  ax.set_title("clusters (PCA projection)")
  return ax
