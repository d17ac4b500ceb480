"""Whole streaming calls on the CPU: the folded labelling pass, interrupts,
pinned memory kept or freed, several devices, and the progress display.

Shapes are test_streaming.py's (N=1000, D=8, K=5, chunks of 300 rows), so
the compiled chunk steps are shared with it.
"""

import threading
import time

import jax
import numpy as np
import pytest

from flashkmeans_jax import kmeans_streaming
from flashkmeans_jax.api import streaming as streaming_api
from flashkmeans_jax.drivers.streaming import driver, plan
from flashkmeans_jax.drivers.streaming.progress import Progress
from tests import cases, helpers

N, D, K = 1000, 8, 5
CHUNK = 300
ROW = D * 4


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x, _, _ = helpers.make_blobs(rng, N, D, K, spread=5.0, std=1.0)
  init = x[rng.choice(N, K, replace=False)].copy()
  return x, init


class Reader:
  """A reader (not a NumPy array) counting the rows it was asked for."""

  def __init__(self, x):
    self.x, self.shape, self.dtype = x, x.shape, x.dtype
    self.rows = 0

  def __getitem__(self, idx):
    if isinstance(idx, slice):
      self.rows += idx.stop - idx.start
    return self.x[idx]


def _stream(x, init, **kw):
  kw.setdefault("chunk_size", CHUNK)
  kw.setdefault("impl", "xla")
  return kmeans_streaming(jax.random.key(0), x, K, init=init, **kw)


def test_final_pass_folded_into_a_converged_last_iteration(data, monkeypatch):
  """With tol=0 the run stops when the centroids no longer change, so the
  last Lloyd pass already labelled every point for the returned centroids:
  no labelling pass is read, and labels, distances and inertia are those of
  the run that makes one (and of kmeans)."""
  x, init = data
  dists, out = [], {}
  log = _pass_names(monkeypatch)
  for fold in (True, False):
    if not fold:
      monkeypatch.setattr(driver, "LABEL_KEEP_FALLBACK_BYTES", 0)
    first = len(log)
    dist = np.empty((N,), np.float32)
    res = _stream(x, init, tol=0.0, device_budget_bytes=CHUNK * ROW, dist_out=dist)
    out[fold] = (res, log[first:])
    dists.append(dist)
  (a, names_a), (b, names_b) = out[True], out[False]
  assert bool(a.converged) and int(a.n_iter) == int(b.n_iter) < 300
  assert "assign" not in names_a and names_b[-1] == "assign"  # one pass fewer
  np.testing.assert_array_equal(a.labels, b.labels)
  helpers.assert_labels_match(x, np.asarray(a.centroids), a.labels, "sqeuclidean")
  np.testing.assert_array_equal(dists[0], dists[1])
  assert float(a.inertia) == float(b.inertia)
  np.testing.assert_array_equal(np.asarray(a.centroids), np.asarray(b.centroids))


def _pass_names(monkeypatch):
  """The names of the passes a run starts, in order (a spy on Progress)."""
  names = []
  original = Progress.start

  def start(self, desc, counts=True):
    names.append(desc)
    original(self, desc, counts)

  monkeypatch.setattr(Progress, "start", start)
  return names


@pytest.mark.parametrize("tol, max_iter", [(0.0, 2), (10.0, 300)])
def test_no_fold_when_the_centroids_moved(data, monkeypatch, tol, max_iter):
  """A run stopped by max_iter, or converged under a loose tol, whose
  centroids still moved in the last pass: the labels must be those of the
  returned centroids, so the labelling pass runs."""
  x, init = data
  names = _pass_names(monkeypatch)
  res = _stream(x, init, tol=tol, max_iter=max_iter, device_budget_bytes=0)
  assert bool(res.converged) == (tol > 0) and names[-1] == "assign"
  helpers.assert_labels_match(x, np.asarray(res.centroids), res.labels, "sqeuclidean")


def _interrupt_at(monkeypatch, pass_name: str, update: int):
  """Ctrl-C as the main thread sees it: KeyboardInterrupt raised from the
  ``update``-th progress update (one per chunk, after its step is
  dispatched) of the first pass whose name ends with ``pass_name``."""
  state = {"pass": "", "updates": 0, "rows": 0}
  start, original = Progress.start, Progress.update

  def on_start(self, desc, counts=True):
    state["pass"], state["updates"] = desc, 0
    start(self, desc, counts)

  def on_update(self, rows):
    state["updates"] += 1
    if state["pass"].endswith(pass_name) and state["updates"] == update:
      raise KeyboardInterrupt
    state["rows"] += rows
    original(self, rows)

  monkeypatch.setattr(Progress, "start", on_start)
  monkeypatch.setattr(Progress, "update", on_update)
  return state


@pytest.mark.parametrize("where, devices", [
    # In the labelling pass once two chunks' labels came back to the host
    # (max_iter=2, so the third pass); in the first Lloyd pass; in the
    # labelling pass over four devices (test_several_devices_match_one's
    # shapes and weights, so the compiled steps are shared).
    (("assign", 3), 1), (("iter 0", 2), 1), (("assign", 2), 4)])
def test_interrupt_frees_pinned_memory_and_leaves_labels_out_untouched(
    data, monkeypatch, where, devices):
  x, init = data
  r = Reader(x)
  labels = np.full((N,), -7, np.int32)
  dist = np.full((N,), -1.0, np.float32)
  threads = threading.active_count()
  state = _interrupt_at(monkeypatch, *where)
  chunk = CHUNK if devices == 1 else 125
  kw = dict(device_budget_bytes=CHUNK * ROW)
  if devices > 1:
    kw = dict(devices=jax.devices()[:devices], chunk_size=chunk,
              weights=np.ones((N,), np.float32), device_budget_bytes=chunk * (ROW + 4))
  with pytest.raises(KeyboardInterrupt):
    _stream(r, init, tol=0.0, max_iter=2, method="pinned_cache", labels_out=labels,
            dist_out=dist, **kw)
  assert np.all(labels == -7) and np.all(dist == -1.0)  # untouched, not half-written
  assert streaming_api.pinned_memory_held() == 0
  assert threading.active_count() <= threads  # no prefetch thread left running
  # Stopped within a chunk: what was read is what was processed plus the
  # chunk being stopped and the chunks already being prefetched (per device).
  assert r.rows <= state["rows"] + chunk + devices * plan.PREFETCH_DEPTH * chunk
  monkeypatch.undo()
  res = _stream(x, init, tol=0.0, max_iter=2, labels_out=labels, dist_out=dist)
  assert res.labels is labels and np.all(labels >= 0) and np.all(dist >= 0)  # complete


def test_pinned_cache_kept_across_calls_only_when_asked(data):
  x, init = data
  r = Reader(x)
  kw = dict(tol=0.0, max_iter=2, device_budget_bytes=0, method="pinned_cache")
  if not plan.pinned_available(jax.devices()[0]):
    pytest.skip("this jaxlib's CPU backend has no pinned host memory")
  first = _stream(r, init, **kw)
  assert streaming_api.pinned_memory_held() == 0  # freed on return by default
  assert r.rows == N  # cached after the first pass: one read per chunk
  _stream(r, init, keep_pinned=True, **kw)
  assert streaming_api.pinned_memory_held() == N * ROW
  rows = r.rows
  again = _stream(r, init, keep_pinned=True, **kw)
  assert r.rows == rows  # the second call read nothing: it started from the kept copies
  np.testing.assert_array_equal(again.labels, first.labels)
  _stream(Reader(x), init, **kw)  # another array: the kept copies do not apply
  assert streaming_api.release_pinned_memory() == N * ROW
  assert streaming_api.pinned_memory_held() == 0


def _centroid_bound(x, labels, w, c):
  """|c_a - c_b| for two float32 runs with the same labels that sum in
  different orders: each cluster sum S and weight W is within gamma_n of
  the exact one relative to sum |w x| and sum w (any order, Higham 4.3), so
  c = S / W differs by at most 2 gamma_n (mean |x| + |c|) + 2 u |c|, times
  the shared SAFETY."""
  xf = np.asarray(x, np.float64)
  out = np.zeros((K, D))
  for k in range(K):
    m = labels == k
    n_k = int(m.sum())
    wk = w[m].astype(np.float64)
    mean_abs = (wk[:, None] * np.abs(xf[m])).sum(0) / wk.sum()
    out[k] = 2 * cases.gamma(n_k) * (mean_abs + np.abs(c[k])) + 2 * cases.U32 * np.abs(c[k])
  return cases.SAFETY * out


def test_several_devices_match_one(data):
  """Each of 4 devices streams its own 250 rows (one resident chunk of 125,
  one streamed) and the statistics and moments are merged by collectives:
  same labels, iterations and convergence as one device, centroids within
  the float32 rounding of a different order of the sums. (empty="farthest"
  merges its candidates with the sharded driver's combine_farthest, tested
  in test_distributed; here it would double the compile time.)"""
  x, init = data
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices (conftest forces 8 host devices)")
  w = np.random.default_rng(3).uniform(0.5, 2.0, N).astype(np.float32)
  kw = dict(weights=w, device_budget_bytes=125 * (ROW + 4), max_iter=20, chunk_size=125)
  one = _stream(x, init, **kw)
  four = _stream(x, init, devices=jax.devices()[:4], **kw)
  np.testing.assert_array_equal(four.labels, one.labels)
  assert int(four.n_iter) == int(one.n_iter) and bool(four.converged) == bool(one.converged)
  c1 = np.asarray(one.centroids, np.float64)
  diff = np.abs(np.asarray(four.centroids, np.float64) - c1)
  assert np.all(diff <= _centroid_bound(x, one.labels, w, c1))
  np.testing.assert_allclose(float(four.inertia), float(one.inertia), rtol=4 * N * cases.U32)
  assert four.centroids.devices() == {jax.devices()[0]}


def test_devices_argument_checks(data):
  x, init = data
  with pytest.raises(ValueError, match="either device= or devices="):
    _stream(x, init, device=jax.devices()[0], devices=jax.devices()[:2])
  with pytest.raises(ValueError, match="repeat"):
    _stream(x, init, devices=[jax.devices()[0]] * 2)
  with pytest.raises(TypeError, match="devices must be"):
    _stream(x, init, devices=[])


def test_progress_counts_passes_and_shows_the_rate(data, capfd):
  x, init = data
  _stream(x, init, tol=0.0, max_iter=2, device_budget_bytes=0, verbose=True)
  err = capfd.readouterr().err
  assert "method=device_put" in err  # the choice and why
  assert "pass 1/3 iter 0" in err and "pass 2/3 iter 1" in err and "pass 3/3 assign" in err
  assert "h2d=" in err and "GB/s" in err


def test_assign_streaming_over_two_devices_is_exact(data):
  """Labels and distances are per row: over two devices they are the same
  bits as over one."""
  from flashkmeans_jax import assign_streaming
  x, init = data
  one = assign_streaming(x, init, chunk_size=CHUNK, impl="xla")
  two = assign_streaming(x, init, chunk_size=CHUNK, impl="xla", devices=jax.devices()[:2])
  np.testing.assert_array_equal(one[0], two[0])
  np.testing.assert_array_equal(one[1], two[1])


def test_ctrl_c_stops_a_compiled_io_callback_pass_within_a_chunk(data):
  """A real SIGINT while the io_callback program runs (the main thread
  waits on XLA): the main thread must take the KeyboardInterrupt at once
  and the program stop reading, not only after the whole pass."""
  import os
  import signal
  x, init = data

  class Interrupting(Reader):
    def __getitem__(self, idx):
      if isinstance(idx, slice) and idx.start == 200:  # the third of 10 chunks
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the main thread handles it meanwhile
      return super().__getitem__(idx)

  r = Interrupting(x)
  labels = np.full((N,), -7, np.int32)
  with pytest.raises(KeyboardInterrupt):
    _stream(r, init, chunk_size=100, device_budget_bytes=0, method="io_callback",
            labels_out=labels, max_iter=2)
  assert r.rows <= 5 * 100  # chunks 0-2, and at most two read ahead meanwhile
  assert np.all(labels == -7)
