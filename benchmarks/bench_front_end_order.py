"""What ``KMeans.order_`` and the CLI's ``--order-out`` add to a fit.

    python benchmarks/bench_front_end_order.py --out front_end_order.json [--cap-s 300]

Rows, D=64 float32, each stopped once the script has run ``--cap-s`` seconds:

* ``host``: the host counting sort behind a streamed fit, ``partial_fit``
  and a streamed ``--order-out`` (``host_cluster_order``) against NumPy's
  ``np.argsort(labels, kind="stable")``, for N in 2^20..2^24 and K = 1024,
  65,536 (past 2^16 the radix sort on uint16 keys no longer applies), and
  ``drop_padding`` (what an in-memory fit does with the device order: drop
  the row buckets' padded rows);
* ``fit``: ``KMeans(K=1024, max_iter=10, tol=0).fit`` at N = 2^20 and 2^22,
  its total time (second call: compiled) and the share that ``order_``
  adds: ``drop_padding`` on the host plus the device-to-host copy of an
  ``int32`` array of the padded N (measured apart: it is part of the fit's
  one ``device_get``).

Expected: ``order_s / fit_s`` of a few per cent at most; the host sort
several times faster than ``np.argsort`` for K <= 65,536.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402

import numpy as np  # noqa: E402

import flashkmeans_jax as fk  # noqa: E402
from flashkmeans_jax.estimator import kmeans as est_mod  # noqa: E402
from flashkmeans_jax.estimator.order import drop_padding, host_cluster_order  # noqa: E402

D = 64


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def host_rows(out, over) -> None:
  rng = np.random.default_rng(0)
  for n in (2**20, 2**22, 2**24):
    for k in (1024, 65536):
      if over():
        out.add(dict(part="host", n=n, k=k, note="over cap"))
        return
      labels = rng.integers(0, k, n).astype(np.int32)
      padded = np.argsort(np.r_[labels, labels[: n // 4]], kind="stable")
      out.add(dict(part="host", n=n, k=k,
                   host_cluster_order_s=_timed(lambda: host_cluster_order(labels, k)),
                   np_argsort_stable_s=_timed(lambda: np.argsort(labels, kind="stable")),
                   drop_padding_s=_timed(lambda: drop_padding(padded, labels, k))))


def fit_rows(out, over) -> None:
  import jax
  import jax.numpy as jnp
  spent = []
  real = est_mod.drop_padding

  def timed_drop_padding(*args):
    t = time.perf_counter()
    got = real(*args)
    spent.append(time.perf_counter() - t)
    return got

  est_mod.drop_padding = timed_drop_padding
  try:
    for n in (2**20, 2**22):
      if over():
        out.add(dict(part="fit", n=n, note="over cap"))
        return
      x = harness.host_normal(n, D, "float32")
      km = fk.KMeans(1024, random_state=0, max_iter=10, tol=0.0)
      km.fit(x)  # compiles
      spent.clear()
      fit_s = _timed(lambda: km.fit(x))
      # The order's device-to-host copy, part of the fit's one device_get.
      rows = fk.estimator.bucket_rows(n, D * 4)
      dev = jax.block_until_ready(jnp.zeros((rows,), jnp.int32) + 1)
      copy_s = _timed(lambda: np.asarray(jax.device_get(dev)))
      order_s = spent[-1] + copy_s
      out.add(dict(part="fit", n=n, k=1024, d=D, fit_s=fit_s, drop_padding_s=spent[-1],
                   order_copy_s=copy_s, order_frac=order_s / fit_s))
  finally:
    est_mod.drop_padding = real


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=None, help="default: front-end-order_<card>_<date>.json")
  ap.add_argument("--cap-s", type=float, default=300.0)
  args = ap.parse_args()
  out = harness.Results(args.out or harness.result_name("front-end-order"))
  start = time.perf_counter()

  def over() -> bool:
    return time.perf_counter() - start > args.cap_s

  host_rows(out, over)
  fit_rows(out, over)
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
