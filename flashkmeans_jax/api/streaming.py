"""Out-of-core k-means: the points stay in host memory and stream to the device.

:func:`kmeans_streaming` runs the same Lloyd iteration as
:func:`flashkmeans_jax.kmeans` on data that does not fit on the device: a
NumPy array, an ``np.memmap`` or any reader with ``shape``, ``dtype`` and
NumPy-style row slicing (h5py, zarr). Every iteration is one pass over the
rows in chunks: transfer, ``assign``, merge the chunk's cluster statistics
into running totals; after the last chunk the new centroids are finalised.
The device holds the centroids, O(K * D) totals, a few chunks in flight and
as many chunks as ``device_budget_bytes`` allows, kept resident for the
whole run so that only the rest crosses the host link every iteration.

Overlap of transfer and compute, by ``method``:

* ``"device_put"``: a Python loop over chunks; worker threads read the next
  chunks and start their ``jax.device_put`` while the device computes on
  chunk ``i`` (JAX dispatch is asynchronous). ``"pinned"`` does the same but
  copies each chunk into a pinned-host JAX array first (the transfer is then
  a plain DMA); ``"pinned_cache"`` keeps those pinned copies for later
  iterations (host memory: one extra copy of the streamed part).
* ``"io_callback"``: one jit-compiled function per pass whose
  ``lax.fori_loop`` fetches every chunk with ``jax.experimental.io_callback``.
* ``"auto"`` (default): on a GPU, the first three compared by their
  estimated transfer time for this run, from host-to-device rates measured
  once per process (:func:`transfer_rates`; rule in docs/streaming.md);
  ``device_put`` elsewhere or when nothing is streamed.

Arguments are validated here, once, with the checks of
:func:`flashkmeans_jax.kmeans` (:mod:`flashkmeans_jax.core.validation`), so a
bad argument gets the same error in both; the run itself is
:mod:`flashkmeans_jax.drivers.streaming.driver`.

What is not supported: the driver is host Python, so these functions cannot
be wrapped in ``jit``, ``vmap`` or ``grad`` (JAX also refuses to ``vmap`` an
``io_callback`` inside a loop); there is no batch axis; labels and distances
come back as NumPy arrays.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from flashkmeans_jax.core import validation
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.drivers.streaming import driver
from flashkmeans_jax.drivers.streaming import host_seeding
from flashkmeans_jax.drivers.streaming import probe
from flashkmeans_jax.drivers.streaming.host_io import (HostSource, StreamingReadError,
                                                       pinned_bytes_held, release_kept_pinned)
from flashkmeans_jax.drivers.streaming.passes import StepOptions
from flashkmeans_jax.drivers.streaming.plan import METHODS, choose_method, plan_for
from flashkmeans_jax.drivers.streaming.sharded import row_ranges

__all__ = ["kmeans_streaming", "assign_streaming", "StreamingReadError", "METHODS",
           "release_pinned_memory", "pinned_memory_held", "transfer_rates"]


def release_pinned_memory() -> int:
  """Frees the pinned host copies kept by ``keep_pinned=True`` runs; returns
  how many bytes that was."""
  return release_kept_pinned()


def pinned_memory_held() -> int:
  """Bytes of pinned host memory the streaming calls hold right now (runs in
  progress and copies kept by ``keep_pinned=True``); 0 after every call
  without ``keep_pinned`` has returned, also after an interrupt."""
  return pinned_bytes_held()


def transfer_rates(device: Any = None) -> probe.Rates:
  """The host-to-device rates ``method="auto"`` measures on ``device``
  (default ``jax.devices()[0]``), once per process: pageable
  ``device_put``, NumPy into pinned memory, pinned to device (GB/s)."""
  return probe.measured(device or jax.devices()[0])


def _setup(src: HostSource, weighted: bool, chunk_size, budget, device, devices, method,
           passes: int, keep_pinned: bool, verbose: bool) -> driver.Setup:
  """Per-device plans over contiguous row ranges, and the transfer method
  (``auto``: chosen for the first device, see ``plan.choose_method``)."""
  devs = validation.check_devices(device, devices)
  n, d = src.shape
  plans = [plan_for((b - a, d), src.dtype.itemsize, weighted, chunk_size, budget, dev)
           for (a, b), dev in zip(row_ranges(n, len(devs)), devs)]
  row_bytes = d * src.dtype.itemsize + (4 if weighted else 0)
  choice = choose_method(method, plans[0], row_bytes, devs[0], passes=passes)
  return driver.Setup(devs, plans, choice.method, bool(keep_pinned),
                      choice.describe() if verbose else None)


def _check_out(out: Any, n: int, name: str, kind: str) -> None:
  """A caller-owned, writable host output array ``[n]`` of dtype kind ``kind``."""
  if out is None:
    return
  if not hasattr(out, "shape") or tuple(out.shape) != (n,):
    raise ValueError(f"{name} must be a host array of shape {(n,)}, got "
                     f"{getattr(out, 'shape', type(out).__name__)}")
  if np.dtype(out.dtype).kind != kind:
    raise TypeError(f"{name} must have dtype kind {kind!r}, got {out.dtype}")
  # Found now, not by the first write after the whole run (NumPy arrays and
  # memmaps; other writers report their own errors).
  flags = getattr(out, "flags", None)
  if flags is not None and not getattr(flags, "writeable", True):
    raise ValueError(f"{name} is read-only; pass a writable array (an np.memmap opened "
                     "with mode 'r+' or 'w+')")


def _in_memory(a: Any) -> bool:
  """A NumPy array whose values can be checked now without reading a file."""
  return isinstance(a, np.ndarray) and not isinstance(a, np.memmap)


def _host_points(host_x: Any) -> HostSource:
  src = HostSource(host_x, "host_x")
  validation.check_points(src, "host_x")
  return src


def _host_weights(weights: Any, n: int) -> HostSource | None:
  """Weights as a float32 source. In-memory arrays are checked in full by
  :func:`validation.check_weights` (in ``lloyd_options``); readers and
  memmaps only by shape and dtype here, their values chunk by chunk as they
  are read (a full check would be one more pass over the file)."""
  if weights is None:
    return None
  wsrc = HostSource(weights, "weights", dtype=np.float32)
  validation.check_weights(wsrc, n, check_values=False)
  return wsrc


def _budget(device_budget_bytes: Any) -> int | None:
  if device_budget_bytes is None:
    return None
  return validation.check_positive_int(device_budget_bytes, "device_budget_bytes", minimum=0)


def kmeans_streaming(key: jax.Array, host_x: Any, k: int, *, chunk_size: int | None = None,
                     device_budget_bytes: int | None = None,
                     init: str | Any = "k-means++", max_iter: int = 300, tol: float = 1e-4,
                     metric: str = "sqeuclidean", weights: Any = None, n_init: int = 1,
                     empty: str = "keep", impl: str | None = None, precision: Any = None,
                     verbose: bool = False, labels_out: Any = None, dist_out: Any = None,
                     method: str = "auto", init_sample_size: int | None = None,
                     check_finite: bool = True, config: Any = None,
                     device: Any = None, devices: Any = None,
                     keep_pinned: bool = False, n_local_trials: int | None = None,
                     oversampling_factor: float | None = None,
                     init_rounds: int | None = None) -> KMeansResult:
  """Exact k-means (Lloyd) on host data streamed to the device in chunks.

  Same iteration, stopping rule, restarts and final assignment as
  :func:`flashkmeans_jax.kmeans`; only the summation order of the cluster
  sums differs (chunk by chunk), so on data that fits both give the same
  labels and centroids equal up to float32 rounding.

  Args:
    key: ``jax.random`` key (seeding; restarts use
      ``jax.random.split(key, n_init)`` as ``kmeans`` does).
    host_x: ``[N, D]`` float16/bfloat16/float32 points in host memory: a NumPy
      array, an ``np.memmap`` or a reader with ``shape``, ``dtype`` and
      ``host_x[start:stop]`` (h5py/zarr datasets). Never copied as a whole.
    k: number of clusters, ``1 <= k <= N`` (an integer, NumPy ones included).
    chunk_size: rows per streamed chunk; default ``default_chunk_bytes``
      (1/64 of the free device memory, 64 MiB to 1 GiB) of rows.
      Any value works (the last chunk is shorter).
    device_budget_bytes: bytes of data kept resident on the device for the
      whole run (whole chunks, taken from the start of the array); only the
      remaining chunks are transferred each iteration. ``0``: pure streaming;
      ``>= N * D * itemsize``: all resident. Default: half of the device's
      free memory (``memory_stats``), 1 GiB where that is unknown. Streamed
      chunks in flight (about 4 chunks) come on top of the budget.
    init: ``"k-means++"`` (on a uniform random subsample of
      ``init_sample_size`` rows; the full data when N is at most that),
      ``"random"`` (k distinct rows drawn on the host, weighted when
      ``weights`` is given) or an array ``[k, D]`` used as given.
    max_iter, tol, metric, empty, impl, precision, config: as in ``kmeans``.
      ``empty="farthest"`` keeps the K farthest points seen during the pass.
    weights: optional ``float[N]`` host array/reader of weights >= 0 with a
      positive sum, streamed with the points. An in-memory NumPy array is
      checked up front as in ``kmeans``; a reader or memmap chunk by chunk as
      it is read, and its sum after the first pass.
    n_init: independent runs from different seeds (1 with an explicit
      ``init``), one after the other over the same resident chunks; the
      lowest inertia of the returned centroids wins. Each extra restart
      costs its Lloyd passes plus one pass for its inertia.
    verbose: a tqdm progress bar per pass (points per second, inertia and
      shift); nothing is printed otherwise.
    labels_out: optional caller-owned host ``int[N]`` array (e.g. a memmap)
      that receives the final labels (of the winning restart).
    dist_out: optional caller-owned host ``float[N]`` array that receives the
      final distances to the returned centroids.
    method: ``"auto"``, ``"device_put"``, ``"pinned"``, ``"pinned_cache"`` or
      ``"io_callback"`` (see the module docstring).
    init_sample_size: rows of the k-means++ / k-means|| subsample; default
      ``max(32 k, 65536)``.
    n_local_trials, oversampling_factor, init_rounds: the seeding options of
      ``kmeans`` (greedy k-means++'s candidates per step; k-means||' draws
      per round and rounds), applied on the subsample.
    check_finite: raise ``ValueError`` if ``init`` holds NaN/Inf (up front, as
      ``kmeans``), and after the first pass if any point does (found during
      that pass, so no extra read of the data).
    device: the device to run on (default ``jax.devices()[0]``).
    devices: instead of ``device``, several devices of this host: the rows
      split into one contiguous range per device, each device streams its
      own range (its own ``device_budget_bytes`` and chunks) and the
      statistics are merged with a ``psum`` after every pass; same result as
      one device up to the float32 rounding of the sums.
    keep_pinned: keep the ``pinned_cache`` copies after the call, so that a
      later call on the same host array(s), chunking and device starts with
      them (no page-locking); free them with :func:`release_pinned_memory`.
      The data must not change in between. Default: freed when the call
      returns (or is interrupted).

  Returns:
    :class:`KMeansResult` whose ``labels`` is a host NumPy ``int32[N]``
    array (``labels_out`` when given); ``centroids [k, D]`` (dtype of
    ``host_x``), ``inertia``, ``n_iter``, ``converged`` and
    ``inertia_history float32[max_iter]`` are JAX arrays as in ``kmeans``.

  Raises:
    StreamingReadError: a chunk could not be read (names the chunk and rows).
  """
  validation.check_key(key)
  src = _host_points(host_x)
  n = src.shape[0]
  wsrc = _host_weights(weights, n)
  # Host data are checked for NaN/Inf during the first pass, not here.
  opts, init_array = validation.lloyd_options(
      src, k, init=init, max_iter=max_iter, tol=tol, metric=metric,
      weights=weights if _in_memory(weights) else None, n_init=n_init, empty=empty,
      impl=impl, precision=precision, config=config, verbose=verbose,
      check_finite_values=False)
  if init_array is not None:
    # Checked either way, as kmeans does: a NaN starting centroid is never data.
    validation.check_finite(init_array, "init")
  chunk_size = validation.check_optional_positive_int(chunk_size, "chunk_size")
  sample = validation.check_optional_positive_int(init_sample_size, "init_sample_size")
  seed = validation.seeding_options(n_local_trials=n_local_trials,
                                    oversampling_factor=oversampling_factor,
                                    init_rounds=init_rounds)
  _check_out(labels_out, n, "labels_out", "i")
  _check_out(dist_out, n, "dist_out", "f")
  passes = opts.n_init * opts.max_iter + (opts.n_init if opts.n_init > 1 else 0) + 1
  setup = _setup(src, wsrc is not None, chunk_size, _budget(device_budget_bytes), device,
                 devices, method, passes, keep_pinned, opts.verbose)
  result = driver.run_kmeans(
      key, src, wsrc, setup, opts, init_array,
      sample_size=sample or host_seeding.default_sample_size(opts.k),
      check_finite=bool(check_finite), labels_out=labels_out, dist_out=dist_out, seed=seed)
  if check_finite and not np.isfinite(float(result.inertia)):
    # NaN/Inf rows were refused after the first pass, so a non-finite
    # inertia of finite data is float32 overflow of the distances.
    raise _overflow_error()
  return result


def _overflow_error() -> ValueError:
  return ValueError(
      "host_x holds rows whose squared distances overflow float32 (row norms near "
      "9.2e18 or above, or an inertia past 3.4e38); rescale the data")


def assign_streaming(host_x: Any, centroids: Any, *, chunk_size: int | None = None,
                     device_budget_bytes: int | None = 0, metric: str = "sqeuclidean",
                     impl: str | None = None, precision: Any = None,
                     labels_out: Any = None, dist_out: Any = None, method: str = "auto",
                     verbose: bool = False, config: Any = None,
                     device: Any = None, devices: Any = None,
                     check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Nearest centroid of every host row, streamed in chunks.

  Args:
    host_x: ``[N, D]`` host array or reader (see :func:`kmeans_streaming`).
    centroids: ``[K, D]`` (any array).
    device_budget_bytes: default ``0`` (one pass: nothing gains from staying
      resident).
    labels_out, dist_out: optional caller-owned host arrays ``int[N]`` and
      ``float[N]`` to write into.
    check_finite: raise ``ValueError`` when a row holds NaN/Inf (found in
      the pass; ``labels_out``/``dist_out`` are then left untouched). With
      ``False`` such rows get label 0 and distance NaN, as in
      :func:`flashkmeans_jax.assign`.
    The rest as in :func:`kmeans_streaming` and :func:`flashkmeans_jax.assign`.

  Returns:
    ``labels int32[N]`` and ``dist float32[N]`` as host NumPy arrays (the
    given output arrays when passed).
  """
  src = _host_points(host_x)
  n, d = src.shape
  validation.check_centroids(centroids, d)
  validation.check_finite(centroids, "centroids")
  k = int(centroids.shape[0])
  metric = validation.check_metric(metric)
  impl = validation.resolve_impl(impl, n, k)
  precision = validation.resolve_precision(precision)
  chunk_size = validation.check_optional_positive_int(chunk_size, "chunk_size")
  _check_out(labels_out, n, "labels_out", "i")
  _check_out(dist_out, n, "dist_out", "f")
  setup = _setup(src, False, chunk_size, _budget(device_budget_bytes), device, devices,
                 method, 1, False, bool(verbose))
  opts = StepOptions(k, metric, impl, precision, config, "keep", min(k, n))
  return driver.run_assign(src, setup, centroids, opts, verbose=bool(verbose),
                           labels_out=labels_out, dist_out=dist_out,
                           check_finite=bool(check_finite))
