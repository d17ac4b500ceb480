"""Markdown tables from the suite's JSON files.

    python benchmarks/report.py benchmarks/results/grid-*.json
    python benchmarks/report.py --into benchmarks/RESULTS.md --section grid \
        benchmarks/results/grid-single_h200_2026-11-26.json ...

Without ``--into`` the tables go to standard output. With it they replace
whatever stands between ``<!-- suite:SECTION:begin -->`` and
``<!-- suite:SECTION:end -->`` in that file (the file is written whole, so
an interrupted run leaves the old one), or are appended with new markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402


def _f(v, nd=3):
  return "" if v is None else f"{v:.{nd}f}"


def table(rows):
  out = ["| B | N | K | D | dtype | ours ms/iter | official ms/iter | XLA ms/iter | official/ours | "
         "XLA/ours | assign ms | assign TFLOP/s | floor ms | first call s | ours MiB | official MiB "
         "| fast_pytorch_kmeans ms/iter | fastkmeans ms/iter |",
         "|" + "---|" * 18]
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
        _f(r.get("official_mem_bytes", 0) / 2**20, 0),
        _other(r, "fast_pytorch"), _other(r, "fastkmeans")]) + " |")
  return "\n".join(out)


def _other(r, name):
  """Another library's ms/iter, ``failed`` if it raised, blank if not run."""
  if name + "_ms" in r:
    return _f(r[name + "_ms"])
  return "failed" if name + "_error" in r else ""


def render(loaded) -> str:
  """Tables for ``[(path, suite_json), ...]`` plus the 16-bit summary line."""
  lines, allrows = [], {}
  for p, d in loaded:
    m = d["meta"]
    lines.append(
        f"\n### {p.rsplit('/', 1)[-1]}: {m['device']}, jax {m['jax']}, torch {m.get('torch')}, "
        f"flash-kmeans {m.get('flash_kmeans')}, driver {m.get('driver')}, {m['date']}; "
        f"measured ceilings: bf16 matmul {m['ceilings']['bf16_matmul_tflops']:.0f} TFLOP/s, "
        f"copy {m['ceilings']['copy_gbs']:.0f} GB/s\n")
    lines.append(table(d["rows"]))
    for r in d["rows"]:
      if "official_over_ours" in r and r["dtype"] != "float32":
        # A later file's row replaces an earlier one of the same shape (a
        # re-run after a change), so every shape counts once.
        allrows[(r["B"], r["N"], r["K"], r["D"], r["dtype"])] = r
  if allrows:
    ratios = [r["official_over_ours"] for r in allrows.values()]
    lines.append(f"\n16-bit rows: official/ours min {min(ratios):.2f}, median "
                 f"{statistics.median(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} "
                 "rows (a row re-run in a later file replaces the earlier one)")
  return "\n".join(lines) + "\n"


def write_markdown(path, loaded, section="grid"):
  """Puts :func:`render`'s tables between the section's markers in ``path``."""
  begin, end = f"<!-- suite:{section}:begin -->", f"<!-- suite:{section}:end -->"
  body = f"{begin}\n{render(loaded)}{end}\n"
  old = open(path).read() if os.path.exists(path) else ""
  if begin in old and end in old:
    after = old[old.index(end) + len(end):]
    new = old[:old.index(begin)] + body + (after[1:] if after.startswith("\n") else after)
  else:
    new = old + ("\n" if old else "") + body
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    fh.write(new)
  os.replace(tmp, path)


def main(argv):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("paths", nargs="+")
  ap.add_argument("--into", default=None, help="Markdown file to update (see above)")
  ap.add_argument("--section", default="grid")
  args = ap.parse_args(argv)
  loaded = [(p, harness.load(p)) for p in args.paths]
  if args.into:
    write_markdown(args.into, loaded, args.section)
  else:
    print(render(loaded), end="")


if __name__ == "__main__":
  main(sys.argv[1:])
