"""How a streaming run is planned (no data, no device work): chunk sizes,
resident chunks, the order of a pass and the transfer method "auto" picks."""

import types

import numpy as np
import pytest

from flashkmeans_jax.drivers.streaming import plan


def test_plan_chunks():
  p = plan.plan_chunks(1000, 8, 32, 300, 0)
  assert (p.n_resident, p.tail_resident, p.streamed()) == (0, False, [0, 1, 2, 3])
  p = plan.plan_chunks(1000, 8, 32, 300, 2 * 300 * 32 + 5)
  assert (p.n_resident, p.resident_rows, p.streamed()) == (2, 600, [2, 3])
  assert p.streamed_rows() == 400
  p = plan.plan_chunks(1000, 8, 32, 300, 1000 * 32)
  assert (p.n_resident, p.tail_resident, p.resident_rows, p.streamed()) == (3, True, 1000, [])
  p = plan.plan_chunks(1000, 8, 32, None, 0)
  assert p.chunk == 1000  # default chunk (256 MiB) clamps to N
  p = plan.plan_chunks(10**8, 128, 256, None, 0)
  assert p.chunk * 256 <= 256 * 2**20 and p.chunk % 1024 == 0
  p = plan.plan_chunks(10**8, 128, 256, None, 0, chunk_bytes=2**30)
  assert p.chunk == 2**22


@pytest.mark.parametrize("n,budget_chunks", [(1000, 0), (1000, 2), (1000, 4), (3000, 1),
                                              (3000, 7), (3000, 10), (2900, 9)])
def test_plan_schedule_spreads_streamed_chunks(n, budget_chunks):
  p = plan.plan_chunks(n, 8, 32, 300, budget_chunks * 300 * 32)
  order = p.schedule()
  # Every chunk exactly once; each kind in row order.
  assert sorted(j for j, _ in order) == list(range(len(order)))
  assert [j for j, s in order if s] == p.streamed()
  assert [j for j, s in order if not s] == p.resident()
  # Evenly spread: any window of the order holds the streamed share of it,
  # give or take one chunk.
  flags = np.array([s for _, s in order], float)
  share = flags.mean() if len(flags) else 0.0
  for w in range(1, len(flags) + 1):
    sums = np.convolve(flags, np.ones(w), "valid")
    assert np.all(np.abs(sums - share * w) <= 1.0 + 1e-9), (w, sums, share)


def _device(stats=None, platform="cpu", pinned=False):
  """A stand-in with the device methods the plan reads."""

  def memory_stats():
    if stats is None:
      raise RuntimeError("no stats")
    return stats

  kinds = ["device"] + (["pinned_host"] if pinned else [])
  return types.SimpleNamespace(
      memory_stats=memory_stats, platform=platform,
      addressable_memories=lambda: [types.SimpleNamespace(kind=k) for k in kinds])


@pytest.mark.parametrize("stats, expected", [
    (None, 256 * 2**20),  # backend without memory stats
    ({"bytes_limit": 140 * 2**30, "bytes_in_use": 0}, 2**30),  # H200: capped at 1 GiB
    ({"bytes_limit": 24 * 2**30, "bytes_in_use": 8 * 2**30}, 16 * 2**30 // 64),
    ({"bytes_limit": 2 * 2**30, "bytes_in_use": 0}, 64 * 2**20),  # floor
])
def test_default_chunk_bytes(stats, expected):
  assert plan.default_chunk_bytes(_device(stats)) == expected


def test_default_budget_and_plan_for():
  assert plan.default_budget(_device()) == 2**30
  gpu = _device({"bytes_limit": 10 * 2**30, "bytes_in_use": 2 * 2**30})
  assert plan.default_budget(gpu) == 4 * 2**30
  # 16 float32 values + a float32 weight per row; everything fits the budget.
  p = plan.plan_for((1000, 16), 4, True, 300, None, gpu)
  assert (p.chunk, p.n_resident, p.tail_resident) == (300, 3, True)
  p = plan.plan_for((1000, 16), 4, True, 300, 2 * 300 * 68, gpu)
  assert (p.n_resident, p.tail_resident) == (2, False)


def test_resolve_method_without_measuring():
  """Explicit names pass through; "auto" measures nothing where no pinned
  path or no streamed row exists (CPU, no pinned memory, all resident)."""
  p = plan.plan_chunks(1000, 8, 32, 300, 0)
  gpu = _device(platform="gpu", pinned=True)
  assert plan.resolve_method("io_callback", p, 32, gpu, passes=1) == "io_callback"
  assert plan.resolve_method("auto", p, 32, _device(), passes=100) == "device_put"
  assert plan.resolve_method("auto", p, 32, _device(platform="gpu"), passes=100) == "device_put"
  resident = plan.plan_chunks(1000, 8, 32, 300, 1000 * 32)
  choice = plan.choose_method("auto", resident, 32, gpu, passes=100)
  assert choice.method == "device_put" and choice.rates is None  # nothing was measured
  with pytest.raises(ValueError, match="method must be one of"):
    plan.resolve_method("nope", p)
