"""Cost of repeated estimator calls with varying N (row buckets, compile cache).

    python benchmarks/bench_estimator_calls.py --out estimator_calls.json [--cap-s 60]

For D=64, K=256 float32: ``predict``, ``score``, ``transform``, ``fit``
(max_iter=10) and ``partial_fit`` on a sequence of row counts, the first
ones in new buckets, the later ones in buckets already seen, each call
timed cold (first in its bucket) or warm. Then the same first ``fit`` +
``predict`` in two fresh processes sharing a cache directory: the second
process should load, not compile (``cache_second_s`` well below
``cache_first_s``). Rows stop at ``--cap-s`` seconds of total time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402

import flashkmeans_jax as fk  # noqa: E402

NS = (5000, 5100, 6000, 6100, 5050, 6050, 20000, 20500, 150000, 151000)
CHILD = r"""
import time, numpy as np
t = time.perf_counter()
import flashkmeans_jax as fk
x = np.random.default_rng(0).normal(size=(20000, 64)).astype(np.float32)
km = fk.KMeans(256, random_state=0, max_iter=10).fit(x)
km.predict(x[:5000])
print(time.perf_counter() - t)
"""


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=None, help="default: estimator_calls_<card>_<date>.json")
  ap.add_argument("--cap-s", type=float, default=120.0)
  args = ap.parse_args()
  out = harness.Results(args.out or harness.result_name("estimator_calls"))
  start = time.perf_counter()
  x = harness.host_normal(max(NS), 64, "float32")
  km = fk.KMeans(256, random_state=0, max_iter=10).fit(x[:20000])
  seen = set()
  for n in NS:
    if time.perf_counter() - start > args.cap_s:
      out.add(dict(N=n, note="over cap"))
      break
    bucket = fk.estimator.bucket_rows(n, 64 * 4)
    rec = dict(N=n, bucket=bucket, cold=bucket not in seen)
    seen.add(bucket)
    for name, call in (("predict", lambda: km.predict(x[:n])),
                       ("score", lambda: km.score(x[:n])),
                       ("transform", lambda: km.transform(x[:n])),
                       ("fit", lambda: fk.KMeans(256, random_state=1, max_iter=10).fit(x[:n])),
                       ("partial_fit", lambda: fk.KMeans(256, init=km.cluster_centers_)
                        .partial_fit(x[:n]))):
      t = time.perf_counter()
      call()
      rec[name + "_s"] = time.perf_counter() - t
    out.add(rec)
  with tempfile.TemporaryDirectory() as cache:
    env = {k: v for k, v in os.environ.items() if k != "FLASHKMEANS_JAX_NO_COMPILE_CACHE"}
    env["XDG_CACHE_HOME"] = cache
    times = [float(subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                                  capture_output=True, text=True).stdout.split()[-1])
             for _ in range(2)]
  out.add(dict(cache_first_s=times[0], cache_second_s=times[1]))
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
