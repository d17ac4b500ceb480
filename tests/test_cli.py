"""The command-line tool, run in-process on temporary files (and once as a subprocess)."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax import cli
from tests.test_order import check_order

ROOT = Path(__file__).resolve().parents[1]
# The CLI switches on the persistent compilation cache: tests leave the
# user's alone (see test_estimator.py; test_compile_cache.py checks the cache).
os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(4, 6)) * 5
  return (centers[rng.integers(0, 4, 400)] + rng.normal(size=(400, 6))).astype(np.float32)


def _ref(x, k, seed=0, **kw):
  return fk.kmeans(jax.random.key(seed), jnp.asarray(x, jnp.float32), k, **kw)


def _one_error_line(err: str) -> str:
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith("flashkmeans-jax: error: ")
  assert "Traceback" not in err
  return lines[0]


def test_npy_outputs_and_summary(tmp_path, data, capsys):
  np.save(tmp_path / "x.npy", data)
  c_out, l_out = tmp_path / "c.npy", tmp_path / "l.npy"
  # Default --max-iter: the --quiet run below reuses the compiled program.
  rc = cli.main([str(tmp_path / "x.npy"), "-k", "4", "--seed", "3",
                 "--centroids-out", str(c_out), "--labels-out", str(l_out)])
  assert rc == 0
  ref = _ref(data, 4, seed=3)
  c, lab = np.load(c_out), np.load(l_out)
  assert c.shape == (4, 6) and c.dtype == np.float32
  assert lab.shape == (400,) and lab.dtype == np.int32
  np.testing.assert_array_equal(c, np.asarray(ref.centroids))
  np.testing.assert_array_equal(lab, np.asarray(ref.labels))
  out = capsys.readouterr().out
  assert "N=400  D=6" in out and "K=4" in out
  assert f"{int(ref.n_iter)} iterations" in out
  assert f"inertia {float(ref.inertia):.6g}" in out
  assert "device    cpu" in out and "time" in out
  assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "l.npy", "x.npy"]
  # --quiet prints nothing.
  assert cli.main([str(tmp_path / "x.npy"), "-k", "4", "--quiet"]) == 0
  assert capsys.readouterr().out == ""


def test_kmeans_parallel_order_out_and_compile_cache(tmp_path, data, capsys, monkeypatch):
  """--init k-means|| reaches kmeans; --order-out writes the inverse map of
  the labels (one .npz); the compilation cache is switched on once the
  checks passed, never for a refused run."""
  from flashkmeans_jax.estimator import compile_cache
  calls = []
  monkeypatch.setattr(compile_cache, "enable_compilation_cache", lambda: calls.append(1))
  np.save(tmp_path / "x.npy", data)
  o_out, l_out = tmp_path / "o.npz", tmp_path / "l.npy"
  args = [str(tmp_path / "x.npy"), "-k", "4", "--seed", "3", "--max-iter", "50",
          "--init", "k-means||", "--order-out", str(o_out), "--labels-out", str(l_out)]
  assert cli.main(args + ["--tol=-1"]) == 1
  assert calls == [] and not o_out.exists()
  assert cli.main(args) == 0
  assert calls == [1]
  assert "init=k-means||" in capsys.readouterr().out
  ref = _ref(data, 4, seed=3, max_iter=50, init="k-means||")
  labels = np.load(l_out)
  np.testing.assert_array_equal(labels, np.asarray(ref.labels))
  with np.load(o_out) as z:
    assert sorted(z.files) == ["offsets", "order", "sizes"]
    check_order(labels, 4, z["order"], z["offsets"], z["sizes"])


@pytest.mark.parametrize("precision", ["F16_F16_F32", "highest"])
def test_precision_reaches_kmeans(tmp_path, data, precision):
  # Data at 1e6: unscaled float16 would overflow, so F16_F16_F32 is only
  # right if the CLI hands the precision to kmeans.
  x = data * 1e6
  np.save(tmp_path / "x.npy", x)
  c_out = tmp_path / "c.npy"
  assert cli.main([str(tmp_path / "x.npy"), "-k", "4", "--precision", precision, "--quiet",
                   "--centroids-out", str(c_out)]) == 0
  ref = _ref(x, 4, precision=precision)
  np.testing.assert_array_equal(np.load(c_out), np.asarray(ref.centroids))


def test_npz_key_and_init_file(tmp_path, data, capsys):
  np.savez(tmp_path / "x.npz", train=data, other=data[:5])
  np.save(tmp_path / "init.npy", data[:3])
  rc = cli.main([str(tmp_path / "x.npz"), "--key", "train", "-k", "3", "--metric", "cosine",
                 "--init", str(tmp_path / "init.npy"), "--labels-out", str(tmp_path / "l.npy")])
  assert rc == 0
  ref = _ref(data, 3, init=jnp.asarray(data[:3]), metric="cosine")
  np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), np.asarray(ref.labels))
  capsys.readouterr()
  assert cli.main([str(tmp_path / "x.npz"), "-k", "3"]) == 1
  line = _one_error_line(capsys.readouterr().err)
  assert "holds arrays" in line and "--key" in line


def test_raw_memmap_and_dtype(tmp_path, data, capsys):
  raw = tmp_path / "x.f64"
  data.astype(np.float64).tofile(raw)
  rc = cli.main([str(raw), "--raw-dtype", "float64", "--raw-shape=-1,6", "-k", "4",
                 "--n-init", "3", "--centroids-out", str(tmp_path / "c.npy"),
                 "--labels-out", str(tmp_path / "l.npy")])
  assert rc == 0
  assert "float64 -> float32" in capsys.readouterr().out
  ref = _ref(data, 4, n_init=3)
  np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), np.asarray(ref.labels))
  np.testing.assert_allclose(np.load(tmp_path / "c.npy"), np.asarray(ref.centroids), rtol=1e-6)
  # Explicit N, and --dtype float16 clusters in half precision.
  rc = cli.main([str(raw), "--raw-dtype", "float64", "--raw-shape", "400,6", "-k", "4",
                 "--dtype", "float16", "--centroids-out", str(tmp_path / "c16.npy")])
  assert rc == 0
  assert np.load(tmp_path / "c16.npy").dtype == np.float16
  # A shape that does not match the file size.
  capsys.readouterr()
  assert cli.main([str(raw), "--raw-dtype", "float64", "--raw-shape", "399,6", "-k", "4"]) == 1
  assert "bytes" in _one_error_line(capsys.readouterr().err)


def test_failure_leaves_no_partial_file(tmp_path, data, capsys, monkeypatch):
  np.save(tmp_path / "x.npy", data)
  args = [str(tmp_path / "x.npy"), "-k", "4", "--centroids-out", str(tmp_path / "c.npy"),
          "--labels-out", str(tmp_path / "l.npy")]
  real_save = np.save
  calls = []

  def failing_save(f, arr, **kw):
    calls.append(arr.shape)
    if len(calls) == 2:  # centroids written, labels fail half way
      f.write(b"\x93NUMPY partial")
      raise OSError("No space left on device")
    return real_save(f, arr, **kw)

  monkeypatch.setattr(np, "save", failing_save)
  assert cli.main(args) == 1
  line = _one_error_line(capsys.readouterr().err)
  # The flag and the path given, never the hidden temporary file.
  assert f"--labels-out: cannot write {tmp_path / 'l.npy'}: No space left on device" in line
  assert ".tmp" not in line
  assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
  # --debug re-raises with the traceback.
  calls.clear()
  with pytest.raises(cli.CLIError) as info:
    cli.main(args + ["--debug"])
  assert isinstance(info.value.__cause__, OSError)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
  monkeypatch.setattr(np, "save", real_save)
  # Bad arguments are reported before anything is computed or written.
  for bad, words in [(["-k", "401"], "-k/--clusters: k=401 exceeds the number of points N=400"),
                     (["-k", "0"], "-k/--clusters: k must be >= 1, got 0"),
                     ([], "-k/--clusters is required"),
                     (["-k", "2", "--max-iter", "0"], "--max-iter: max_iter must be >= 1, got 0"),
                     (["-k", "2", "--n-init", "0"], "--n-init: n_init must be >= 1, got 0"),
                     (["-k", "2", "--tol=-1"], "--tol: tol must be a finite number >= 0"),
                     (["-k", "2", "--chunk-size", "0"], "--chunk-size: chunk_size must be >= 1"),
                     (["-k", "2", "--labels-out", str(tmp_path / "no" / "l.npy")],
                      f"--labels-out: cannot write {tmp_path}/no/l.npy: directory "
                      f"{tmp_path}/no does not exist")]:
    assert cli.main([str(tmp_path / "x.npy"), *bad]) == 1
    assert words in _one_error_line(capsys.readouterr().err)
  assert cli.main([str(tmp_path / "missing.npy"), "-k", "2"]) == 1
  assert "not found" in _one_error_line(capsys.readouterr().err)
  (tmp_path / "x.csv").write_text("1,2\n")
  assert cli.main([str(tmp_path / "x.csv"), "-k", "1"]) == 1
  assert "--raw-dtype" in _one_error_line(capsys.readouterr().err)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv", "x.npy"]


def test_streaming_branch(tmp_path, data, capsys, monkeypatch):
  """Above --stream-above the file is clustered by kmeans_streaming as a
  memmap, labels written straight into the output file, restarts handed on
  as n_init; the result is the in-memory one."""
  import flashkmeans_jax.api.streaming as streaming_api
  np.save(tmp_path / "x.npy", data)
  seen = []
  real = streaming_api.kmeans_streaming

  def spy(key, host_x, k, **kw):
    seen.append(dict(type=type(host_x), chunk_size=kw["chunk_size"], n_init=kw["n_init"],
                     labels_out=kw["labels_out"] is not None))
    return real(key, host_x, k, **kw)

  monkeypatch.setattr(streaming_api, "kmeans_streaming", spy)
  args = [str(tmp_path / "x.npy"), "-k", "4", "--stream-above", "1K", "--chunk-size", "100",
          "--labels-out", str(tmp_path / "l.npy"), "--centroids-out", str(tmp_path / "c.npy")]
  for n_init in (1, 2):
    seen.clear()
    # --order-out in streaming mode: sorted on the host from the labels.
    order = ["--order-out", str(tmp_path / "o.npz")] if n_init == 2 else []
    assert cli.main(args + ["--n-init", str(n_init), "--force", *order]) == 0
    assert seen == [dict(type=np.memmap, chunk_size=100, n_init=n_init, labels_out=True)]
    assert "streamed in chunks (100 rows)" in capsys.readouterr().out
    ref = _ref(data, 4, n_init=n_init)
    labels = np.load(tmp_path / "l.npy")
    np.testing.assert_array_equal(labels, np.asarray(ref.labels))
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), np.asarray(ref.centroids),
                               rtol=1e-5, atol=1e-5)
  with np.load(tmp_path / "o.npz") as z:
    check_order(labels, 4, z["order"], z["offsets"], z["sizes"])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "l.npy", "o.npz", "x.npy"]
  # Below the threshold: the in-memory path.
  seen.clear()
  assert cli.main(args[:3] + ["--stream-above", "1G", "-q"]) == 0
  assert seen == []


@pytest.mark.parametrize("stream_above", ["1K", "1G"])
def test_bad_data_and_init_refused_before_any_work(tmp_path, data, capsys, stream_above):
  """In both modes: the library's message, led by the flag or naming the file;
  no hint at an option the CLI does not have; no output file."""
  bad = data.copy()
  bad[7, 2] = np.nan
  np.save(tmp_path / "nan.npy", bad)
  np.save(tmp_path / "x.npy", data)
  np.save(tmp_path / "init_nan.npy", np.full((4, 6), np.nan, np.float32))
  np.save(tmp_path / "init_d.npy", data[:4, :5])
  np.save(tmp_path / "one_d.npy", data[:, 0])
  np.save(tmp_path / "huge.npy", data.astype(np.float64) * 1e39)
  out = ["--labels-out", str(tmp_path / "l.npy"), "--stream-above", stream_above]
  for argv, line in [
      (["nan.npy", "-k", "4"], "{tmp}/nan.npy contains NaN or Inf; clean the data or pass "
       "--no-check-finite (non-finite points then get label 0 and distance NaN and are left "
       "out of the centroid update)"),
      (["huge.npy", "-k", "4"], "{tmp}/huge.npy holds values beyond float32's largest finite "
       "magnitude (3.40282e+38) and would become Inf in float32; rescale the data"),
      (["one_d.npy", "-k", "4"],
       "{tmp}/one_d.npy must have rank 2 ([N, D]), got shape (400,)"),
      (["x.npy", "-k", "4", "--init", str(tmp_path / "init_nan.npy")],
       "--init: init contains NaN or Inf; starting centroids must be finite"),
      (["x.npy", "-k", "4", "--init", str(tmp_path / "init_d.npy")],
       "--init: init must have D=6 columns like x, got shape (4, 5)"),
      (["x.npy", "-k", "3", "--init", str(tmp_path / "init_nan.npy")],
       "--init: init must have k=3 rows, got shape (4, 6)")]:
    assert cli.main([str(tmp_path / argv[0]), *argv[1:], *out]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        "flashkmeans-jax: error: " + line.format(tmp=tmp_path))
  assert not (tmp_path / "l.npy").exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_no_input_runs_demo(monkeypatch):
  import flashkmeans_jax.demo as demo
  seeds = []
  monkeypatch.setattr(demo, "run_demo", lambda seed=0: seeds.append(seed) or [])
  assert cli.main([]) == 0 and cli.main(["--seed", "5"]) == 0
  assert seeds == [0, 5]


def test_parse_size():
  assert cli.parse_size("1000") == 1000
  assert cli.parse_size("512M") == 512 * 1024 ** 2
  assert cli.parse_size("1.5g") == int(1.5 * 1024 ** 3)
  assert cli.parse_size("2GiB") == 2 * 1024 ** 3
  with pytest.raises(cli.CLIError):
    cli.parse_size("lots")


def test_help_subprocess():
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  out = subprocess.run([sys.executable, "-m", "flashkmeans_jax", "--help"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  for opt in ["--key", "--raw-dtype", "--raw-shape", "-k K, --clusters K", "--metric", "--dtype",
              "--max-iter", "--tol", "--init", "--n-init", "--seed", "--impl", "--precision",
              "--chunk-size",
              "--stream-above", "--centroids-out", "--labels-out", "--order-out", "k-means||",
              "--quiet", "--verbose",
              "--debug", "built-in demo", "-f, --force", "--no-check-finite",
              "130", "143"]:
    assert opt in out.stdout, opt
