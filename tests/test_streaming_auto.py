"""``method="auto"``: the transfer method from measured rates (no device work
except one tiny probe). Rates are injected, so the rule is tested without a
GPU: the choice must be the method of least estimated transfer time, never
a slower one, and the estimates must be the costs the docs state."""

import itertools
import types

import jax
import numpy as np
import pytest

from flashkmeans_jax.drivers.streaming import plan, probe

GB = 1e9
# An H200 as measured for issue 20: pageable 33 GB/s (four chunks in flight),
# pinned DMA 53 GB/s; page-locking inside the prefetcher's threads ~20 GB/s.
H200 = probe.Rates(pageable_gbs=33.0, pin_gbs=20.0, pinned_gbs=53.0)
SLOW_PIN = probe.Rates(pageable_gbs=33.0, pin_gbs=2.2, pinned_gbs=53.0)  # torch pin_memory
PAGEABLE_SLOW = probe.Rates(pageable_gbs=5.0, pin_gbs=30.0, pinned_gbs=50.0)


def _gpu():
  return types.SimpleNamespace(
      platform="gpu", id=0, memory_stats=lambda: {"bytes_limit": 2**34, "bytes_in_use": 0},
      addressable_memories=lambda: [types.SimpleNamespace(kind=k)
                                    for k in ("device", "pinned_host")])


def test_estimates_are_the_documented_costs():
  s = 16 * GB
  est = probe.estimate(H200, s, 8, cache_fits=True)
  np.testing.assert_allclose(est["device_put"], 8 * 16 / 33)
  np.testing.assert_allclose(est["pinned"], 8 * (16 / 20 + 16 / 53))
  np.testing.assert_allclose(est["pinned_cache"], 16 / 20 + 16 / 53 + 7 * 16 / 53)
  assert "pinned_cache" not in probe.estimate(H200, s, 8, cache_fits=False)
  no_pinned = probe.Rates(33.0, None, None)
  assert set(probe.estimate(no_pinned, s, 8, cache_fits=True)) == {"device_put"}


def _break_even(r: probe.Rates) -> float:
  """Passes after which the cache's one-off pinning is paid back."""
  once = 1 / r.pin_gbs + 1 / r.pinned_gbs
  return 1 + (once - 1 / r.pinned_gbs) / (1 / r.pageable_gbs - 1 / r.pinned_gbs)


@pytest.mark.parametrize("rates", [H200, SLOW_PIN])
def test_pinned_cache_from_the_measured_break_even(rates):
  """A short run takes the cache as soon as it pays (a few passes with fast
  pinning, as measured on the H200; many with slow pinning); no fixed count."""
  s = 2**34
  even = _break_even(rates)
  margin_even = next(p for p in range(1, 10**4)
                     if probe.estimate(rates, s, p, True)["pinned_cache"] * probe.PINNED_MARGIN
                     <= probe.estimate(rates, s, p, True)["device_put"])
  assert margin_even >= even
  assert probe.choose(rates, s, margin_even, True).method == "pinned_cache"
  assert probe.choose(rates, s, margin_even - 1, True).method == "device_put"
  if rates is H200:
    assert margin_even <= 9  # an 8-iteration call (+ labelling pass) gains


def test_pinned_without_room_for_a_cache():
  s = 2**33
  assert probe.choose(PAGEABLE_SLOW, s, 9, cache_fits=False).method == "pinned"
  assert probe.choose(PAGEABLE_SLOW, s, 9, cache_fits=True).method == "pinned_cache"
  assert probe.choose(probe.Rates(33.0, None, None), s, 100, True).method == "device_put"


def test_auto_is_never_slower_than_an_available_method():
  """Over a grid of rates and run lengths the choice's estimated time is
  within PINNED_MARGIN of the fastest method's (and device_put unless a
  pinned method clears the margin)."""
  grid = [1.0, 4.0, 12.0, 33.0, 60.0]
  for pageable, pin, pinned, passes, fits in itertools.product(
      grid, grid, grid, (1, 2, 3, 9, 41, 301), (True, False)):
    rates = probe.Rates(pageable, pin, pinned)
    c = probe.choose(rates, 2**32, passes, fits)
    est = probe.estimate(rates, 2**32, passes, fits)
    assert c.estimates_s == est
    assert est[c.method] <= min(est.values()) * probe.PINNED_MARGIN * (1 + 1e-12)
    if c.method != "device_put":
      assert est[c.method] * probe.PINNED_MARGIN <= est["device_put"]


def test_choose_method_uses_the_measured_rates(monkeypatch):
  """On a GPU with pinned memory, "auto" asks the probe (cached per process)
  and decides from the plan's streamed bytes (weights included) and passes."""
  calls = []

  def fake_measure(device, nbytes=probe.PROBE_BYTES):
    calls.append(device)
    return H200

  monkeypatch.setattr(probe, "measure", fake_measure)
  monkeypatch.setattr(plan, "available_host_bytes", lambda: 2**40)
  probe.clear_measured()
  gpu = _gpu()
  p = plan.plan_chunks(2**26, 128, 256 + 4, 2**22, 0)
  try:
    long_run = plan.choose_method("auto", p, 256 + 4, gpu, passes=9)
    one_pass = plan.choose_method("auto", p, 256 + 4, gpu, passes=1)
  finally:
    probe.clear_measured()
  assert len(calls) == 1  # measured once, then cached
  assert long_run.method == "pinned_cache" and long_run.rates == H200
  np.testing.assert_allclose(long_run.estimates_s["device_put"], 9 * 2**26 * 260 / GB / 33)
  assert one_pass.method == "device_put"
  monkeypatch.setattr(plan, "available_host_bytes", lambda: 0)  # no room for a cache
  assert plan.choose_method("auto", p, 260, gpu, passes=9, rates=H200).method == "device_put"
  line = long_run.describe()
  for part in ("method=pinned_cache", "pageable->device 33 GB/s", "pinned->device 53 GB/s",
               "numpy->pinned 20 GB/s", "device_put", "pinned_cache"):
    assert part in line


def test_probe_measures_positive_rates_cheaply():
  rates = probe.measure(jax.devices()[0], nbytes=2**16)
  assert rates.pageable_gbs > 0 and rates.probe_s > 0
  assert (rates.pinned_gbs is None) == (rates.pin_gbs is None)
