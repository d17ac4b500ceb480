"""The quickstart notebook: stored without outputs, and runs top to bottom."""

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_notebook_is_stripped_and_up_to_date():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
  # The committed notebook is what the generator writes.
  sys.path.insert(0, str(ROOT / "notebooks"))
  try:
    import make_quickstart
  finally:
    sys.path.pop(0)
  assert [c.source for c in make_quickstart.build().cells] == [c.source for c in nb.cells]


def test_notebook_runs(monkeypatch, tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # The kernel is a child process: it must import this checkout's package with
  # the interpreter running the tests ("python3" resolves to sys.executable in
  # jupyter_client); figures come back as PNG outputs.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  outputs = {c.id: "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
             for c in nb.cells if c.cell_type == "code"}
  text = "\n".join(outputs.values())
  assert "iterations, inertia" in text and "agreement with the true digits" in text
  ari = float(text.split("same clustering (ARI): ")[1].split()[0])
  assert ari > 0.99
  assert "centroids (8, 16, 32)" in text
  first, last = (float(v) for v in text.split("loss ")[-1].split()[0::2][:2])
  assert last < first
  # Three plots in one figure were drawn.
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  assert len(images) == 1
