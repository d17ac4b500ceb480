"""The workload suite's rows (issue 18): what users run, named by workload.

A row is a :class:`Row`: the shape ``(B, N, K, D)``, dtype, metric, whether
it carries sample weights, whether it starts warm (from centroids a previous
clustering of the same data left), and the two iteration counts whose calls
are timed (the whole call at ``iters[1]`` is the figure users pay; the
difference gives the marginal iteration). :func:`tiny` scales a row down for
a CPU check of the script (``suite.py --tiny``).
"""

from __future__ import annotations

import dataclasses

if __package__:
  from benchmarks import harness
else:  # run as a file: its folder is sys.path[0]
  import harness


@dataclasses.dataclass(frozen=True)
class Row:
  group: str
  b: int
  n: int
  k: int
  d: int
  dtype: str = "float16"
  metric: str = "sqeuclidean"
  weights: bool = False
  warm: bool = False
  iters: tuple[int, int] = (2, 12)
  note: str = ""

  @property
  def name(self) -> str:
    parts = [self.group, f"{self.b}x{self.n}x{self.k}x{self.d}", self.dtype]
    if self.metric != "sqeuclidean":
      parts.append(self.metric)
    if self.weights:
      parts.append("weighted")
    if self.warm:
      parts.append("warm")
    return "/".join(parts)

  def flops_per_iter(self) -> float:
    return 2.0 * self.b * self.n * self.k * self.d


def _grid_rows() -> list[Row]:
  rows = []
  for g in ("single", "batched"):
    for (b, n, k, d) in harness.GRID[g]:
      for dt in harness.GRID_DTYPES[g]:
        rows.append(Row("grid", b, n, k, d, dt, iters=harness.grid_iters(b, n, k, d)))
  return rows


# Quantisation: one codebook per weight row or group, D of 1 to 8, sample
# weights (e.g. activation statistics), tens of iterations.
QUANT = [Row("quant", *s, dtype="float32", weights=True, iters=(10, 30)) for s in [
    (2048, 8192, 16, 1), (1, 1 << 21, 256, 4), (512, 4096, 256, 2), (4096, 2048, 8, 1),
    (256, 4096, 256, 8), (16, 65536, 4096, 1)]]

# Embeddings: large D, large K, squared Euclidean and cosine (spherical).
EMBED = [Row("embed", 1, 1 << 19, 4096, 768, metric=m, iters=(2, 6))
         for m in ("sqeuclidean", "cosine")] + [
    Row("embed", 1, 1 << 20, 16384, 1024, metric=m, iters=(1, 3))
    for m in ("sqeuclidean", "cosine")] + [
    Row("embed", 1, 1 << 18, 65536, 2048, metric="cosine", iters=(1, 3))]

# Attention-style batches (token clustering per head / frame): warm starts
# from the previous step's centroids and few iterations, 2 and 10.
ATTENTION = [Row("attention", *s, warm=True, iters=(2, 10)) for s in [
    (32, 75600, 1000, 128), (64, 37440, 293, 128)]]

# Index building (IVF coarse quantiser): one huge problem, a few iterations.
INDEX = [Row("index", 1, 1 << 24, 65536, 128, iters=(1, 3))]

# float32 points at the default matmul precision.
FLOAT32 = [Row("float32", b, n, k, d, dtype="float32", iters=harness.grid_iters(b, n, k, d))
           for (b, n, k, d) in harness.GRID["float32"]] + [
    Row("float32", 1, 1 << 19, 4096, 768, dtype="float32", iters=(2, 6))]

GROUPS = {"grid": _grid_rows(), "quant": QUANT, "embed": EMBED, "attention": ATTENTION,
          "index": INDEX, "float32": FLOAT32}


def tiny(row: Row) -> Row:
  """The row scaled down to seconds on a CPU: B <= 2, N <= 512, K <= 8, a D
  of 16 or more cut to 32 (tiny D kept: its path is the point), 1 and 3
  iterations."""
  d = row.d if row.d < 16 else 32
  return dataclasses.replace(row, b=min(row.b, 2), n=min(row.n, 512), k=min(row.k, 8), d=d,
                             iters=(1, 3), note=f"tiny of {row.b}x{row.n}x{row.k}x{row.d}")


def select(groups: list[str], tiny_rows: bool = False,
           dtypes: list[str] | None = None) -> list[Row]:
  """The rows of ``groups`` (``dtypes`` filters the 16-bit grid rows)."""
  rows = []
  for g in groups:
    if g not in GROUPS:
      raise SystemExit(f"--rows: unknown group {g!r}; choose from {sorted(GROUPS)}")
    for r in GROUPS[g]:
      if dtypes and r.group == "grid" and r.dtype not in dtypes:
        continue
      rows.append(tiny(r) if tiny_rows else r)
  return rows
