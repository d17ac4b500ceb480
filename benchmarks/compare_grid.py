"""Before/after check of a change: the grid's Lloyd iterations of one tree of
this library, to compare with a run of another tree.

    PYTHONPATH=/path/to/old/checkout python benchmarks/compare_grid.py --label before
    PYTHONPATH=. python benchmarks/compare_grid.py --label after
    python benchmarks/compare_grid.py --compare before.json after.json
    python benchmarks/compare_grid.py --smoke       # tiny rows, any backend

``flashkmeans_jax`` is imported from wherever Python finds it first
(``PYTHONPATH``, then an installed copy): this script puts no checkout on
``sys.path`` itself, and the JSON records which one it measured (folder and a
hash of its sources). It uses only what every version of the public API has:
``fk.kmeans`` and ``fk.batched_kmeans`` with an ``init`` array, ``max_iter``,
``tol=0`` and everything else at its default (``impl``, ``check_finite``,
precision). Other libraries stay out: this compares two trees of this one.

For every grid row (``run_suite.py``'s ``single``, ``batched`` and
``float32`` groups, :data:`benchmarks.harness.GRID`), with the same data and
initial centroids (the first K points of each member), after one warm-up of
each length, three synchronised calls of ``t1`` and of ``t2`` iterations
(:func:`benchmarks.harness.grid_iters`) give:

* ``whole_ms_per_iter``: the median whole default call of ``t2`` iterations
  (argument checks, the eager finiteness check, the loop, the final
  assignment) divided by ``t2``;
* ``marginal_ms``: ``(median t(t2) - median t(t1)) / (t2 - t1)``, one more
  iteration alone.

A row whose time estimated from its FLOPs (``2 B N K D`` per iteration at
about 400 TFLOP/s for 16-bit points and 150 for float32 on a GPU) exceeds
``--cap-s`` is skipped with a note. ``--compare A B`` prints, per row, B/A
for both figures and the spread of each run's samples (max - min over the
median of the ``t2`` calls), which is the noise to judge the ratio by.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

if __package__:
  from benchmarks import harness
else:  # run as a file: its folder is sys.path[0] (and no checkout is added)
  import harness


def parse_rows(spec: str | None, groups: list[str]) -> dict[str, list[int] | None]:
  """``"0,2"`` (those rows of every group) or ``"single:0,batched:3"``."""
  chosen: dict[str, list[int] | None] = {g: None for g in groups}
  if not spec:
    return chosen
  for item in spec.split(","):
    group, _, index = item.rpartition(":")
    for g in ([group] if group else groups):
      if g not in chosen:
        raise SystemExit(f"--rows names group {g!r}, not among --groups {groups}")
      chosen[g] = (chosen[g] or []) + [int(index)]
  return chosen


def spread(samples: list[float]) -> float:
  """(max - min) / median of a run's samples."""
  return (max(samples) - min(samples)) / statistics.median(samples)


def measure(b, n, k, d, dtype, reps: int, cap_s: float | None) -> dict:
  rec = dict(B=b, N=n, K=k, D=d, dtype=dtype)
  t1, t2 = harness.grid_iters(b, n, k, d)
  rec["iters"] = (t1, t2)
  # Warm-up of both lengths, then reps of each, plus compilation.
  estimate = harness.estimated_s(2.0 * b * n * k * d * (t1 + t2) * (1 + reps), dtype)
  rec["estimated_s"] = estimate
  note = harness.over_cap(estimate, cap_s)
  if note:
    rec["skipped"] = note
    return rec
  x, c = harness.grid_problem(b, n, k, d, dtype)
  short, long = harness.run_samples(harness.lloyd_runner(x, c, k), t1, t2, reps)
  rec["t1_samples_s"], rec["t2_samples_s"] = short, long
  rec["whole_ms_per_iter"] = statistics.median(long) * 1e3 / t2
  rec["marginal_ms"] = (statistics.median(long) - statistics.median(short)) * 1e3 / (t2 - t1)
  rec["spread"] = spread(long)
  return rec


def key_of(r):
  return (r["B"], r["N"], r["K"], r["D"], r["dtype"])


def compare(a: dict, b: dict) -> str:
  """Markdown table of B/A per row present (and measured) in both runs."""
  rows_a = {key_of(r): r for r in a["rows"] if "marginal_ms" in r}
  lines = [f"A: {a['meta'].get('label')} {a['meta']['flashkmeans_jax']['path']} "
           f"({a['meta']['flashkmeans_jax']['source_sha256']}), {a['meta']['date']}",
           f"B: {b['meta'].get('label')} {b['meta']['flashkmeans_jax']['path']} "
           f"({b['meta']['flashkmeans_jax']['source_sha256']}), {b['meta']['date']}", "",
           "| B | N | K | D | dtype | whole A ms/iter | whole B | B/A | marginal A ms | "
           "marginal B | B/A | spread A | spread B |", "|" + "---|" * 13]
  ratios = []
  for r in b["rows"]:
    ra = rows_a.get(key_of(r))
    if ra is None or "marginal_ms" not in r:
      continue
    whole, marg = r["whole_ms_per_iter"] / ra["whole_ms_per_iter"], (
        r["marginal_ms"] / ra["marginal_ms"])
    ratios.append(whole)
    lines.append("| " + " | ".join(map(str, key_of(r))) + " | " + " | ".join(
        f"{v:.3f}" for v in (ra["whole_ms_per_iter"], r["whole_ms_per_iter"], whole,
                             ra["marginal_ms"], r["marginal_ms"], marg)) +
        f" | {100 * ra['spread']:.1f} % | {100 * r['spread']:.1f} % |")
  if ratios:
    lines += ["", f"whole-call B/A over {len(ratios)} rows: min {min(ratios):.3f}, "
              f"median {statistics.median(ratios):.3f}, max {max(ratios):.3f}"]
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--groups", default="single,batched,float32")
  ap.add_argument("--rows", default=None,
                  help='row indices: "0,2" (in every group) or "single:0,batched:3"')
  ap.add_argument("--dtypes", default="float16,bfloat16",
                  help="dtypes of the single and batched groups (float32 runs float32)")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--cap-s", type=float, default=120.0,
                  help="skip a row whose estimated time exceeds this many seconds")
  ap.add_argument("--label", default=None, help="e.g. before / after (in the file name)")
  ap.add_argument("--out", default=None,
                  help="default: compare-grid[-<label>]_<card>_<date>.json")
  ap.add_argument("--smoke", action="store_true", help="tiny rows (a CPU check of the script)")
  ap.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                  help="print B/A for two saved runs and exit")
  args = ap.parse_args(argv)
  if args.compare:
    print(compare(*(harness.load(p) for p in args.compare)))
    return
  grid = harness.SMOKE_GRID if args.smoke else harness.GRID
  groups = args.groups.split(",")
  chosen = parse_rows(args.rows, groups)
  what = "compare-grid" + ("-smoke" if args.smoke else "") + (
      f"-{args.label}" if args.label else "")
  out = harness.Results(args.out or harness.result_name(what), official=False,
                        label=args.label, groups=groups, reps=args.reps, cap_s=args.cap_s)
  print(json.dumps(out.meta), flush=True)
  for g in groups:
    shapes = grid[g] if chosen[g] is None else [grid[g][i] for i in chosen[g]]
    dtypes = ["float32"] if g == "float32" else args.dtypes.split(",")
    for (b, n, k, d) in shapes:
      for dt in dtypes:
        try:
          rec = measure(b, n, k, d, dt, args.reps, args.cap_s)
        except Exception as e:  # noqa: BLE001 -- a failed row is a result
          rec = dict(B=b, N=n, K=k, D=d, dtype=dt, error=repr(e)[:400])
        rec["group"] = g
        out.add(rec)
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
