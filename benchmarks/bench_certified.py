"""Certified float32 labels (issue 19): what they cost and what they buy.

    python benchmarks/bench_certified.py --out certified.json [--cap-s 120] [--smoke]
        [--part all|grid|lloyd]

Part 1, the float32 grid shapes (standard-normal points, the first K as
centroids): per (N, K, D), the time of ``fk.assign`` at TF32 (the default),
``"F16_F16_F32"``, ``"highest"``, ``"certified"`` (over TF32) and
``"certified:F16_F16_F32"``; the fraction of points each certified mode
recomputes (``certification(...).certified``); and, on up to 65,536 sampled
rows, the labels differing from the float64 argmin (NumPy float64 on the
host) for every mode, and those differing beyond the stated tie width.

Part 2, Lloyd end to end: blobs of 200,000 x 64, K=300 (well separated and
overlapping), the same initial centroids for ``fk.kmeans`` (TF32,
``"highest"``, ``"certified"``; ``empty="farthest"``, scikit-learn's empty
cluster rule) and scikit-learn's ``KMeans`` (lloyd,
``n_init=1``, ``tol=0``): label agreement and relative inertia gap.

Public API only, through benchmarks/harness.py. A row whose estimated time is
over ``--cap-s`` is skipped with a note. JSON rows go to ``--out`` after
every row.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402

# certification() is public in flashkmeans_jax.api.ops; the top-level export
# may not exist yet.
certification = getattr(fk, "certification", None)
if certification is None:
  from flashkmeans_jax.api.ops import certification  # noqa: E402

SHAPES = [(65536, 1024, 128), (1 << 20, 1024, 128), (1 << 18, 8192, 128), (1 << 20, 4096, 512)]
SMOKE_SHAPES = [(4096, 64, 32)]
MODES = {"tf32": None, "f16": "F16_F16_F32", "highest": "highest",
         "certified": "certified", "certified_f16": "certified:F16_F16_F32"}
SAMPLE = 65536


def exact_scores(x, c):
  """float64 ``0.5 ||c||^2 - x . c`` (sqeuclidean's score), rows of x."""
  x = np.asarray(x, np.float64)
  c = np.asarray(c, np.float64)
  return 0.5 * (c * c).sum(1)[None, :] - x @ c.T


def label_errors(xs, c, labels, tie) -> dict:
  out = {"differ": 0, "beyond_tie": 0}
  for start in range(0, xs.shape[0], 4096):
    s = exact_scores(xs[start:start + 4096], c)
    lab = labels[start:start + 4096]
    best = s.min(1)
    gap = s[np.arange(len(lab)), lab] - best
    out["differ"] += int((gap > 0).sum())
    out["beyond_tie"] += int((gap > tie[start:start + 4096] + 1e-12 * np.abs(best)).sum())
  return out


def grid_rows(res: harness.Results, shapes, cap_s, impl):
  for n, k, d in shapes:
    est = 4 * harness.estimated_s(2.0 * n * k * d, jnp.float32)
    note = harness.over_cap(est, cap_s)
    if note:
      res.add({"part": "grid", "n": n, "k": k, "d": d, "note": note})
      continue
    x = harness.normal(1, (n, d), jnp.float32)
    c = x[:k]
    rows = np.sort(np.random.default_rng(0).choice(n, min(n, SAMPLE), replace=False))
    xs = np.asarray(x[rows])
    c_host = np.asarray(c)
    row = {"part": "grid", "n": n, "k": k, "d": d, "impl": impl or "auto", "ms": {},
           "uncertified_fraction": {}, "labels": {}}
    tie = None
    for name, prec in MODES.items():
      fn = jax.jit(lambda x, c, p=prec: fk.assign(x, c, impl=impl, precision=p))
      row["ms"][name] = round(harness.median_ms(fn, x, c, reps=5, inner=3), 4)
      labels = np.asarray(fn(x, c)[0])[rows]
      if tie is None:
        cert = certification(x, c, impl=impl, precision="certified")
        tie = np.asarray(cert.tie, np.float64)[rows]
      row["labels"][name] = label_errors(xs, c_host, labels, tie)
      if name.startswith("certified"):
        cert = certification(x, c, impl=impl, precision=prec)
        row["uncertified_fraction"][name] = float(1.0 - np.asarray(cert.certified).mean())
    row["certified_over_tf32"] = round(row["ms"]["certified"] / row["ms"]["tf32"], 3)
    row["certified_f16_over_tf32"] = round(row["ms"]["certified_f16"] / row["ms"]["tf32"], 3)
    row["sampled_rows"] = int(len(rows))
    res.add(row)


def lloyd_rows(res: harness.Results, n, d, k, impl, max_iter):
  from sklearn.cluster import KMeans
  from sklearn.datasets import make_blobs
  for kind, std in (("separated", 1.0), ("overlapping", 6.0)):
    x, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=std,
                      center_box=(-20.0, 20.0), random_state=0)
    x = x.astype(np.float32)
    init = harness.host_seeds(x, k, seed=1)
    t0 = time.perf_counter()
    sk = KMeans(k, init=init, n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd").fit(x)
    sk_s = time.perf_counter() - t0
    row = {"part": "lloyd", "blobs": kind, "n": n, "d": d, "k": k, "max_iter": max_iter,
           "sklearn": {"inertia": float(sk.inertia_), "n_iter": int(sk.n_iter_),
                       "s": round(sk_s, 2)}}
    xj = jnp.asarray(x)
    for name in ("tf32", "highest", "certified"):
      prec = MODES[name]
      t0 = time.perf_counter()
      r = jax.block_until_ready(fk.kmeans(jax.random.key(0), xj, k, init=jnp.asarray(init),
                                          max_iter=max_iter, tol=0.0, impl=impl,
                                          precision=prec, empty="farthest"))
      labels = np.asarray(r.labels)
      # Inertia of each result in float64 from its own labels and centroids.
      cen = np.asarray(r.centroids, np.float64)
      inertia = float(((x.astype(np.float64) - cen[labels]) ** 2).sum())
      row[name] = {"agreement": float((labels == sk.labels_).mean()),
                   "inertia": inertia,
                   "inertia_gap": (inertia - float(sk.inertia_)) / float(sk.inertia_),
                   "n_iter": int(np.asarray(r.n_iter)), "s": round(time.perf_counter() - t0, 2)}
    res.add(row)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default=None)
  ap.add_argument("--cap-s", type=float, default=120.0, help="skip rows estimated above this")
  ap.add_argument("--smoke", action="store_true", help="tiny rows (CPU check of the script)")
  ap.add_argument("--part", choices=("all", "grid", "lloyd"), default="all",
                  help="the grid shapes, the Lloyd runs, or both")
  args = ap.parse_args()
  impl = harness.kernel_impl()
  out = args.out or harness.result_name("certified", "float32")
  res = harness.Results(out, official=False, what="certified float32 assignment")
  if args.part in ("all", "grid"):
    grid_rows(res, SMOKE_SHAPES if args.smoke else SHAPES, args.cap_s, impl)
  if args.part in ("all", "lloyd"):
    if args.smoke:
      lloyd_rows(res, 3000, 8, 12, impl, 50)
    else:
      lloyd_rows(res, 200_000, 64, 300, impl, 300)
  print("wrote", out)


if __name__ == "__main__":
  main()
