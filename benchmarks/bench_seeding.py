"""Seeding that scales (issue 21): what each ``init`` costs against a
20-iteration run, and the inertia after those 20 iterations.

    python benchmarks/bench_seeding.py --out seeding.json            # GPU rows
    python benchmarks/bench_seeding.py --smoke --out /tmp/s.json     # tiny, any backend
    python benchmarks/bench_seeding.py --rows 50000,5000,32 --out cpu.json

Per row ``(N, K, D)`` (standard-normal points in ``--dtype``) and per
variant:

* ``base``: ``fk.kmeans(init=<K given points>, max_iter=20, tol=0)``, the
  20-iteration run without seeding (the reference time ``run_s``);
* ``random``, ``k-means++``, ``k-means||`` (defaults: ``l = k / 4``, 8
  rounds), ``k-means||-2x5`` (``l = 2k``, 5 rounds: the defaults before the
  tenth session), ``k-means||-light`` (``oversampling_factor=0.5``,
  ``init_rounds=2``), ``k-means||-1x2`` (``oversampling_factor=1``,
  ``init_rounds=2``) and
  ``mppc-64`` (``k-means||`` with ``max_points_per_centroid=64``): the same
  call with that seeding. ``seed_s = total_s - run_s`` and ``seed_frac =
  seed_s / run_s`` (target: <= 0.1 at K=65536, N=2^22; left out when the
  call stopped at a fixed point before 20 iterations), ``inertia`` after 20
  iterations and ``inertia_vs_pp`` (target: <= 1 against k-means++ where it
  ran).

``return_order``: 2-iteration calls with and without ``return_order=True``
(``--order-reps`` repetitions each); ``order_frac_of_iter`` is the extra time
over the marginal iteration (target: <= 0.05).

Times are medians of ``--reps`` synchronised calls after one warm-up (which
compiles). A variant whose estimated seeding time (from its FLOPs, see
:func:`estimate_seed_s`) exceeds ``--cap-s`` is skipped with a note:
greedy k-means++ at K=65536 on 2^22 points is k sequential passes of
``N x n_local_trials`` distances, hours on any GPU.
"""

from __future__ import annotations

import argparse
import math
import time

import jax

if __package__:
  from benchmarks import harness
else:
  import harness

import flashkmeans_jax as fk

ROWS = [(1 << 22, 65536, 128), (1 << 20, 4096, 128), (1 << 18, 8192, 128)]
SMOKE_ROWS = [(4096, 64, 16)]
VARIANTS = {
    "random": dict(init="random"),
    "k-means++": dict(init="k-means++"),
    "k-means||": dict(init="k-means||"),
    "k-means||-2x5": dict(init="k-means||", oversampling_factor=2.0, init_rounds=5),
    "k-means||-light": dict(init="k-means||", oversampling_factor=0.5, init_rounds=2),
    "k-means||-1x2": dict(init="k-means||", oversampling_factor=1.0, init_rounds=2),
    "mppc-64": dict(init="k-means||", max_points_per_centroid=64),
}


def estimate_seed_s(n: int, k: int, d: int, kw: dict, dtype) -> float:
  """Seconds of the seeding's distance work at the harness' rates."""
  trials = kw.get("n_local_trials") or 2 + int(math.log(k))
  mppc = kw.get("max_points_per_centroid")
  n = min(n, k * mppc) if mppc else n
  init = kw["init"]
  if init == "random":
    return 0.0
  if init == "k-means++":
    return harness.estimated_s(2.0 * k * trials * n * d, "float32")
  # The library's defaults (lloyd/seeding.py) where the variant leaves them out.
  ell = kw.get("oversampling_factor", 0.25) * k
  rounds = kw.get("init_rounds", 8)
  cands = 1 + rounds * (ell + 8 * math.sqrt(ell) + 8)
  # The library reclusters the candidates by greedy k-means++ up to 2^34
  # multiply-adds of that step, else by batched greedy k-means++ (the same
  # scoring work, in rounds, and one more C x k pass for the distances to
  # the chosen seeds).
  greedy = k * trials * cands * d <= 2 ** 34
  recluster = 2.0 * d * k * cands * (trials if greedy else trials + 1)
  return (harness.estimated_s(2.0 * rounds * n * (ell + 8 * math.sqrt(ell)) * d, dtype)
          + harness.estimated_s(recluster, "float32"))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--rows", nargs="*", help="N,K,D triples (default: the GPU rows)")
  p.add_argument("--variants", nargs="*", default=list(VARIANTS))
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--cap-s", type=float, default=120.0, help="skip a variant whose "
                 "estimated seeding time exceeds this")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--data", choices=("normal", "blobs"), default="normal",
                 help="standard-normal points, or K blobs (harness.blobs) where seeding "
                      "decides which blobs are found")
  p.add_argument("--parallel", nargs="*", default=[],
                 help="extra k-means|| variants, each oversampling_factor,init_rounds"
                      "[,n_local_trials] (named ||<o>x<r>[t<trials>])")
  p.add_argument("--once", nargs="*", default=[],
                 help="variants timed by one call, compilation included (slow seedings "
                      "whose inertia is what matters: k-means++ at K=65536)")
  p.add_argument("--order-reps", type=int, default=9,
                 help="repetitions of the short calls of the return_order row")
  p.add_argument("--no-order", dest="order", action="store_false",
                 help="skip the return_order row (its cost against one iteration)")
  a = p.parse_args()
  rows = (SMOKE_ROWS if a.smoke else
          [tuple(int(v) for v in r.split(",")) for r in a.rows] if a.rows else ROWS)
  dtype = "float32" if a.smoke else a.dtype
  res = harness.Results(a.out, official=False, dtype=dtype, iters=a.iters, data=a.data)
  variants, names = dict(VARIANTS), list(a.variants)
  for spec in a.parallel:
    o, r, *t = spec.split(",")
    names.append(f"||{o}x{r}" + (f"t{t[0]}" if t else ""))
    variants[names[-1]] = dict(init="k-means||", oversampling_factor=float(o),
                               init_rounds=int(r), **({"n_local_trials": int(t[0])} if t else {}))
  impl = harness.kernel_impl()
  for n, k, d in rows:
    x = (harness.blobs(1, n, k, d, dtype) if a.data == "blobs"
         else harness.normal(1, (n, d), dtype))
    init_rows = x[:k]

    def call(once=False, **kw):
      def run():
        r = fk.kmeans(jax.random.key(0), x, k, max_iter=a.iters, tol=0.0, impl=impl, **kw)
        return jax.block_until_ready(r)
      if once:  # one call, compilation included: an upper bound of its time
        t0 = time.perf_counter()
        r = run()
        return time.perf_counter() - t0, float(r.inertia), int(r.n_iter)
      r = run()  # warm-up: compiles
      return harness.median_s(run, a.reps), float(r.inertia), int(r.n_iter)

    run_s, base_inertia, _ = call(init=init_rows)
    row = dict(n=n, k=k, d=d, variant="base", total_s=run_s, inertia=base_inertia)
    res.add(row)
    if a.order:
      # Short calls, many repetitions: the extra time of the order (one
      # stable sort of the final labels) against the marginal iteration
      # ((20-iteration call - 2-iteration call) / 18), so that run-to-run
      # noise of the long calls does not swamp a few milliseconds.
      def short(**kw):
        run = harness.lloyd_runner(x, init_rows, k, impl=impl, **kw)
        run(2)  # warm-up: compiles
        return harness.median_s(lambda: run(2), a.order_reps)
      plain_s, order_s = short(), short(return_order=True)
      per_iter = (run_s - plain_s) / (a.iters - 2)
      res.add(dict(n=n, k=k, d=d, variant="return_order", short_iters=2, plain_s=plain_s,
                   order_total_s=order_s, order_s=order_s - plain_s, marginal_iter_s=per_iter,
                   order_frac_of_iter=(order_s - plain_s) / per_iter))
    pp_inertia = None
    for name in names:
      kw = variants[name]
      est = estimate_seed_s(n, k, d, kw, dtype)
      note = harness.over_cap(est, a.cap_s)
      row = dict(n=n, k=k, d=d, variant=name, options=kw, estimate_seed_s=est)
      if note:
        res.add({**row, "note": note})
        continue
      try:
        total, inertia, n_iter = call(once=name in a.once, **kw)
      except Exception as e:  # out of memory on a big row: record and go on
        res.add({**row, "note": f"failed: {type(e).__name__}: {str(e)[:200]}"})
        continue
      if name in a.once:
        row["note"] = "one call, compilation included"
      if name == "k-means++":
        pp_inertia = inertia
      # A run that reached a fixed point before --iters did less work than
      # the base run: its seed time cannot be read off the call.
      seed_s = total - run_s if n_iter == a.iters else None
      if seed_s is None:
        row["note"] = (row.get("note", "") + f" stopped at a fixed point after {n_iter} "
                       "iterations: seed time not separable").strip()
      res.add({**row, "total_s": total, "seed_s": seed_s,
               "seed_frac": None if seed_s is None else seed_s / run_s, "inertia": inertia,
               "n_iter": n_iter,
               "inertia_vs_pp": None if pp_inertia is None else inertia / pp_inertia})


if __name__ == "__main__":
  main()
