"""The workload suite (issue 18): what users pay, row by row, against the
official flash-kmeans and this library's XLA path, in one process.

    python benchmarks/suite.py --rows quant,attention --cap-s 60 --out suite.json
    python benchmarks/suite.py --tiny            # tiny rows on any backend (checks the script)

Groups (``--rows``, comma list): ``grid`` (the performance grid, float16 and
bfloat16), ``quant`` (D of 1 to 8, batches up to 4096, sample weights),
``embed`` (D of 768 to 2048, K up to 65536, sqeuclidean and cosine),
``attention`` (warm-started batches, 2 and 10 iterations), ``index``
(2^24 x 65536 x 128) and ``float32`` (default precision); the rows are in
``benchmarks/suite_rows.py``.

Every row gives the same data (standard normal) and the same initial
centroids (the first K points of each member, or for warm rows the
centroids of 5 earlier iterations) to every implementation, which runs with
its defaults apart from ``max_iter=t, tol=0`` (``fk.kmeans`` /
``fk.batched_kmeans``: ``check_finite`` on, the final assignment included).
Two figures per implementation, each from the medians of ``--reps``
synchronised calls after one warm-up call of each length:

* ``whole_ms_per_iter``: the whole call of ``iters[1]`` iterations divided
  by the iterations it ran (a call that reaches a fixed point stops early;
  ``n_iter`` is recorded);
* ``marginal_ms``: ``(t(iters[1]) - t(iters[0])) / (n_iter difference)``.

Implementations: ``ours`` (defaults: the Pallas kernels on CUDA), ``xla``
(``impl="xla"``, skipped from K=65536 on) and ``official``
(``flash_kmeans.batch_kmeans_Euclid`` / ``_Cosine``; no sample weights, so it
runs unweighted on weighted rows, which the row records; ``"n/a: ..."`` when
it does not import). ``--cap-s``: once a row has taken this long, its
remaining measurements are recorded as ``"capped"``. The JSON (card,
versions, date, ceilings, one entry per row) is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
from benchmarks import suite_rows  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402

OFFICIAL_FNS = {"sqeuclidean": "batch_kmeans_Euclid", "cosine": "batch_kmeans_Cosine",
                "dot": "batch_kmeans_Dot"}
WARM_ITERS = 5


def problem(row: suite_rows.Row):
  """``x [B, N, D]``, initial centroids ``[B, K, D]`` and weights ``[B, N]`` or None."""
  x, init = harness.grid_problem(row.b, row.n, row.k, row.d, jnp.dtype(row.dtype))
  weights = None
  if row.weights:
    weights = jax.random.uniform(jax.random.key(7), (row.b, row.n), jnp.float32, 0.5, 1.5)
  if row.warm:  # the centroids a previous step of the same data left
    init = lloyd(x, init, row, WARM_ITERS, weights, None).centroids
    init = jax.block_until_ready(init.reshape(row.b, row.k, row.d))
  return x, init, weights


def lloyd(x, init, row, iters, weights, impl, key=None):
  """One whole default call of at most ``iters`` iterations (``tol=0``)."""
  w = weights
  if w is not None and row.b == 1:
    w = w[0]
  kwargs = dict(metric=row.metric, weights=w)
  if impl is not None:
    kwargs["impl"] = impl
  return harness.lloyd_call(x, init, row.k, iters, key=key, **kwargs)


def ours_runner(x, init, weights, row, impl):
  key = jax.random.key(0)  # made once, as a user's key is

  def run(iters):
    r = jax.block_until_ready(lloyd(x, init, row, iters, weights, impl, key))
    return int(np.max(np.asarray(r.n_iter)))
  return run


def official_runner(x, init, row):
  import torch
  import flash_kmeans
  fn = getattr(flash_kmeans, OFFICIAL_FNS[row.metric])
  xt = torch.from_dlpack(x)
  ct = torch.from_dlpack(init).to(xt.dtype).contiguous()

  def run(iters):
    out = fn(xt, row.k, max_iters=iters, tol=0.0, init_centroids=ct.clone())
    torch.cuda.synchronize()
    n = out[-1] if isinstance(out, tuple) else None
    return int(n) if isinstance(n, int) else iters
  return run


def measure(run, iters, reps: int) -> dict:
  """Whole call per iteration and marginal iteration of ``run(iters)``,
  which executes, synchronises and returns the iterations it ran."""
  t1, t2 = iters
  t0 = time.perf_counter()
  run(t2)
  out = {"first_call_s": time.perf_counter() - t0}
  run(t1)
  short, long = [], []
  n1 = n2 = None
  for _ in range(reps):
    t0 = time.perf_counter()
    n1 = run(t1)
    short.append(time.perf_counter() - t0)
  for _ in range(reps):
    t0 = time.perf_counter()
    n2 = run(t2)
    long.append(time.perf_counter() - t0)
  out.update(n_iter=(n1, n2), whole_ms_per_iter=statistics.median(long) * 1e3 / n2,
             whole_ms=statistics.median(long) * 1e3,
             spread=(max(long) - min(long)) / statistics.median(long))
  if n2 > n1:
    out["marginal_ms"] = (statistics.median(long) - statistics.median(short)) * 1e3 / (n2 - n1)
  return out


def assign_ms(x, init, row) -> dict:
  """The assignment alone (``fk.assign``, vmapped over the batch) and its rate."""
  f = jax.jit(jax.vmap(lambda x, c: fk.assign(x, c, metric=row.metric, impl=harness.kernel_impl(),
                                               check_finite=False)))
  ms = harness.median_ms(f, x, init.astype(x.dtype), reps=5, inner=3)
  return {"assign_ms": ms, "assign_tflops": row.flops_per_iter() / ms / 1e9}


def run_row(row: suite_rows.Row, reps: int, cap_s: float | None, ceilings: dict,
            official_ok: str | None, with_assign: bool) -> dict:
  start = time.perf_counter()
  rec = dict(name=row.name, group=row.group, B=row.b, N=row.n, K=row.k, D=row.d,
             dtype=row.dtype, metric=row.metric, weights=row.weights, warm=row.warm,
             iters=row.iters, note=row.note)
  x, init, weights = problem(row)
  rec["floor_ms"] = row.flops_per_iter() / (ceilings["bf16_matmul_tflops"] * 1e9)

  def capped():
    return cap_s is not None and time.perf_counter() - start > cap_s

  plan = [("ours", lambda: ours_runner(x, init, weights, row, None))]
  if official_ok is None:
    plan.append(("official", lambda: official_runner(x, init, row)))
  else:
    rec["official"] = f"n/a: {official_ok}"
  if row.k >= 65536:
    rec["xla"] = "skipped: K >= 65536 (minutes per iteration)"
  else:
    plan.append(("xla", lambda: ours_runner(x, init, weights, row, "xla")))
  for name, make in plan:
    if capped():
      rec[name] = "capped"
      continue
    try:
      rec[name] = measure(make(), row.iters, reps)
    except Exception as e:  # noqa: BLE001 -- a failed measurement is a result
      rec[name] = f"error: {e!r}"[:400]
  if row.weights and isinstance(rec.get("official"), dict):
    rec["official_unweighted"] = True
  if with_assign and not capped():
    try:
      rec.update(assign_ms(x, init, row))
      rec["assign_frac_of_bf16_matmul"] = rec["assign_tflops"] / ceilings["bf16_matmul_tflops"]
    except Exception as e:  # noqa: BLE001
      rec["assign_error"] = repr(e)[:300]
  ours = rec.get("ours")
  for other in ("official", "xla"):
    o = rec.get(other)
    if isinstance(ours, dict) and isinstance(o, dict):
      rec[f"{other}_over_ours_whole"] = o["whole_ms_per_iter"] / ours["whole_ms_per_iter"]
      if "marginal_ms" in o and "marginal_ms" in ours:
        rec[f"{other}_over_ours_marginal"] = o["marginal_ms"] / ours["marginal_ms"]
  rec["row_seconds"] = time.perf_counter() - start
  return rec


def official_status() -> str | None:
  """None when the official flash-kmeans can run here, else why not."""
  try:
    import importlib
    import torch
    importlib.import_module("flash_kmeans")
  except Exception as e:  # noqa: BLE001
    return f"does not import ({e!r})"[:200]
  if not torch.cuda.is_available():
    return "no CUDA device for torch"
  return None


def table(rows: list[dict]) -> str:
  """Markdown: whole-call figures first, then the marginal iteration."""
  def ms(rec, impl, key):
    v = rec.get(impl)
    return f"{v[key]:.3f}" if isinstance(v, dict) and key in v else (
        str(v).split(":")[0] if v is not None else "-")

  def ratio(rec, key):
    return f"{rec[key]:.2f}" if key in rec else "-"

  lines = ["| row | official ms/iter | ours | official/ours | xla | marginal official | "
           "marginal ours | official/ours |", "|" + "---|" * 8]
  for r in rows:
    lines.append(" | ".join([
        f"| {r['name']}", ms(r, "official", "whole_ms_per_iter"), ms(r, "ours", "whole_ms_per_iter"),
        ratio(r, "official_over_ours_whole"), ms(r, "xla", "whole_ms_per_iter"),
        ms(r, "official", "marginal_ms"), ms(r, "ours", "marginal_ms"),
        ratio(r, "official_over_ours_marginal")]) + " |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rows", default="quant,attention",
                  help=f"comma list of groups: {','.join(suite_rows.GROUPS)}")
  ap.add_argument("--dtypes", default=None, help="filter the grid's dtypes (float16,bfloat16)")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--cap-s", type=float, default=None,
                  help="per-row time cap: measurements after it are recorded as 'capped'")
  ap.add_argument("--no-assign", action="store_true", help="skip the assignment-alone timing")
  ap.add_argument("--tiny", action="store_true", help="tiny rows (a CPU check of the script)")
  ap.add_argument("--out", default=None, help="default: suite-<rows>_<card>_<date>.json")
  ap.add_argument("--markdown", default=None, help="also write the table here")
  args = ap.parse_args(argv)
  groups = args.rows.split(",")
  rows = suite_rows.select(groups, args.tiny, args.dtypes.split(",") if args.dtypes else None)
  what = "suite" + ("-tiny" if args.tiny else "") + "-" + "-".join(groups)
  out = harness.Results(args.out or harness.result_name(what), groups=groups, reps=args.reps,
                        cap_s=args.cap_s, tiny=args.tiny)
  out.meta["ceilings"] = ceilings = harness.measure_ceilings(small=args.tiny)
  official_ok = official_status()
  out.meta["official"] = official_ok or "available"
  print(json.dumps(out.meta, default=str), flush=True)
  for row in rows:
    try:
      rec = run_row(row, args.reps, args.cap_s, ceilings, official_ok, not args.no_assign)
    except Exception as e:  # noqa: BLE001 -- e.g. out of memory building the data
      rec = dict(name=row.name, group=row.group, error=repr(e)[:400])
    out.add(rec)
  md = table(out.rows)
  print(md, flush=True)
  if args.markdown:
    with open(args.markdown, "w") as fh:
      fh.write(md + "\n")
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
