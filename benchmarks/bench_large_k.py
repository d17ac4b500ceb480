"""Very large k and balanced clusters (issue 21): ``hierarchical_kmeans``
against a flat ``kmeans``, and ``balanced_kmeans`` against plain ``kmeans``.

    python benchmarks/bench_large_k.py --out large_k.json            # GPU rows
    python benchmarks/bench_large_k.py --smoke --out /tmp/lk.json    # tiny, any backend

Part ``hier``, per row ``(N, K, D)`` (default (2^22, 65536, 128) and (2^20,
16384, 128), standard-normal points in ``--dtype``), each with ``max_iter =
--iters`` (20) and ``tol=0``:

* ``flat``: ``fk.kmeans(init="k-means||")`` (greedy k-means++ at K=65536 is
  hours, see bench_seeding.py);
* ``hier-r0``, ``hier-r2``: ``fk.hierarchical_kmeans(refine_iter=0 / 2)``
  (default ``n_meso = round(sqrt(K))``; ``--iters`` per level).

Part ``balanced``, per row (default (2^20, 4096, 128)), from the same start
(the first K points), ``--iters`` iterations, ``tol=0``: ``plain``
(``fk.kmeans``), ``balanced-1.0`` and ``balanced-1.1``
(``fk.balanced_kmeans(capacity_factor=...)``) and ``balanced-1.0-m4r8``
(``n_candidates=4, max_rounds=8``: fewer sorts, more spilled points).

Every variant records ``total_s`` (median wall seconds of ``--reps`` warm,
synchronised calls, seeding and the final assignment included), ``inertia``,
its ratio to the row's reference (``flat`` / ``plain``) and, for the
balanced part, ``max_size`` (largest cluster) against the ``cap``. Rows are
time-capped: a variant whose estimated time (its Lloyd FLOPs at the harness'
rates, times the reps plus the warm-up) exceeds ``--cap-s`` is skipped with a
note, and no variant starts once ``--budget-s`` has passed. One JSON file.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import numpy as np

if __package__:
  from benchmarks import harness
else:
  import harness

import flashkmeans_jax as fk

HIER_ROWS = [(1 << 22, 65536, 128), (1 << 20, 16384, 128)]
BAL_ROWS = [(1 << 20, 4096, 128)]
SMOKE_HIER = [(8192, 256, 16)]
SMOKE_BAL = [(4096, 64, 16)]


def lloyd_flops(n: int, k: int, d: int, iters: int) -> float:
  """Multiply-adds x 2 of ``iters`` assignments (plus the final one)."""
  return 2.0 * n * k * d * (iters + 1)


def estimate_s(part: str, variant: str, n: int, k: int, d: int, iters: int, dtype) -> float:
  """Seconds of one call, from its distance FLOPs (bench_seeding's k-means||
  estimate is left out: a few seconds at K=65536)."""
  if part == "hier" and variant.startswith("hier"):
    m = max(1, round(math.sqrt(k)))
    refine = int(variant[-1])
    # Meso level (K=m), fine level (N points x ~k/m centroids, with padding
    # and the surplus rows, ~2x), refinement and the final assignment.
    flops = (lloyd_flops(n, m, d, iters) + 2 * lloyd_flops(n, k / m, d, iters)
             + lloyd_flops(n, k, d, refine))
  elif variant.startswith("balanced"):
    # The top-m candidates cost about one assignment; the rounds are sorts.
    flops = 1.5 * lloyd_flops(n, k, d, iters)
  else:
    flops = lloyd_flops(n, k, d, iters)
  return harness.estimated_s(flops, dtype)


def timed(run, reps: int):
  """``(median seconds, last result)`` of ``reps`` synchronised calls after
  one warm-up (which compiles)."""
  r = jax.block_until_ready(run())
  samples = []
  for _ in range(reps):
    t0 = time.perf_counter()
    r = jax.block_until_ready(run())
    samples.append(time.perf_counter() - t0)
  return float(np.median(samples)), r


def hier_variants(x, k, iters, impl):
  key = jax.random.key(0)
  return {
      "flat": lambda: fk.kmeans(key, x, k, init="k-means||", max_iter=iters, tol=0.0,
                                impl=impl),
      "hier-r0": lambda: fk.hierarchical_kmeans(key, x, k, max_iter=iters, tol=0.0,
                                                impl=impl, refine_iter=0),
      "hier-r2": lambda: fk.hierarchical_kmeans(key, x, k, max_iter=iters, tol=0.0,
                                                impl=impl, refine_iter=2),
  }


def bal_variants(x, k, iters, impl):
  key, init = jax.random.key(0), x[:k]
  common = dict(init=init, max_iter=iters, tol=0.0, impl=impl)
  return {
      "plain": lambda: fk.kmeans(key, x, k, **common),
      "balanced-1.0": lambda: fk.balanced_kmeans(key, x, k, capacity_factor=1.0, **common),
      "balanced-1.1": lambda: fk.balanced_kmeans(key, x, k, capacity_factor=1.1, **common),
      # Fewer candidates and rounds: more points spill (the bound holds anyway).
      "balanced-1.0-m4r8": lambda: fk.balanced_kmeans(key, x, k, capacity_factor=1.0,
                                                      n_candidates=4, max_rounds=8, **common),
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--parts", nargs="*", default=["hier", "balanced"])
  p.add_argument("--hier-rows", nargs="*", help="N,K,D triples")
  p.add_argument("--bal-rows", nargs="*", help="N,K,D triples")
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--reps", type=int, default=2)
  p.add_argument("--cap-s", type=float, default=120.0,
                 help="skip a variant whose estimated time (all its calls) exceeds this")
  p.add_argument("--budget-s", type=float, default=480.0,
                 help="start no variant after this many seconds")
  p.add_argument("--smoke", action="store_true")
  a = p.parse_args()

  def parse(rows, default, smoke):
    if a.smoke:
      return smoke
    return [tuple(int(v) for v in r.split(",")) for r in rows] if rows else default

  rows = {"hier": parse(a.hier_rows, HIER_ROWS, SMOKE_HIER),
          "balanced": parse(a.bal_rows, BAL_ROWS, SMOKE_BAL)}
  dtype = "float32" if a.smoke else a.dtype
  iters = 3 if a.smoke else a.iters
  res = harness.Results(a.out, official=False, dtype=dtype, iters=iters, reps=a.reps)
  impl = harness.kernel_impl()
  t_start = time.perf_counter()
  for part in a.parts:
    for n, k, d in rows[part]:
      x = harness.normal(1, (n, d), dtype)
      variants = (hier_variants if part == "hier" else bal_variants)(x, k, iters, impl)
      ref_inertia = None
      for name, run in variants.items():
        est = estimate_s(part, name, n, k, d, iters, dtype) * (a.reps + 1)
        row = dict(part=part, n=n, k=k, d=d, variant=name, estimate_s=est)
        note = harness.over_cap(est, a.cap_s)
        if note is None and time.perf_counter() - t_start > a.budget_s:
          note = f"skipped: --budget-s {a.budget_s:.0f} s spent"
        if note:
          res.add({**row, "note": note})
          continue
        try:
          total, r = timed(run, a.reps)
        except Exception as e:  # out of memory on a big row: record and go on
          res.add({**row, "note": f"failed: {type(e).__name__}: {str(e)[:300]}"})
          continue
        inertia = float(r.inertia)
        ref_inertia = inertia if ref_inertia is None else ref_inertia
        sizes = np.bincount(np.asarray(r.labels), minlength=k)
        out = {**row, "total_s": total, "inertia": inertia,
               "inertia_vs_ref": inertia / ref_inertia, "n_iter": int(r.n_iter),
               "max_size": int(sizes.max()), "empty": int(np.sum(sizes == 0))}
        if name.startswith("balanced"):
          out["cap"] = max(-(-n // k), math.ceil(float(name.split("-")[1]) * n / k))
          out["within_cap"] = out["max_size"] <= out["cap"]
        res.add(out)


if __name__ == "__main__":
  main()
