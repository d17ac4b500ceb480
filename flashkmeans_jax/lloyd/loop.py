"""Lloyd's algorithm as one ``lax.while_loop`` over the statistics core.

One iteration is ``assign`` (labels and distances for the current centroids),
:func:`~flashkmeans_jax.lloyd.stats.accumulate`, the totals over all row
blocks (:class:`~flashkmeans_jax.lloyd.combine.Combine`: nothing in memory, one
``psum`` sharded) and :func:`~flashkmeans_jax.lloyd.centroids.finalize`. The
loop stops when the squared centroid shift summed over clusters is at most
``tol * mean(var(x, axis=0))`` (scikit-learn's criterion) or after
``max_iter`` iterations. After the loop one more ``assign`` computes labels
and inertia for the returned centroids, so the three always belong together.
No value leaves the device inside the loop.

:func:`run` adds the seeding and the ``n_init`` restarts (a ``vmap`` over
keys; :func:`best_of` keeps the lowest inertia). It is what
:func:`flashkmeans_jax.kmeans` compiles, and the sharded driver calls it on
each shard with :func:`~flashkmeans_jax.lloyd.combine.across`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core.precision import resolve_precision
from flashkmeans_jax.core.types import KMeansResult, SeedingOptions
from flashkmeans_jax.lloyd import centroids as centroids_mod
from flashkmeans_jax.lloyd import seeding
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.lloyd.combine import Combine, LOCAL
from flashkmeans_jax.ops.assign import api as assign_op
from flashkmeans_jax.ops.cluster_sums import sort

__all__ = ["lloyd", "iterate", "finish", "run", "run_compiled", "run_batched", "best_of",
           "best_of_runs", "data_tolerance", "normalise_weights", "training_sample",
           "print_progress", "data_flags"]


def print_progress(i, inertia, shift, converged, note: str = "") -> None:
  """The ``verbose`` line of one iteration (host side of a debug callback);
  ``note`` ends the line (e.g. ``"(sharded)"``)."""
  print(f"[flashkmeans_jax] iter {int(i):4d}  inertia {float(inertia):.6g}  "
        f"shift {float(shift):.3g}{'  converged' if bool(converged) else ''}"
        f"{'  ' + note if note else ''}", flush=True)


def data_tolerance(x: jax.Array, tol: float, weights: jax.Array | None = None, *,
                   valid: jax.Array | None = None, combine: Combine = LOCAL) -> jax.Array:
  """``tol`` times the mean per-feature variance of the usable rows of all
  blocks (finite, positive weight, ``valid``): one bad point would otherwise
  make the tolerance NaN, and padding would change when a member stops."""
  if tol == 0:
    return jnp.float32(0.0)
  m = stats.combine_moments(stats.moments(x, weights, valid), combine)
  return stats.tolerance(m, tol)


def _report(combine: Combine, i, inertia, shift, converged):
  if combine.n_blocks == 1:
    jax.debug.callback(print_progress, i, inertia, shift, converged)
  else:
    # One line per iteration, from the first block only.
    printer = functools.partial(print_progress, note="(sharded)")
    lax.cond(combine.block_index() == 0,
             lambda: jax.debug.callback(printer, i, inertia, shift, converged),
             lambda: None)


def iterate(x: jax.Array, c0: jax.Array, weights: jax.Array | None, tol_abs: jax.Array,
            opts: LloydOptions, combine: Combine = LOCAL, *, keep_last: bool = False):
  """The while_loop on this block's points ``x [N, D]`` from ``c0 [K, D]``.

  Returns ``(n_iter int32[], centroids float32[K, D], converged bool[],
  inertia_history float32[max_iter])``, the same on every block. With
  ``keep_last`` a fifth entry ``(labels, dist, fixed)``: the last
  iteration's assignment and whether that iteration left every centroid
  bitwise unchanged (then it is also the assignment of the returned
  centroids, and :func:`finish` reuses it).
  """
  k = opts.k
  # Relocation candidates per block: all K when blocks meet (a block may hold
  # fewer rows than K), else at most the block's rows.
  m_cand = k if combine.n_blocks > 1 else min(k, x.shape[0])

  def cond(state):
    i, done = state[0], state[2]
    return (i < opts.max_iter) & jnp.logical_not(done)

  def body(state):
    i, c, _, hist = state[:4]
    labels, dist = _assign(x, c, opts)
    total = stats.combine_stats(stats.accumulate(x, labels, dist, weights, k, opts.impl),
                                combine)

    def candidates():
      return stats.combine_farthest(stats.farthest(x, labels, dist, weights, m_cand),
                                    combine)

    new_c, _ = centroids_mod.finalize(total, c, metric=opts.metric, empty=opts.empty,
                                      candidates=candidates)
    # One materialised new_c for both the carry and the shift: under vmap XLA
    # otherwise recomputes it in two fusions that round differently, so a
    # fixed point shows a ~1e-14 shift and tol=0 never converges.
    new_c = lax.optimization_barrier(new_c)
    shift, done = stats.converged(new_c, c, tol_abs)
    if opts.verbose:
      _report(combine, i, total.inertia, shift, done)
    out = (i + 1, new_c, done, hist.at[i].set(total.inertia))
    if keep_last:
      out += ((labels, dist, jnp.all(new_c == c)),)
    return out

  state = (jnp.int32(0), c0.astype(jnp.float32), jnp.bool_(False),
           jnp.full((opts.max_iter,), jnp.nan, jnp.float32))
  if keep_last:
    n = x.shape[0]
    state += ((jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.float32), jnp.bool_(False)),)
  return lax.while_loop(cond, body, state)


def _assign(x, c, opts):
  return assign_op.assign(x, c, opts.metric, opts.impl, opts.precision, opts.config)


def finish(x: jax.Array, loop_state, weights: jax.Array | None, opts: LloydOptions,
           combine: Combine = LOCAL, *, return_order: bool = False,
           weight_scale: jax.Array | None = None) -> KMeansResult:
  """The :class:`KMeansResult` of :func:`iterate`'s final state: one more
  assignment of all of this block's points ``x`` gives labels and inertia for
  the returned centroids; ``return_order`` adds the inverse map from one
  stable sort of those labels. ``weight_scale`` (a power of two) undoes the
  weights' normalisation in the inertias. A state from ``iterate(...,
  keep_last=True)`` on the same ``x`` skips that assignment when the last
  iteration reached a fixed point (its own assignment is then the same), or
  always without ``opts.final_assign`` (labels and inertia are then the last
  iteration's)."""
  n_iter, c, done, hist = loop_state[:4]
  if len(loop_state) > 4 and not opts.final_assign:
    # The last iteration's assignment stands (of the centroids before its
    # update): no pass over x after the loop.
    labels, dist = loop_state[4][:2]
  elif len(loop_state) > 4:
    last_labels, last_dist, fixed = loop_state[4]
    # One small host sync on the GPU (the cond's predicate), against a whole
    # assignment pass saved when a run ends at a fixed point (tol=0).
    labels, dist = lax.cond(fixed, lambda: (last_labels, last_dist),
                            lambda: _assign(x, c, opts))
  else:
    labels, dist = _assign(x, c, opts)
  inertia = combine.sum(stats.inertia(dist, weights))
  if weight_scale is not None:
    inertia, hist = inertia * weight_scale, hist * weight_scale
  order = offsets = sizes = None
  if return_order:
    order, offsets, sizes = sort.cluster_segments(labels, opts.k)
  return KMeansResult(centroids=c.astype(x.dtype), labels=labels, inertia=inertia,
                      n_iter=n_iter, converged=done, inertia_history=hist, order=order,
                      offsets=offsets, sizes=sizes)


def lloyd(x: jax.Array, c0: jax.Array, weights: jax.Array | None, tol_abs: jax.Array,
          opts: LloydOptions, combine: Combine = LOCAL) -> KMeansResult:
  """:func:`iterate` then :func:`finish` on the same points.

  ``weights float[N]`` or ``None``; ``tol_abs``: the absolute tolerance on
  the summed squared shift (see :func:`data_tolerance`). Returns the
  :class:`KMeansResult` of this block's rows (centroids, inertia and the
  history are the same on every block).
  """
  return finish(x, iterate(x, c0, weights, tol_abs, opts, combine), weights, opts, combine)


def normalise_weights(weights: jax.Array | None, combine: Combine = LOCAL):
  """``(weights / s, s)`` with ``s`` the power of two at or above the largest
  finite weight of all blocks (``None, None`` without weights).

  Dividing by a power of two is exact, so ordinary weights give the same
  bits as before; extreme ones (1e30 next to 1e-30) no longer overflow the
  float32 sums, counts and k-means++ potentials (which gave NaN centroids).
  Weights below ``2^-149 * s`` become 0: they weigh nothing next to the
  largest one at float32 precision anyway.
  """
  if weights is None:
    return None, None
  w = weights.astype(jnp.float32)
  top = jnp.max(jnp.where(jnp.isfinite(w), w, 0.0))
  if combine.n_blocks > 1:
    top = jnp.max(combine.gather(top))
  _, e = jnp.frexp(jnp.where(top > 0, top, 1.0))
  scale = jnp.ldexp(jnp.float32(1.0), e)
  return w / scale, scale


def training_sample(key: jax.Array, x: jax.Array, weights: jax.Array | None, m: int,
                    combine: Combine = LOCAL) -> tuple[jax.Array, jax.Array]:
  """``(x_s [m_b, D], w_s float32[m_b])``: a uniform sample without
  replacement of this block's usable rows (finite, positive weight),
  ``m_b = min(N_b, ceil(m / P))`` rows per block; rows past the usable ones
  get weight 0."""
  n = x.shape[0]
  m_b = min(n, -(-m // combine.n_blocks))
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  w, _, x_safe = seeding.usable_rows(x, w)
  key = jax.random.fold_in(key, combine.block_index())
  prio = jnp.where(w > 0, jax.random.uniform(key, (n,)), -1.0)
  _, idx = lax.top_k(prio, m_b)
  return x_safe[idx], w[idx]


def best_of(results: KMeansResult) -> KMeansResult:
  """The member of a stacked result (leading restart axis) with the lowest
  inertia; a NaN inertia never wins over a number, ties go to the first."""
  inertia = jnp.where(jnp.isnan(results.inertia), jnp.inf, results.inertia)
  best = jnp.argmin(inertia)
  return jax.tree.map(lambda a: a[best], results)


def best_of_runs(runs: list[KMeansResult]) -> KMeansResult:
  """Host-side :func:`best_of` over separately computed runs (the streaming
  driver's restarts): the lowest finite inertia, the first on ties."""
  scores = [float(r.inertia) for r in runs]
  scores = [s if s == s else float("inf") for s in scores]  # NaN never wins
  return runs[scores.index(min(scores))]


def run(key: jax.Array, x: jax.Array, weights: jax.Array | None,
        init_array: jax.Array | None, opts: LloydOptions, *,
        valid: jax.Array | None = None, combine: Combine = LOCAL,
        seed: SeedingOptions = SeedingOptions(), return_order: bool = False,
        batched: bool = False) -> KMeansResult:
  """Seeding, ``opts.n_init`` restarts of :func:`iterate` and the best of them.

  ``init_array`` (``[K, D]``) is used when ``opts.init == "array"``. ``valid``
  (``bool[N]``) marks real rows when a driver padded the block; padded rows
  must also have weight 0. ``seed``: seeding options and the training sample
  (``max_points_per_centroid``: seed and iterate on ``k * max_points_per_centroid``
  sampled points when there are more, then label every point).
  ``return_order``: the result carries ``order``, ``offsets`` and ``sizes``.
  ``batched``: ``run`` is being ``vmap``-ed (then the final assignment is
  always recomputed: a batched ``cond`` would run both branches anyway).
  """
  tol_abs = data_tolerance(x, opts.tol, weights, valid=valid, combine=combine)
  weights, w_scale = normalise_weights(weights, combine)
  seed_precision = resolve_precision("highest")
  mppc = seed.max_points_per_centroid
  n_total = x.shape[0] * combine.n_blocks
  if mppc is not None and n_total > opts.k * mppc:
    key, key_sample = jax.random.split(key)
    x_train, w_train = training_sample(key_sample, x, weights, opts.k * mppc, combine)
  else:
    x_train, w_train = x, weights
  # The loop's last assignment can stand for the final one only when the loop
  # ran on all of x; at a fixed point only where nothing vmaps the cond that
  # decides it (restarts, batches); always without opts.final_assign.
  keep_last = x_train is x and (not opts.final_assign or (opts.n_init == 1 and not batched))

  def one(key):
    if opts.init == "array":
      c0 = init_array.astype(jnp.float32)
    else:
      # No kernel config: the run's is for K rows, k-means||' rounds assign to
      # other counts (the per-GPU table picks their tiles).
      c0 = seeding.init_centroids(key, x_train, opts.k, opts.init, w_train,
                                  metric=opts.metric, precision=seed_precision,
                                  combine=combine, seed=seed, impl=opts.impl)
    state = iterate(x_train, c0, w_train, tol_abs, opts, combine, keep_last=keep_last)
    return finish(x, state, weights, opts, combine, return_order=return_order,
                  weight_scale=w_scale)

  if opts.n_init == 1:
    return one(key)
  return best_of(jax.vmap(one)(jax.random.split(key, opts.n_init)))


def data_flags(x: jax.Array, init: jax.Array | None = None, *,
               check_x: bool = True) -> jax.Array:
  """``float32[3]``: whether every value of ``x [..., N, D]`` is finite (1 or
  0), its largest squared row norm, and whether every value of ``init`` is
  finite (1 without one). Computed inside the compiled call and packed into
  one array, so that an eager call's finiteness checks cost neither separate
  dispatches nor host syncs before the run, and one transfer after it (the
  caller confirms anything suspicious with the exact checks). Without
  ``check_x`` (``check_finite=False``) x is not read: its entries are 1 and 0.

  The flags are placed in pinned host memory by the compiled call itself, so
  reading them is a host read once the call is done: fetching them from the
  GPU afterwards cost 0.2-0.3 ms per warm call on the H200 (``device_get``
  of three floats), as much as the data's whole check."""
  init_ok = (jnp.bool_(True) if init is None
             else jnp.all(jnp.isfinite(init.astype(jnp.float32))))
  if not check_x:
    flags = jnp.stack([jnp.float32(1.0), jnp.float32(0.0), init_ok.astype(jnp.float32)])
  else:
    xf = x.astype(jnp.float32)
    flags = jnp.stack([jnp.all(jnp.isfinite(xf)).astype(jnp.float32),
                       jnp.max(jnp.sum(xf * xf, axis=-1)), init_ok.astype(jnp.float32)])
  return jax.device_put(flags, jax.memory.Space.Host)


@functools.partial(jax.jit, static_argnames=("opts", "seed", "return_order", "flags"))
def run_compiled(key: jax.Array, x: jax.Array, weights: jax.Array | None,
                 init_array: jax.Array | None, opts: LloydOptions,
                 seed: SeedingOptions = SeedingOptions(),
                 return_order: bool = False, flags: bool | str = False):
  """:func:`run` in memory, compiled once per shape, dtype and options;
  ``flags``: ``True`` returns ``(result, data_flags(x, init_array))``,
  ``"init"`` the same without reading x (``check_x=False``)."""
  res = run(key, x, weights, init_array, opts, seed=seed, return_order=return_order)
  return (res, data_flags(x, init_array, check_x=flags is True)) if flags else res


@functools.partial(jax.jit, static_argnames=("opts", "seed", "return_order", "flags"))
def run_batched(key: jax.Array, x: jax.Array, weights: jax.Array | None,
                init_array: jax.Array | None, opts: LloydOptions,
                seed: SeedingOptions = SeedingOptions(),
                return_order: bool = False, flags: bool | str = False):
  """:func:`run` over a leading batch axis of ``x``, ``weights`` and a ``[B,
  K, D]`` init (a ``[K, D]`` init is shared), member ``b`` keyed by
  ``jax.random.split(key, B)[b]`` (split here, inside the compiled call: an
  eager split is one more dispatch per call); every member has its own
  ``n_iter``, ``converged``, inertia history and (``return_order``) order.
  ``flags``: as for :func:`run_compiled`, over the whole batch."""
  keys = jax.random.split(key, x.shape[0])
  init_axis = 0 if (init_array is not None and init_array.ndim == 3) else None
  w_axis = None if weights is None else 0
  res = jax.vmap(lambda kk, xx, ww, ii: run(kk, xx, ww, ii, opts, seed=seed,
                                            return_order=return_order, batched=True),
                 in_axes=(0, 0, w_axis, init_axis))(keys, x, weights, init_array)
  return (res, data_flags(x, init_array, check_x=flags is True)) if flags else res
