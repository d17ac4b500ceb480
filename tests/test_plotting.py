"""Plotting helpers (Agg backend), checked on the data they draw."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flashkmeans_jax as fk  # noqa: E402
from flashkmeans_jax import plotting  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close_figures():
  yield
  plt.close("all")


def test_plot_inertia_from_result_estimator_and_array():
  x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
  res = fk.kmeans(jax.random.key(0), jnp.asarray(x), 5, max_iter=20)
  n = int(res.n_iter)
  ax = plotting.plot_inertia(res)
  (line,) = ax.get_lines()
  np.testing.assert_array_equal(line.get_xdata(), np.arange(n))
  np.testing.assert_allclose(line.get_ydata(), np.asarray(res.inertia_history)[:n])
  assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "inertia"

  est = fk.KMeans(n_clusters=5, random_state=0, max_iter=20).fit(x)
  _, ax2 = plt.subplots()
  assert plotting.plot_inertia(est, ax=ax2) is ax2
  np.testing.assert_allclose(ax2.get_lines()[0].get_ydata(), est.inertia_history_)

  ax3 = plotting.plot_inertia([3.0, 2.0, 1.5, np.nan, np.nan])
  np.testing.assert_array_equal(ax3.get_lines()[0].get_ydata(), [3.0, 2.0, 1.5])
  with pytest.raises(ValueError, match="1-D"):
    plotting.plot_inertia(np.ones((2, 3)))


def test_plot_cluster_sizes_bar_heights():
  labels = np.array([0, 0, 2, 2, 2, 4])
  ax = plotting.plot_cluster_sizes(labels, 5)
  heights = [p.get_height() for p in ax.patches]
  assert heights == [2, 0, 3, 0, 1]
  assert [p.get_x() + p.get_width() / 2 for p in ax.patches] == [0, 1, 2, 3, 4]


def test_plot_clusters_2d_is_the_pca_projection():
  rng = np.random.default_rng(1)
  # Points on a plane in 3-D: the first two principal axes keep every distance.
  basis = np.linalg.qr(rng.normal(size=(3, 2)))[0]
  coords = rng.normal(size=(200, 2)) * [5.0, 1.0]
  x = coords @ basis.T + 3.0
  labels = (coords[:, 0] > 0).astype(np.int32)
  cents = np.stack([x[labels == 0].mean(0), x[labels == 1].mean(0)])
  ax = plotting.plot_clusters_2d(x, labels, centroids=cents)
  pts, cen = ax.collections
  xy = pts.get_offsets()
  assert xy.shape == (200, 2)
  d_plot = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  d_true = np.linalg.norm(x[:, None] - x[None], axis=-1)
  np.testing.assert_allclose(d_plot, d_true, atol=1e-9)
  np.testing.assert_array_equal(pts.get_array(), labels)
  # Centroids land at the mean of their points' projections.
  np.testing.assert_allclose(cen.get_offsets(),
                             [xy[labels == 0].mean(0), xy[labels == 1].mean(0)], atol=1e-9)
  # Variance along PC 1 is the larger one.
  assert np.var(xy[:, 0]) > np.var(xy[:, 1])
  # Subsampling keeps max_points points.
  ax2 = plotting.plot_clusters_2d(x, labels, max_points=50)
  assert ax2.collections[0].get_offsets().shape == (50, 2)


def test_bad_arguments_get_the_library_errors():
  """Checked before drawing, with the messages of the library's own checks."""
  x = np.random.default_rng(2).normal(size=(30, 3)).astype(np.float32)
  est = fk.KMeans(n_clusters=3, random_state=0, max_iter=5).fit(x)
  # An estimator (or a KMeansResult) stands for its labels.
  heights = [p.get_height() for p in plotting.plot_cluster_sizes(est, 3).patches]
  assert heights == np.bincount(est.labels_, minlength=3).tolist()
  for call, exc, match in [
      (lambda: plotting.plot_clusters_2d(x[:, 0], est.labels_), ValueError,
       r"^x must have rank 2 \(\[N, D\]\), got shape \(30,\)$"),
      (lambda: plotting.plot_clusters_2d(est, est.labels_), TypeError,
       r"^x must be an array \[N, D\], got KMeans$"),
      (lambda: plotting.pca_2d(x, est.cluster_centers_[:, :2]), ValueError,
       r"^centroids must have D=3 columns like x, got shape \(3, 2\)$"),
      (lambda: plotting.plot_clusters_2d(x, est.labels_[:10]), ValueError,
       r"^labels must have shape \(30,\) \(one per point of x\), got \(10,\)$"),
      (lambda: plotting.plot_cluster_sizes(est.labels_, 2), ValueError,
       r"^labels must lie in \[0, k=2\), got values in \[0, 2\]$"),
      (lambda: plotting.plot_cluster_sizes([0.5, 1.0], 2), TypeError,
       r"^labels must be an integer array, got float64$"),
      (lambda: plotting.plot_cluster_sizes(est.labels_, 0), ValueError,
       r"^k must be >= 1, got 0$"),
      (lambda: plotting.plot_cluster_sizes(x, 3), ValueError,
       r"^labels must be 1-D \(one per point\), got shape \(30, 3\)$"),
      (lambda: plotting.plot_inertia("abc"), TypeError,
       r"^expected an inertia history .* got str of dtype <U3$")]:
    with pytest.raises(exc, match=match):
      call()


def test_clear_error_without_matplotlib():
  code = (
      "import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.pyplot'] = None\n"
      "from flashkmeans_jax import plotting\n"
      "try:\n plotting.plot_cluster_sizes([0, 1], 2)\n"
      "except ImportError as e:\n print('ERR', e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "ERR flashkmeans_jax.plotting needs matplotlib" in out.stdout
