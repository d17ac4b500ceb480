"""The small-D assignment op against ``fk.assign`` (GPU): the quantisation
shapes of issue 18, assignment alone, with a small tile sweep.

    python benchmarks/bench_small_d.py --out small_d.json [--cap-s 60] [--tiny]

Until ``fk.assign`` routes ``D < 16`` to it, the op is reached through its
module ``flashkmeans_jax.ops.assign_small_d.api`` (public names only), the
one exception to the public-API rule of ``benchmarks/``; afterwards
``fk_assign_ms`` is the op itself and the sweep still picks its tiles.

Per shape ``(B, N, K, D)``, float32 and float16 points: ``fk.assign``
(``impl="pallas"``, vmapped over the batch: the tensor-core kernel with D
padded to 16) and its XLA path; the op's batch-grid kernel with the default
config and a sweep of tiles, for D=1 the sorted search and the FMA kernel;
the op's XLA path. Each figure is a median (``harness.median_ms``); the
label mismatches between the op and ``fk.assign`` are recorded (float32
near-ties; 16-bit points should give none).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402
from flashkmeans_jax.ops.assign_small_d import api as small_d  # noqa: E402
from flashkmeans_jax.ops.assign_small_d import config as small_d_config  # noqa: E402

SHAPES = [(2048, 8192, 16, 1), (1, 1 << 21, 256, 4), (512, 4096, 256, 2)]
TINY_SHAPES = [(4, 512, 16, 1), (1, 2048, 64, 4), (2, 256, 32, 2)]


def sweep(k: int, tiny: bool):
  if tiny:
    yield small_d_config.SmallDConfig(block_n=32, block_k=16, d1_search=False)
    return
  for bn, bk, deferred in itertools.product((64, 128, 256), (16, 32, 64), (True, False)):
    if bk > max(16, 1 << (k - 1).bit_length()) or bn * bk > 8192:
      continue
    yield small_d_config.SmallDConfig(block_n=bn, block_k=bk, num_warps=4,
                                      deferred_argmin=deferred, d1_search=False)
  yield small_d_config.SmallDConfig(block_n=256, block_k=min(64, max(16, k)), num_warps=8,
                                    d1_search=False)


def timed(f, x, c, tiny):
  return harness.median_ms(f, x, c, reps=2 if tiny else 5, inner=1 if tiny else 5)


def shape_rows(b, n, k, d, dtype, cap_s, tiny, with_sweep=True):
  x, c = harness.grid_problem(b, n, k, d, dtype)
  c = c.astype(jnp.float32) + 0.01  # not the points themselves (no zero distances)
  kernel = "pallas_interpret" if tiny else "pallas"
  rec = dict(B=b, N=n, K=k, D=d, dtype=jnp.dtype(dtype).name)
  start = time.perf_counter()
  fk_fn = jax.jit(jax.vmap(lambda x, c: fk.assign(x, c, impl=None if tiny else "pallas",
                                                  check_finite=False)))
  rec["fk_assign_ms"] = timed(fk_fn, x, c, tiny)
  rec["fk_assign_xla_ms"] = timed(jax.jit(jax.vmap(lambda x, c: fk.assign(
      x, c, impl="xla", check_finite=False))), x, c, tiny)
  op = jax.jit(lambda x, c: small_d.assign_small_d(x, c, impl=kernel))
  rec["op_ms"] = timed(op, x, c, tiny)
  rec["op_xla_ms"] = timed(jax.jit(lambda x, c: small_d.assign_small_d(x, c, impl="xla")),
                           x, c, tiny)
  want, got = fk_fn(x, c)[0], op(x, c)[0]
  rec["label_mismatches_vs_fk_assign"] = int(np.sum(np.asarray(want) != np.asarray(got)))
  best = None
  sweep_out = []
  for cfg in (sweep(k, tiny) if with_sweep else ()):
    if cap_s is not None and time.perf_counter() - start > cap_s:
      rec["sweep"] = "capped"
      break
    f = jax.jit(lambda x, c, cfg=cfg: small_d.assign_small_d(x, c, impl=kernel, config=cfg))
    try:
      ms = timed(f, x, c, tiny)
    except Exception as e:  # noqa: BLE001 -- a tiling that fails is a result
      sweep_out.append(dict(config=str(cfg), error=repr(e)[:200]))
      continue
    sweep_out.append(dict(config=str(cfg), ms=ms))
    if best is None or ms < best[1]:
      best = (str(cfg), ms)
  rec["kernel_sweep"] = sweep_out
  if best:
    rec["best_kernel"], rec["best_kernel_ms"] = best
  rec["default_config"] = str(small_d_config.small_d_config(n, k, d))
  rec["fk_over_op"] = rec["fk_assign_ms"] / rec["op_ms"]
  rec["seconds"] = time.perf_counter() - start
  return rec


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=None, help="default: small-d_<card>_<date>.json")
  ap.add_argument("--dtypes", default="float32,float16")
  ap.add_argument("--cap-s", type=float, default=60.0, help="per-shape cap on the sweep")
  ap.add_argument("--tiny", action="store_true", help="tiny shapes, interpret mode (CPU check)")
  args = ap.parse_args(argv)
  out = harness.Results(args.out or harness.result_name("small-d" + ("-tiny" if args.tiny
                                                                     else "")),
                        official=False, tiny=args.tiny)
  for (b, n, k, d) in (TINY_SHAPES if args.tiny else SHAPES):
    for dt in args.dtypes.split(","):
      try:
        # The tile sweep on the first dtype only (GPU time).
        rec = shape_rows(b, n, k, d, jnp.dtype(dt), args.cap_s, args.tiny,
                         with_sweep=(dt == args.dtypes.split(",")[0]))
      except Exception as e:  # noqa: BLE001
        rec = dict(B=b, N=n, K=k, D=d, dtype=dt, error=repr(e)[:400])
      out.add({key: v for key, v in rec.items() if key != "kernel_sweep"} | {
          "sweep_size": len(rec.get("kernel_sweep", []))})
      out.rows[-1]["kernel_sweep"] = rec.get("kernel_sweep")
      out.save()
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
