"""Writes notebooks/quickstart.ipynb (outputs stripped) from the cells below.

Edit the cells here, then run ``python notebooks/make_quickstart.py``; the
notebook is executed in CI by ``tests/test_notebook.py``.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """\
# flashkmeans-jax quickstart

Exact k-means (Lloyd's algorithm) in JAX: one compiled loop, Pallas kernels on
NVIDIA GPUs, plain XLA elsewhere. This notebook runs top to bottom on a CPU
runtime in well under a minute; on Colab pick *Runtime → Change runtime type →
GPU* to use the Pallas kernels.

1. install, 2. cluster scikit-learn's digits with the `KMeans` estimator,
3. plots, 4. speed against scikit-learn, 5. many clusterings at once with
`vmap`, 6. `assign` inside a jit-compiled training step."""),
    ("code", """\
# Install only when the package is missing (e.g. on a fresh Colab runtime).
# On Colab's GPU runtime JAX with CUDA is preinstalled; if pip upgrades JAX,
# install the matching CUDA plugin too: %pip install -U "jax[cuda12]"
try:
    import flashkmeans_jax
except ImportError:
    %pip install -q "flashkmeans-jax[plot]" scikit-learn
    import flashkmeans_jax"""),
    ("code", """\
import time

import jax
import jax.numpy as jnp
import numpy as np
import matplotlib.pyplot as plt

import flashkmeans_jax as fk
from flashkmeans_jax import plotting

print("flashkmeans-jax", fk.__version__, "| JAX", jax.__version__,
      "| device:", jax.devices()[0].platform, jax.devices()[0].device_kind)"""),
    ("md", """\
## 1. Cluster the digits with the scikit-learn-style estimator

`fk.KMeans` takes scikit-learn's parameters (`n_clusters`, `init`, `n_init`,
`max_iter`, `tol`, `random_state`) and gives the usual fitted attributes."""),
    ("code", """\
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score

digits = load_digits()
X = digits.data.astype(np.float32)          # 1797 images of 8x8 pixels
km = fk.KMeans(n_clusters=10, n_init=4, random_state=0).fit(X)
print(f"{km.n_iter_} iterations, inertia {km.inertia_:.4g}, "
      f"agreement with the true digits (ARI) {adjusted_rand_score(digits.target, km.labels_):.3f}")
print("cluster centres:", km.cluster_centers_.shape, "| labels:", km.labels_[:12])
assert km.labels_.shape == (1797,) and km.cluster_centers_.shape == (10, 64)"""),
    ("md", "## 2. Plots: inertia per iteration, cluster sizes, a 2-D projection"),
    ("code", """\
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
plotting.plot_inertia(km, ax=axes[0])
plotting.plot_cluster_sizes(km.labels_, 10, ax=axes[1])
plotting.plot_clusters_2d(X, km.labels_, centroids=km.cluster_centers_, ax=axes[2])
plt.tight_layout()
plt.show()"""),
    ("md", """\
## 3. Speed against scikit-learn

Both start from the same centroids and run the same number of Lloyd
iterations (`tol=0`), so they do the same work and reach the same clustering.
The first JAX call compiles; the timing is the second call. The sizes are
small so this runs in seconds on a CPU; try `n=1_000_000, k=1024` on a GPU."""),
    ("code", """\
from sklearn.cluster import KMeans as SkKMeans

n, d, k, iters = 20_000, 32, 64, 20
rng = np.random.default_rng(0)
data = (rng.normal(size=(k, d)) * 4)[rng.integers(0, k, n)] + rng.normal(size=(n, d))
data = data.astype(np.float32)
init = data[rng.choice(n, k, replace=False)]

xj = jnp.asarray(data)
run = lambda: jax.block_until_ready(
    fk.kmeans(jax.random.key(0), xj, k, init=jnp.asarray(init), max_iter=iters, tol=0.0))
run()                                   # compile
t0 = time.perf_counter(); res = run(); t_fk = time.perf_counter() - t0

t0 = time.perf_counter()
sk = SkKMeans(k, init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(data)
t_sk = time.perf_counter() - t0

print(f"flashkmeans-jax: {t_fk * 1e3:7.1f} ms  inertia {float(res.inertia):.6g}")
print(f"scikit-learn   : {t_sk * 1e3:7.1f} ms  inertia {sk.inertia_:.6g}")
print(f"same clustering (ARI): {adjusted_rand_score(sk.labels_, np.asarray(res.labels)):.4f}")"""),
    ("md", """\
## 4. Many clusterings at once with `vmap`

`kmeans` is a pure function, so `jax.vmap` runs several independent
clusterings as one batched computation (`fk.batched_kmeans` does the same with
ragged-batch support)."""),
    ("code", """\
groups = jnp.asarray(data[:8 * 2000].reshape(8, 2000, d))    # 8 data sets
keys = jax.random.split(jax.random.key(1), 8)
many = jax.vmap(lambda key, x: fk.kmeans(key, x, 16, max_iter=50))(keys, groups)
print("centroids", many.centroids.shape, "| iterations", many.n_iter, "| inertia", many.inertia)"""),
    ("md", """\
## 5. Inside a jit-compiled training step

`fk.vector_quantize` gives the quantised encodings with the straight-through
gradient, and the VQ-VAE losses: `codebook_loss` pulls the codes to the
encodings (its gradient w.r.t. the codebook runs through the sort-inverse
kernel, no scatter), `commitment_loss` pulls the encodings to their codes.
Here a linear encoder and a codebook are trained with them plus a
reconstruction term, all in one `jax.jit`-compiled step. (`fk.ema_codebook()`
is the EMA alternative to learning the codebook by gradient.)"""),
    ("code", """\
def vq_loss(params, x):
    z = x @ params["enc"]                                    # [B, 8] encodings
    vq = fk.vector_quantize(z, params["codebook"], commitment_cost=0.25)
    recon = vq.quantized @ params["enc"].T                   # straight-through to the encoder
    return jnp.mean((recon - x) ** 2) + vq.loss

@jax.jit
def train_step(params, x, lr=1e-3):
    loss, grads = jax.value_and_grad(vq_loss)(params, x)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

k1, k2 = jax.random.split(jax.random.key(2))
params = {"enc": jax.random.normal(k1, (64, 8)) * 0.1,
          "codebook": jax.random.normal(k2, (32, 8))}
xd = jnp.asarray(X / 16.0)
losses = []
for step in range(200):
    params, loss = train_step(params, xd)
    losses.append(float(loss))
print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
assert losses[-1] < losses[0]"""),
]


def build() -> nbformat.NotebookNode:
  nb = new_notebook()
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                               "language": "python"}
  nb.metadata["language_info"] = {"name": "python"}
  nb.metadata["accelerator"] = "GPU"  # Colab: offer the GPU runtime
  for kind, src in CELLS:
    nb.cells.append(new_markdown_cell(src) if kind == "md" else new_code_cell(src))
  for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
    cell["id"] = f"cell-{i:02d}"
  return nb


if __name__ == "__main__":
  out = Path(__file__).with_name("quickstart.ipynb")
  nbformat.write(build(), out)
  print(f"wrote {out}")
