"""Out-of-core k-means (kmeans_streaming / assign_streaming) on CPU with XLA.

The reference is always the in-memory ``kmeans``/``assign`` on the same data
and start: streaming changes only the order of the float32 cluster sums, so
labels must be equal and centroids equal up to rounding.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flashkmeans_jax import assign, assign_streaming, kmeans, kmeans_streaming
from flashkmeans_jax.drivers.streaming import host_seeding, passes, plan
from flashkmeans_jax.drivers.streaming.host_io import HostSource, StreamingReadError
from flashkmeans_jax.drivers.streaming.progress import Progress
from flashkmeans_jax.drivers.streaming.streamer import Streamer
from tests import helpers

N, D, K = 1000, 8, 5
CHUNK = 300  # does not divide N: three full chunks and a tail of 100 rows
ROW = D * 4


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x, _, _ = helpers.make_blobs(rng, N, D, K, spread=5.0, std=1.0)
  init = x[rng.choice(N, K, replace=False)].copy()
  return x, init


def _reference(x, init, **kw):
  return kmeans(jax.random.key(0), jnp.asarray(x), K, init=jnp.asarray(init), impl="xla", **kw)


def _stream(x, init, *, key=None, **kw):
  kw.setdefault("chunk_size", CHUNK)
  kw.setdefault("impl", "xla")
  return kmeans_streaming(jax.random.key(0) if key is None else key, x, K, init=init, **kw)


def _assert_same(got, ref, rtol=1e-5):
  assert isinstance(got.labels, np.ndarray) and got.labels.dtype == np.int32
  np.testing.assert_array_equal(got.labels, np.asarray(ref.labels))
  np.testing.assert_allclose(np.asarray(got.centroids, np.float64),
                             np.asarray(ref.centroids, np.float64), rtol=rtol, atol=1e-5)
  assert int(got.n_iter) == int(ref.n_iter)
  assert bool(got.converged) == bool(ref.converged)
  np.testing.assert_allclose(float(got.inertia), float(ref.inertia), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got.inertia_history), np.asarray(ref.inertia_history),
                             rtol=1e-5)


# Budgets: nothing resident, two of the three full chunks, everything.
BUDGETS = {"stream": 0, "partial": 2 * CHUNK * ROW, "all": N * ROW}


@pytest.mark.parametrize("chunk,budget,method", [
    (CHUNK, "stream", "device_put"), (CHUNK, "partial", "device_put"),
    (CHUNK, "all", "device_put"), (128, "partial", "device_put"), (N, "stream", "device_put"),
    (CHUNK, "all", "io_callback")])  # the resident tail in the compiled pass
def test_matches_in_memory(data, chunk, budget, method):
  x, init = data
  got = _stream(x, init, chunk_size=chunk, device_budget_bytes=BUDGETS[budget], method=method)
  _assert_same(got, _reference(x, init))


@pytest.mark.parametrize("method", ["io_callback", "pinned", "pinned_cache"])
def test_methods_agree(data, method):
  """Every method, with resident and streamed chunks and a streamed tail."""
  x, init = data
  w = np.random.default_rng(1).uniform(0.0, 2.0, N).astype(np.float32)
  w[::7] = 0.0
  base = _stream(x, init, weights=w, device_budget_bytes=BUDGETS["partial"],
                 method="device_put")
  got = _stream(x, init, weights=w, device_budget_bytes=BUDGETS["partial"], method=method)
  np.testing.assert_array_equal(got.labels, base.labels)
  np.testing.assert_allclose(np.asarray(got.centroids), np.asarray(base.centroids), rtol=1e-6)
  assert int(got.n_iter) == int(base.n_iter)
  _assert_same(got, _reference(x, init, weights=jnp.asarray(w)))


def test_weights_match_in_memory(data):
  x, init = data
  w = np.random.default_rng(2).exponential(1.0, N).astype(np.float32)
  got = _stream(x, init, weights=w, device_budget_bytes=0)
  ref = _reference(x, init, weights=jnp.asarray(w))
  _assert_same(got, ref)
  # inertia is the weighted sum of final distances
  d = helpers.np_distances(x, np.asarray(got.centroids), "sqeuclidean")
  np.testing.assert_allclose(float(got.inertia),
                             np.sum(w * d[np.arange(N), got.labels]), rtol=1e-4)


def test_cosine_metric(data):
  x, init = data
  got = _stream(x, init, metric="cosine", device_budget_bytes=0, max_iter=5)
  _assert_same(got, _reference(x, init, metric="cosine", max_iter=5))


@pytest.mark.parametrize("precision", ["F16_F16_F32", "BF16_BF16_F32"])
def test_half_operand_precisions_match_in_memory(data, precision):
  # float32 data on 16-bit operands: the precision reaches every chunk's
  # assignment, so streaming and in-memory runs agree as for TF32.
  x, init = data
  got = _stream(x * 1e6, init * 1e6, precision=precision,
                device_budget_bytes=BUDGETS["partial"])
  _assert_same(got, _reference(x * 1e6, init * 1e6, precision=precision))


def test_float16_host_data(data):
  x, init = data
  x16 = x.astype(np.float16)
  got = _stream(x16, init, device_budget_bytes=BUDGETS["partial"] // 2)
  ref = _reference(x16, init)
  assert got.centroids.dtype == jnp.float16
  np.testing.assert_array_equal(got.labels, np.asarray(ref.labels))
  np.testing.assert_allclose(np.asarray(got.centroids, np.float32),
                             np.asarray(ref.centroids, np.float32), rtol=1e-3, atol=1e-3)


def test_empty_farthest_matches_in_memory(data):
  x, init = data
  bad = init.copy()
  bad[1] = 1e3  # far from every point: empty in the first iteration
  got = _stream(x, bad, empty="farthest", device_budget_bytes=0)
  ref = _reference(x, bad, empty="farthest")
  _assert_same(got, ref)
  assert np.all(np.abs(np.asarray(got.centroids)) < 1e2)


def test_kmeans_plus_plus_on_full_data_equals_in_memory(data):
  """N below the subsample size: k-means++ sees all rows, as in memory."""
  x, _ = data
  key = jax.random.key(3)
  got = kmeans_streaming(key, x, K, chunk_size=CHUNK, device_budget_bytes=0, impl="xla")
  ref = kmeans(key, jnp.asarray(x), K, impl="xla")
  _assert_same(got, ref)
  # Blobs are well separated: a 200-row k-means++ start finds the same inertia.
  sub = kmeans_streaming(key, x, K, chunk_size=CHUNK, device_budget_bytes=0,
                         init_sample_size=200, impl="xla")
  np.testing.assert_allclose(float(sub.inertia), float(ref.inertia), rtol=1e-3)


def test_random_init_picks_distinct_rows(data):
  x, _ = data
  w = np.ones(N, np.float32)
  w[N // 2:] = 0.0  # weighted draw must stay in the first half
  src = HostSource(x, "host_x")
  p = plan.plan_chunks(N, D, ROW, CHUNK, 0)
  for weights, limit in [(None, N), (w, N // 2)]:
    wsrc = None if weights is None else HostSource(weights, "weights", dtype=np.float32)
    c0 = np.asarray(host_seeding.initial_centroids(
        jax.random.key(4), src, wsrc, p, 50, "random", "sqeuclidean", 10**6,
        jax.devices()[0]))
    hits = [np.flatnonzero((x == row).all(1)) for row in c0]
    assert all(len(h) == 1 for h in hits)
    rows = np.concatenate(hits)
    assert len(set(rows.tolist())) == 50 and rows.max() < limit


def test_memmap_and_reader_input_and_labels_out(data, tmp_path):
  x, init = data
  path = tmp_path / "x.f32"
  x.tofile(path)
  mm = np.memmap(path, np.float32, mode="r", shape=(N, D))
  out = np.memmap(tmp_path / "labels.i32", np.int32, mode="w+", shape=(N,))
  got = _stream(mm, init, device_budget_bytes=CHUNK * ROW, labels_out=out)
  assert got.labels is out
  _assert_same(got, _reference(x, init))
  out.flush()
  np.testing.assert_array_equal(np.fromfile(tmp_path / "labels.i32", np.int32), got.labels)
  reader = _Reader(x)  # a generic (h5py/zarr-like) reader
  _assert_same(_stream(reader, init, device_budget_bytes=CHUNK * ROW), _reference(x, init))
  assert reader.calls > 0


@pytest.mark.parametrize("method", ["device_put", "io_callback"])
def test_truncated_memmap_names_the_chunk(data, tmp_path, method):
  x, init = data
  path = tmp_path / "x.f32"
  x.tofile(path)
  mm = np.memmap(path, np.float32, mode="r", shape=(N, D))
  os.truncate(path, (2 * CHUNK + 10) * ROW)  # chunk 2 (rows 600:900) is cut short
  with pytest.raises(StreamingReadError, match=r"chunk 2 \(rows 600:900\).*truncated") as e:
    _stream(mm, init, device_budget_bytes=0, method=method)
  assert (e.value.chunk, e.value.start, e.value.stop) == (2, 600, 900)


class _Reader:
  """A generic reader (h5py/zarr-like): shape, dtype and slicing."""

  def __init__(self, x, fail_from=None, short=False):
    self.x, self.fail_from, self.short = x, fail_from, short
    self.shape, self.dtype = x.shape, x.dtype
    self.calls = 0

  def __getitem__(self, idx):
    self.calls += 1
    if isinstance(idx, slice) and self.fail_from is not None and idx.stop > self.fail_from:
      raise OSError("disk on fire")
    out = self.x[idx]
    return out[:-1] if self.short and isinstance(idx, slice) and idx.start >= CHUNK else out


@pytest.mark.parametrize("method", ["device_put", "io_callback"])
def test_failing_reader_raises_with_chunk(data, method):
  x, init = data
  with pytest.raises(StreamingReadError, match=r"chunk 3 \(rows 900:1000\).*disk on fire") as e:
    _stream(_Reader(x, fail_from=950), init, device_budget_bytes=0, method=method)
  assert isinstance(e.value.__cause__, OSError)
  with pytest.raises(StreamingReadError, match=r"chunk 1 \(rows 300:600\).*shape \(299, 8\)"):
    _stream(_Reader(x, short=True), init, device_budget_bytes=0, method=method)


class _CountingReader(_Reader):
  """Counts slice reads per chunk start; ``fail_at=(start, n)`` fails the
  n-th read of the chunk starting at row ``start`` (once)."""

  def __init__(self, x, fail_at=None):
    super().__init__(x)
    self.reads, self.fail_at = {}, fail_at

  def __getitem__(self, idx):
    if isinstance(idx, slice):
      self.reads[idx.start] = self.reads.get(idx.start, 0) + 1
      if self.fail_at == (idx.start, self.reads[idx.start]):
        raise OSError("transient")
    return super().__getitem__(idx)


def test_prefetch_spans_passes_and_stops_after_the_final_one(data):
  # One prefetcher serves all passes (the next pass's chunks load while this
  # one ends); it must not read anything past the final assignment pass.
  x, init = data
  reader = _CountingReader(x)
  got = _stream(reader, init, device_budget_bytes=0, method="device_put", max_iter=3, tol=0.0)
  _assert_same(got, _reference(x, init, max_iter=3, tol=0.0))
  assert reader.reads == {0: 4, 300: 4, 600: 4, 900: 4}  # 3 Lloyd passes + the final one


def test_pass_after_a_failed_pass_starts_from_its_first_chunk(data):
  x, init = data
  reader = _CountingReader(x, fail_at=(300, 2))  # chunk 1 in the second pass
  src = HostSource(reader, "host_x")
  opts = passes.StepOptions(K, "sqeuclidean", "xla", None, None, "keep", K)
  c = jnp.asarray(init)
  new = lambda: passes.lloyd_totals(opts, D, moments=False)  # noqa: E731
  with Streamer(src, None, plan.plan_chunks(N, D, ROW, CHUNK, 0), opts, "device_put",
                jax.devices()[0], Progress(False, N)) as st:
    first = st.run_pass(new(), c)
    with pytest.raises(StreamingReadError, match=r"chunk 1 \(rows 300:600\).*transient"):
      st.run_pass(new(), c)
    again = st.run_pass(new(), c, final=True)
  for a, b in zip(again.clusters, first.clusters):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same chunks, same order


def test_progress_bar_only_when_verbose(data, capfd):
  x, init = data
  res = _stream(x, init, device_budget_bytes=0, max_iter=3)
  assert capfd.readouterr() == ("", "") and int(res.n_iter) == 3
  _stream(x, init, device_budget_bytes=0, max_iter=3, verbose=True)
  out, err = capfd.readouterr()
  assert out == ""
  assert "iter 0" in err and "iter 2" in err and "assign" in err
  assert re.search(r"pt/s", err)
  assert "1.00k/1.00k" in err  # every row of the pass counted


@pytest.mark.parametrize("method", ["device_put", "io_callback"])
def test_assign_streaming(data, method):
  x, init = data
  lab_out = np.full(N, -1, np.int64)
  dist_out = np.zeros(N, np.float64)
  labels, dist = assign_streaming(x, init, chunk_size=CHUNK, impl="xla", method=method,
                                  device_budget_bytes=CHUNK * ROW, labels_out=lab_out,
                                  dist_out=dist_out)
  assert labels is lab_out and dist is dist_out
  ref_l, ref_d = assign(jnp.asarray(x), jnp.asarray(init), impl="xla")
  np.testing.assert_array_equal(labels, np.asarray(ref_l))
  # same labels; distances differ only by float32 rounding of the expansion
  np.testing.assert_allclose(dist, np.asarray(ref_d), rtol=1e-5, atol=1e-4)
  helpers.assert_labels_match(x, init, labels, "sqeuclidean")


# --------------------------------------------------------------------------
# Restarts and validation shared with kmeans


def test_n_init_keeps_the_lowest_inertia(data):
  # n_init restarts use jax.random.split(key, n_init), as kmeans does: each
  # equals a separate single run from its split key, and the winner (lowest
  # inertia, first on ties) is returned with its own labels and distances.
  x, _ = data
  key = jax.random.key(11)
  kw = dict(max_iter=4, device_budget_bytes=BUDGETS["partial"])
  singles = [_stream(x, "random", key=sub, **kw) for sub in jax.random.split(key, 3)]
  inertias = [float(r.inertia) for r in singles]
  assert np.argmin(inertias) > 0  # the restarts differ and the first does not win
  win = singles[int(np.argmin(inertias))]
  labels_out, dist_out = np.full(N, -1, np.int32), np.full(N, np.nan, np.float32)
  got = _stream(x, "random", key=key, n_init=3, labels_out=labels_out, dist_out=dist_out, **kw)
  assert got.labels is labels_out
  assert float(got.inertia) == min(inertias)
  np.testing.assert_array_equal(np.asarray(got.centroids), np.asarray(win.centroids))
  np.testing.assert_array_equal(labels_out, win.labels)
  assert int(got.n_iter) == int(win.n_iter)
  np.testing.assert_array_equal(np.asarray(got.inertia_history), win.inertia_history)
  d = helpers.np_distances(x, np.asarray(got.centroids), "sqeuclidean")[np.arange(N), labels_out]
  np.testing.assert_allclose(dist_out, d, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(float(got.inertia), d.sum(), rtol=1e-5)


def test_same_run_for_numpy_k_and_n_init_with_an_init_array(data):
  # An explicit start leaves nothing to restart (n_init becomes 1, as in
  # kmeans), and k may be a NumPy integer.
  x, init = data
  one = _stream(x, init, device_budget_bytes=0, max_iter=3)
  for got in (_stream(x, init, device_budget_bytes=0, max_iter=3, n_init=4),
              kmeans_streaming(jax.random.key(0), x, np.int64(K), init=init, chunk_size=CHUNK,
                               impl="xla", device_budget_bytes=0, max_iter=3)):
    np.testing.assert_array_equal(got.labels, one.labels)
    np.testing.assert_array_equal(np.asarray(got.centroids), np.asarray(one.centroids))


def _message(fn):
  """``(type, message)`` of what ``fn()`` raises, ``None`` if it returns."""
  try:
    fn()
  except Exception as e:  # noqa: BLE001 -- the error is what is compared
    return type(e), str(e)
  return None


def test_nan_init_raises_like_kmeans_and_nan_points_after_one_pass(data):
  x, init = data
  bad = init.copy()
  bad[2, 1] = np.nan
  ref = _message(lambda: kmeans(jax.random.key(0), jnp.asarray(x), K, init=jnp.asarray(bad)))
  assert ref[0] is ValueError and _message(lambda: _stream(x, bad)) == ref
  assert _message(lambda: _stream(x, jnp.asarray(bad))) == ref
  ref = _message(lambda: kmeans(jax.random.key(0), jnp.asarray(x), K, init=jnp.asarray(bad),
                                max_iter=1, check_finite=False))
  assert _message(lambda: _stream(x, bad, max_iter=1, check_finite=False)) == ref
  # NaN points are found during the first pass, with kmeans' message.
  bad_x = x.copy()
  bad_x[777, 3] = np.nan
  ref = _message(lambda: kmeans(jax.random.key(0), jnp.asarray(bad_x), K, init=jnp.asarray(init)))
  got = _message(lambda: _stream(bad_x, init, device_budget_bytes=0))
  assert got == (ref[0], ref[1].replace("x contains", "host_x contains", 1))


def test_all_zero_weights_raise_like_kmeans(data, tmp_path):
  x, init = data
  w = np.zeros(N, np.float32)
  ref = _message(lambda: kmeans(jax.random.key(0), jnp.asarray(x), K, init=jnp.asarray(init),
                                weights=jnp.asarray(w)))
  assert ref[0] is ValueError and _message(lambda: _stream(x, init, weights=w)) == ref  # at once
  # Readers and memmaps are checked as they stream: after the first pass.
  w.tofile(tmp_path / "w.f32")
  mm = np.memmap(tmp_path / "w.f32", np.float32, mode="r", shape=(N,))
  for weights in (_Reader(w), mm):
    assert _message(lambda: _stream(x, init, weights=weights, device_budget_bytes=0)) == ref


def test_bad_arguments_match_kmeans(data):
  # The checks kmeans_streaming shares with kmeans raise the same error.
  x, init = data
  for kw in (dict(max_iter=0), dict(tol=-1.0), dict(metric="l1"), dict(empty="drop"),
             dict(n_init=0), dict(impl="cuda"), dict(init="kmeans")):
    ref = _message(lambda: kmeans(jax.random.key(0), jnp.asarray(x), K, **kw))
    assert _message(lambda: kmeans_streaming(jax.random.key(0), x, K, **kw)) == ref, kw
  for k in (0, N + 1, 2.0):
    ref = _message(lambda: kmeans(jax.random.key(0), jnp.asarray(x), k))
    assert _message(lambda: kmeans_streaming(jax.random.key(0), x, k)) == ref, k
  for key, kw in ((0, {}), (jax.random.key(0), dict(init=init[:, :3]))):
    ref = _message(lambda: kmeans(key, jnp.asarray(x), K, **kw))
    assert _message(lambda: kmeans_streaming(key, x, K, **kw)) == ref


def test_bad_streaming_arguments(data):
  x, init = data
  with pytest.raises(ValueError, match="labels_out"):
    _stream(x, init, labels_out=np.zeros(N - 1, np.int32))
  with pytest.raises(ValueError, match="method"):
    _stream(x, init, method="nope")
  with pytest.raises(ValueError, match="device_budget_bytes"):
    _stream(x, init, device_budget_bytes=-1)
  with pytest.raises(TypeError, match="host_x"):
    _stream([[1.0]], init)
  with pytest.raises(ValueError, match="weights"):
    _stream(x, init, weights=np.ones(N + 1, np.float32))
  w = np.ones(N, np.float32)
  w[650] = -1.0  # a reader is checked chunk by chunk, as it is read
  with pytest.raises(ValueError, match=r"weights in chunk 2 \(rows 600:900\)"):
    _stream(x, init, weights=_Reader(w), device_budget_bytes=0)
