"""Tile sweeps behind the per-GPU tables, and the update's share of an iteration (GPU).

    python benchmarks/bench_tuning.py --update --share --out update.json
    python benchmarks/bench_tuning.py --assign --peaks --out assign.json

``--update``: the sort-inverse update (sort, work list, gather kernel,
per-cluster reduce) at N=2^20, K=1024, D=128 over kernel configurations.
``--share``: ms per Lloyd iteration (fixed iterations, ``tol=0``) and the
update's share ``(iteration - assignment) / iteration`` for float16 and
bfloat16, with the default update configuration and with the sweep's best.
``--assign``: FlashAssign configurations (including ``deferred_argmin``) for
float16 at K=8192 and K=1024 and float32 (TF32) at K=1024, N=2^20, D=128.
``--variant FIELD``: the default tiles with and without a boolean
``AssignConfig`` field (and a few tiles with it) for float16, bfloat16 and
float32; labels must match.
``--half``: float32 points on 16-bit operands (``precision="F16_F16_F32"`` /
``"BF16_BF16_F32"``) against TF32 and against float16 points, a tile sweep
for the F16 path, and how often each precision's labels differ from float64.
``--half-kmeans``: whole ``kmeans`` iterations of float32 points with TF32
and with ``F16_F16_F32``, and XLA's temporary memory of each compiled call.
``--peaks``: dense bfloat16 and TF32 matmul rates of the card.

Every row is printed as a JSON line and all rows are written to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks import _timing  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402
from flashkmeans_jax import _dispatch, _half_dot  # noqa: E402
from flashkmeans_jax.kernels import config as cfgmod  # noqa: E402
from flashkmeans_jax.kernels import flash_assign, sorted_update  # noqa: E402

N, K, D = 1 << 20, 1024, 128
ROWS: list[dict] = []


def emit(rec):
  ROWS.append(rec)
  print(json.dumps(rec), flush=True)


def _data(n, k, d, dtype, seed=0):
  kx, kc, kl = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (n, d), dtype)
  c = jax.random.normal(kc, (k, d), dtype)
  labels = jax.random.randint(kl, (n,), 0, k, jnp.int32)
  return x, c, labels


def update_configs():
  yield cfgmod.update_config(N, K, D, jnp.bfloat16)
  for rpi, br, bd, nw in itertools.product((128, 256, 512), (32, 64, 128, 256), (64, 128),
                                           (4, 8)):
    if br <= rpi:
      yield cfgmod.UpdateConfig(rows_per_item=rpi, block_rows=br, block_d=bd, num_warps=nw,
                                num_stages=2, fold_rows=True)
  for br, nw in itertools.product((16, 64), (4, 8)):
    yield cfgmod.UpdateConfig(rows_per_item=256, block_rows=br, block_d=128, num_warps=nw)


def sweep_update(dtype=jnp.bfloat16):
  x, _, labels = _data(N, K, D, dtype)
  default = cfgmod.update_config(N, K, D, dtype)
  wl = jax.jit(lambda l: sorted_update.work_items(l, K, default.rows_per_item))(labels)
  w = jnp.ones((N,), jnp.float32)
  pieces = {
      "sort": (jax.jit(lambda l: sorted_update.sort_by_label(l, K)), (labels,)),
      "work_list": (jax.jit(lambda l: sorted_update.work_items(l, K, default.rows_per_item)),
                    (labels,)),
      "gather_kernel": (jax.jit(lambda x, p, w, s, e: sorted_update.partial_sums(
          x, p, w, s, e, config=default)), (x, wl.perm, w, wl.start, wl.end)),
  }
  part, pcnt = pieces["gather_kernel"][0](*pieces["gather_kernel"][1])
  pieces["reduce_kernel"] = (jax.jit(lambda p, c, f, m: sorted_update.reduce_items(
      p, c, f, m, config=default)), (part, pcnt, wl.first_item, wl.n_items))
  pieces["segment_sum_instead"] = (jax.jit(lambda p, cl: jax.ops.segment_sum(
      p, cl, num_segments=K, indices_are_sorted=True)), (part, wl.cluster))
  rec = dict(kind="update_pieces", n=N, k=K, d=D, dtype=jnp.dtype(dtype).name, cfg=str(default))
  for name, (f, args) in pieces.items():
    rec[name + "_ms"] = _timing.time_jax(f, *args, reps=7, inner=20)
  emit(rec)
  results = []
  for cfg in update_configs():
    try:
      f = jax.jit(lambda x, l, cfg=cfg: sorted_update.sorted_cluster_sums(x, l, K, config=cfg))
      ms = _timing.time_jax(f, x, labels, reps=5, inner=20, warmup=1)
    except Exception as e:  # noqa: BLE001
      emit(dict(kind="update_sweep", cfg=str(cfg), error=repr(e)[:200]))
      continue
    results.append((ms, cfg))
    emit(dict(kind="update_sweep", dtype=jnp.dtype(dtype).name, cfg=str(cfg), total_ms=ms))
  results.sort(key=lambda t: t[0])
  return [c for _, c in results[:3]]


def sort_variants(dtype=jnp.bfloat16):
  """Ways to put the points in cluster order, and to find each cluster's run."""
  from jax import lax
  _, _, labels = _data(N, K, D, dtype)
  iota = jnp.arange(N, dtype=jnp.int32)
  variants = {
      "sort_by_label_default": lambda l: sorted_update.sort_by_label(l, K),
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
  for name, f in variants.items():
    rec[name + "_ms"] = _timing.time_jax(jax.jit(f), labels, reps=7, inner=20)
  emit(rec)


def iteration_ms(x, init, k, t1=3, t2=23, reps=5):
  def run(t):
    r = fk.kmeans(jax.random.key(0), x, k, init=init, max_iter=t, tol=0.0)
    jax.block_until_ready(r.centroids)
    assert int(r.n_iter) == t
  run(t1), run(t2)
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter(); run(t1); a = time.perf_counter() - t0
    t0 = time.perf_counter(); run(t2); b = time.perf_counter() - t0
    ts.append((b - a) / (t2 - t1) * 1e3)
  ts.sort()
  return ts[len(ts) // 2]


def share(update_cfgs):
  original = cfgmod.update_config
  for dtype in (jnp.float16, jnp.bfloat16):
    x, c, _ = _data(N, K, D, dtype)
    init = x[:K].astype(jnp.float32)
    assign_ms = _timing.time_jax(jax.jit(lambda x, c: flash_assign.flash_assign(x, c)), x, c,
                                 reps=7, inner=20)
    for cfg in [None] + list(update_cfgs):
      cfgmod.update_config = original if cfg is None else (lambda *a, cfg=cfg, **kw: cfg)
      jax.clear_caches()
      try:
        it = iteration_ms(x, init, K)
      finally:
        cfgmod.update_config = original
      emit(dict(kind="update_share", dtype=jnp.dtype(dtype).name,
                update_cfg="default " + str(original(N, K, D, dtype)) if cfg is None else str(cfg),
                iteration_ms=it, assign_ms=assign_ms, share=(it - assign_ms) / it))
    jax.clear_caches()


def assign_configs(dtype, k):
  if jnp.dtype(dtype).itemsize == 2:
    plain = [(128, 128), (128, 256), (256, 128), (128, 64), (64, 128)]
    deferred = [(128, 64), (64, 128), (128, 128), (64, 64)]
  else:
    plain = [(256, 64), (128, 64), (64, 64), (128, 128), (64, 128), (256, 32), (128, 32)]
    deferred = [(64, 64), (128, 64), (64, 128), (128, 32)]
  for (bn, bk), nw, ns in itertools.product(plain, (4, 8), (2, 3, 4)):
    if not (bn == 256 and nw == 4) and bk <= k:
      yield cfgmod.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns)
  for (bn, bk), nw, ns in itertools.product(deferred, (4, 8), (2, 3, 4)):
    yield cfgmod.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns,
                              deferred_argmin=True)


def sweep_assign(dtype, n, k, d=128, configs=None, precision=None):
  x, c, _ = _data(n, k, d, dtype)
  flops = 2.0 * n * k * d
  default = cfgmod.assign_config(n, k, d, dtype, operand_dtype=_half_dot.operand_dtype(
      dtype, _dispatch.resolve_precision(precision)))
  best = []
  for cfg in [default] + list(configs if configs is not None else assign_configs(dtype, k)):
    t0 = time.time()
    try:
      f = jax.jit(lambda x, c, cfg=cfg: flash_assign.flash_assign(x, c, config=cfg,
                                                                  precision=precision))
      ms = _timing.time_jax(f, x, c, reps=5, inner=10, warmup=1)
    except Exception as e:  # noqa: BLE001
      emit(dict(kind="assign_sweep", n=n, k=k, d=d, dtype=jnp.dtype(dtype).name, cfg=str(cfg),
                precision=precision, error=repr(e)[:160]))
      continue
    best.append((ms, cfg))
    emit(dict(kind="assign_sweep", n=n, k=k, d=d, dtype=jnp.dtype(dtype).name, cfg=str(cfg),
              precision=precision, default=cfg is default, ms=ms, tflops=flops / ms / 1e9,
              wall_s=round(time.time() - t0, 1)))
  best.sort(key=lambda t: t[0])
  emit(dict(kind="assign_best", n=n, k=k, d=d, dtype=jnp.dtype(dtype).name,
            precision=precision, best=[(ms, str(c)) for ms, c in best[:5]]))
  return [c for _, c in best[:6]]


def stage1_configs(dtype):
  """Unpipelined loops (num_stages=1), which the sweeps above leave out."""
  tiles = ([(128, 64), (128, 128), (256, 64), (64, 64), (64, 128)]
           if jnp.dtype(dtype).itemsize == 4 else [(128, 128), (128, 64), (256, 128), (64, 128)])
  for (bn, bk), nw in itertools.product(tiles, (4, 8)):
    if not (bn == 256 and nw == 4):
      yield cfgmod.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=1)


def assign_variant(field):
  """The default tiles with and without the boolean ``field``, plus a few
  tiles with it, at the sizes the defaults were chosen on; labels must match."""
  import dataclasses
  cases = ((jnp.float16, N, 8192), (jnp.float16, 1 << 22, 8192), (jnp.float16, N, K),
           (jnp.bfloat16, N, K), (jnp.float32, 1 << 18, 8192), (jnp.float32, N, K))
  for dtype, n, k in cases:
    base = cfgmod.assign_config(n, k, D, dtype)
    tiles = ([(128, 128, 4, 2), (128, 128, 4, 3), (128, 64, 4, 2), (256, 128, 8, 2),
              (128, 256, 8, 2)] if jnp.dtype(dtype).itemsize == 2 else
             [(128, 64, 4, 1), (128, 128, 8, 1), (256, 64, 8, 1), (128, 128, 4, 1)])
    configs = [dataclasses.replace(base, **{field: True})] + [
        cfgmod.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns,
                            **{field: True}) for bn, bk, nw, ns in tiles]
    sweep_assign(dtype, n, k, configs=configs)
    x, c, _ = _data(n, k, D, dtype)
    ref = flash_assign.flash_assign(x, c, config=base)[0]
    got = flash_assign.flash_assign(x, c, config=configs[0])[0]
    emit(dict(kind="variant_labels_equal", field=field, n=n, k=k, dtype=jnp.dtype(dtype).name,
              mismatches=int((ref != got).sum())))


def half_operands(sweep=True, accuracy=True):
  """float32 points through the 16-bit presets: speed, tiles and accuracy."""
  f16 = "F16_F16_F32"
  tiles = [(128, 128, 4, 2), (128, 128, 4, 3), (128, 64, 4, 2), (64, 128, 4, 2),
           (128, 128, 8, 2), (256, 64, 8, 3), (128, 256, 8, 2), (128, 64, 4, 1)]
  for n, k, d in ((N, K, 128), (1 << 18, 8192, 128), (1 << 18, 4096, 256),
                  (1 << 20, 8192, 128)):
    rec = dict(kind="half_operands", n=n, k=k, d=d)
    flops = 2.0 * n * k * d
    for name, dtype, precision in (("tf32", jnp.float32, None), ("f16_ops", jnp.float32, f16),
                                   ("bf16_ops", jnp.float32, "BF16_BF16_F32"),
                                   ("float16_points", jnp.float16, None)):
      x, c, _ = _data(n, k, d, dtype)
      f = jax.jit(lambda x, c, p=precision: flash_assign.flash_assign(x, c, precision=p))
      ms = _timing.time_jax(f, x, c, reps=5, inner=10)
      rec[name + "_ms"], rec[name + "_tflops"] = ms, flops / ms / 1e9
    # The points scaled and cast in an XLA pass before the kernel instead.
    import dataclasses
    x, c, _ = _data(n, k, d, jnp.float32)
    pre = dataclasses.replace(cfgmod.assign_config(n, k, d, jnp.float32,
                                                   operand_dtype=jnp.float16),
                              half_prepass=True)
    f = jax.jit(lambda x, c: flash_assign.flash_assign(x, c, precision=f16, config=pre))
    ms = _timing.time_jax(f, x, c, reps=5, inner=10)
    rec["f16_prepass_ms"], rec["f16_prepass_tflops"] = ms, flops / ms / 1e9
    on_chip = flash_assign.flash_assign(x, c, precision=f16)[0]
    rec["f16_prepass_label_mismatches"] = int((f(x, c)[0] != on_chip).sum())
    emit(rec)
    if d == 128 and sweep:
      sweep_assign(jnp.float32, n, k, d, precision=f16, configs=[
          cfgmod.AssignConfig(block_n=bn, block_k=bk, block_d=128, num_warps=nw, num_stages=ns)
          for bn, bk, nw, ns in tiles])
  if not accuracy:
    return
  # Accuracy on random normal data: labels that differ from the float64
  # argmin, and the largest float64 distance gap of those that do.
  import numpy as np
  rng = np.random.default_rng(0)
  n, k, d = 1 << 16, 8192, 128
  x = rng.normal(size=(n, d)).astype(np.float32)
  c = rng.normal(size=(k, d)).astype(np.float32)
  x64, c64 = x.astype(np.float64), c.astype(np.float64)
  ref_lab = np.empty(n, np.int64)
  c_sq = (c64 * c64).sum(1)
  best_rows = []
  for s in range(0, n, 4096):
    dd = (x64[s:s + 4096] ** 2).sum(1)[:, None] + c_sq[None] - 2 * x64[s:s + 4096] @ c64.T
    ref_lab[s:s + 4096] = dd.argmin(1)
    best_rows.append(dd)
  rec = dict(kind="half_accuracy", n=n, k=k, d=d)
  for name, precision in (("tf32", None), ("f16_ops", f16), ("bf16_ops", "BF16_BF16_F32"),
                          ("tf32x3", "highest")):
    lab = np.asarray(flash_assign.flash_assign(jnp.asarray(x), jnp.asarray(c),
                                               precision=precision)[0])
    diff = np.flatnonzero(lab != ref_lab)
    gaps = [best_rows[i // 4096][i % 4096, lab[i]] - best_rows[i // 4096][i % 4096, ref_lab[i]]
            for i in diff]
    rec[name + "_mismatches"] = int(diff.size)
    rec[name + "_max_gap"] = float(max(gaps)) if gaps else 0.0
  emit(rec)


def half_kmeans():
  """ms per Lloyd iteration and compiled temporaries, TF32 against F16_F16_F32."""
  from benchmarks import run_suite
  for n, k in ((N, K), (1 << 18, 8192), (N, 8192)):
    x = jax.random.normal(jax.random.key(1), (1, n, D), jnp.float32)
    c = x[:, :k, :]
    for precision in (None, "F16_F16_F32"):
      ms = run_suite.per_iter_ms(run_suite.ours(x, c, k, None, precision), 2, 12, 3)
      key = jax.random.key(0)
      f = jax.jit(lambda x, c, k=k, p=precision: fk.kmeans(
          key, x[0], k, init=c[0], max_iter=12, tol=0.0, precision=p, check_finite=False))
      m = f.lower(x, c).compile().memory_analysis()
      emit(dict(kind="half_kmeans", n=n, k=k, d=D, precision=precision, ms_per_iter=ms,
                temp_mib=m.temp_size_in_bytes / 2**20,
                argument_mib=m.argument_size_in_bytes / 2**20))


def peaks():
  n = 8192
  out = dict(kind="peaks")
  for name, dt in (("bf16", jnp.bfloat16), ("tf32", jnp.float32)):
    a = jax.random.normal(jax.random.key(0), (n, n), dt)
    b = jax.random.normal(jax.random.key(1), (n, n), dt)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.DEFAULT))
    ms = _timing.time_jax(f, a, b, reps=5, inner=5)
    out[name + "_matmul_tflops"] = 2 * n ** 3 / ms / 1e9
  emit(out)


def main():
  ap = argparse.ArgumentParser()
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
  ap.add_argument("--out", default="tuning.json")
  args = ap.parse_args()
  emit(dict(kind="versions", **_timing.versions()))
  try:
    if args.peaks:
      peaks()
    if args.half:
      half_operands(sweep=not args.no_sweep, accuracy=not args.no_sweep)
    if args.half_kmeans:
      half_kmeans()
    if args.sort:
      sort_variants()
    if args.variant:
      assign_variant(args.variant)
    best_update = sweep_update() if args.update else []
    if args.share:
      share(best_update)
    if args.assign:
      top = sweep_assign(jnp.float16, N, 8192)
      sweep_assign(jnp.float16, N, K, configs=top)
    if args.float32:
      top = sweep_assign(jnp.float32, N, K)
      sweep_assign(jnp.float32, 1 << 18, 8192, configs=top)
    if args.stage1:
      for dtype, n, k in ((jnp.float32, N, K), (jnp.float32, 1 << 18, 8192),
                          (jnp.float16, N, 8192), (jnp.bfloat16, N, K)):
        sweep_assign(dtype, n, k, configs=list(stage1_configs(dtype)))
  finally:
    with open(args.out, "w") as f:
      json.dump(ROWS, f, indent=1)


if __name__ == "__main__":
  main()
