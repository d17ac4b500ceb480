"""Command-line tool ``flashkmeans-jax`` (also ``python -m flashkmeans_jax``).

``flashkmeans-jax data.npy -k 64`` clusters the rows of a ``.npy``/``.npz``
file or of a raw binary file and prints a one-screen summary; with
``--centroids-out``/``--labels-out`` it writes the results as ``.npy``.
Without an input file it runs the built-in demo (digits and blobs against
scikit-learn).

Inputs larger than ``--stream-above`` bytes are clustered out of core by
:func:`flashkmeans_jax.kmeans_streaming` (the file stays a memory map on the
host); smaller ones are moved to the device whole.

Every argument is checked before any work, by the library's own checks
(:mod:`flashkmeans_jax.core.validation`), so a bad value gets the message
:func:`flashkmeans_jax.kmeans` gives, prefixed with the flag.

Outputs are written to a temporary file in the target directory and renamed
when complete, so a failed run never leaves a partial output file. Errors end
the run with exit status 1 and one line on stderr (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PROG = "flashkmeans-jax"

_EPILOG = """\
examples:
  flashkmeans-jax                                   run the built-in demo
  flashkmeans-jax emb.npy -k 256 --labels-out labels.npy --centroids-out c.npy
  flashkmeans-jax data.npz --key train -k 10 --metric cosine --n-init 4
  flashkmeans-jax vecs.f32 --raw-dtype float32 --raw-shape=-1,768 -k 1024
  flashkmeans-jax big.npy -k 4096 --stream-above 2G --chunk-size 1000000

sizes (--stream-above) accept a plain number of bytes or a suffix K, M, G, T
(powers of 1024); "auto" is a quarter of the device's memory.
exit status: 0 on success, 1 on an error (one line on stderr), 2 on bad usage.
"""


class CLIError(Exception):
  """An error reported as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Exact k-means (Lloyd) with JAX and Pallas GPU kernels.\n\n"
                  "Clusters the rows of an [N, D] array stored in a file and prints a\n"
                  "summary; with no input file, runs the built-in demo (digits and\n"
                  "blobs compared with scikit-learn).",
      epilog=_EPILOG)
  p.add_argument("input", nargs="?", metavar="INPUT",
                 help="data file: .npy, .npz (see --key) or raw binary rows (see "
                      "--raw-dtype/--raw-shape). Omit to run the demo.")
  g = p.add_argument_group("input")
  g.add_argument("--key", metavar="NAME",
                 help="array to use from an .npz file (default: its only array)")
  g.add_argument("--raw-dtype", metavar="DTYPE",
                 help="read INPUT as raw binary (a memory map) of this dtype, e.g. float32")
  g.add_argument("--raw-shape", metavar="N,D",
                 help="shape of a raw INPUT; leave N out (--raw-shape ,D) or give -1 "
                      "(--raw-shape=-1,D) to infer it from the file size")
  g = p.add_argument_group("clustering")
  g.add_argument("-k", "--clusters", type=int, metavar="K",
                 help="number of clusters (required with INPUT)")
  g.add_argument("--metric", default="sqeuclidean", choices=["sqeuclidean", "cosine", "dot"],
                 help="distance (default sqeuclidean; cosine = spherical k-means)")
  g.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                 help="dtype to cluster in (default: keep float16/bfloat16/float32 data, "
                      "cast anything else to float32)")
  g.add_argument("--max-iter", type=int, default=300, metavar="N",
                 help="most Lloyd iterations (default 300)")
  g.add_argument("--tol", type=float, default=1e-4,
                 help="relative centroid-shift tolerance, scikit-learn's rule (default 1e-4; "
                      "0 runs to a fixed point or --max-iter)")
  g.add_argument("--init", default="k-means++", metavar="{k-means++,random,FILE.npy}",
                 help="seeding: k-means++ (default), random, or a .npy file of [K, D] "
                      "starting centroids")
  g.add_argument("--n-init", type=int, default=1, metavar="N",
                 help="seedings to run; the lowest inertia wins (default 1)")
  g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  g.add_argument("--impl", choices=["auto", "xla", "pallas", "pallas_interpret"],
                 default="auto", help="implementation (default auto: Pallas on CUDA GPUs, "
                                      "XLA elsewhere)")
  g.add_argument("--precision", default=None,
                 choices=["default", "highest", "F16_F16_F32", "BF16_BF16_F32"],
                 help="float32 distance precision (default: JAX's, TF32 on NVIDIA GPUs; "
                      "highest: float32-accurate; F16_F16_F32: float16 tensor cores with "
                      "per-row power-of-two scaling, TF32's mantissa at twice its speed)")
  g = p.add_argument_group("large inputs")
  g.add_argument("--stream-above", default="auto", metavar="SIZE",
                 help="stream inputs larger than SIZE bytes through the device in chunks "
                      "(default auto: a quarter of the device memory)")
  g.add_argument("--chunk-size", type=int, metavar="ROWS",
                 help="rows per chunk when streaming (default: chosen from device memory)")
  g = p.add_argument_group("output")
  g.add_argument("--centroids-out", metavar="FILE.npy",
                 help="write the [K, D] centroids here (.npy)")
  g.add_argument("--labels-out", metavar="FILE.npy",
                 help="write the int32 [N] labels here (.npy)")
  g.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
  g.add_argument("-v", "--verbose", action="store_true",
                 help="print inertia and centroid shift every iteration")
  g.add_argument("--debug", action="store_true", help="show tracebacks on errors")
  return p


# ------------------------------------------------------------------ helpers
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def parse_size(text: str) -> int:
  """``"512M"`` -> bytes (powers of 1024); a plain number is bytes."""
  s = text.strip().upper().removesuffix("IB").removesuffix("B")
  unit = s[-1] if s and s[-1] in _UNITS else ""
  try:
    value = float(s[:-1] if unit else s)
  except ValueError:
    raise CLIError(f"--stream-above: cannot read {text!r} as a size (e.g. 512M, 2G)") from None
  if value < 0:
    raise CLIError(f"--stream-above must be >= 0, got {text!r}")
  return int(value * _UNITS[unit])


def device_memory_bytes() -> int:
  """Memory of the default device (host RAM for the CPU backend)."""
  import jax
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - backends without stats
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return 8 * 1024 ** 3


def _load(args) -> np.ndarray:
  path = Path(args.input)
  if not path.is_file():
    raise CLIError(f"input file not found: {path}")
  suffix = path.suffix.lower()
  if args.raw_dtype or args.raw_shape:
    if not (args.raw_dtype and args.raw_shape):
      raise CLIError("a raw input needs both --raw-dtype and --raw-shape N,D")
    try:
      dtype = np.dtype(args.raw_dtype)
    except TypeError:
      raise CLIError(f"--raw-dtype: unknown dtype {args.raw_dtype!r}") from None
    try:
      n_text, d_text = args.raw_shape.split(",")
      n = -1 if n_text.strip() in ("", "-1") else int(n_text)
      d = int(d_text)
    except ValueError:
      raise CLIError(f"--raw-shape must be N,D (two integers), got {args.raw_shape!r}") from None
    size = path.stat().st_size
    row = d * dtype.itemsize
    if d < 1 or row == 0:
      raise CLIError(f"--raw-shape: D must be >= 1, got {d}")
    if n == -1:
      if size % row:
        raise CLIError(f"{path} has {size} bytes, not a whole number of rows of "
                       f"{d} x {dtype} ({row} bytes)")
      n = size // row
    if n < 1 or n * row != size:
      raise CLIError(f"{path} has {size} bytes but --raw-shape {n},{d} of {dtype} needs "
                     f"{n * row}")
    return np.memmap(path, dtype=dtype, mode="r", shape=(n, d))
  if suffix == ".npy":
    return np.load(path, mmap_mode="r", allow_pickle=False)
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as z:
      names = list(z.files)
      if args.key is None:
        if len(names) != 1:
          raise CLIError(f"{path} holds arrays {names}; choose one with --key")
        return z[names[0]]
      if args.key not in names:
        raise CLIError(f"{path} has no array {args.key!r}; it holds {names}")
      return z[args.key]
  raise CLIError(f"cannot tell the format of {path}: use a .npy/.npz file, or pass "
                 "--raw-dtype and --raw-shape for raw binary data")


def _checked(flag: str | None, check, *args: Any, **kwargs: Any) -> Any:
  """Runs one of the library's checks; its error becomes a one-line
  :class:`CLIError` led by the flag (the original error is its cause)."""
  try:
    return check(*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise CLIError(f"{flag}: {e}" if flag else str(e)) from e


def _new_tmp(target: Path, pending: list[Path]) -> Path:
  """An empty file next to ``target`` (same file system, so the rename is atomic)."""
  for _ in range(100):
    tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    except FileExistsError:
      continue
    os.close(fd)
    pending.append(tmp)
    return tmp
  raise CLIError(f"cannot create a temporary file in {target.parent}")


def _save_tmp(target: Path, arr: np.ndarray, pending: list[Path]) -> Path:
  tmp = _new_tmp(target, pending)
  with open(tmp, "wb") as f:
    np.save(f, arr, allow_pickle=False)
  return tmp


def _out_path(text: str | None, what: str) -> Path | None:
  if text is None:
    return None
  p = Path(text)
  if not p.parent.is_dir():
    raise CLIError(f"{what}: directory {p.parent} does not exist")
  if p.is_dir():
    raise CLIError(f"{what}: {p} is a directory")
  return p


def _fmt_bytes(n: int) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if n < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return str(n)


# --------------------------------------------------------------------- main
def _cluster(args) -> int:
  import jax
  import jax.numpy as jnp
  from flashkmeans_jax.api.kmeans import kmeans
  from flashkmeans_jax.api.streaming import kmeans_streaming
  from flashkmeans_jax.core import validation

  if args.clusters is None:
    raise CLIError("-k/--clusters is required with an input file")
  centroids_out = _out_path(args.centroids_out, "--centroids-out")
  labels_out = _out_path(args.labels_out, "--labels-out")
  max_iter = _checked("--max-iter", validation.check_positive_int, args.max_iter, "max_iter")
  tol = _checked("--tol", validation.check_tol, args.tol)
  n_init = _checked("--n-init", validation.check_positive_int, args.n_init, "n_init")
  chunk = _checked("--chunk-size", validation.check_optional_positive_int, args.chunk_size,
                   "chunk_size")
  impl = _checked("--impl", validation.resolve_impl, args.impl)
  _checked("--precision", validation.resolve_precision, args.precision)
  x = _load(args)
  _checked(None, validation.check_points, x, str(args.input), numeric=True)
  n, d = x.shape
  k = _checked("-k/--clusters", validation.check_k, args.clusters, n)
  target = validation.target_dtype(np.dtype(x.dtype), args.dtype)
  if args.init in ("k-means++", "random"):
    init = args.init
  else:
    try:
      init = np.load(args.init, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise CLIError(f"--init: not k-means++, random or a readable .npy file ({e})") from None
    _checked("--init", validation.check_init, init, k, d)
    _checked("--init", validation.check_finite, init, "init", dtype=np.float32)
    init = jnp.asarray(init, jnp.float32)
  # NaN/Inf, and values the cast to the clustering dtype would overflow, are
  # found before any work (in streaming mode at the cost of one read of the file).
  _checked(None, validation.check_finite, x, str(args.input), hint=None, dtype=target)
  stream_above = (device_memory_bytes() // 4 if args.stream_above == "auto"
                  else parse_size(args.stream_above))
  streaming = x.nbytes > stream_above

  pending: list[Path] = []
  try:
    key = jax.random.key(args.seed)
    common = dict(init=init, n_init=n_init, max_iter=max_iter, tol=tol, metric=args.metric,
                  impl=impl, precision=args.precision, verbose=args.verbose,
                  check_finite=False)
    labels_tmp = labels_mm = None
    t0 = time.perf_counter()
    if streaming:
      if labels_out is not None:
        labels_tmp = _new_tmp(labels_out, pending)
        labels_mm = np.lib.format.open_memmap(labels_tmp, mode="w+", dtype=np.int32,
                                              shape=(n,))
      # The host array goes as stored (a memmap stays a memmap); chunks are
      # cast on their way to the device.
      res = kmeans_streaming(key, x, k, chunk_size=chunk, labels_out=labels_mm, **common)
      centroids = np.asarray(res.centroids)
      labels = None
    else:
      xj = jnp.asarray(np.asarray(x).astype(target, copy=False))
      res = kmeans(key, xj, k, **common)
      res = jax.block_until_ready(res)
      centroids = np.asarray(res.centroids)
      labels = np.asarray(res.labels)
    seconds = time.perf_counter() - t0
    if centroids.dtype == jnp.bfloat16:  # portable .npy
      centroids = centroids.astype(np.float32)

    written = []
    renames = []
    if centroids_out is not None:
      renames.append((_save_tmp(centroids_out, centroids, pending), centroids_out))
      written.append(f"centroids -> {centroids_out} {list(centroids.shape)} {centroids.dtype}")
    if labels_out is not None:
      if labels_mm is not None:
        labels_mm.flush()
        del labels_mm
        renames.append((labels_tmp, labels_out))
      else:
        renames.append((_save_tmp(labels_out, labels.astype(np.int32), pending), labels_out))
      written.append(f"labels -> {labels_out} [{n}] int32")
    for tmp, final in renames:
      os.replace(tmp, final)
      pending.remove(tmp)
  finally:
    for tmp in pending:
      tmp.unlink(missing_ok=True)

  if not args.quiet:
    dev = jax.devices()[0]
    n_iter = int(res.n_iter)
    conv = "converged" if bool(res.converged) else "stopped at --max-iter"
    mode = (f"streamed in chunks ({'auto' if args.chunk_size is None else args.chunk_size}"
            " rows)") if streaming else "in device memory"
    lines = [
        f"{PROG}: k-means on {args.input}",
        f"  data      N={n}  D={d}  {x.dtype} -> {target}  ({_fmt_bytes(x.nbytes)}, {mode})",
        f"  clusters  K={k}  metric={args.metric}  init={args.init}  n_init={args.n_init}  "
        f"seed={args.seed}",
        f"  result    {n_iter} iterations ({conv}), inertia {float(res.inertia):.6g}",
        f"  time      {seconds:.3f} s (includes compilation)",
        f"  device    {dev.platform}:{dev.device_kind} (impl={impl})",
    ]
    lines += [f"  wrote     {w}" for w in written]
    print("\n".join(lines))
  return 0


def main(argv: list[str] | None = None) -> int:
  """Entry point; returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.input is None:
      from flashkmeans_jax.demo import run_demo
      run_demo(seed=args.seed)
      return 0
    return _cluster(args)
  except KeyboardInterrupt:
    print(f"{PROG}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001 - one line for the user, traceback with --debug
    if args.debug:
      raise
    msg = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, CLIError):
      msg = f"{msg} ({type(e).__name__})"
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 1
