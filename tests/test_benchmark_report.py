"""benchmarks/: the suite's tables and their place in RESULTS.md (report.py), and
the shared harness and the before/after comparison (CPU checks, no device timing)."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import compare_grid, harness, report

META = {"device": "Card", "jax": "0.11.2", "date": "today",
        "ceilings": {"bf16_matmul_tflops": 700.0, "copy_gbs": 3000.0}}


def _row(b, dtype, official, ours, **extra):
  return dict(B=b, N=1024, K=8, D=16, dtype=dtype, ours_ms=ours, official_ms=official,
              xla_ms=2.0, official_over_ours=official / ours, xla_over_ours=2.0 / ours,
              ours_assign_ms=0.1, ours_assign_tflops=1.0, floor_ms=0.01,
              ours_first_call_s=1.0, ours_mem_bytes=2**20, official_mem_bytes=2**21, **extra)


def test_later_rows_replace_earlier_ones_in_the_summary():
  first = {"meta": META, "rows": [_row(1, "float16", 1.0, 2.0), _row(2, "float16", 3.0, 1.0)]}
  rerun = {"meta": META, "rows": [_row(1, "float16", 1.0, 0.5, fast_pytorch_error="x")]}
  text = report.render([("a.json", first), ("b.json", rerun)])
  assert "min 2.00, median 2.50, max 3.00 over 2 rows" in text
  assert "| failed |" in text  # fast_pytorch raised; fastkmeans blank


def test_write_markdown_replaces_between_markers(tmp_path):
  path = tmp_path / "RESULTS.md"
  path.write_text("intro\n<!-- suite:grid:begin -->\nold table\n<!-- suite:grid:end -->\nafter\n")
  data = [("s.json", {"meta": META, "rows": [_row(1, "bfloat16", 3.0, 1.0)]})]
  report.write_markdown(str(path), data)
  once = path.read_text()
  assert once.startswith("intro\n<!-- suite:grid:begin -->") and once.endswith("end -->\nafter\n")
  assert "old table" not in once and "| 1 | 1024 | 8 | 16 | bfloat16 |" in once
  report.write_markdown(str(path), data)
  assert path.read_text() == once  # idempotent
  report.write_markdown(str(path), data, section="other")  # new section appended
  assert path.read_text().count("<!-- suite:other:begin -->") == 1


# --- benchmarks/harness.py and compare_grid.py -----------------------------


def test_result_name_says_what_dtype_card_and_date():
  assert harness.result_name("grid-single", card_name="h200", date="2026-11-26") == (
      "grid-single_h200_2026-11-26.json")
  assert harness.result_name("streaming", "float32", "2xh200", "2026-11-26") == (
      "streaming_float32_2xh200_2026-11-26.json")
  assert harness.card() == "cpu"


def test_results_file_holds_meta_and_every_row(tmp_path):
  path = str(tmp_path / "r.json")
  out = harness.Results(path, official=False, n=8, dtype="float16")
  out.add({"a": 1})
  out.add({"a": 2})
  data = harness.load(path)
  assert [r["a"] for r in data["rows"]] == [1, 2]
  meta = data["meta"]
  assert meta["card"] == "cpu" and meta["n"] == 8 and meta["dtype"] == "float16"
  assert {"jax", "date", "argv", "flashkmeans_jax"} <= set(meta)
  assert len(meta["flashkmeans_jax"]["source_sha256"]) == 16
  assert not (tmp_path / "r.json.tmp").exists()


def test_marginal_iteration_cancels_the_fixed_cost(monkeypatch):
  clock = {"t": 0.0}
  calls = []

  def run(iters):  # 10 ms of set-up plus 2 ms per iteration, on a fake clock
    calls.append(iters)
    clock["t"] += 0.010 + 0.002 * iters

  monkeypatch.setattr(harness, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))
  assert harness.marginal_ms(run, 2, 12, reps=3) == pytest.approx(2.0)
  assert calls == [2, 12] + [2] * 3 + [12] * 3  # one warm-up of each length first


def test_time_cap_from_flops():
  assert harness.estimated_s(400e12, "float16", "gpu") == pytest.approx(1.0)
  assert harness.estimated_s(150e12, jnp.float32, "gpu") == pytest.approx(1.0)
  assert harness.over_cap(2.0, 1.0).startswith("skipped")
  assert harness.over_cap(0.5, 1.0) is None and harness.over_cap(1e9, None) is None


def test_lloyd_runner_runs_exactly_the_iterations_asked():
  x, c = harness.grid_problem(2, 512, 8, 8, "float32")
  assert x.shape == (2, 512, 8) and np.array_equal(c, x[:, :8])
  r = harness.lloyd_runner(x, c, 8, check_finite=False)(2)
  assert np.all(np.asarray(r.n_iter) == 2) and r.centroids.shape == (2, 8, 8)


def test_compare_grid_table_and_row_choice():
  def run(label, ms):
    lib = {"path": "/x", "source_sha256": label}
    rows = [dict(B=1, N=4, K=2, D=2, dtype="float16", whole_ms_per_iter=ms,
                 marginal_ms=ms / 2, spread=0.01),
            dict(B=1, N=8, K=2, D=2, dtype="float16", skipped="skipped: ...")]
    return {"meta": {"label": label, "flashkmeans_jax": lib, "date": "d"}, "rows": rows}
  text = compare_grid.compare(run("before", 2.0), run("after", 3.0))
  assert "| 1 | 4 | 2 | 2 | float16 | 2.000 | 3.000 | 1.500 | 1.000 | 1.500 | 1.500 |" in text
  assert "over 1 rows: min 1.500" in text
  assert compare_grid.parse_rows("single:0,1", ["single", "batched"]) == {
      "single": [0, 1], "batched": [1]}
  assert compare_grid.parse_rows("single:0,batched:2", ["single", "batched"]) == {
      "single": [0], "batched": [2]}
  assert compare_grid.parse_rows(None, ["single"]) == {"single": None}
