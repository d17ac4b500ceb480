"""Markdown tables from the suite's JSON files.

    python benchmarks/report.py benchmarks/results/suite_*.json
"""

from __future__ import annotations

import json
import statistics
import sys


def _f(v, nd=3):
  return "" if v is None else f"{v:.{nd}f}"


def table(rows):
  out = ["| B | N | K | D | dtype | ours ms/iter | official ms/iter | XLA ms/iter | official/ours | "
         "XLA/ours | assign ms | assign TFLOP/s | floor ms | first call s | ours MiB | official MiB |",
         "|" + "---|" * 16]
  for r in rows:
    if "error" in r:
      out.append(f"| {r['B']} | {r['N']} | {r['K']} | {r['D']} | {r['dtype']} | error: {r['error'][:60]} |")
      continue
    out.append("| " + " | ".join([
        str(r["B"]), str(r["N"]), str(r["K"]), str(r["D"]), r["dtype"], _f(r["ours_ms"]),
        _f(r.get("official_ms")), _f(r.get("xla_ms")) or "n/a (N×K matrix)",
        _f(r.get("official_over_ours"), 2), _f(r.get("xla_over_ours"), 2),
        _f(r["ours_assign_ms"]), _f(r["ours_assign_tflops"], 0), _f(r["floor_ms"]),
        _f(r["ours_first_call_s"], 2), _f(r["ours_mem_bytes"] / 2**20, 0),
        _f(r.get("official_mem_bytes", 0) / 2**20, 0)]) + " |")
  return "\n".join(out)


def main(paths):
  allrows = []
  for p in paths:
    d = json.load(open(p))
    m = d["meta"]
    print(f"\n### {p.rsplit('/', 1)[-1]}: {m['device']}, jax {m['jax']}, torch {m.get('torch')}, "
          f"flash-kmeans {m.get('flash_kmeans')}, driver {m.get('driver')}, {m['date']}; "
          f"measured ceilings: bf16 matmul {m['ceilings']['bf16_matmul_tflops']:.0f} TFLOP/s, "
          f"copy {m['ceilings']['copy_gbs']:.0f} GB/s\n")
    print(table(d["rows"]))
    allrows += [r for r in d["rows"] if "official_over_ours" in r and r["dtype"] != "float32"]
  if allrows:
    ratios = [r["official_over_ours"] for r in allrows]
    print(f"\n16-bit rows: official/ours min {min(ratios):.2f}, median "
          f"{statistics.median(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} rows")


if __name__ == "__main__":
  main(sys.argv[1:])
