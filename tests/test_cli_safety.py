"""The CLI's safety rules, in process: output paths checked before any work,
``--force``, non-finite results refused, ``--no-check-finite``, clear
messages for damaged or odd input files. (Signals: test_cli_signals.py.)"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax import cli

PREFIX = "flashkmeans-jax: error: "
os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")  # see test_cli.py


# The runs use test_cli.py's shapes and options (400 x 6 float32, k=4,
# --seed 3 --max-iter 50 in memory; chunks of 100 rows streamed), so in a
# whole-suite run they reuse the programs compiled there.
RUN_MEMORY = ["-k", "4", "--seed", "3", "--max-iter", "50"]
RUN_STREAMED = ["-k", "4", "--stream-above", "1K", "--chunk-size", "100"]


@pytest.fixture(scope="module")
def blobs():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(4, 6)) * 5
  return (centers[rng.integers(0, 4, 400)] + rng.normal(size=(400, 6))).astype(np.float32)


@pytest.fixture
def no_work(monkeypatch):
  """Fails the test if any clustering starts."""
  import flashkmeans_jax.api.kmeans as kmeans_api
  import flashkmeans_jax.api.streaming as streaming_api

  def refuse(*args, **kwargs):
    raise AssertionError("clustering started")

  monkeypatch.setattr(kmeans_api, "kmeans", refuse)
  monkeypatch.setattr(streaming_api, "kmeans_streaming", refuse)


def _error(capsys) -> str:
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(PREFIX) and "Traceback" not in err, err
  return lines[0][len(PREFIX):]


def _listing(d: Path) -> list[str]:
  return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.fixture
def unwritable_dir(tmp_path, monkeypatch):
  """A directory nobody can create files in. Permissions do not stop root,
  an immutable directory (chattr +i) does; where neither is available,
  creating a file there fails as it would (EACCES)."""
  d = tmp_path / "ro"
  d.mkdir()
  if os.geteuid() != 0:
    d.chmod(0o555)
    yield d
    d.chmod(0o755)
    return
  try:
    immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
  except OSError:
    immutable = False
  if immutable:
    try:
      yield d
    finally:
      subprocess.run(["chattr", "-i", str(d)], check=True)
    return
  real_open = os.open

  def refusing_open(path, flags, *args, **kwargs):
    if Path(path).parent == d and flags & os.O_CREAT:
      raise PermissionError(13, "Permission denied", str(path))
    return real_open(path, flags, *args, **kwargs)

  monkeypatch.setattr(os, "open", refusing_open)
  yield d


def test_output_paths_checked_before_any_work(tmp_path, blobs, capsys, no_work, unwritable_dir):
  t = tmp_path
  np.save(t / "x.npy", blobs)
  np.save(t / "init.npy", blobs[:3])
  (t / "d").mkdir()
  (t / "notdir").write_text("")
  (t / "old.npy").write_bytes(b"keep me")
  os.symlink(t / "x.npy", t / "x_link.npy")
  os.link(t / "x.npy", t / "x_hard.npy")
  os.symlink(t / "nowhere.npy", t / "dangling.npy")
  os.symlink(t, t / "same_dir")
  os.mkfifo(t / "fifo")
  x = str(t / "x.npy")
  L, C = "--labels-out", "--centroids-out"
  rows = [
      # (extra flags, the message)
      ([L, f"{t}/no/l.npy"], f"{L}: cannot write {t}/no/l.npy: directory {t}/no does not exist"),
      ([L, f"{t}/notdir/l.npy"], f"{L}: cannot write {t}/notdir/l.npy: {t}/notdir is not a "
       "directory"),
      ([L, ""], f"{L}: the path is empty"),
      ([C, f"{t}/d"], f"{C}: {t}/d is a directory"),
      ([C, f"{t}/d/"], f"{C}: {t}/d/ is a directory"),
      # An input is never an output, --force or not: by name, through a
      # symbolic link, a hard link, "..", or the --init file.
      ([L, x, "--force"], f"{L}: {x} is the input file; write the output elsewhere"),
      ([C, f"{t}/x_link.npy", "--force"], f"{C}: {t}/x_link.npy is the input file; write "
       "the output elsewhere"),
      ([L, f"{t}/x_hard.npy", "--force"], f"{L}: {t}/x_hard.npy is the input file; write "
       "the output elsewhere"),
      ([L, f"{t}/d/../x.npy"], f"{L}: {t}/d/../x.npy is the input file; write the output "
       "elsewhere"),
      (["--init", f"{t}/init.npy", C, f"{t}/same_dir/init.npy", "--force"],
       f"{C}: {t}/same_dir/init.npy is the --init file; write the output elsewhere"),
      # The outputs are distinct.
      ([C, f"{t}/c.npy", L, f"{t}/same_dir/c.npy"],
       f"{L}: {t}/same_dir/c.npy is the same file as {C} {t}/c.npy"),
      ([L, f"{t}/l.npy", "--order-out", f"{t}/same_dir/l.npy"],
       f"--order-out: {t}/same_dir/l.npy is the same file as {L} {t}/l.npy"),
      (["--order-out", x, "--force"], f"--order-out: {x} is the input file; write the output "
       "elsewhere"),
      (["--order-out", f"{t}/d"], f"--order-out: {t}/d is a directory"),
      (["--order-out", f"{t}/old.npy"], f"--order-out: {t}/old.npy exists; pass --force to "
       "replace it"),
      # An existing file needs --force; a non-regular one is never replaced.
      ([L, f"{t}/old.npy"], f"{L}: {t}/old.npy exists; pass --force to replace it"),
      ([L, f"{t}/dangling.npy"], f"{L}: {t}/dangling.npy exists; pass --force to replace it"),
      ([L, f"{t}/fifo", "--force"], f"{L}: {t}/fifo exists and is not a regular file"),
      # Checked for real: the temporary file is created, not guessed at.
      ([C, f"{t}/c.npy", L, f"{unwritable_dir}/l.npy"],
       re.compile(rf"{L}: cannot write {unwritable_dir}/l\.npy: [^()]+ "
                  rf"\(directory {unwritable_dir}\)")),
  ]
  before = _listing(t)
  for extra, message in rows:
    assert cli.main([x, "-k", "3", *extra]) == 1, extra
    got = _error(capsys)
    if isinstance(message, str):
      assert got == message, extra
    else:
      assert message.fullmatch(got), (extra, got)
    assert ".tmp" not in got
    assert _listing(t) == before, extra  # nothing written, no temporary file left
  assert (t / "old.npy").read_bytes() == b"keep me"


def test_streamed_labels_claim_their_disk_space_first(tmp_path, blobs, capsys, no_work,
                                                      monkeypatch):
  """Streamed labels go into a memory map of the output; its space is
  allocated before the run, so a full disk is a clear error then, not a
  SIGBUS in the middle of it."""
  if not hasattr(os, "posix_fallocate"):
    pytest.skip("no posix_fallocate on this platform")  # macOS, Windows
  np.save(tmp_path / "x.npy", blobs)

  def full_disk(fd, offset, length):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "posix_fallocate", full_disk)
  assert cli.main([str(tmp_path / "x.npy"), "-k", "4", "--stream-above", "0",
                   "--labels-out", str(tmp_path / "l.npy")]) == 1
  assert _error(capsys) == (f"--labels-out: cannot write {tmp_path}/l.npy: No space left on "
                            "device")
  assert _listing(tmp_path) == ["x.npy"]


def test_force_replaces_and_success_leaves_no_temporary(tmp_path, blobs, capsys):
  np.save(tmp_path / "x.npy", blobs)
  (tmp_path / "c.npy").write_bytes(b"old")
  args = [str(tmp_path / "x.npy"), *RUN_MEMORY, "-q",
          "--centroids-out", str(tmp_path / "c.npy"), "--labels-out", str(tmp_path / "l.npy")]
  assert cli.main(args) == 1
  assert "c.npy exists; pass --force" in _error(capsys)
  assert cli.main(args + ["--force"]) == 0
  ref = fk.kmeans(jax.random.key(3), jnp.asarray(blobs), 4, max_iter=50)
  np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.asarray(ref.centroids))
  np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), np.asarray(ref.labels))
  assert _listing(tmp_path) == ["c.npy", "l.npy", "x.npy"]


@pytest.mark.parametrize("stream", [False, True], ids=["in_memory", "streaming"])
def test_non_finite_result_is_an_error(tmp_path, blobs, capsys, stream):
  """float32 data near 1e20: squared distances overflow. Refused up front by
  the data check, and -- past it with --no-check-finite -- by the check of
  the result: exit status 1, nothing written."""
  np.save(tmp_path / "x.npy", blobs * np.float32(1e20))
  args = [str(tmp_path / "x.npy"), *(RUN_STREAMED if stream else RUN_MEMORY),
          "--labels-out", str(tmp_path / "l.npy"), "--centroids-out", str(tmp_path / "c.npy")]
  if not stream:
    assert cli.main(args) == 1
    assert "rescale the data" in _error(capsys)
  assert cli.main(args + ["--no-check-finite"]) == 1
  assert re.fullmatch(r"the result is not finite \((\d+ of 4 centroids hold NaN or Inf, )?"
                      r"inertia (nan|inf)\), so nothing was written; the data's scale probably "
                      r"overflows the float32 distances: rescale the data", _error(capsys))
  assert _listing(tmp_path) == ["x.npy"]


def test_no_check_finite_clusters_the_finite_rows(tmp_path, blobs, capsys):
  """The flag the NaN message names: NaN/Inf rows get label 0, stay out of
  the centroids, and the inertia is the finite rows' (finite, so exit 0)."""
  x = blobs.copy()
  x[7, 1], x[9, 0] = np.nan, np.inf
  np.save(tmp_path / "x.npy", x)
  args = [str(tmp_path / "x.npy"), *RUN_MEMORY]
  assert cli.main(args) == 1
  assert "or pass --no-check-finite" in _error(capsys)
  assert cli.main(args + ["--no-check-finite", "--labels-out", str(tmp_path / "l.npy")]) == 0
  out = capsys.readouterr().out
  ref = fk.kmeans(jax.random.key(3), jnp.asarray(x), 4, max_iter=50, check_finite=False)
  labels = np.load(tmp_path / "l.npy")
  np.testing.assert_array_equal(labels, np.asarray(ref.labels))
  assert labels[7] == 0 and labels[9] == 0
  ok = np.isfinite(x).all(axis=1)
  c = np.asarray(ref.centroids, np.float64)
  want = float(np.sum((x[ok].astype(np.float64) - c[labels[ok]]) ** 2))
  got = re.search(r"inertia (\S+) over the 398 finite rows \(2 rows with NaN/Inf got label 0\)",
                  out)
  assert got, out
  assert math.isclose(float(got.group(1)), want, rel_tol=1e-5)


def test_unclear_input_errors_get_clear_messages(tmp_path, blobs, capsys, no_work):
  t = tmp_path
  np.save(t / "x.npy", blobs)
  whole = (t / "x.npy").read_bytes()
  header = len(whole) - blobs.nbytes
  (t / "trunc.npy").write_bytes(whole[:-5])
  (t / "header.npy").write_bytes(whole[:header])
  (t / "half_header.npy").write_bytes(whole[:40])
  (t / "empty.npy").write_bytes(b"")
  (t / "text.npy").write_text("1,2,3\n")
  np.save(t / "objects.npy", np.array([None, 1], dtype=object), allow_pickle=True)
  (t / "empty.npz").write_bytes(b"")
  np.savez(t / "z.npz", a=blobs)
  (t / "trunc.npz").write_bytes((t / "z.npz").read_bytes()[:-30])
  (t / "dir.npy").mkdir()
  np.save(t / "init.npy", blobs[:3])
  (t / "init_trunc.npy").write_bytes((t / "init.npy").read_bytes()[:-4])
  need = len(whole)
  rows = [
      (["dir.npy"], f"{t}/dir.npy is a directory, not a data file"),
      (["missing.npy"], f"input file not found: {t}/missing.npy"),
      (["trunc.npy"], f"{t}/trunc.npy is truncated ({need - 5} of {need} bytes): its header "
       "describes an array of shape (400, 6) and dtype float32"),
      (["header.npy"], f"{t}/header.npy holds only a .npy header: its header describes an "
       "array of shape (400, 6) and dtype float32"),
      (["half_header.npy"], re.compile(re.escape(f"{t}/half_header.npy has an unreadable .npy "
                                                 "header (") + ".+")),
      (["empty.npy"], f"{t}/empty.npy is empty (0 bytes)"),
      (["text.npy"], f"{t}/text.npy is not a .npy file (it does not start with NumPy's magic "
       "string)"),
      (["objects.npy"], f"{t}/objects.npy holds Python objects (dtype object), not numbers"),
      (["empty.npz"], f"{t}/empty.npz is empty (0 bytes)"),
      (["trunc.npz"], re.compile(re.escape(f"{t}/trunc.npz is not a readable .npz archive (")
                                 + ".+")),
      (["x.npy", "--init", str(t / "dir.npy")], f"--init: {t}/dir.npy is a directory, not a "
       "data file"),
      (["x.npy", "--init", str(t / "nope.npy")], "--init: not k-means++, k-means||, random or "
       f"a .npy file; file not found: {t}/nope.npy"),
      (["x.npy", "--init", str(t / "init_trunc.npy")], f"--init: {t}/init_trunc.npy is "
       f"truncated ({len((t / 'init.npy').read_bytes()) - 4} of "
       f"{len((t / 'init.npy').read_bytes())} bytes): its header describes an array of shape "
       "(3, 6) and dtype float32"),
      # The library's message, led by the flag that chose the value.
      (["x.npy", "--impl", "pallas"], re.compile(r'--impl: impl="pallas" needs a CUDA GPU .+')),
      (["x.npy", "--stream-above", "nan"], "--stream-above must be a finite size >= 0, got "
       "'nan'"),
  ]
  for (name, *extra), message in rows:
    if "pallas" in extra and jax.default_backend() == "gpu":
      continue  # a CUDA GPU takes impl="pallas"
    assert cli.main([str(t / name), "-k", "3", *extra]) == 1, name
    got = _error(capsys)
    if isinstance(message, str):
      assert got == message, name
    else:
      assert message.fullmatch(got), (name, got)
