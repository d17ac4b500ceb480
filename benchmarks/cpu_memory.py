"""CPU memory benchmark of ``kmeans`` with ``impl="xla"``.

Runs Lloyd on ``N x D`` float32 random data (generated in this process) for a
fixed number of iterations (``max_iter=iters, tol=0``, explicit init from the
first K rows) and reports wall time and the peak resident memory *beyond the
data*: the baseline is taken once the data sits on the device (and the
NumPy staging copy is freed).

Peak memory is measured three ways:

* ``VmHWM`` of ``/proc/self/status`` after resetting it with
  ``/proc/self/clear_refs`` (``5``) at the baseline (Linux >= 4.0);
* the largest ``VmRSS`` seen by a thread sampling every 5 ms;
* ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` before and after (only
  informative when the run exceeds the earlier high-water mark).

Usage::

  python benchmarks/cpu_memory.py                     # N=1e6, D=128, K=1024
  python benchmarks/cpu_memory.py --breakdown         # + assign / cluster_sums alone
  python benchmarks/cpu_memory.py --n 100000 --k 256  # quick
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import threading
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402

MIB = 1024 * 1024


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return -1


def _reset_hwm() -> bool:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _maxrss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RssSampler:
  """Largest VmRSS seen while the ``with`` block runs."""

  def __init__(self, period_s: float = 0.005):
    self.period_s = period_s
    self.peak_kib = 0
    self._stop = threading.Event()

  def _run(self):
    while not self._stop.is_set():
      self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))
      time.sleep(self.period_s)

  def __enter__(self):
    self.peak_kib = _status_kib("VmRSS")
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))


def measure(fn):
  """(seconds, result, dict of MiB figures beyond the current RSS)."""
  gc.collect()
  base_rss = _status_kib("VmRSS")
  maxrss_before = _maxrss_mib()
  hwm_ok = _reset_hwm()
  with RssSampler() as s:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    secs = time.perf_counter() - t0
  hwm = _status_kib("VmHWM") if hwm_ok else -1
  return secs, out, dict(
      base_rss_mib=base_rss / 1024,
      peak_sampled_mib=(s.peak_kib - base_rss) / 1024,
      peak_hwm_mib=(hwm - base_rss) / 1024 if hwm_ok else float("nan"),
      maxrss_before_mib=maxrss_before,
      maxrss_after_mib=_maxrss_mib())


def make_data(n: int, d: int, seed: int = 0) -> jax.Array:
  """float32 standard-normal data on the default device (the host staging
  copy freed before the baseline is taken)."""
  host = harness.host_normal(n, d, np.float32, seed)
  x = jax.block_until_ready(jax.device_put(host))
  del host
  gc.collect()
  return x


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--n", type=int, default=1_000_000)
  p.add_argument("--d", type=int, default=128)
  p.add_argument("--k", type=int, default=1024)
  p.add_argument("--iters", type=int, default=10)
  p.add_argument("--repeat", type=int, default=1,
                 help="extra timed runs after the first (which includes compilation)")
  p.add_argument("--breakdown", action="store_true",
                 help="also measure one assign and one cluster_sums on their own")
  p.add_argument("--out", default=None,
                 help="also write the rows as JSON (e.g. cpu-memory_float32_cpu_<date>.json)")
  args = p.parse_args()
  n, d, k = args.n, args.d, args.k

  x = make_data(n, d)
  data_mib = x.nbytes / MIB
  init = x[:k]
  init.block_until_ready()
  key = jax.random.key(0)
  run = lambda: fk.kmeans(key, x, k, init=init, max_iter=args.iters, tol=0.0,
                          impl="xla", check_finite=False)

  rows = []
  secs, res, mem = measure(run)
  assert int(res.n_iter) == args.iters, int(res.n_iter)
  rows.append(("kmeans (first call, incl. compile)", secs, mem))
  for r in range(args.repeat):
    secs, res, mem = measure(run)
    rows.append((f"kmeans (run {r + 2}, compiled)", secs, mem))
  # check_finite=True (the default) adds one eager isfinite pass over x.
  secs, _, mem = measure(lambda: fk.kmeans(key, x, k, init=init, max_iter=args.iters,
                                           tol=0.0, impl="xla"))
  rows.append(("kmeans (compiled, check_finite=True)", secs, mem))
  if args.breakdown:
    a = jax.jit(lambda x, c: fk.assign(x, c, impl="xla"))
    labels, _ = a(x, init)  # compile outside the measurement
    secs, _, mem = measure(lambda: a(x, init))
    rows.append(('assign(impl="xla") alone', secs, mem))
    cs = jax.jit(lambda x, l: fk.cluster_sums(x, l, k, impl="xla"))
    cs(x, labels)
    secs, _, mem = measure(lambda: cs(x, labels))
    rows.append(('cluster_sums(impl="xla") alone', secs, mem))

  print()
  print(f"### CPU memory: kmeans impl=\"xla\", N={n:,}, D={d}, K={k}, float32, "
        f"{args.iters} iterations (tol=0)")
  print()
  print(f"- JAX {jax.__version__}, backend {jax.default_backend()}, "
        f"{os.cpu_count()} CPU cores; data {data_mib:.0f} MiB; "
        f"baseline RSS with data {rows[0][2]['base_rss_mib']:.0f} MiB")
  print(f"- final inertia {float(res.inertia):.6g}, n_iter {int(res.n_iter)}")
  print()
  print("| run | wall s | s / iter | peak RSS beyond data, VmHWM (MiB) "
        "| peak RSS beyond data, sampled (MiB) | ru_maxrss before -> after (MiB) |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, secs, m in rows:
    per = secs / args.iters if name.startswith("kmeans") else secs
    print(f"| {name} | {secs:.1f} | {per:.2f} | {m['peak_hwm_mib']:.0f} "
          f"| {m['peak_sampled_mib']:.0f} "
          f"| {m['maxrss_before_mib']:.0f} -> {m['maxrss_after_mib']:.0f} |")
  if args.out:
    out = harness.Results(args.out, official=False, n=n, d=d, k=k, dtype="float32",
                          iters=args.iters, data_mib=data_mib)
    for name, secs, m in rows:
      out.add(dict(run=name, wall_s=secs, **m))
  worst = max(max(m["peak_hwm_mib"], m["peak_sampled_mib"]) for _, _, m in rows)
  print()
  print(f"Peak beyond data: {worst:.0f} MiB "
        f"({'under' if worst < 2048 else 'OVER'} the 2 GiB budget).")


if __name__ == "__main__":
  main()
