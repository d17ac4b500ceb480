"""k-means inside a training step (GPU): the library's VQ against the plain
jnp formulation, forward and backward, and the EMA / mini-batch steps.

    python benchmarks/bench_training.py --out training.json
    python benchmarks/bench_training.py --smoke        # tiny rows, any backend

Every row times jit-compiled functions of the same data (median of several
synchronised calls, :func:`benchmarks.harness.median_ms`):

* ``forward``: ``mean(fk.assign(x, c)[1])``;
* ``grad_x`` / ``grad_c``: its gradient w.r.t. the points / the codebook;
* ``vg``: ``value_and_grad`` of that loss w.r.t. both (the issue's target
  measure: ``vg_ratio = vg / forward <= 2.5``);
* ``step``: ``value_and_grad`` of the mean distance after a projection
  ``x @ W`` w.r.t. ``(W, codebook)``: the library (``fk.assign``) and the
  plain jnp formulation (full ``[N, K]`` distances, ``argmin``, gather);
* ``vq``: the same step through ``fk.vector_quantize(...).loss``;
* ``ema`` / ``minibatch``: one ``update`` of ``fk.ema_codebook()`` /
  ``fk.minibatch_codebook()``, against ``pair``: ``fk.assign`` followed by
  ``fk.update`` on the same batch.

``warm``: ``fk.kmeans`` (one member) and ``fk.batched_kmeans`` (the batch)
with ``init=previous, max_iter=2`` and their defaults on attention-style
batches: ``fixed_frac`` = (whole call - 2 marginal iterations) / (2 marginal
iterations), split into the finiteness check, one assignment (the final
labelling) and the rest.

``--grid`` runs the issue's whole grid (N in {65536, 262144, 1048576}, D in
{32, 64, 128, 256}, K in {512, 1024, 4096, 16384}, bfloat16 and float32)
with the columns forward, vg, step and jnp only; ``--part i/n`` runs every
n-th of its (shuffled) rows, so that the grid fits several device sessions.
Every run writes ONE JSON file (``--out``) with all its rows (warm, then
step rows; a row not run says why) and prints a short table.

Targets (issue 17): ``vg_ratio <= 2.5`` (``step_ratio = step / forward``
adds the projection's own matmuls and their gradients, reported beside it); ``jnp / ours >=
1`` on every row and ``>= 2`` from K=4096; ``ema / pair <= 1.2``; ``fixed_frac <= 0.2``. Rows whose
``[N, K]`` float32 matrix exceeds ``--jnp-max-gib`` skip the jnp column (it
would not fit or would dominate the run).
"""

from __future__ import annotations

import argparse
import random
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__:
  from benchmarks import harness
else:
  import harness

import flashkmeans_jax as fk

ROWS = [(262144, 64, 1024), (65536, 128, 4096), (1048576, 64, 1024), (262144, 128, 16384),
        (65536, 32, 512), (262144, 256, 4096), (1048576, 128, 4096)]
SMOKE_ROWS = [(2048, 16, 32)]
GRID_N = (65536, 262144, 1048576)
GRID_D = (32, 64, 128, 256)
GRID_K = (512, 1024, 4096, 16384)
# Warm-started calls of attention-style token clustering (issue 17: Sparse
# VideoGen 2 and LongCat-Video shapes), B, N, K, D.
WARM = [(32, 75600, 1000, 128), (64, 37440, 293, 128)]
SMOKE_WARM = [(2, 2048, 16, 32)]
DTYPES = ("bfloat16", "float16", "float32")
GRID_DTYPES = ("bfloat16", "float32")  # the grid


def _jnp_loss(w, c, x):
  z = x @ w
  zf = z.astype(jnp.float32)
  cf = c.astype(jnp.float32)
  d = jnp.sum(zf * zf, 1)[:, None] - 2.0 * zf @ cf.T + jnp.sum(cf * cf, 1)[None, :]
  lab = jax.lax.stop_gradient(jnp.argmin(d, axis=1))
  return jnp.mean(jnp.sum(jnp.square(zf - cf[lab]), 1))


def _ours_loss(w, c, x):
  return jnp.mean(fk.assign(x @ w, c)[1])


def _vq_loss(w, c, x):
  return fk.vector_quantize(x @ w, c).loss


def row(n, d, k, dtype, jnp_max_gib, full=True):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, d)), dtype)
  w = jnp.asarray(np.eye(d) + 0.01 * rng.normal(size=(d, d)), dtype)
  c = jnp.asarray(rng.normal(size=(k, d)), jnp.float32)
  out = {"n": n, "d": d, "k": k, "dtype": dtype}
  fwd = jax.jit(lambda x, c: jnp.mean(fk.assign(x, c)[1]))
  out["forward_ms"] = harness.median_ms(fwd, x, c)
  vg = jax.jit(jax.value_and_grad(fwd, argnums=(0, 1)))
  out["vg_ms"] = harness.median_ms(vg, x, c)
  out["vg_ratio"] = out["vg_ms"] / out["forward_ms"]
  if full:
    out["grad_x_ms"] = harness.median_ms(jax.jit(jax.grad(fwd, argnums=0)), x, c)
    out["grad_c_ms"] = harness.median_ms(jax.jit(jax.grad(fwd, argnums=1)), x, c)
  step = jax.jit(jax.value_and_grad(_ours_loss, argnums=(0, 1)))
  out["step_ms"] = harness.median_ms(step, w, c, x)
  out["step_ratio"] = out["step_ms"] / out["forward_ms"]
  if n * k * 4 <= jnp_max_gib * 2 ** 30:
    jstep = jax.jit(jax.value_and_grad(_jnp_loss, argnums=(0, 1)))
    out["jnp_step_ms"] = harness.median_ms(jstep, w, c, x)
    out["jnp_over_ours"] = out["jnp_step_ms"] / out["step_ms"]
  if not full:
    return out
  out["vq_step_ms"] = harness.median_ms(jax.jit(jax.value_and_grad(_vq_loss, argnums=(0, 1))),
                                        w, c, x)
  ema = fk.ema_codebook(decay=0.99)
  state = ema.init(c)
  out["ema_ms"] = harness.median_ms(jax.jit(lambda s, x: ema.update(s, x)), state, x)
  mb = fk.minibatch_codebook()
  out["minibatch_ms"] = harness.median_ms(jax.jit(lambda s, x: mb.update(s, x)),
                                          mb.init(c), x)

  def pair(x, c):
    labels, _ = fk.assign(x, c)
    return fk.update(x, labels, c)

  out["pair_ms"] = harness.median_ms(jax.jit(pair), x, c)
  out["ema_over_pair"] = out["ema_ms"] / out["pair_ms"]
  return out


def warm_start_row(b, n, k, d, dtype):
  """A warm-started call with its defaults (``fk.kmeans`` for ``b == 1``,
  else ``fk.batched_kmeans``; ``init=previous, max_iter=2``) against two
  marginal iterations: ``fixed = whole - 2 * marginal`` and ``fixed_frac =
  fixed / (2 * marginal)`` (issue 17's target: <= 0.2).

  Where the fixed cost goes: ``check_finite_ms`` (the same call with
  ``check_finite=False``; the check rides inside the compiled call, so this
  is its in-graph pass over x plus one transfer of two scalars),
  ``one_assign_ms`` (one assignment of every member: what the final labelling
  costs, the floor of ``fixed`` for labels that belong to the returned
  centroids; ``assign_floor_frac`` is it over the two iterations) and the
  rest (argument checks, init check, dispatch, the loop's predicate syncs)."""
  x, init = harness.grid_problem(b, n, k, d, dtype)
  run = harness.lloyd_runner(x, init, k)
  marginal = harness.marginal_ms(run, 2, 6)
  whole = harness.median_s(lambda: run(2), 5) * 1e3
  fixed = whole - 2 * marginal
  unchecked = harness.lloyd_runner(x, init, k, check_finite=False)
  unchecked(2)
  whole_unchecked = harness.median_s(lambda: unchecked(2), 5) * 1e3
  impl = harness.kernel_impl()
  if b == 1:
    one_assign = jax.jit(lambda x, c: fk.assign(x, c, impl=impl))
    assign_ms = harness.median_ms(one_assign, x[0], init[0].astype(jnp.float32))
  else:
    one_assign = jax.jit(jax.vmap(lambda x, c: fk.assign(x, c, impl=impl)))
    assign_ms = harness.median_ms(one_assign, x, init.astype(jnp.float32))
  return {"kind": "warm", "call": "kmeans" if b == 1 else "batched_kmeans", "b": b, "n": n,
          "k": k, "d": d, "dtype": dtype, "whole_2iter_ms": whole, "marginal_ms": marginal,
          "fixed_ms": fixed, "fixed_frac": fixed / (2 * marginal), "target": 0.2,
          "check_finite_ms": whole - whole_unchecked, "one_assign_ms": assign_ms,
          "assign_floor_frac": assign_ms / (2 * marginal),
          "rest_of_fixed_ms": fixed - (whole - whole_unchecked) - assign_ms}


def _table(rows):
  """A short table of the rows (printed at the end; the JSON has every field)."""
  lines = []
  for r in rows:
    shape = f"{r.get('b', 1)}x{r['n']}x{r['k']}x{r['d']} {r['dtype']}"
    if "note" in r or "error" in r:
      lines.append(f"{r.get('kind', 'step'):5s} {shape:28s} {r.get('note', r.get('error'))}")
    elif r.get("kind") == "warm":
      lines.append(f"warm  {shape:28s} {r['call']:14s} fixed_frac {r['fixed_frac']:.3f} "
                   f"(target 0.2; assign floor {r['assign_floor_frac']:.3f}) "
                   f"marginal {r['marginal_ms']:.3f} ms")
    else:
      jnp_col = (f" jnp/ours {r['jnp_over_ours']:.2f}" if "jnp_over_ours" in r else "")
      lines.append(f"step  {shape:28s} fwd {r['forward_ms']:.3f} ms vg_ratio "
                   f"{r['vg_ratio']:.2f} (<= 2.5) step {r['step_ms']:.3f} ms{jnp_col}")
  return "\n".join(lines)


def _part(rows, spec):
  """Rows of part ``i/n`` (1-based): every n-th row of the shuffled grid, so
  each part covers all N, D and K."""
  i, n = (int(v) for v in spec.split("/"))
  if not 1 <= i <= n:
    raise SystemExit(f"--part {spec}: want i/n with 1 <= i <= n")
  return rows[i - 1::n]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=None, help="JSON path (default: a name from the harness)")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--grid", action="store_true",
                 help="the issue's whole N x D x K grid, columns forward/vg/step/jnp")
  p.add_argument("--part", default=None,
                 help="i/n: only the i-th of n interleaved parts of the rows (grid runs "
                      "that do not fit one session); warm rows run in part 1 only")
  p.add_argument("--budget-s", type=float, default=None,
                 help="start no row after this many seconds in all (warm rows included); "
                      "rows left are recorded as not run")
  p.add_argument("--dtypes", default=None,
                 help=f"comma-separated (default {','.join(DTYPES)}; --grid: "
                      f"{','.join(GRID_DTYPES)}, the issue's)")
  p.add_argument("--rows", default=None, help="comma-separated row indices")
  p.add_argument("--jnp-max-gib", type=float, default=8.0)
  p.add_argument("--cap-s", type=float, default=60.0, help="time cap per row")
  p.add_argument("--no-warm-start", action="store_true",
                 help="skip the warm-started kmeans / batched_kmeans rows")
  a = p.parse_args(argv)
  start = time.perf_counter()
  rows = SMOKE_ROWS if a.smoke else ROWS
  dtypes = a.dtypes.split(",") if a.dtypes else list(DTYPES)
  if a.grid and not a.smoke:
    rows = [(n, d, k) for n in GRID_N for d in GRID_D for k in GRID_K]
    # A fixed shuffle: a --budget-s that stops early still covers every N,
    # D and K instead of the first N only.
    random.Random(0).shuffle(rows)
    dtypes = a.dtypes.split(",") if a.dtypes else list(GRID_DTYPES)
  if a.rows:
    rows = [rows[int(i)] for i in a.rows.split(",")]
  warm = [] if a.no_warm_start else (SMOKE_WARM if a.smoke else WARM)
  if a.part:
    warm = warm if a.part.split("/")[0] == "1" else []
    rows = _part(rows, a.part)
  results = harness.Results(a.out or harness.result_name("training-step"), official=False)

  def spent():
    return a.budget_s is not None and time.perf_counter() - start > a.budget_s

  # kmeans on one member and batched_kmeans on the whole batch, per shape.
  for b, n, k, d in warm:
    for bb in (1, b):
      shape = {"kind": "warm", "b": bb, "n": n, "k": k, "d": d, "dtype": "bfloat16"}
      # About 50 iterations in all (timed calls, warm-ups, the unchecked call).
      note = ("not run: --budget-s spent" if spent() else
              harness.over_cap(harness.estimated_s(50 * 2.0 * bb * n * k * d, "bfloat16"),
                               a.cap_s))
      if note:
        results.add({**shape, "note": note})
        continue
      t0 = time.perf_counter()
      try:
        r = warm_start_row(bb, n, k, d, "bfloat16")
      except Exception as e:  # noqa: BLE001 -- a failure is recorded in the row
        r = {**shape, "error": f"{type(e).__name__}: {e}"[:300]}
      r["row_s"] = time.perf_counter() - t0
      results.add(r)
  for n, d, k in rows:
    for dtype in dtypes:
      shape = {"kind": "step", "n": n, "d": d, "k": k, "dtype": dtype}
      if spent():
        results.add({**shape, "note": "not run: --budget-s spent"})
        continue
      # About 40 assignments' worth of work per row (timed calls and warm-ups).
      note = harness.over_cap(harness.estimated_s(40 * 2.0 * n * k * d, dtype), a.cap_s)
      if note:
        results.add({**shape, "note": note})
        continue
      t0 = time.perf_counter()
      try:
        r = {"kind": "step", **row(n, d, k, dtype, a.jnp_max_gib, full=not a.grid)}
      except Exception as e:  # noqa: BLE001 -- a failure is recorded in the row
        r = {**shape, "error": f"{type(e).__name__}: {e}"[:300]}
      r["row_s"] = time.perf_counter() - t0
      results.add(r)
  print(_table(results.rows))
  print(f"wrote {results.path} ({len(results.rows)} rows, "
        f"{time.perf_counter() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
