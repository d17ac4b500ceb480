"""Sums an Nsight Compute CSV (``--metrics gpu__time_duration.sum --csv``) per kernel.

    python benchmarks/ncu_summary.py ncu.csv [--iters 2]

Prints, per kernel name, the launches and the total and per-iteration
microseconds, largest first.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io


def summarise(text: str):
  start = text.find('"ID"')
  rows = csv.DictReader(io.StringIO(text[start:]))
  total = collections.defaultdict(float)
  count = collections.Counter()
  for r in rows:
    if r.get("Metric Name") != "gpu__time_duration.sum":
      continue
    value = float(r["Metric Value"].replace(",", ""))
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(r.get("Metric Unit"), 1.0)
    name = r["Kernel Name"][:90]
    total[name] += value * scale
    count[name] += 1
  return total, count


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("csv")
  ap.add_argument("--iters", type=int, default=2)
  args = ap.parse_args()
  total, count = summarise(open(args.csv).read())
  grand = sum(total.values())
  print(f"{'us/iter':>9} {'launches':>8}  kernel")
  for name, us in sorted(total.items(), key=lambda t: -t[1]):
    print(f"{us / args.iters:9.1f} {count[name]:8d}  {name}")
  print(f"{grand / args.iters:9.1f}           all kernels, per iteration "
        "(includes the final assignment once)")


if __name__ == "__main__":
  main()
