"""Checks and test cases shared by the CPU tests (XLA and Pallas interpret) and
the GPU tests (real Pallas lowering), so every implementation meets the same
checks.

The checks compare with float64 NumPy (:mod:`tests.helpers`) on the operands
the dot really sees, under bounds derived from float32 arithmetic rather than
picked to pass: a product of 16-bit operands is exact in float32, so what a
correct implementation can add is the rounding of a float32 accumulation over
D terms, at most ``gamma_D = D u / (1 - D u)`` times the sum of the terms'
magnitudes (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1),
with ``u = 2^-24``; float32 operands add one error per product, which the
precision of the dot sets (:func:`dot_accuracy`). tests/test_mutation.py keeps
the checks honest: kernels with bfloat16-rounded dots, a missing last
centroid, or a lost point per cluster must fail them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import flashkmeans_jax as fk
from flashkmeans_jax.core import precision as precision_mod
from tests import helpers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
METRICS = ("sqeuclidean", "cosine", "dot")
# Not powers of two on purpose: masks and padding must be right.
ASSIGN_SHAPES = [(1000, 1, 3), (1537, 7, 17), (1000, 100, 96), (513, 513, 1), (257, 33, 200)]
HALF_PRECISIONS = ("F16_F16_F32", "BF16_BF16_F32")

U32 = 2.0 ** -24  # float32 unit roundoff (round to nearest)
# Safety factor on every derived bound: it absorbs the few roundings the
# bounds below do not itemise (sqrt and division in cosine, the final
# subtraction, float64's own ~1e-16). It hides no real error: one bfloat16
# rounding (2^-8 relative, the mutants of tests/test_mutation.py) is still
# thousands of times the bound for float32 accumulation over D <= 512.
SAFETY = 2.0


def gamma(n, u=U32):
  """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of a sum
  (or dot) of n terms in any order, relative to the sum of their magnitudes."""
  n = np.asarray(n, np.float64)
  return n * u / (1.0 - n * u)


def on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def accumulation_roundoff() -> float:
  """Unit roundoff of one float32 addition in the dot or the sums. On the GPU
  twice float32's: tensor-core accumulators may truncate rather than round
  when they align the addends."""
  return 2 * U32 if on_gpu() else U32


def dot_accuracy(dtype, precision=None, impl: str = "xla") -> tuple[float, int]:
  """``(product_error, passes)`` of the dot of ``impl`` for points of ``dtype``
  under the matmul ``precision``: a bound on the relative error of one
  product ``x_d * c_d`` as the dot forms it, and how many products per
  (point, centroid) pair the float32 accumulator adds up, in units of D.

  * 16-bit points, or float32 ones under ``F16_F16_F32`` / ``BF16_BF16_F32``
    (whose 16-bit operands :func:`tests.helpers.assign_operands` reproduces
    exactly): ``(0, 1)``, products of 8- or 11-bit significands are exact.
  * float32 on the CPU (XLA, and Pallas interpret, which runs XLA's dot):
    ``(u, 1)``, a float32 product rounded once.
  * float32 on the GPU: ``"highest"`` is a float32 dot in XLA, ``(u, 1)``,
    and the 3-pass TF32 algorithm in the Pallas kernel: each operand split
    into two 11-bit halves, the low*low product dropped and the low halves
    truncated (``2^-18`` covers the four ``2^-20`` terms), three products
    per pair (``passes=3``). Any other precision is TF32, whose operands keep
    11 bits, truncated or rounded: ``(2^-9, 1)``, two relative errors below
    ``2^-10``.
  """
  if jnp.dtype(dtype).itemsize == 2 or helpers.half_operand_dtype(dtype, precision):
    return 0.0, 1
  if not on_gpu():
    return U32, 1
  p = precision_mod.resolve_precision(precision)
  x3 = p == lax.DotAlgorithmPreset.TF32_TF32_F32_X3 or (
      impl == "pallas" and p in (lax.Precision.HIGHEST, lax.DotAlgorithmPreset.F32_F32_F32))
  if x3:
    return 2.0 ** -18, 3
  if p in (lax.Precision.HIGHEST, lax.DotAlgorithmPreset.F32_F32_F32):
    return U32, 1
  return 2.0 ** -9, 1


def assign_bound(terms, d: int, accuracy: tuple[float, int]):
  """Bound on |distance - float64 distance| for every (point, centroid).

  ``terms`` is the magnitude of what the float32 evaluation adds
  (:func:`tests.helpers.assign_terms`); each product carries the product
  error of ``accuracy`` (:func:`dot_accuracy`), and the dot (``passes * D``
  products) plus the norms, bias and finish add at most ``passes * D + 3``
  roundings: ``SAFETY * (product_error + gamma_{passes D + 3}) * terms``.
  """
  product_error, passes = accuracy
  return SAFETY * (product_error + gamma(passes * d + 3, accumulation_roundoff())) * terms


def check_assign_result(x, c, labels, dist, metric: str, *, precision=None,
                        impl: str = "xla") -> None:
  """THE assignment check: raises ``AssertionError`` unless ``labels`` and
  ``dist`` are what a correct implementation can return for ``x [..., N, D]``
  and ``c [..., K, D]``.

  * ``dist`` is within :func:`assign_bound` of the float64 distance to the
    returned centroid;
  * a label is the float64 argmin, or a centroid whose float64 distance
    exceeds the argmin's by no more than the two bounds together (a float32
    near-tie). Labels that fail this are counted exactly; none may.

  ``precision`` and ``impl`` say how the dot was computed (:func:`dot_accuracy`).
  """
  x = jnp.asarray(x)
  labels = np.asarray(labels)
  n, d, k = x.shape[-2], x.shape[-1], np.shape(c)[-2]
  assert labels.dtype == np.int32, labels.dtype
  assert labels.shape == x.shape[:-1], (labels.shape, x.shape)
  if dist is not None:
    dist = np.asarray(dist)
    assert dist.dtype == np.float32 and dist.shape == labels.shape, (dist.dtype, dist.shape)
  assert labels.min() >= 0 and labels.max() < k, (labels.min(), labels.max(), k)
  accuracy = dot_accuracy(x.dtype, precision, impl)
  xd, cd, xsq, csq = helpers.assign_operands(x, c, metric, precision)
  bad_labels = bad_dist = 0
  examples = []
  for rows in helpers.row_blocks(n, k):
    dref, terms = helpers.assign_terms(xd[..., rows, :], cd, xsq[..., rows], csq, metric)
    bound = assign_bound(terms, d, accuracy)
    lab = labels[..., rows]
    best = dref.argmin(-1)
    take = lambda a, i: np.take_along_axis(a, i[..., None], -1)[..., 0]  # noqa: E731
    got_d, best_d = take(dref, lab), take(dref, best)
    margin = got_d - best_d
    wrong = (lab != best) & ~(margin <= take(bound, lab) + take(bound, best))
    off = np.zeros(lab.shape, bool) if dist is None else ~(
        np.abs(dist[..., rows].astype(np.float64) - got_d) <= take(bound, lab))
    bad_labels += int(wrong.sum())
    bad_dist += int(off.sum())
    for i in np.argwhere(wrong | off)[:3]:
      i = tuple(i)
      got = "-" if dist is None else repr(dist[..., rows][i])
      examples.append(f"point {i[:-1] + (i[-1] + rows.start,)}: label {lab[i]} (float64 "
                      f"argmin {best[i]}, margin {margin[i]:.3g}), dist {got} vs "
                      f"{got_d[i]!r} (bound {take(bound, lab)[i]:.3g})")
  assert bad_labels == 0 and bad_dist == 0, (
      f"{metric}: {bad_labels} labels beyond a float32 near-tie and {bad_dist} distances "
      f"beyond the bound, of {labels.size}; " + "; ".join(examples[:5]))


def check_cluster_sums_result(x, labels, k: int, weights, sums, counts) -> None:
  """THE cluster-sums check: raises ``AssertionError`` unless ``sums [..., K, D]``
  and ``counts [..., K]`` are float32 sums of the rows of each cluster.

  Each sum adds ``n_k`` products ``w x`` (exact without weights, one rounding
  with), so it is within ``gamma_{n_k + 1} * sum |w x|`` of float64; counts of
  integer weights are exact (integers below 2^24 add exactly in any order),
  other weights within ``gamma_{n_k} * sum w``.
  """
  sums, counts = np.asarray(sums), np.asarray(counts)
  assert sums.dtype == np.float32 and counts.dtype == np.float32, (sums.dtype, counts.dtype)
  ref, abs_ref, ref_counts, terms = helpers.cluster_sums_reference(x, labels, k, weights)
  assert sums.shape == ref.shape and counts.shape == ref_counts.shape
  u = accumulation_roundoff()
  off = ~(np.abs(sums - ref) <= SAFETY * gamma(terms + 1, u)[..., None] * abs_ref)
  w = None if weights is None else np.asarray(weights, np.float64)
  if w is None or np.array_equal(w, np.round(w)):
    bad_counts = counts != ref_counts
  else:
    bad_counts = ~(np.abs(counts - ref_counts) <= SAFETY * gamma(terms, u) * ref_counts)
  assert not off.any() and not bad_counts.any(), (
      f"{int(off.sum())} sums and {int(bad_counts.sum())} counts off: sums at "
      f"{np.argwhere(off)[:3].tolist()}, counts {counts[bad_counts][:3]} want "
      f"{ref_counts[bad_counts][:3]}")


def check_centroids_result(x, labels, previous, weights, centroids, counts,
                           metric: str = "sqeuclidean") -> None:
  """THE ``update`` check (empty="keep"): raises ``AssertionError`` unless
  ``centroids [..., K, D]`` hold the mean of each non-empty cluster
  (unit-normalised for cosine) and the previous centroid of an empty one.

  The float32 mean ``s / W`` is within ``(|ds| + |mean| |dW|) / (W - |dW|)``
  plus one rounding, with ``ds``, ``dW`` the bounds of
  :func:`check_cluster_sums_result`; normalising moves a vector by at most
  ``2 ||d mean|| / ||mean||`` plus ``gamma_{D+3}``; the result is rounded to
  the points' dtype (its unit roundoff, relative).
  """
  x = jnp.asarray(x)
  k, d = np.shape(previous)[-2:]
  ref, abs_ref, ref_counts, terms = helpers.cluster_sums_reference(x, labels, k, weights)
  u = accumulation_roundoff()
  ds = SAFETY * gamma(terms + 1, u)[..., None] * abs_ref
  dw = SAFETY * gamma(terms, u) * ref_counts
  has = ref_counts > 0
  w = np.where(has, ref_counts, 1.0)[..., None]
  mean = ref / w
  bound = (ds + np.abs(mean) * dw[..., None]) / np.maximum(w - dw[..., None], 1e-300)
  bound += U32 * np.abs(mean)
  if metric == "cosine":
    norm = np.linalg.norm(mean, axis=-1, keepdims=True)
    has &= norm[..., 0] > 0
    safe = np.where(norm > 0, norm, 1.0)
    mean = mean / safe
    bound = (2 * np.linalg.norm(bound, axis=-1, keepdims=True) / safe
             + SAFETY * gamma(d + 3, u) * np.abs(mean))
  out_u = float(jnp.finfo(x.dtype).eps) / 2  # unit roundoff of the output dtype
  bound = bound + out_u * (np.abs(mean) + bound)
  cent = np.asarray(jnp.asarray(centroids).astype(jnp.float32), np.float64)
  prev = np.asarray(jnp.asarray(previous).astype(x.dtype).astype(jnp.float32), np.float64)
  np.testing.assert_array_equal(cent[~has], prev[~has])  # empty clusters keep theirs
  off = ~(np.abs(cent - mean) <= bound) & has[..., None]
  assert not off.any(), (f"{int(off.sum())} centroid entries off: at "
                         f"{np.argwhere(off)[:3].tolist()}, got {cent[off][:3]} want "
                         f"{mean[off][:3]} (bound {bound[off][:3]})")
  counts = np.asarray(counts)
  if weights is None:
    np.testing.assert_array_equal(counts, ref_counts)
  else:
    assert (np.abs(counts - ref_counts) <= dw).all(), (counts, ref_counts)


def check_kmeans_result(x, res, *, metric="sqeuclidean", weights=None, precision=None,
                        impl="xla"):
  """A ``KMeansResult`` belongs to its centroids: its labels pass the shared
  assignment check and its inertia is the float64 sum of the weighted
  distances to them, within the per-point bounds plus a float32 sum over N."""
  x = jnp.asarray(x)
  labels = np.asarray(res.labels)
  c = res.centroids
  check_assign_result(x, c, labels, None, metric, precision=precision, impl=impl)
  w = np.ones(labels.shape) if weights is None else np.asarray(weights, np.float64)
  xd, cd, xsq, csq = helpers.assign_operands(x, c, metric, precision)
  dref, terms = helpers.assign_terms(xd, cd, xsq, csq, metric)
  take = lambda a: np.take_along_axis(a, labels[..., None], -1)[..., 0]  # noqa: E731
  per_point = take(assign_bound(terms, x.shape[-1], dot_accuracy(x.dtype, precision, impl)))
  ref = (w * take(dref)).sum(-1)
  slack = ((w * per_point).sum(-1)
           + SAFETY * gamma(labels.shape[-1] + 1) * (w * np.abs(take(dref))).sum(-1))
  assert np.all(np.abs(np.asarray(res.inertia, np.float64) - ref) <= slack), (
      res.inertia, ref, slack)


# --- Cases: data, a call, and the shared checks --------------------------------


def check_assign(impl, n, k, d, dtype, metric, seed=0, precision=None):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, d)), dtype)
  c = jnp.asarray(rng.normal(size=(k, d)), dtype)
  labels, dist = fk.assign(x, c, metric=metric, impl=impl, precision=precision)
  check_assign_result(x, c, labels, dist, metric, precision=precision, impl=impl)
  return labels, dist


def half_inputs(n, k, d, magnitude, seed=0):
  """float32 ``(x [n, d], c [k, d])`` of the given magnitude, with row 1 of x
  1e-3 of the rest and row 2 zero."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) * magnitude
  x[1] *= 1e-3
  x[2] = 0.0
  c = rng.normal(size=(k, d)) * magnitude
  return jnp.asarray(x, jnp.float32), jnp.asarray(c, jnp.float32)


def check_assign_half(impl, precision, n, k, d, metric, magnitude, seed=0):
  """float32 points on 16-bit operands (``core.half_dot``) against float64 on
  those operands: the power-of-two scaling must lose nothing but the one
  rounding to 16 bits. ``magnitude`` puts the data where float16 cannot hold
  it unscaled (1e8 overflows, 1e-8 underflows); one row is 1e-3 of the rest
  and one is zero, so the per-row scale matters."""
  x, c = half_inputs(n, k, d, magnitude, seed)
  labels, dist = fk.assign(x, c, metric=metric, impl=impl, precision=precision)
  check_assign_result(x, c, labels, dist, metric, precision=precision, impl=impl)
  return labels, dist


def check_assign_ties(impl):
  # Duplicate centroids: every point must take the lowest index of equals.
  rng = np.random.default_rng(1)
  base = rng.normal(size=(5, 8)).astype(np.float32)
  c = np.concatenate([base, base, base])  # index j, j+5, j+10 are equal
  x = (base[rng.integers(0, 5, 300)] + 0.01 * rng.normal(size=(300, 8))).astype(np.float32)
  labels, _ = fk.assign(jnp.asarray(x), jnp.asarray(c), impl=impl, precision="highest")
  ref, _, _ = helpers.np_assign(x, base, "sqeuclidean")
  np.testing.assert_array_equal(np.asarray(labels), ref)


def check_assign_config(cfg, interpret):
  """One tiling of the FlashAssign kernel against float64: duplicate centroids
  in the same tile (other columns) and in other tiles (same column), so both
  tie rules of the kernel are exercised, plus a partial last row tile."""
  from flashkmeans_jax.ops.assign import pallas_triton as flash_assign
  rng = np.random.default_rng(5)
  base = rng.normal(size=(5, 40)).astype(np.float32)
  # Copy i of centroid j sits at index 16*i + j (the other rows of each block
  # of 16 are far away): with 16-wide tiles a copy is in the same column of a
  # later tile, with wider tiles also in another column of the same tile.
  blocks = [np.concatenate([base, rng.normal(size=(11, 40)).astype(np.float32) + 5])
            for _ in range(6)]
  c = np.concatenate(blocks + [rng.normal(size=(3, 40)).astype(np.float32) + 5])
  x = np.concatenate([base[rng.integers(0, 5, 150)] + 0.05 * rng.normal(size=(150, 40)),
                      rng.normal(size=(51, 40)) + 5]).astype(np.float32)
  for metric in METRICS:
    labels, dist = flash_assign.flash_assign(jnp.asarray(x), jnp.asarray(c), metric=metric,
                                             config=cfg, interpret=interpret,
                                             precision="highest")
    # Ties are exact (equal copies): the lowest index, no near-tie slack.
    ref, _, _ = helpers.np_assign(x, c, metric)
    np.testing.assert_array_equal(np.asarray(labels), ref)
    check_assign_result(x, c, labels, dist, metric, precision="highest",
                        impl="pallas_interpret" if interpret else "pallas")


def check_update_config(cfg, interpret, d=40, weighted=True):
  """One tiling of the Pallas update (sort-inverse, or the dense kernel when
  ``cfg.dense``) against float64: a cluster larger than many items or
  blocks, empty clusters, weights and a NaN row (weight 0)."""
  from flashkmeans_jax.ops.cluster_sums import api as cluster_sums_op
  rng = np.random.default_rng(6)
  n, k = 2500, 30
  x = rng.normal(size=(n, d)).astype(np.float32)
  x[17, d // 2] = np.nan
  labels = rng.integers(0, 10, n).astype(np.int32)
  labels[: n // 2] = 4
  labels[-3:] = k - 1  # the last cluster of a padded chunk
  w = rng.random(n).astype(np.float32) if weighted else None
  sums, counts = cluster_sums_op.cluster_sums(
      jnp.asarray(x), jnp.asarray(labels), k, None if w is None else jnp.asarray(w),
      "pallas_interpret" if interpret else "pallas", cfg)
  check_cluster_sums_result(x, labels, k, w, sums, counts)


def check_update(impl, n, k, d, dtype, weighted, seed=0):
  """``cluster_sums`` and ``update`` (empty="keep") of ``impl`` on random
  labels (with K > N some clusters are empty)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, d)), dtype)
  labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  w = jnp.asarray(rng.random(n), jnp.float32) if weighted else None
  sums, counts = fk.cluster_sums(x, labels, k, weights=w, impl=impl)
  check_cluster_sums_result(x, labels, k, w, sums, counts)
  prev = jnp.asarray(rng.normal(size=(k, d)), dtype)
  cent, cnt = fk.update(x, labels, prev, weights=w, impl=impl)
  assert cent.dtype == x.dtype
  check_centroids_result(x, labels, prev, w, cent, cnt)


def check_update_skewed(impl):
  # One cluster holds almost every point (it spans many work items) and most
  # clusters are empty: the work list and the keep policy must both hold.
  rng = np.random.default_rng(3)
  n, d, k = 3000, 24, 50
  x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  labels = np.full(n, 7, np.int32)
  labels[:10] = 3
  labels[10:12] = 49
  prev = jnp.asarray(rng.normal(size=(k, d)), jnp.float32)
  cent, counts = fk.update(x, jnp.asarray(labels), prev, impl=impl)
  check_centroids_result(x, labels, prev, None, cent, counts)
  assert float(counts[7]) == n - 12 and float(counts[0]) == 0


def check_vmap_assign(impl):
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(3, 300, 20)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(3, 9, 20)), jnp.float32)
  f = lambda x, c: fk.assign(x, c, impl=impl, precision="highest")  # noqa: E731
  lb, db = jax.jit(jax.vmap(f))(x, c)
  check_assign_result(x, c, lb, db, "sqeuclidean", precision="highest", impl=impl)
  for b in range(3):  # and member by member the same program's result
    l1, d1 = f(x[b], c[b])
    np.testing.assert_array_equal(np.asarray(lb[b]), np.asarray(l1))
    np.testing.assert_allclose(np.asarray(db[b]), np.asarray(d1), rtol=1e-6, atol=1e-5)
  # vmap over centroids only (x shared), as n_init does.
  lc, dc = jax.vmap(lambda c: f(x[0], c))(c)
  check_assign_result(jnp.broadcast_to(x[0], x.shape), c, lc, dc, "sqeuclidean",
                      precision="highest", impl=impl)


def check_vmap_update(impl):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(3, 400, 12)), jnp.float32)
  lab = jnp.asarray(rng.integers(0, 6, (3, 400)), jnp.int32)
  s, c = jax.jit(jax.vmap(lambda x, l: fk.cluster_sums(x, l, 6, impl=impl)))(x, lab)
  check_cluster_sums_result(x, lab, 6, None, s, c)


def check_kmeans_matches_xla(impl, dtype=jnp.float32):
  """A whole run of ``impl`` against the XLA path from the same start: the
  same labels and iterations; the result is checked against float64 too."""
  rng = np.random.default_rng(7)
  x, centers, true = helpers.make_blobs(rng, 2000, 16, 10)
  x = jnp.asarray(x, dtype)
  # One start in each blob: every boundary then lies between blobs, far from
  # any point. (From x[:10], two starts in one blob split it through its
  # middle, where float32 rounding of the centroids decides some points and
  # the two paths may settle on different splits: 9 of 2000 labels did at
  # XLA's backend optimisation level 0.)
  init = x[np.unique(true, return_index=True)[1]]
  a = fk.kmeans(jax.random.key(0), x, 10, init=init, impl=impl, precision="highest",
                max_iter=50)
  b = fk.kmeans(jax.random.key(0), x, 10, init=init, impl="xla", precision="highest",
                max_iter=50)
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  assert int(a.n_iter) == int(b.n_iter)
  check_kmeans_result(x, a, precision="highest", impl=impl)
  # Same labels, so the same sums up to the order of float32 additions.
  np.testing.assert_allclose(np.asarray(a.centroids.astype(jnp.float32)),
                             np.asarray(b.centroids.astype(jnp.float32)), rtol=1e-4, atol=1e-4)


def check_batched_small_d_matches_xla(impl, b=4, n=600, d=2, k=6, iters=8):
  """``batched_kmeans`` of tiny D (the dense cluster sums) with weights
  against the XLA path from the same starts.

  Whole runs of ``iters`` iterations: each member's result belongs to its
  centroids (labels to float32 near-ties, inertia: the shared check), and
  the two paths stop within one iteration of each other (the last bit of a
  centroid shift near the default tol decides: 2 of 32 members stopped one
  iteration apart, both ways, at D=4 on the H200). Their labels are not
  compared: over several iterations a near-tie flip moves centroids, which
  moves the next near-ties, and the trajectories drift (7-16 labels of
  131,072 on the H200 at D=4).

  One iteration from the same starts: the same labels feed both updates, so
  the labels of the new centroids agree but for near-ties of centroids that
  differ by float32 rounding (2 of 131,072 at D=1 on the H200), and the
  centroids of members without such a flip agree to the rounding of two
  float32 sums."""
  rng = np.random.default_rng(11)
  x = np.stack([helpers.make_blobs(rng, n, d, k)[0] for _ in range(b)]).astype(np.float32)
  w = jnp.asarray(rng.random((b, n)) + 0.5, jnp.float32)
  x = jnp.asarray(x)
  init = x[:, :k]

  def both(max_iter):
    kw = dict(init=init, weights=w, precision="highest", max_iter=max_iter)
    return (fk.batched_kmeans(jax.random.key(0), x, k, impl=impl, **kw),
            fk.batched_kmeans(jax.random.key(0), x, k, impl="xla", **kw))

  a, r = both(iters)
  for i in range(b):
    member = jax.tree.map(lambda v: v[i], a)
    check_kmeans_result(x[i], member, weights=w[i], precision="highest", impl=impl)
  na, nr = np.asarray(a.n_iter), np.asarray(r.n_iter)
  assert np.all(np.abs(na - nr) <= 1) and (na != nr).sum() <= max(1, b // 10), (na, nr)
  a, r = both(1)
  differ = np.asarray(a.labels) != np.asarray(r.labels)
  assert differ.sum() <= max(2, differ.size // 20_000), int(differ.sum())
  same = ~differ.any(axis=1)
  assert same.sum() >= b // 2, same
  # Two float32 sums of the same n_k <= n terms in different orders: each
  # within gamma_n * sum|w x| of the exact one, a mean within gamma_n max|x|.
  bound = 2 * float(gamma(n)) * float(np.abs(np.asarray(x)).max())
  np.testing.assert_allclose(np.asarray(a.centroids)[same], np.asarray(r.centroids)[same],
                             rtol=0, atol=bound)
