"""GPU benchmark of out-of-core k-means (flashkmeans_jax.kmeans_streaming).

Data lives in host memory; every Lloyd iteration streams the non-resident
part to the GPU. Reported per configuration (dtype x method x budget):

* ``ms_per_iter``: one full Lloyd iteration (pass over all N rows +
  finalize), median of ``--iters`` timed iterations after ``--warmup``;
* ``streamed_gb``: bytes crossing the host link per iteration, and the
  achieved rate ``streamed_gb / time``;
* ``transfer_ms_est``: those bytes at the plain ``device_put`` bandwidth
  measured below (pinned or pageable, whichever the method uses);
* ``compute_ms``: the same pass with one chunk kept on the GPU and reused
  for every chunk (no transfers at all);
* ``bound_ms = max(transfer_ms_est, compute_ms)`` and ``bound / actual``
  (1.0 = perfect overlap).

Host-to-device bandwidth: a plain ``jax.device_put`` of ``--bw-gib`` of
pageable NumPy memory, and of a pinned-host JAX array (plus the time to
copy NumPy into pinned memory).

The official flash-kmeans ``kmeans_largeN`` (PyTorch/Triton) runs on the same
host data if ``flash_kmeans`` imports; its signature is inspected and only
known keywords are passed; failures are recorded in the JSON, never fatal.

Typical use (the default grid takes a few minutes on one H100)::

  python benchmarks/bench_streaming.py --n-log2 22 --out /tmp/small.json   # smoke
  python benchmarks/bench_streaming.py --out "$OUT/bench_streaming.json"

Results are written to ``--out`` after every configuration, so a run that
is cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import inspect
import json
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from flashkmeans_jax import _dispatch  # noqa: E402
from flashkmeans_jax import streaming  # noqa: E402
from flashkmeans_jax import streaming_io  # noqa: E402
from flashkmeans_jax import streaming_ops as ops  # noqa: E402

GIB = 2**30


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
                 help="rows per chunk (default: the library's, about 256 MiB)")
  p.add_argument("--iters", type=int, default=3, help="timed iterations per config")
  p.add_argument("--warmup", type=int, default=1, help="untimed iterations (compile)")
  p.add_argument("--impl", default=None, help="assign/update impl: None(auto)/xla/pallas")
  p.add_argument("--precision", default=None)
  p.add_argument("--bw-gib", type=float, default=2.0, help="size of the bandwidth test")
  p.add_argument("--no-official", action="store_true", help="skip flash_kmeans.kmeans_largeN")
  p.add_argument("--official-pinned", action="store_true",
                 help="also time kmeans_largeN on a pinned copy of the data")
  p.add_argument("--official-pinned-only", action="store_true",
                 help="time kmeans_largeN only on the pinned copy (the pageable run "
                      "takes 2-5 s per iteration)")
  p.add_argument("--end-to-end", action="store_true",
                 help="also time one kmeans_streaming call (max_iter=--iters, tol=0)")
  p.add_argument("--out", default="bench_streaming.json")
  return p.parse_args(argv)


# --------------------------------------------------------------------------
# Data


def make_data(n: int, d: int, dtype, seed: int = 0) -> np.ndarray:
  """``[n, d]`` host array filled fast: one random float32 block of up to
  2^20 rows, written shifted by a per-block offset into every block (in
  parallel threads; NumPy releases the GIL). Cluster structure does not
  matter for timing a fixed number of iterations."""
  rng = np.random.default_rng(seed)
  block = min(n, 2**20)
  base = rng.standard_normal((block, d), dtype=np.float32)
  x = np.empty((n, d), dtype)

  def fill(b):
    start = b * block
    stop = min(n, start + block)
    np.add(base[: stop - start], np.float32(0.05 * (b % 41)), out=x[start:stop],
           casting="unsafe")

  n_blocks = -(-n // block)
  with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
    list(pool.map(fill, range(n_blocks)))
  return x


def seeds(x: np.ndarray, k: int) -> np.ndarray:
  rows = np.sort(np.random.default_rng(1).choice(x.shape[0], k, replace=False))
  return x[rows].astype(np.float32)


# --------------------------------------------------------------------------
# Bandwidth


def _timed(fn, reps=3):
  times = []
  out = None
  for _ in range(reps):
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
    del out
  return times


def bandwidth(x: np.ndarray, gib: float, device) -> dict:
  """Plain host-to-device copies of the first ``gib`` GiB of ``x``."""
  rows = max(1, min(x.shape[0], int(gib * GIB) // x[0].nbytes))
  block = np.ascontiguousarray(x[:rows])
  nbytes = block.nbytes
  dev = jax.sharding.SingleDeviceSharding(device)
  out = {"bytes": nbytes}
  t = _timed(lambda: jax.device_put(block, dev))
  out["pageable_s"] = t
  out["pageable_gbps"] = nbytes / min(t) / 1e9
  if streaming_io.pinned_available(device):
    pin = jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")
    t_pin = _timed(lambda: jax.device_put(block, pin))
    pinned = jax.device_put(block, pin)
    jax.block_until_ready(pinned)
    t = _timed(lambda: jax.device_put(pinned, dev))
    out.update(to_pinned_s=t_pin, to_pinned_gbps=nbytes / min(t_pin) / 1e9,
               pinned_s=t, pinned_gbps=nbytes / min(t) / 1e9)
    del pinned
  else:
    out["pinned"] = "no pinned_host memory on this backend"
  return out


# --------------------------------------------------------------------------
# Timed passes


def _cfg(args, k, n):
  impl = _dispatch.resolve_impl(args.impl)
  precision = _dispatch.resolve_precision(args.precision)
  return ops.Cfg(k, "sqeuclidean", impl, precision, None, "keep", min(k, n))


def lloyd_iteration(st, cfg, c, d):
  acc = st.run_pass(ops.new_acc(cfg, d, lloyd=True, moments=False), c)
  new_c, shift = ops.finalize(acc, c, cfg=cfg)
  float(shift)  # the convergence test syncs once per iteration, as in the driver
  return new_c


def time_config(x, c0, args, method, budget_bytes, device) -> dict:
  src, _, plan, device = streaming._setup(x, None, args.chunk_rows, budget_bytes, device)
  cfg = _cfg(args, c0.shape[0], plan.n)
  row_bytes = x[0].nbytes
  rec = {"method": method, "budget_bytes": int(budget_bytes), "chunk_rows": plan.chunk,
         "n_resident_chunks": plan.n_resident, "resident_rows": plan.resident_rows,
         "streamed_gb": (plan.n - plan.resident_rows) * row_bytes / 1e9, "impl": cfg.impl}
  progress = streaming._Progress(False, plan.n)
  c = jax.device_put(jnp.asarray(c0), device)
  with streaming._Streamer(src, None, plan, cfg, method, device, progress) as st:
    rec["staging"] = st.stager.staging
    t0 = time.perf_counter()
    st.load_resident()
    jax.block_until_ready(st.resident_arrays())
    rec["load_resident_s"] = time.perf_counter() - t0
    warm = []
    for _ in range(args.warmup):
      t0 = time.perf_counter()
      c = lloyd_iteration(st, cfg, c, plan.d)
      warm.append(time.perf_counter() - t0)
    times = []
    for _ in range(args.iters):
      t0 = time.perf_counter()
      c = lloyd_iteration(st, cfg, c, plan.d)
      times.append(time.perf_counter() - t0)
  rec["warmup_s"] = warm
  rec["iter_s"] = times
  rec["ms_per_iter"] = 1e3 * statistics.median(times)
  rec["achieved_gbps"] = rec["streamed_gb"] / statistics.median(times)
  return rec


def compute_only(x, c0, args, device) -> dict:
  """A full pass with no transfers: one device chunk reused for every chunk."""
  src, _, plan, device = streaming._setup(x, None, args.chunk_rows, 0, device)
  cfg = _cfg(args, c0.shape[0], plan.n)
  xb = jax.device_put(np.ascontiguousarray(x[: plan.chunk]), device)
  tail = jax.device_put(np.ascontiguousarray(x[: plan.tail]), device) if plan.tail else None
  c = jax.device_put(jnp.asarray(c0), device)

  def one_pass(c):
    acc = ops.new_acc(cfg, plan.d, lloyd=True, moments=False)
    for _ in range(plan.n_full):
      acc = streaming._step(acc, c, xb, None, cfg=cfg)
    if tail is not None:
      acc = streaming._step(acc, c, tail, None, cfg=cfg)
    new_c, shift = ops.finalize(acc, c, cfg=cfg)
    float(shift)
    return new_c

  for _ in range(args.warmup):
    one_pass(c)
  times = []
  for _ in range(args.iters):
    t0 = time.perf_counter()
    one_pass(c)
    times.append(time.perf_counter() - t0)
  return {"iter_s": times, "ms_per_iter": 1e3 * statistics.median(times),
          "chunk_rows": plan.chunk}


def end_to_end(x, c0, args, device) -> dict:
  t0 = time.perf_counter()
  res = streaming.kmeans_streaming(jax.random.key(0), x, c0.shape[0], init=c0,
                                   max_iter=args.iters, tol=0.0, impl=args.impl,
                                   precision=args.precision, chunk_size=args.chunk_rows,
                                   device_budget_bytes=0, check_finite=False, device=device)
  jax.block_until_ready(res.centroids)
  return {"wall_s": time.perf_counter() - t0, "n_iter": int(res.n_iter),
          "inertia": float(res.inertia)}


# --------------------------------------------------------------------------
# Official flash-kmeans (PyTorch), guarded


def _find_official():
  errors = []
  for mod in ("flash_kmeans", "flash_kmeans.kmeans_large"):
    try:
      m = __import__(mod, fromlist=["kmeans_largeN"])
      return getattr(m, "kmeans_largeN"), None
    except Exception as e:  # noqa: BLE001 -- any import problem is a result
      errors.append(f"{mod}: {type(e).__name__}: {e}")
  return None, "; ".join(errors)


def official(x, c0, args, pinned: bool) -> dict:
  fn, err = _find_official()
  if fn is None:
    return {"pinned": pinned, "error": err}
  rec = {"pinned": pinned}
  try:
    import torch
    rec["torch"] = torch.__version__
    sig = inspect.signature(fn)
    rec["signature"] = str(sig)
    xt = torch.from_numpy(x)
    if pinned:
      t0 = time.perf_counter()
      xt = xt.pin_memory()
      rec["pin_s"] = time.perf_counter() - t0
    kw = {}
    params = sig.parameters
    if "tol" in params:
      kw["tol"] = 0.0
    if "BLOCK_N" in params and args.chunk_rows:
      kw["BLOCK_N"] = args.chunk_rows
    if "device" in params:
      kw["device"] = torch.device("cuda:0")  # one GPU, like ours
    if "verbose" in params:
      kw["verbose"] = False
    if "init_centroids" in params:
      kw["init_centroids"] = torch.from_numpy(c0).to(xt.dtype)
    rec["kwargs"] = sorted(kw)

    def run(iters):
      torch.cuda.synchronize()
      t0 = time.perf_counter()
      out = fn(xt, c0.shape[0], max_iters=iters, **kw)
      torch.cuda.synchronize()
      del out
      return time.perf_counter() - t0

    # Fixed costs (init, copies of centroids, final labels) cancel in the
    # difference of a 1-iteration and a (1 + iters)-iteration call.
    rec["warmup_s"] = run(1)
    t1 = run(1)
    tn = run(1 + args.iters)
    rec["one_iter_call_s"], rec["n_iter_call_s"] = t1, tn
    rec["ms_per_iter"] = 1e3 * (tn - t1) / args.iters
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


# --------------------------------------------------------------------------


def main(argv=None):
  args = parse_args(argv)
  n, d, k = 2**args.n_log2, args.d, args.k
  dtypes = [np.dtype(t) for t in args.dtypes.split(",")]
  report = {"args": vars(args), "env": {"jax": jax.__version__,
                                        "python": platform.python_version(),
                                        "host": platform.node()},
            "runs": [{"dtype": dt.name, "n": n, "d": d, "k": k, "configs": []}
                     for dt in dtypes]}

  def save():
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
      json.dump(report, f, indent=1, default=str)
    os.replace(tmp, args.out)

  # Phase 1, before JAX touches the GPU: the official PyTorch code. JAX
  # preallocates most of the GPU memory when its backend starts, so the
  # order matters (torch's cache is emptied before phase 2).
  if not args.no_official:
    for dtype, run in zip(dtypes, report["runs"]):
      x = make_data(n, d, dtype)
      c0 = seeds(x, k)
      run["official"] = [] if args.official_pinned_only else [official(x, c0, args, False)]
      if args.official_pinned or args.official_pinned_only:
        run["official"].append(official(x, c0, args, pinned=True))
      for o in run["official"]:
        got = (f"{o['ms_per_iter']:.1f} ms/iter" if "ms_per_iter" in o else o.get("error"))
        print(f"[{dtype.name}] official kmeans_largeN (pinned={o['pinned']}): {got}",
              flush=True)
      del x
      gc.collect()
      save()

  device = jax.devices()[0]
  report["env"].update(device=str(device), device_kind=getattr(device, "device_kind", "?"))
  for dtype, run in zip(dtypes, report["runs"]):
    t0 = time.perf_counter()
    x = make_data(n, d, dtype)
    run["data_gb"] = x.nbytes / 1e9
    run["gen_s"] = time.perf_counter() - t0
    print(f"[{dtype.name}] N={n} D={d} K={k}: {x.nbytes / GIB:.1f} GiB generated in "
          f"{run['gen_s']:.1f}s", flush=True)
    c0 = seeds(x, k)
    try:
      run["bandwidth"] = bandwidth(x, args.bw_gib, device)
    except Exception as e:  # noqa: BLE001
      run["bandwidth"] = {"error": f"{type(e).__name__}: {e}"}
    print(f"  bandwidth: {json.dumps(run['bandwidth'], default=str)}", flush=True)
    try:
      run["compute_only"] = compute_only(x, c0, args, device)
    except Exception as e:  # noqa: BLE001
      run["compute_only"] = {"error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc(limit=5)}
    print(f"  compute only: {run['compute_only'].get('ms_per_iter')} ms/iter", flush=True)
    save()

    grid = [(m, 0.0) for m in args.methods.split(",") if m]
    grid += [(args.budget_method, float(f)) for f in args.budgets.split(",") if f]
    for method, frac in grid:
      budget = int(frac * x.nbytes)
      try:
        rec = time_config(x, c0, args, method, budget, device)
      except Exception as e:  # noqa: BLE001 -- e.g. out of device memory: record it
        rec = {"method": method, "budget_bytes": budget, "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc(limit=5)}
      rec["budget_fraction"] = frac
      _annotate(rec, run)
      run["configs"].append(rec)
      print(f"  {method:13s} budget {frac:4.2f}: "
            + (f"{rec['ms_per_iter']:9.1f} ms/iter  ({rec['achieved_gbps']:.1f} GB/s streamed, "
               f"bound {rec.get('bound_ms', float('nan')):.1f} ms)" if "ms_per_iter" in rec
               else rec["error"]), flush=True)
      gc.collect()
      save()

    if args.end_to_end:
      try:
        run["end_to_end"] = end_to_end(x, c0, args, device)
      except Exception as e:  # noqa: BLE001
        run["end_to_end"] = {"error": f"{type(e).__name__}: {e}"}
      print(f"  end to end: {run['end_to_end']}", flush=True)
      save()
    del x
    gc.collect()
  save()
  print(f"wrote {args.out}", flush=True)


def _annotate(rec: dict, run: dict) -> None:
  """Adds the transfer estimate and the max(transfer, compute) bound."""
  if "ms_per_iter" not in rec:
    return
  bw = run.get("bandwidth", {})
  pinned = rec.get("staging") in ("pinned", "pinned_cache")
  gbps = bw.get("pinned_gbps" if pinned else "pageable_gbps") or bw.get("pageable_gbps")
  comp = run.get("compute_only", {}).get("ms_per_iter")
  if gbps:
    rec["transfer_ms_est"] = 1e3 * rec["streamed_gb"] / gbps
  if comp is not None and gbps:
    rec["compute_ms"] = comp
    rec["bound_ms"] = max(rec["transfer_ms_est"], comp)
    rec["bound_over_actual"] = rec["bound_ms"] / rec["ms_per_iter"]


if __name__ == "__main__":
  main()
