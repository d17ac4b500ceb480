"""benchmarks/report.py: the suite's tables and their place in RESULTS.md."""

from benchmarks import report

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
