"""One clustering run of the CLI: every check, then the work, then the
outputs and the summary.

Order: the flags' values (the library's checks), the input and ``--init``
paths, every output path (reserved by :class:`~flashkmeans_jax.cli.outputs.
Outputs`, so an unwritable or colliding output fails before any work), the
data (shape, dtype, NaN/Inf and overflow on the way to the clustering
dtype), and only then the clustering. A result with NaN/Inf in its inertia or
centroids is an error: nothing is written.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from flashkmeans_jax.cli.errors import PROG, CLIError, checked
from flashkmeans_jax.cli.inputs import (device_memory_bytes, existing_file, load_input,
                                        parse_size, read_npy)
from flashkmeans_jax.cli.outputs import Outputs

# The seedings --init names (anything else is a .npy file of centroids).
INIT_NAMES = ("k-means++", "k-means||", "random")

# Bytes of data per block when the inertia is recomputed over finite rows.
_BLOCK_BYTES = 64 << 20


def fmt_bytes(n: float) -> str:
  """``65536`` -> ``"64.0 KiB"``."""
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if n < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return str(n)


def finite_rows_inertia(x: Any, centroids: Any, dtype: np.dtype, *, metric: str, impl: str,
                        precision: Any, rows: int | None) -> tuple[float, int]:
  """(inertia over the rows of ``x`` without NaN/Inf, number of other rows),
  block by block through :func:`flashkmeans_jax.assign` -- for
  ``--no-check-finite``, where the library's inertia is NaN as soon as one
  row is not finite."""
  import jax.numpy as jnp
  from flashkmeans_jax.api.ops import assign
  n, d = x.shape
  rows = rows or max(1, _BLOCK_BYTES // max(1, d * np.dtype(dtype).itemsize))
  c = jnp.asarray(centroids)
  total, skipped = 0.0, 0
  for start in range(0, n, rows):
    block = np.asarray(x[start:start + rows]).astype(dtype, copy=False)
    ok = np.isfinite(block).all(axis=1)
    try:
      _, dist = assign(jnp.asarray(block), c, metric=metric, impl=impl,
                       precision=precision, check_finite=False)
    except ValueError:  # centroids whose distances overflow float32: not finite either
      return math.nan, 0
    total += float(np.sum(np.asarray(dist, np.float64)[ok]))
    skipped += int(ok.size - ok.sum())
  return total, skipped


def _init(args, init_path, k: int, d: int):
  import jax.numpy as jnp
  from flashkmeans_jax.core import validation
  if init_path is None:
    return args.init
  init = read_npy(init_path, flag="--init")
  checked("--init", validation.check_init, init, k, d)
  checked("--init", validation.check_finite, init, "init", dtype=np.float32)
  return jnp.asarray(init, jnp.float32)


def cluster(args, outputs: Outputs) -> int:
  """Clusters INPUT as the flags say; returns the exit status (0) or raises
  :class:`CLIError`."""
  import jax
  import jax.numpy as jnp
  from flashkmeans_jax.api.kmeans import kmeans
  from flashkmeans_jax.api.streaming import kmeans_streaming
  from flashkmeans_jax.core import validation
  from flashkmeans_jax.estimator.compile_cache import enable_compilation_cache
  from flashkmeans_jax.estimator.order import HostOrder, host_cluster_order

  if args.clusters is None:
    raise CLIError("-k/--clusters is required with an input file")
  max_iter = checked("--max-iter", validation.check_positive_int, args.max_iter, "max_iter")
  tol = checked("--tol", validation.check_tol, args.tol)
  n_init = checked("--n-init", validation.check_positive_int, args.n_init, "n_init")
  chunk = checked("--chunk-size", validation.check_optional_positive_int, args.chunk_size,
                  "chunk_size")
  impl = checked("--impl", validation.resolve_impl, args.impl)
  checked("--precision", validation.resolve_precision, args.precision)
  stream_above = None if args.stream_above == "auto" else parse_size(args.stream_above)

  path = existing_file(args.input)
  init_path = (None if args.init in INIT_NAMES else
               existing_file(args.init, "--init",
                             "not k-means++, k-means||, random or a .npy file; "))
  inputs = {"the input file": path, **({"the --init file": init_path} if init_path else {})}
  centroids_out = outputs.reserve("--centroids-out", args.centroids_out, inputs=inputs,
                                  force=args.force)
  labels_out = outputs.reserve("--labels-out", args.labels_out, inputs=inputs,
                               force=args.force)
  order_out = outputs.reserve("--order-out", args.order_out, inputs=inputs, force=args.force)

  x = load_input(path, args)
  checked(None, validation.check_points, x, str(args.input), numeric=True)
  n, d = x.shape
  k = checked("-k/--clusters", validation.check_k, args.clusters, n)
  target = validation.target_dtype(np.dtype(x.dtype), args.dtype)
  init = _init(args, init_path, k, d)
  if args.check_finite:
    # NaN/Inf, and values the cast to the clustering dtype would overflow, are
    # found before any work (in streaming mode at the cost of one read of the file).
    checked(None, validation.check_finite, x, str(args.input), hint="--no-check-finite",
            dtype=target)
  if stream_above is None:
    stream_above = device_memory_bytes() // 4
  streaming = x.nbytes > stream_above

  # The persistent compilation cache (FLASHKMEANS_JAX_NO_COMPILE_CACHE=1 opts
  # out): after every check, so a refused run costs no cache set-up, and
  # before the first compilation, so a later run loads this one's programs.
  enable_compilation_cache()
  key = jax.random.key(args.seed)
  common = dict(init=init, n_init=n_init, max_iter=max_iter, tol=tol, metric=args.metric,
                impl=impl, precision=args.precision, verbose=args.verbose, check_finite=False)
  t0 = time.perf_counter()
  if streaming:
    labels_mm = (None if labels_out is None
                 else outputs.memmap(labels_out, np.int32, (n,)))
    # The host array goes as stored (a memmap stays a memmap); chunks are
    # cast on their way to the device.
    res = kmeans_streaming(key, x, k, chunk_size=chunk, labels_out=labels_mm, **common)
    labels = None
  else:
    xj = jnp.asarray(np.asarray(x).astype(target, copy=False))
    # --order-out comes from the sort the update already does.
    res = jax.block_until_ready(kmeans(key, xj, k, return_order=order_out is not None,
                                       **common))
    labels = res.labels
  centroids = np.asarray(res.centroids)
  seconds = time.perf_counter() - t0
  if centroids.dtype == jnp.bfloat16:  # portable .npy
    centroids = centroids.astype(np.float32)

  inertia, skipped = float(res.inertia), 0
  bad = int(np.sum(~np.isfinite(centroids).all(axis=1)))
  if not math.isfinite(inertia) and not args.check_finite and not bad:
    inertia, skipped = finite_rows_inertia(x, centroids, target, metric=args.metric,
                                           impl=impl, precision=args.precision, rows=chunk)
  if bad or not math.isfinite(inertia):
    what = f"{bad} of {k} centroids hold NaN or Inf, " if bad else ""
    raise CLIError(
        f"the result is not finite ({what}inertia {inertia:.6g}), so nothing was written; "
        "the data's scale probably overflows the float32 distances: rescale the data")

  written = []
  if centroids_out is not None:
    outputs.write(centroids_out, centroids)
    written.append(f"centroids -> {centroids_out.text} {list(centroids.shape)} "
                   f"{centroids.dtype}")
  if labels_out is not None:
    if labels is not None:
      outputs.write(labels_out, np.asarray(labels, np.int32))
    written.append(f"labels -> {labels_out.text} [{n}] int32")
  if order_out is not None:
    # Streamed labels are on the host (the --labels-out memory map when
    # given): sorted there block by block.
    got = (host_cluster_order(res.labels, k) if res.order is None
           else HostOrder(*(np.asarray(a) for a in (res.order, res.offsets, res.sizes))))
    outputs.write_npz(order_out, order=got.order, offsets=got.offsets, sizes=got.sizes)
    written.append(f"order -> {order_out.text} (order [{n}], offsets [{k + 1}], "
                   f"sizes [{k}]) {got.order.dtype}")
  outputs.commit()

  if not args.quiet:
    dev = jax.devices()[0]
    conv = "converged" if bool(res.converged) else "stopped at --max-iter"
    mode = (f"streamed in chunks ({'auto' if args.chunk_size is None else args.chunk_size}"
            " rows)") if streaming else "in device memory"
    over = (f" over the {n - skipped} finite rows ({skipped} rows with NaN/Inf got label 0)"
            if skipped else "")
    lines = [
        f"{PROG}: k-means on {args.input}",
        f"  data      N={n}  D={d}  {x.dtype} -> {target}  ({fmt_bytes(x.nbytes)}, {mode})",
        f"  clusters  K={k}  metric={args.metric}  init={args.init}  n_init={args.n_init}  "
        f"seed={args.seed}",
        f"  result    {int(res.n_iter)} iterations ({conv}), inertia {inertia:.6g}{over}",
        f"  time      {seconds:.3f} s (includes compilation)",
        f"  device    {dev.platform}:{dev.device_kind} (impl={impl})",
    ]
    lines += [f"  wrote     {w}" for w in written]
    print("\n".join(lines))
  return 0
