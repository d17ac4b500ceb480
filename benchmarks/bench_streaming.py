"""GPU benchmark of out-of-core k-means (``fk.kmeans_streaming``).

Data live in host memory; every Lloyd iteration streams the non-resident part
to the GPU. Reported per configuration (dtype x method x budget), all through
the public call:

* ``ms_per_iter``: the marginal iteration, ``(t(1 + iters) - t(1)) / iters``
  of two synchronised ``kmeans_streaming`` calls (``tol=0``, explicit init)
  after a warm-up of each, so set-up, loading the resident part, the first
  pass (page-locking for ``pinned_cache``) and the final assignment cancel;
* ``streamed_gb``: bytes crossing the host link per iteration (the data less
  the budget: exact when the budget is whole chunks), and the achieved rate;
* ``transfer_ms_est``: those bytes at the plain ``device_put`` bandwidth
  measured below (pinned or pageable, whichever the method uses);
* ``compute_ms``: the same iteration with all the data resident (no
  transfers), and ``bound_ms = max(transfer_ms_est, compute_ms)`` with
  ``bound / actual`` (1.0 = perfect overlap).

Host-to-device bandwidth: a plain ``jax.device_put`` of ``--bw-gib`` of
pageable NumPy memory, and of a pinned-host JAX array (plus the time to copy
NumPy into pinned memory).

The official flash-kmeans ``kmeans_largeN`` (PyTorch/Triton) runs first, on the
same host data, if ``flash_kmeans`` imports; its signature is inspected and
only known keywords are passed; failures are recorded, never fatal.

  python benchmarks/bench_streaming.py --n-log2 22 --out /tmp/small.json   # smoke
  python benchmarks/bench_streaming.py              # streaming_<dtypes>_<card>_<date>.json

Results are written after every configuration, so a run cut short keeps what
it measured.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402

import jax  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402

GIB = harness.GIB
PINNED_METHODS = ("pinned", "pinned_cache")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--n-log2", type=int, default=26, help="N = 2**n_log2 points")
  p.add_argument("--d", type=int, default=128)
  p.add_argument("--k", type=int, default=8192)
  p.add_argument("--dtypes", default="float16,float32")
  p.add_argument("--methods", default="device_put,pinned,io_callback,pinned_cache",
                 help="methods timed with budget 0 (pure streaming)")
  p.add_argument("--budgets", default="0.5,1.0",
                 help="fractions of the data kept resident, timed with --budget-method")
  p.add_argument("--budget-method", default="device_put")
  p.add_argument("--chunk-rows", type=int, default=None,
                 help="rows per chunk (default: the library's)")
  p.add_argument("--iters", type=int, default=3, help="iterations of the marginal")
  p.add_argument("--reps", type=int, default=1, help="timed calls of each length (median)")
  p.add_argument("--impl", default=None, help="None (auto), xla or pallas")
  p.add_argument("--precision", default=None)
  p.add_argument("--bw-gib", type=float, default=2.0, help="size of the bandwidth test")
  p.add_argument("--no-official", action="store_true", help="skip flash_kmeans.kmeans_largeN")
  p.add_argument("--official-pinned", action="store_true",
                 help="also time kmeans_largeN on a pinned copy of the data")
  p.add_argument("--official-pinned-only", action="store_true",
                 help="time kmeans_largeN only on the pinned copy (the pageable run "
                      "takes 2-5 s per iteration)")
  p.add_argument("--no-compute", action="store_true",
                 help="skip the all-resident (compute only) configuration")
  p.add_argument("--end-to-end", action="store_true",
                 help="also time one kmeans_streaming call (max_iter=--iters, tol=0)")
  p.add_argument("--out", default=None, help="default: streaming_<dtypes>_<card>_<date>.json")
  return p.parse_args(argv)


def bandwidth(x: np.ndarray, gib: float, device) -> dict:
  """Plain host-to-device copies of the first ``gib`` GiB of ``x``."""
  rows = max(1, min(x.shape[0], int(gib * GIB) // x[0].nbytes))
  block = np.ascontiguousarray(x[:rows])
  dev = jax.sharding.SingleDeviceSharding(device)
  rec = {"bytes": block.nbytes}
  t = harness.samples_s(lambda: jax.block_until_ready(jax.device_put(block, dev)), 3)
  rec.update(pageable_s=t, pageable_gbps=block.nbytes / min(t) / 1e9)
  try:
    pin = jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")
    t_pin = harness.samples_s(lambda: jax.block_until_ready(jax.device_put(block, pin)), 3)
  except Exception as e:  # noqa: BLE001 -- no pinned host memory on this backend
    rec["pinned"] = f"unavailable: {type(e).__name__}: {e}"[:200]
    return rec
  pinned = jax.block_until_ready(jax.device_put(block, pin))
  t = harness.samples_s(lambda: jax.block_until_ready(jax.device_put(pinned, dev)), 3)
  rec.update(to_pinned_s=t_pin, to_pinned_gbps=block.nbytes / min(t_pin) / 1e9,
             pinned_s=t, pinned_gbps=block.nbytes / min(t) / 1e9)
  return rec


def streaming_runner(x, c0, args, method, budget_bytes, device):
  """``run(iters)``: one synchronised ``kmeans_streaming`` call of ``iters``."""
  def run(iters):
    r = fk.kmeans_streaming(jax.random.key(0), x, c0.shape[0], init=c0, max_iter=iters,
                            tol=0.0, impl=args.impl, precision=args.precision,
                            chunk_size=args.chunk_rows, device_budget_bytes=budget_bytes,
                            method=method, check_finite=False, device=device)
    jax.block_until_ready(r.centroids)
    if int(r.n_iter) != iters:
      raise RuntimeError(f"stopped early: n_iter {int(r.n_iter)} != {iters}")
    return r
  return run


def time_config(x, c0, args, method, budget_bytes, device) -> dict:
  rec = {"kind": "config", "method": method, "budget_bytes": int(budget_bytes),
         "chunk_rows": args.chunk_rows,
         "streamed_gb": max(0, x.nbytes - budget_bytes) / 1e9}
  run = streaming_runner(x, c0, args, method, budget_bytes, device)
  short, long = harness.run_samples(run, 1, 1 + args.iters, args.reps)
  rec.update(one_iter_call_s=short, n_iter_call_s=long)
  secs = (float(np.median(long)) - float(np.median(short))) / args.iters
  rec["ms_per_iter"] = 1e3 * secs
  rec["achieved_gbps"] = rec["streamed_gb"] / secs if secs > 0 else None
  return rec


def end_to_end(x, c0, args, device) -> dict:
  t0 = time.perf_counter()
  res = streaming_runner(x, c0, args, "auto", 0, device)(args.iters)
  return {"kind": "end_to_end", "wall_s": time.perf_counter() - t0,
          "n_iter": int(res.n_iter), "inertia": float(res.inertia)}


def find_official():
  errors = []
  for mod in ("flash_kmeans", "flash_kmeans.kmeans_large"):
    try:
      return getattr(__import__(mod, fromlist=["kmeans_largeN"]), "kmeans_largeN"), None
    except Exception as e:  # noqa: BLE001 -- any import problem is a result
      errors.append(f"{mod}: {type(e).__name__}: {e}")
  return None, "; ".join(errors)


def official(x, c0, args, pinned: bool) -> dict:
  rec = {"kind": "official", "pinned": pinned}
  fn, err = find_official()
  if fn is None:
    return dict(rec, error=err)
  try:
    import torch
    sig = inspect.signature(fn)
    rec.update(torch=torch.__version__, signature=str(sig))
    xt = torch.from_numpy(x)
    if pinned:
      t0 = time.perf_counter()
      xt = xt.pin_memory()
      rec["pin_s"] = time.perf_counter() - t0
    wanted = {"tol": 0.0, "BLOCK_N": args.chunk_rows, "device": torch.device("cuda:0"),
              "verbose": False, "init_centroids": torch.from_numpy(c0).to(xt.dtype)}
    kw = {key: v for key, v in wanted.items() if key in sig.parameters and v is not None}
    rec["kwargs"] = sorted(kw)

    def run(iters):
      fn(xt, c0.shape[0], max_iters=iters, **kw)
      torch.cuda.synchronize()

    short, long = harness.run_samples(run, 1, 1 + args.iters, args.reps)
    rec.update(one_iter_call_s=short, n_iter_call_s=long,
               ms_per_iter=1e3 * (float(np.median(long)) - float(np.median(short))) / args.iters)
  except Exception as e:  # noqa: BLE001
    rec["error"] = f"{type(e).__name__}: {e}"
    rec["traceback"] = traceback.format_exc(limit=5)
  finally:
    gc.collect()
    try:
      import torch
      torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
      pass
  return rec


def annotate(rec: dict, bw: dict, compute_ms: float | None) -> None:
  """Adds the transfer estimate and the max(transfer, compute) bound."""
  if "ms_per_iter" not in rec:
    return
  pinned = rec["method"] in PINNED_METHODS
  gbps = bw.get("pinned_gbps" if pinned else "pageable_gbps") or bw.get("pageable_gbps")
  if gbps:
    rec["transfer_ms_est"] = 1e3 * rec["streamed_gb"] / gbps
    if compute_ms is not None:
      rec["compute_ms"] = compute_ms
      rec["bound_ms"] = max(rec["transfer_ms_est"], compute_ms)
      rec["bound_over_actual"] = rec["bound_ms"] / rec["ms_per_iter"]


def guarded(fn, *args, **base):
  try:
    return fn(*args)
  except Exception as e:  # noqa: BLE001 -- e.g. out of device memory: a result
    return dict(base, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5))


def main(argv=None):
  args = parse_args(argv)
  n, d, k = 2 ** args.n_log2, args.d, args.k
  dtypes = [np.dtype(t) for t in args.dtypes.split(",")]
  # Phase 1, before JAX touches the GPU: the official PyTorch code. JAX
  # preallocates most of the GPU memory when its backend starts, so the order
  # matters (torch's cache is emptied before phase 2).
  early = []
  if not args.no_official:
    for dtype in dtypes:
      x = harness.host_normal(n, d, dtype)
      c0 = harness.host_seeds(x, k)
      pins = [True] if args.official_pinned_only else [False] + (
          [True] if args.official_pinned else [])
      for pinned in pins:
        early.append(dict(official(x, c0, args, pinned), dtype=dtype.name))
        print(json.dumps(early[-1], default=str), flush=True)
      del x
      gc.collect()
  device = jax.devices()[0]
  out = harness.Results(args.out or harness.result_name(
      "streaming", "-".join(t.name for t in dtypes)), n=n, d=d, k=k, dtypes=args.dtypes,
      args=vars(args))
  for rec in early:
    out.add(rec)
  for dtype in dtypes:
    t0 = time.perf_counter()
    x = harness.host_normal(n, d, dtype)
    base = dict(dtype=dtype.name, n=n, d=d, k=k)
    out.add(dict(base, kind="data", data_gb=x.nbytes / 1e9, gen_s=time.perf_counter() - t0))
    c0 = harness.host_seeds(x, k)
    bw = out.add(dict(base, kind="bandwidth", **guarded(bandwidth, x, args.bw_gib, device)))
    compute_ms = None
    if not args.no_compute:
      rec = out.add(dict(base, what="all resident (compute only)", **guarded(
          time_config, x, c0, args, "device_put", x.nbytes, device, kind="config",
          method="device_put")))
      compute_ms = rec.get("ms_per_iter")
    grid = [(m, 0.0) for m in args.methods.split(",") if m]
    grid += [(args.budget_method, float(f)) for f in args.budgets.split(",") if f]
    for method, frac in grid:
      budget = int(frac * x.nbytes)
      rec = dict(base, budget_fraction=frac, **guarded(
          time_config, x, c0, args, method, budget, device, kind="config", method=method,
          budget_bytes=budget))
      annotate(rec, bw, compute_ms)
      out.add(rec)
      gc.collect()
    if args.end_to_end:
      out.add(dict(base, **guarded(end_to_end, x, c0, args, device, kind="end_to_end")))
    del x
    gc.collect()
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
