"""GPU benchmark of out-of-core k-means as users call it (``fk.kmeans_streaming``).

Data live in host memory (or a memory-mapped file); every Lloyd iteration
streams the non-resident part to the GPU. Everything goes through the public
call, with an explicit init and ``tol=0`` (so every call runs its iterations):

* ``cold``: the first call of the process for a dtype (8 iterations, the
  default ``method="auto"``, nothing resident): compilation, the probe of
  ``auto``, first touch, pinning and the final pass all included;
* per configuration (method x resident share), two whole calls of 2 and 8
  iterations in a warm process: ``call8_s`` is what a user waits for an
  8-iteration call (every fixed cost included) and ``steady_ms_per_iter``
  the marginal iteration ``(t8 - t2) / 6``; ``fixed_s = t8 - 8 * steady``;
  for ``auto`` also the method it chose and the probe's figures (its
  ``verbose`` line);
* ``mmap``: the auto, pure-streaming call on a memory-mapped file written
  to ``--mmap-dir`` (local disk; the file is in the page cache after being
  written, as for a file read once before);
* ``official``: ``kmeans_largeN`` of the official flash-kmeans (optional
  import), on a pinned copy of the same data (its best case; pinning is
  timed apart): a cold first call, then calls of 2 and 8 iterations.
  ``ratio`` rows divide the official's times by ours.

Rows whose estimate (from the rows already measured) exceeds ``--row-cap-s``,
or that would start after ``--budget-s``, are recorded as skipped. Results
are written after every row.

  python benchmarks/bench_streaming.py --n-log2 22 --k 1024 --out /tmp/small.json  # smoke
  python benchmarks/bench_streaming.py --out /tmp/streaming.json   # H200: ~6 min
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import io
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
SHORT, LONG = 2, 8  # iterations of the two timed calls


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--n-log2", type=int, default=25, help="N = 2**n_log2 points")
  p.add_argument("--d", type=int, default=128)
  p.add_argument("--k", type=int, default=8192)
  p.add_argument("--dtypes", default="float16,float32")
  p.add_argument("--precision", default="F16_F16_F32", help="'none': the library's default")
  p.add_argument("--methods", default="auto,device_put,pinned_cache",
                 help="methods timed at every resident share")
  p.add_argument("--resident", default="0,0.5", help="shares of the data kept resident")
  p.add_argument("--chunk-rows", type=int, default=None, help="default: the library's")
  p.add_argument("--impl", default=None)
  p.add_argument("--no-official", action="store_true")
  p.add_argument("--no-mmap", action="store_true")
  p.add_argument("--mmap-dir", default="/tmp", help="local disk for the memory-mapped row")
  p.add_argument("--row-cap-s", type=float, default=60.0, help="skip rows estimated longer")
  p.add_argument("--budget-s", type=float, default=420.0, help="start no row after this")
  p.add_argument("--out", default=None, help="default: streaming_<dtypes>_<card>_<date>.json")
  return p.parse_args(argv)


class Clock:
  """Time since the start, the session budget and the per-row cap."""

  def __init__(self, args):
    self.t0, self.budget, self.cap = time.perf_counter(), args.budget_s, args.row_cap_s

  def skip(self, estimate_s: float | None) -> str | None:
    if time.perf_counter() - self.t0 > self.budget:
      return f"skipped: session budget {self.budget:.0f} s spent"
    return None if estimate_s is None else harness.over_cap(estimate_s, self.cap)


def call(x, c0, args, iters: int, method="auto", budget=0, verbose=False):
  """One synchronised ``kmeans_streaming`` call; returns (seconds, result)."""
  t0 = time.perf_counter()
  r = fk.kmeans_streaming(jax.random.key(0), x, c0.shape[0], init=c0, max_iter=iters,
                          tol=0.0, impl=args.impl, precision=args.precision,
                          chunk_size=args.chunk_rows, device_budget_bytes=int(budget),
                          method=method, check_finite=False, verbose=verbose)
  jax.block_until_ready(r.centroids)
  secs = time.perf_counter() - t0
  if int(r.n_iter) != iters:
    raise RuntimeError(f"stopped early: n_iter {int(r.n_iter)} != {iters}")
  return secs, r


def cold_call(x, c0, args) -> dict:
  """The first call for this dtype (compiles; the first of the process also
  starts the backend and runs auto's probe)."""
  return {"call8_s": call(x, c0, args, LONG)[0]}


def verbose_line(x, c0, args, budget) -> str:
  """The ``verbose`` line of an auto call saying which method and why."""
  buf = io.StringIO()
  with contextlib.redirect_stderr(buf):
    call(x, c0, args, 1, "auto", budget, verbose=True)
  return next((ln.strip() for ln in buf.getvalue().splitlines() if "method=" in ln), "")


def whole_calls(x, c0, args, method, budget) -> dict:
  t_short, _ = call(x, c0, args, SHORT, method, budget)
  t_long, _ = call(x, c0, args, LONG, method, budget)
  steady = (t_long - t_short) / (LONG - SHORT)
  rec = {"call2_s": t_short, "call8_s": t_long, "steady_ms_per_iter": 1e3 * steady,
         "fixed_s": t_long - LONG * steady}
  streamed = max(0, x.nbytes - int(budget))
  if steady > 0 and streamed:
    rec["steady_h2d_gbps"] = streamed / steady / 1e9
  if method == "auto":
    rec["auto_says"] = verbose_line(x, c0, args, budget)
  return rec


def mmap_row(x, c0, args) -> dict:
  path = os.path.join(args.mmap_dir, f"fk_bench_{os.getpid()}.bin")
  t0 = time.perf_counter()
  mm = np.memmap(path, x.dtype, mode="w+", shape=x.shape)
  mm[:] = x
  mm.flush()
  del mm
  rec = {"write_s": time.perf_counter() - t0, "path": path}
  try:
    xm = np.memmap(path, x.dtype, mode="r", shape=x.shape)
    rec["call8_s"], _ = call(xm, c0, args, LONG)
    del xm
  finally:
    os.remove(path)
  return rec


def find_official():
  errors = []
  for mod in ("flash_kmeans", "flash_kmeans.kmeans_large"):
    try:
      return getattr(__import__(mod, fromlist=["kmeans_largeN"]), "kmeans_largeN"), None
    except Exception as e:  # noqa: BLE001 -- any import problem is a result
      errors.append(f"{mod}: {type(e).__name__}: {e}")
  return None, "; ".join(errors)


def official(x, c0, args) -> dict:
  """kmeans_largeN on a pinned copy: cold call, then 2- and 8-iteration calls."""
  fn, err = find_official()
  if fn is None:
    return {"error": err}
  rec = {}
  try:
    import torch
    sig = inspect.signature(fn)
    rec.update(torch=torch.__version__, signature=str(sig))
    t0 = time.perf_counter()
    xt = torch.from_numpy(x).pin_memory()
    rec["pin_s"] = time.perf_counter() - t0
    wanted = {"tol": 0.0, "BLOCK_N": args.chunk_rows, "device": torch.device("cuda:0"),
              "verbose": False, "init_centroids": torch.from_numpy(c0).to(xt.dtype)}
    kw = {key: v for key, v in wanted.items() if key in sig.parameters and v is not None}
    rec["kwargs"] = sorted(kw)

    def run(iters):
      t = time.perf_counter()
      fn(xt, c0.shape[0], max_iters=iters, **kw)
      torch.cuda.synchronize()
      return time.perf_counter() - t

    rec["cold_call8_s"] = run(LONG)
    rec["call2_s"], rec["call8_s"] = run(SHORT), run(LONG)
    steady = (rec["call8_s"] - rec["call2_s"]) / (LONG - SHORT)
    rec.update(steady_ms_per_iter=1e3 * steady, fixed_s=rec["call8_s"] - LONG * steady)
  except Exception as e:  # noqa: BLE001
    rec["error"] = f"{type(e).__name__}: {e}"
    rec["traceback"] = traceback.format_exc(limit=5)
  finally:
    gc.collect()
    with contextlib.suppress(Exception):
      import torch
      torch.cuda.empty_cache()
  return rec


def guarded(fn, *args, **base):
  try:
    return dict(base, **fn(*args))
  except Exception as e:  # noqa: BLE001 -- e.g. out of memory: a result
    return dict(base, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5))


def ratios(rows: list, dtype: str) -> list:
  """official / ours for the same dtype: whole 8-iteration calls, steady
  iterations and cold calls."""
  off = next((r for r in rows if r.get("kind") == "official" and r.get("dtype") == dtype
              and "call8_s" in r), None)
  if off is None:
    return []
  out = []
  for r in rows:
    if r.get("dtype") != dtype or r.get("kind") not in ("config", "cold", "mmap"):
      continue
    rec = {"kind": "ratio", "dtype": dtype, "of": r["kind"], "method": r.get("method"),
           "resident": r.get("resident")}
    if r["kind"] == "cold" and "call8_s" in r:
      rec["official_cold_over_ours"] = off["cold_call8_s"] / r["call8_s"]
    elif "call8_s" in r:
      rec["official_call8_over_ours"] = off["call8_s"] / r["call8_s"]
      if r.get("steady_ms_per_iter"):
        rec["official_steady_over_ours"] = off["steady_ms_per_iter"] / r["steady_ms_per_iter"]
    if len(rec) > 5:
      out.append(rec)
  return out


def main(argv=None):
  args = parse_args(argv)
  if args.precision.lower() == "none":
    args.precision = None
  clock = Clock(args)
  n, d, k = 2 ** args.n_log2, args.d, args.k
  dtypes = [np.dtype(t) for t in args.dtypes.split(",")]
  shares = [float(s) for s in args.resident.split(",") if s]
  methods = [m for m in args.methods.split(",") if m]
  # Phase 1, before JAX takes the GPU (it preallocates most of its memory
  # when the backend starts): the official PyTorch code, then its cache is
  # emptied. The data are regenerated identically in phase 2 (same seed).
  early = []
  if not args.no_official:
    for dtype in dtypes:
      x = harness.host_normal(n, d, dtype)
      early.append(dict(official(x, harness.host_seeds(x, k), args), kind="official",
                        dtype=dtype.name))
      del x
      gc.collect()
  out = harness.Results(args.out or harness.result_name(
      "streaming", "-".join(t.name for t in dtypes)), n=n, d=d, k=k, dtypes=args.dtypes,
      precision=args.precision, args=vars(args))
  for rec in early:
    out.add(rec)
  for dtype in dtypes:
    t0 = time.perf_counter()
    x = harness.host_normal(n, d, dtype)
    c0 = harness.host_seeds(x, k)
    base = dict(dtype=dtype.name, n=n, d=d, k=k)
    out.add(dict(base, kind="data", data_gb=x.nbytes / 1e9, gen_s=time.perf_counter() - t0))
    cold = out.add(guarded(cold_call, x, c0, args, **base, kind="cold", method="auto",
                           resident=0.0))
    per_iter = cold.get("call8_s", args.row_cap_s) / LONG  # an upper bound to start with
    for share in shares:
      for method in methods:
        row = dict(base, kind="config", method=method, resident=share)
        # device_put streams from pageable memory, up to ~2x slower per pass.
        slow = 2.0 if method == "device_put" else 1.0
        note = clock.skip((SHORT + LONG + 1) * per_iter * slow)
        if note:
          out.add(dict(row, note=note))
          continue
        rec = out.add(guarded(whole_calls, x, c0, args, method, share * x.nbytes, **row))
        if rec.get("steady_ms_per_iter", 0) > 0 and method != "device_put":
          per_iter = max(rec["steady_ms_per_iter"] / 1e3, rec["call8_s"] / LONG)
        gc.collect()
    if not args.no_mmap and dtype == dtypes[0]:
      note = clock.skip(LONG * per_iter + x.nbytes / (0.5 * GIB))  # + writing at >= 0.5 GiB/s
      out.add(dict(base, kind="mmap", method="auto", resident=0.0, note=note) if note else
              guarded(mmap_row, x, c0, args, **base, kind="mmap", method="auto",
                      resident=0.0))
    for rec in ratios(out.rows, dtype.name):
      out.add(rec)
    del x
    gc.collect()
  out.add({"kind": "session", "wall_s": time.perf_counter() - clock.t0})
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
