"""The automatic choice between the XLA path and the Pallas kernels."""

import pytest

from flashkmeans_jax.core import device
from flashkmeans_jax.core import dispatch


@pytest.fixture
def on_cuda(monkeypatch):
  monkeypatch.setattr(device, "on_cuda", lambda: True)


def test_off_cuda_is_xla():
  # The test machine has no CUDA device.
  assert dispatch.resolve_impl(None, 1 << 20, 1024) == "xla"


@pytest.mark.parametrize("n,k,batch,expect", [
    (1 << 20, 1024, 1, "pallas"),
    (16384, 100, 1, "xla"),       # 1.6M pairs: a few microseconds of work
    (16384, 100, 8, "xla"),       # 13M pairs in all: still within noise
    (16384, 100, 32, "pallas"),   # 52M pairs: the kernels measured 1.5-1.8x faster
    (4096, 1024, 1, "pallas"),    # 2^22 pairs per problem
])
def test_threshold(on_cuda, n, k, batch, expect):
  assert dispatch.resolve_impl(None, n, k, batch=batch) == expect
  assert dispatch.resolve_impl("xla", n, k, batch=batch) == "xla"


def test_batched_kmeans_counts_members_and_restarts(on_cuda, monkeypatch):
  import jax.numpy as jnp

  from flashkmeans_jax.core import validation
  seen = []
  monkeypatch.setattr(dispatch, "resolve_impl",
                      lambda impl, n=None, k=None, batch=1: seen.append(batch) or "xla")
  x = jnp.zeros((4, 64, 3), jnp.float32)
  validation.lloyd_options(x, 5, init="random", n_init=3, batch=(4,))
  assert seen == [12]  # 4 members x 3 restarts
