"""Tile sweeps behind the per-GPU tables, and the update's share of an iteration (GPU).

    python benchmarks/bench_tuning.py --update --share
    python benchmarks/bench_tuning.py --assign --peaks

``--update``: the whole sort-inverse update (``fk.cluster_sums``) at N=2^20,
K=1024, D=128 over ``fk.UpdateConfig`` tilings. ``--share``: ms per Lloyd
iteration (fixed iterations, ``tol=0``) and the update's share
``(iteration - assignment) / iteration`` for float16 and bfloat16 with the
default tiling; for the sweep's best tilings, the update alone and the
iteration it implies (``kmeans`` takes no update tiling, so that one is an
estimate: the default's iteration with its update time swapped). ``--sort``:
ways to sort labels and find each cluster's run, in plain JAX.
``--assign``: ``fk.AssignConfig`` tilings (including ``deferred_argmin``) for
float16 at K=8192 and K=1024; ``--float32`` TF32 at K=1024 and K=8192;
``--stage1`` unpipelined tilings. ``--variant FIELD``: tilings with and
without a boolean ``AssignConfig`` field against the default, for float16,
bfloat16 and float32; labels must match the default's. ``--half``: float32
points on 16-bit operands (``precision="F16_F16_F32"`` / ``"BF16_BF16_F32"``)
against TF32 and float16 points, cast on chip and from the XLA pre-pass
(``half_prepass``), a tile sweep, and how often each precision's labels differ
from float64. ``--half-kmeans``: whole ``kmeans`` iterations of float32 points
with TF32 and ``F16_F16_F32``, and XLA's temporaries of each compiled call.
``--peaks``: dense bfloat16 and TF32 matmul rates of the card.

Only the public API is used. Every row is printed as a JSON line and written
(default name ``tuning_<card>_<date>.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
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

N, K, D = 1 << 20, 1024, 128
F16, BF16 = "F16_F16_F32", "BF16_BF16_F32"


def assign_fn(config=None, precision=None):
  return jax.jit(lambda x, c: fk.assign(x, c, impl="pallas", config=config,
                                        precision=precision))


def sums_fn(k, config=None):
  return jax.jit(lambda x, l: fk.cluster_sums(x, l, k, impl="pallas", config=config))


def name(dtype) -> str:
  return jnp.dtype(dtype).name


def update_configs():
  for rpi, br, bd, nw in itertools.product((128, 256, 512), (32, 64, 128, 256), (64, 128),
                                           (4, 8)):
    if br <= rpi:
      yield fk.UpdateConfig(rows_per_item=rpi, block_rows=br, block_d=bd, num_warps=nw,
                            num_stages=2, fold_rows=True)
  for br, nw in itertools.product((16, 64), (4, 8)):
    yield fk.UpdateConfig(rows_per_item=256, block_rows=br, block_d=128, num_warps=nw)


def sweep_update(out, dtype=jnp.bfloat16):
  """``cluster_sums`` with the default tiling (``config=None``) and others."""
  x, _, labels = harness.points_centroids_labels(N, K, D, dtype)
  results = []
  for cfg in [None] + list(update_configs()):
    try:
      ms = harness.median_ms(sums_fn(K, cfg), x, labels, reps=5, inner=20, warmup=1)
    except Exception as e:  # noqa: BLE001
      out.add(dict(kind="update_sweep", cfg=str(cfg), error=repr(e)[:200]))
      continue
    if cfg is not None:
      results.append((ms, cfg))
    out.add(dict(kind="update_sweep", n=N, k=K, d=D, dtype=name(dtype),
                 cfg="default" if cfg is None else str(cfg), total_ms=ms))
  results.sort(key=lambda t: t[0])
  return [c for _, c in results[:3]]


def sort_variants(out):
  """Ways to put the labels in cluster order, and to find each cluster's run
  (plain JAX; the library's own sort is inside ``cluster_sums``)."""
  from jax import lax
  _, _, labels = harness.points_centroids_labels(N, K, D, jnp.bfloat16)
  iota = jnp.arange(N, dtype=jnp.int32)
  variants = {
      "argsort_stable": lambda l: jnp.argsort(l),
      "u16_key_index_pairs": lambda l: lax.sort((l.astype(jnp.uint16), iota), num_keys=1,
                                                is_stable=True),
      "u8_key_index_pairs_k256": lambda l: lax.sort(((l & 255).astype(jnp.uint8), iota),
                                                    num_keys=1, is_stable=True),
      "offsets_searchsorted": lambda l: jnp.searchsorted(
          jnp.sort(l), jnp.arange(K + 1, dtype=l.dtype), method="scan_unrolled"),
      "offsets_bincount_cumsum": lambda l: jnp.cumsum(jnp.bincount(l, length=K)),
      "sort_only_for_offsets": lambda l: jnp.sort(l),
  }
  rec = dict(kind="sort_variants", n=N, k=K)
  for vname, f in variants.items():
    rec[vname + "_ms"] = harness.median_ms(jax.jit(f), labels, reps=7, inner=20)
  out.add(rec)


def iteration_ms(x, init, k, **kwargs):
  run = harness.lloyd_runner(x[None], init[None], k, **kwargs)
  return harness.marginal_ms(run, 3, 23, reps=5)


def share(out, update_cfgs):
  for dtype in (jnp.float16, jnp.bfloat16):
    x, c, labels = harness.points_centroids_labels(N, K, D, dtype)
    assign_ms = harness.median_ms(assign_fn(), x, c, reps=7, inner=20)
    it = iteration_ms(x, x[:K].astype(jnp.float32), K)
    update_ms = harness.median_ms(sums_fn(K), x, labels, reps=7, inner=20)
    out.add(dict(kind="update_share", dtype=name(dtype), update_cfg="default",
                 iteration_ms=it, assign_ms=assign_ms, update_ms=update_ms,
                 share=(it - assign_ms) / it))
    for cfg in update_cfgs:
      ms = harness.median_ms(sums_fn(K, cfg), x, labels, reps=7, inner=20)
      est = it - update_ms + ms
      out.add(dict(kind="update_share", dtype=name(dtype), update_cfg=str(cfg),
                   update_ms=ms, iteration_ms_estimated=est, assign_ms=assign_ms,
                   share_estimated=(est - assign_ms) / est))


def assign_configs(dtype, k):
  if jnp.dtype(dtype).itemsize == 2:
    plain = [(128, 128), (128, 256), (256, 128), (128, 64), (64, 128)]
    deferred = [(128, 64), (64, 128), (128, 128), (64, 64)]
  else:
    plain = [(256, 64), (128, 64), (64, 64), (128, 128), (64, 128), (256, 32), (128, 32)]
    deferred = [(64, 64), (128, 64), (64, 128), (128, 32)]
  for (bn, bk), nw, ns in itertools.product(plain, (4, 8), (2, 3, 4)):
    if not (bn == 256 and nw == 4) and bk <= k:
      yield fk.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns)
  for (bn, bk), nw, ns in itertools.product(deferred, (4, 8), (2, 3, 4)):
    yield fk.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns,
                          deferred_argmin=True)


def sweep_assign(out, dtype, n, k, d=128, configs=None, precision=None):
  """The default tiling (``config=None``) and ``configs``; the best six back."""
  x, c, _ = harness.points_centroids_labels(n, k, d, dtype)
  flops = 2.0 * n * k * d
  best = []
  base = dict(kind="assign_sweep", n=n, k=k, d=d, dtype=name(dtype), precision=precision)
  for cfg in [None] + list(configs if configs is not None else assign_configs(dtype, k)):
    t0 = time.time()
    try:
      ms = harness.median_ms(assign_fn(cfg, precision), x, c, reps=5, inner=10, warmup=1)
    except Exception as e:  # noqa: BLE001
      out.add(dict(base, cfg=str(cfg), error=repr(e)[:160]))
      continue
    if cfg is not None:
      best.append((ms, cfg))
    out.add(dict(base, cfg="default" if cfg is None else str(cfg), default=cfg is None,
                 ms=ms, tflops=flops / ms / 1e9, wall_s=round(time.time() - t0, 1)))
  best.sort(key=lambda t: t[0])
  out.add(dict(base, kind="assign_best", best=[(ms, str(c)) for ms, c in best[:5]]))
  return [c for _, c in best[:6]]


def stage1_configs(dtype):
  """Unpipelined loops (num_stages=1), which the sweeps above leave out."""
  tiles = ([(128, 64), (128, 128), (256, 64), (64, 64), (64, 128)]
           if jnp.dtype(dtype).itemsize == 4 else [(128, 128), (128, 64), (256, 128), (64, 128)])
  for (bn, bk), nw in itertools.product(tiles, (4, 8)):
    if not (bn == 256 and nw == 4):
      yield fk.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=1)


def assign_variant(out, field):
  """Tilings with and without the boolean ``field`` (so each pair differs in
  it alone) against the default, at the sizes the defaults were chosen on;
  every variant's labels must equal the default's."""
  cases = ((jnp.float16, N, 8192), (jnp.float16, 1 << 22, 8192), (jnp.float16, N, K),
           (jnp.bfloat16, N, K), (jnp.float32, 1 << 18, 8192), (jnp.float32, N, K))
  for dtype, n, k in cases:
    tiles = ([(128, 128, 4, 2), (128, 128, 4, 3), (128, 64, 4, 2), (256, 128, 8, 2),
              (128, 256, 8, 2)] if jnp.dtype(dtype).itemsize == 2 else
             [(128, 64, 4, 1), (128, 128, 8, 1), (256, 64, 8, 1), (128, 128, 4, 1)])
    plain = [fk.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns)
             for bn, bk, nw, ns in tiles]
    with_field = [dataclasses.replace(cfg, **{field: True}) for cfg in plain]
    sweep_assign(out, dtype, n, k, configs=plain + with_field)
    x, c, _ = harness.points_centroids_labels(n, k, D, dtype)
    ref = assign_fn()(x, c)[0]
    out.add(dict(kind="variant_labels_equal", field=field, n=n, k=k, dtype=name(dtype),
                 mismatches=[int((assign_fn(cfg)(x, c)[0] != ref).sum())
                             for cfg in with_field]))


def half_tiles(d: int, prepass: bool) -> fk.AssignConfig:
  """The 16-bit tiling the H200 table gives float16 operands at D <= 256
  (NOTES.md), written out so that the on-chip cast and the pre-pass can be
  timed on the same tiles (the table itself is not public)."""
  dp = max(16, 1 << (d - 1).bit_length())
  if dp <= 128:
    return fk.AssignConfig(block_n=128, block_k=128, block_d=dp, num_warps=4, num_stages=2,
                           half_prepass=prepass)
  return fk.AssignConfig(block_n=256, block_k=64, block_d=dp, num_warps=8, num_stages=3,
                         half_prepass=prepass)


def half_operands(out, sweep=True, accuracy=True):
  """float32 points through the 16-bit presets: speed, tiles and accuracy."""
  tiles = [(128, 128, 4, 2), (128, 128, 4, 3), (128, 64, 4, 2), (64, 128, 4, 2),
           (128, 128, 8, 2), (256, 64, 8, 3), (128, 256, 8, 2), (128, 64, 4, 1)]
  for n, k, d in ((N, K, 128), (1 << 18, 8192, 128), (1 << 18, 4096, 256), (N, 8192, 128)):
    rec = dict(kind="half_operands", n=n, k=k, d=d)
    flops = 2.0 * n * k * d
    for label, dtype, precision, cfg in (
        ("tf32", jnp.float32, None, None), ("f16_ops", jnp.float32, F16, None),
        ("f16_on_chip", jnp.float32, F16, half_tiles(d, False)),
        ("f16_prepass", jnp.float32, F16, half_tiles(d, True)),
        ("bf16_ops", jnp.float32, BF16, None), ("float16_points", jnp.float16, None, None)):
      x, c, _ = harness.points_centroids_labels(n, k, d, dtype)
      ms = harness.median_ms(assign_fn(cfg, precision), x, c, reps=5, inner=10)
      rec[label + "_ms"], rec[label + "_tflops"] = ms, flops / ms / 1e9
    x, c, _ = harness.points_centroids_labels(n, k, d, jnp.float32)
    on_chip = assign_fn(half_tiles(d, False), F16)(x, c)
    pre = assign_fn(half_tiles(d, True), F16)(x, c)
    rec["f16_prepass_label_mismatches"] = int((on_chip[0] != pre[0]).sum())
    out.add(rec)
    if d == 128 and sweep:
      sweep_assign(out, jnp.float32, n, k, d, precision=F16, configs=[
          fk.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns)
          for bn, bk, nw, ns in tiles])
  if accuracy:
    half_accuracy(out)


def half_accuracy(out):
  """Labels that differ from the float64 argmin on random normal data, and
  the largest float64 distance gap of those that do."""
  rng = np.random.default_rng(0)
  n, k, d = 1 << 16, 8192, 128
  x = rng.normal(size=(n, d)).astype(np.float32)
  c = rng.normal(size=(k, d)).astype(np.float32)
  x64, c64 = x.astype(np.float64), c.astype(np.float64)
  dist = np.concatenate([(x64[s:s + 4096] ** 2).sum(1)[:, None] + (c64 * c64).sum(1)[None]
                         - 2 * x64[s:s + 4096] @ c64.T for s in range(0, n, 4096)])
  ref = dist.argmin(1)
  rec = dict(kind="half_accuracy", n=n, k=k, d=d)
  for label, precision in (("tf32", None), ("f16_ops", F16), ("bf16_ops", BF16),
                           ("tf32x3", "highest")):
    lab = np.asarray(assign_fn(precision=precision)(jnp.asarray(x), jnp.asarray(c))[0])
    diff = np.flatnonzero(lab != ref)
    rec[label + "_mismatches"] = int(diff.size)
    rec[label + "_max_gap"] = float((dist[diff, lab[diff]] - dist[diff, ref[diff]]).max()
                                    if diff.size else 0.0)
  out.add(rec)


def half_kmeans(out):
  """ms per Lloyd iteration and compiled temporaries, TF32 against F16_F16_F32."""
  for n, k in ((N, K), (1 << 18, 8192), (N, 8192)):
    x, c = harness.grid_problem(1, n, k, D, jnp.float32)
    for precision in (None, F16):
      run = harness.lloyd_runner(x, c, k, precision=precision, check_finite=False)
      ms = harness.marginal_ms(run, 2, 12, 3)
      m = harness.compiled_bytes(lambda x, c, k=k, p=precision: harness.lloyd_call(
          x, c, k, 12, precision=p, check_finite=False), x, c)
      out.add(dict(kind="half_kmeans", n=n, k=k, d=D, precision=precision, ms_per_iter=ms,
                   temp_mib=m["temp_bytes"] / 2**20, argument_mib=m["argument_bytes"] / 2**20))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--update", action="store_true")
  ap.add_argument("--share", action="store_true")
  ap.add_argument("--assign", action="store_true")
  ap.add_argument("--float32", action="store_true", help="TF32 assign sweep")
  ap.add_argument("--peaks", action="store_true")
  ap.add_argument("--half", action="store_true", help="float32 on 16-bit operands")
  ap.add_argument("--half-kmeans", action="store_true",
                  help="kmeans iterations and memory, TF32 against F16_F16_F32")
  ap.add_argument("--no-sweep", action="store_true",
                  help="with --half: the speed table only (no tile sweep, no accuracy)")
  ap.add_argument("--stage1", action="store_true", help="num_stages=1 assign configs")
  ap.add_argument("--sort", action="store_true", help="sort and offset variants")
  ap.add_argument("--variant", default=None,
                  help="boolean AssignConfig field to compare with the default tiles")
  ap.add_argument("--out", default=None, help="default: tuning_<card>_<date>.json")
  args = ap.parse_args()
  out = harness.Results(args.out or harness.result_name("tuning"))
  if args.peaks:
    out.add(dict(kind="peaks", bf16_matmul_tflops=harness.matmul_tflops(jnp.bfloat16),
                 tf32_matmul_tflops=harness.matmul_tflops(jnp.float32)))
  if args.half:
    half_operands(out, sweep=not args.no_sweep, accuracy=not args.no_sweep)
  if args.half_kmeans:
    half_kmeans(out)
  if args.sort:
    sort_variants(out)
  if args.variant:
    assign_variant(out, args.variant)
  best_update = sweep_update(out) if args.update else []
  if args.share:
    share(out, best_update)
  if args.assign:
    top = sweep_assign(out, jnp.float16, N, 8192)
    sweep_assign(out, jnp.float16, N, K, configs=top)
  if args.float32:
    top = sweep_assign(out, jnp.float32, N, K)
    sweep_assign(out, jnp.float32, 1 << 18, 8192, configs=top)
  if args.stage1:
    for dtype, n, k in ((jnp.float32, N, K), (jnp.float32, 1 << 18, 8192),
                        (jnp.float16, N, 8192), (jnp.bfloat16, N, K)):
      sweep_assign(out, dtype, n, k, configs=list(stage1_configs(dtype)))
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
