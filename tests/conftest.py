"""Shared test set-up.

Eight host devices are forced before JAX is imported anywhere, so the sharding
tests can build meshes on a CPU machine; everything else runs on device 0.
"""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# Compiling is most of the suite's CPU time (test_estimator.py: 64 of 91 s in
# XLA's backend compile, 189 programs) and the test data are small, so LLVM's
# optimisation is not worth its time here: level 0 made that file 18 % faster.
# Floating-point semantics do not change (no fast-math at any level).
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

import gc  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import helpers  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
  has_gpu = any(d.platform == "gpu" for d in jax.devices())
  skip = pytest.mark.skip(reason="needs a CUDA GPU")
  for item in items:
    if "gpu" in item.keywords and not has_gpu:
      item.add_marker(skip)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


# Every compiled CPU program keeps a few to ~90 memory maps until JAX's caches
# drop it. A test worker compiles thousands of programs, and at the kernel's
# map limit (vm.max_map_count, 65530 by default) LLVM cannot map the next
# one and the worker segfaults (seen once at 90 % of the suite). Between
# modules, once a worker holds more than a third of its limit, the caches are
# cleared (programs shared inside a module stay compiled).
def _map_count() -> int:
  try:
    with open("/proc/self/maps") as f:
      return sum(1 for _ in f)
  except OSError:  # not Linux: no such limit to watch
    return 0


def _map_limit() -> int:
  try:
    with open("/proc/sys/vm/max_map_count") as f:
      return int(f.read())
  except (OSError, ValueError):
    return 65530


_MAP_BUDGET = _map_limit() // 3


@pytest.fixture(autouse=True, scope="module")
def _bounded_memory_maps():
  yield
  if _map_count() > _MAP_BUDGET:
    jax.clear_caches()
    gc.collect()
