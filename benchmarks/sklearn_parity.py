"""scikit-learn's own KMeans tests run against ``fk.KMeans`` (issue 16's parity figure).

    python benchmarks/sklearn_parity.py [--out sklearn_parity.json] [--x64] [--cap-s 1200]

Runs the installed scikit-learn's ``sklearn/cluster/tests/test_k_means.py``
through ``pytest.main`` with ``sklearn.cluster.KMeans`` replaced by
``flashkmeans_jax.KMeans`` while the module is collected, so every name
``KMeans`` in it (its parametrisations included) is ours; ``MiniBatchKMeans``,
``k_means`` and ``kmeans_plusplus`` stay scikit-learn's, and the MiniBatch
tests are deselected (``-k "not MiniBatch and not minibatch"``). Nothing of
scikit-learn's is copied: the file is read from the installed package.

Every case is then put in one of:

* ``pass``;
* ``n/a``: the case never calls ``fk.KMeans.fit`` (it tests scikit-learn's
  own functions), or it was skipped;
* ``a``: inapplicable by design (sparse input, ``algorithm="elkan"``,
  scikit-learn's private methods, message or ``verbose`` wording): see
  :data:`BY_NODE` and :data:`FAILURES`;
* ``b``: a difference listed in docs/usage.md ("Differences from
  ``sklearn.cluster.KMeans``"), with its reason;
* ``c``: a defect (a failure that no entry explains is counted here and
  marked ``UNCLASSIFIED``, and the script exits with status 1).

It prints a table per test function and every failure with its category and
reason, then ``N of M applicable pass`` (M = pass + b + c), and writes one
JSON file (meta, one row per case, the summary). ``--x64`` runs with
``JAX_ENABLE_X64=1`` (float64 centres for float64 and integer input).
scikit-learn's float32 cases run (``SKLEARN_RUN_FLOAT32_TESTS=1``; float32
is the library's own dtype).
``--cap-s`` caps the whole run: cases that would start later are skipped and
reported as ``not run``. About 3 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib.util
import os
import re
import sys
import time

# Ordered: the first pattern found in a case's node id decides (whatever
# the outcome: these cases are outside what fk.KMeans offers).
BY_NODE = (
    (r"sparse|csr", "a", "sparse input: the kernels take dense rows; fk.KMeans raises "
                          "scikit-learn's TypeError"),
    (r"elkan", "a", "algorithm='elkan': only 'lloyd' exists (same clustering)"),
)

# Failures of the remaining (dense, Lloyd) cases, by test function.
FAILURES = {
    "test_kmeans_verbose": (
        "a", "verbose wording: the library prints its own per-iteration line from inside "
             "the compiled loop ('iter i inertia .. shift ..'), not scikit-learn's text"),
    "test_wrong_params": (
        "a", "error-message wording: the library's shared validation message (same "
             "exception type; tests/test_reliability.py::SAME_ERRORS)"),
    "test_sample_weight_init": (
        "a", "calls scikit-learn's private _init_centroids; the property (weights steer "
             "the seeding) is tested in tests/test_estimator_sklearn.py"),
    "test_sample_weight_zero": (
        "a", "calls scikit-learn's private _init_centroids; the property (a weight-0 point "
             "is never a seed) is tested in tests/test_estimator_sklearn.py"),
    "test_integer_input": (
        "b", "integer input gives float32 centres without jax_enable_x64 (float32 "
             "arithmetic; docs/usage.md)"),
    "test_float_precision": (
        "b", "float64 input gives float32 centres without jax_enable_x64, and float32 "
             "accumulation under it (docs/usage.md)"),
    "test_weighted_vs_repeated": (
        "b", "inertia_ is a float32 sum, and (x64) the float64 centres are means summed in "
             "float32: weighted and repeated rows sum in another order (relative "
             "differences ~2e-7 against rtol=1e-7; docs/usage.md)"),
    "test_k_means_1_iteration": (
        "b", "(x64) float64 centres whose means were summed in float32: ~2e-7 relative "
             "against rtol=1e-7 (docs/usage.md)"),
}


def function_of(nodeid: str) -> str:
  return nodeid.split("::")[-1].split("[")[0]


def classify(nodeid: str, outcome: str, used: bool) -> tuple[str, str]:
  """``(category, reason)`` of one case (see the module docstring)."""
  if outcome == "skipped":
    return "n/a", "skipped"
  if outcome == "failed" and function_of(nodeid) in FAILURES and not used:
    return FAILURES[function_of(nodeid)]  # failed before fit (a private method)
  if not used:
    return "n/a", "does not call fk.KMeans.fit"
  for pattern, cat, reason in BY_NODE:
    if re.search(pattern, nodeid):
      return cat, reason
  if outcome == "passed":
    return "pass", ""
  return FAILURES.get(function_of(nodeid), ("c", "UNCLASSIFIED: a new failure"))


class Recorder:
  """pytest plugin: swaps KMeans in during collection, notes which cases
  call ``fk.KMeans.fit``, records outcomes and first error lines."""

  def __init__(self, fk_kmeans, cap_s: float):
    self.cls = fk_kmeans
    self.cap_s = cap_s
    self.start = time.perf_counter()
    self.cases: dict[str, dict] = {}
    self.current = None
    self.real_fit = fk_kmeans.fit

  def pytest_configure(self, config):
    import sklearn.cluster
    self.saved = sklearn.cluster.KMeans
    sklearn.cluster.KMeans = self.cls  # seen by the test module's import
    rec = self

    @functools.wraps(self.real_fit)
    def fit(est, *args, **kwargs):
      if rec.current is not None:
        rec.cases[rec.current]["used"] = True
      return rec.real_fit(est, *args, **kwargs)

    self.cls.fit = fit

  def pytest_collection_finish(self, session):
    import sklearn.cluster
    sklearn.cluster.KMeans = self.saved
    mods = {getattr(item, "module", None) for item in session.items}
    assert all(m is None or m.KMeans is self.cls for m in mods), "KMeans not replaced"

  def pytest_unconfigure(self, config):
    self.cls.fit = self.real_fit

  def pytest_runtest_setup(self, item):
    self.current = item.nodeid
    self.cases.setdefault(item.nodeid, dict(outcome="passed", used=False, message=""))
    if time.perf_counter() - self.start > self.cap_s:
      import pytest
      pytest.skip("not run: over --cap-s")

  def pytest_exception_interact(self, node, call, report):
    # The exception itself (--tb=no shortens the report's text).
    if call.excinfo is not None and node.nodeid in self.cases:
      self.cases[node.nodeid]["message"] = " ".join(call.excinfo.exconly().split())[:300]

  def pytest_runtest_logreport(self, report):
    case = self.cases.setdefault(report.nodeid, dict(outcome="passed", used=False,
                                                     message=""))
    if report.failed:
      case["outcome"] = "failed"
      case["message"] = case["message"] or report.longreprtext.strip()[-300:]
    elif report.skipped and case["outcome"] == "passed":
      case["outcome"] = "skipped"
      case["message"] = str(report.longrepr[-1] if isinstance(report.longrepr, tuple)
                            else report.longrepr)[:300]


def summarise(cases: dict[str, dict]):
  rows, per_fn = [], collections.OrderedDict()
  for nodeid, case in cases.items():
    cat, reason = classify(nodeid, case["outcome"], case["used"])
    rows.append(dict(case=nodeid.split("::")[-1], function=function_of(nodeid),
                     outcome=case["outcome"], category=cat, reason=reason,
                     message=case["message"]))
    per_fn.setdefault(function_of(nodeid), collections.Counter())[cat] += 1
  count = collections.Counter(r["category"] for r in rows)
  applicable = count["pass"] + count["b"] + count["c"]
  summary = dict(cases=len(rows), passed=count["pass"], applicable=applicable,
                 inapplicable=count["a"], documented=count["b"], defects=count["c"],
                 not_applicable=count["n/a"],
                 unclassified=sum(r["reason"].startswith("UNCLASSIFIED") for r in rows),
                 figure=f"{count['pass']} of {applicable} applicable pass")
  return rows, per_fn, summary


def print_report(rows, per_fn, summary) -> None:
  cats = ("pass", "a", "b", "c", "n/a")
  print(f"\n{'test function':<48}" + "".join(f"{c:>6}" for c in cats))
  for fn, cnt in per_fn.items():
    print(f"{fn:<48}" + "".join(f"{cnt[c] or '':>6}" for c in cats))
  print("\nfailures (category: reason | first error line):")
  for r in rows:
    if r["outcome"] == "failed":
      print(f"  [{r['category']}] {r['case']}\n      {r['reason']}\n      | {r['message']}")
  print(f"\n{summary['figure']}  (a: {summary['inapplicable']} inapplicable by design, "
        f"b: {summary['documented']} documented differences, c: {summary['defects']} "
        f"defects, n/a: {summary['not_applicable']} skipped or not using fk.KMeans)")


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=None, help="default: sklearn-parity[-x64]_<card>_<date>.json")
  ap.add_argument("--x64", action="store_true", help="run with JAX_ENABLE_X64=1")
  ap.add_argument("--cap-s", type=float, default=1200.0)
  ap.add_argument("-k", default="not MiniBatch and not minibatch",
                  help="pytest -k expression (default: the KMeans tests)")
  args = ap.parse_args()
  os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")
  # scikit-learn skips its float32 cases unless asked: they are fk's own dtype.
  os.environ.setdefault("SKLEARN_RUN_FLOAT32_TESTS", "1")
  if args.x64:
    os.environ["JAX_ENABLE_X64"] = "1"  # before jax is imported
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import pytest
  import sklearn

  import flashkmeans_jax as fk
  from benchmarks import harness

  spec = importlib.util.find_spec("sklearn.cluster.tests.test_k_means")
  if spec is None or spec.origin is None:
    print("scikit-learn's tests are not installed (sklearn/cluster/tests)")
    return 2
  out = harness.Results(args.out or harness.result_name(
      "sklearn-parity-x64" if args.x64 else "sklearn-parity"), official=False,
      sklearn=sklearn.__version__, pytest=pytest.__version__, test_file=spec.origin,
      k=args.k, x64=args.x64, float32_tests=os.environ["SKLEARN_RUN_FLOAT32_TESTS"])
  rec = Recorder(fk.KMeans, args.cap_s)
  # -c os.devnull: no project configuration (testpaths, filters) applies;
  # scikit-learn's conftest (global_random_seed, ...) loads from its package.
  site = os.path.dirname(os.path.dirname(sklearn.__file__))
  code = pytest.main([spec.origin, "-q", "-p", "no:cacheprovider", "-c", os.devnull,
                      "--rootdir", site, "--confcutdir", site, "-k", args.k,
                      "--no-header", "-rN", "--tb=no"], plugins=[rec])
  rows, per_fn, summary = summarise(rec.cases)
  summary["pytest_exit_code"] = int(code)
  summary["wall_s"] = round(time.perf_counter() - rec.start, 1)
  print_report(rows, per_fn, summary)
  out.rows = rows
  out.meta["summary"] = summary
  out.save()
  print(f"wrote {out.path}")
  return 1 if summary["unclassified"] else 0


if __name__ == "__main__":
  sys.exit(main())
