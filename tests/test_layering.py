"""The package's structure: layers whose imports point one way, no cycles,
small modules and no private names across modules.

Reads every module's source with ``ast`` (imports inside functions count), so
a lazy import that points up a layer fails here even if no test runs it.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "flashkmeans_jax"
NAME = "flashkmeans_jax"

# Lower layers never import higher ones. Modules of one layer may import each
# other (without cycles).
LAYERS = {
    "core": 0, "_version": 0,
    "ops": 1,
    "lloyd": 2,
    "drivers": 3,
    "api": 4,
    "estimator": 5, "cli": 5, "plotting": 5, "demo": 5, "__init__": 5, "__main__": 5,
}
MAX_LINES = 400


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PKG.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__" and len(parts) > 1:
    parts = parts[:-1]
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _layer(module: str) -> int:
  parts = module.split(".")
  top = parts[1] if len(parts) > 1 else "__init__"
  if top not in LAYERS:
    raise AssertionError(f"module {module} is in no layer; add it to LAYERS")
  return LAYERS[top]


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
  if node.level == 0:
    return node.module or ""
  base = module.split(".")
  if not is_pkg:
    base = base[:-1]
  base = base[: len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: pathlib.Path, known: set[str]) -> list[tuple[str, int]]:
  """``(imported package module, line)`` for every import in the file,
  including those inside functions; ``from m import n`` counts ``m.n`` when
  that is a module."""
  tree = ast.parse(path.read_text(), str(path))
  is_pkg = path.name == "__init__.py"
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(a.name, node.lineno) for a in node.names if a.name.startswith(NAME)]
    elif isinstance(node, ast.ImportFrom):
      src = _resolve(module, is_pkg, node)
      if not src.startswith(NAME):
        continue
      for a in node.names:
        full = f"{src}.{a.name}"
        out.append((full if full in known else src, node.lineno))
  return out


def private_names_used(path: pathlib.Path) -> list[tuple[str, int]]:
  """Underscore names taken from another package module: ``from m import _x``
  and ``alias._x`` where ``alias`` is an imported package module."""
  tree = ast.parse(path.read_text(), str(path))
  aliases = set()
  bad = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(NAME):
      for a in node.names:
        if a.name.startswith("_") and not a.name.startswith("__"):
          bad.append((f"{node.module}.{a.name}", node.lineno))
        aliases.add(a.asname or a.name)
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith(NAME):
          aliases.add(a.asname or a.name.split(".")[0])
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      bad.append((f"{node.value.id}.{node.attr}", node.lineno))
  return bad


def import_graph() -> dict[str, list[tuple[str, int]]]:
  mods = _modules()
  known = set(mods)
  return {m: [(i, ln) for i, ln in imports_of(m, p, known) if i in known and i != m]
          for m, p in mods.items()}


def test_every_module_is_in_a_layer():
  for m in _modules():
    _layer(m)


def test_imports_point_down_or_sideways():
  bad = []
  for m, deps in import_graph().items():
    for dep, line in deps:
      if dep == NAME:
        bad.append(f"{m}:{line} imports the package root")
      elif _layer(dep) > _layer(m):
        bad.append(f"{m}:{line} imports {dep} (layer {_layer(dep)} above {_layer(m)})")
  assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
  """One import cycle of ``graph`` (module -> imported modules), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for d in graph.get(m, ()):
      if state.get(d) == 1:
        return stack[stack.index(d):] + [d]
      if d not in state:
        found = visit(d)
        if found:
          return found
    stack.pop()
    state[m] = 2
    return None

  for m in sorted(graph):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return None


def test_no_import_cycle():
  graph = {m: sorted({d for d, _ in deps}) for m, deps in import_graph().items()}
  # A package's __init__ importing its own submodules is not a cycle of code.
  graph = {m: [d for d in ds if not d.startswith(m + ".")] for m, ds in graph.items()}
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
  # The check above must be able to fail.
  assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": ["b"], "b": []}) is None


def test_upward_import_is_detected(tmp_path):
  src = tmp_path / "m.py"
  src.write_text("def f():\n  from flashkmeans_jax.api import kmeans\n")
  deps = imports_of("flashkmeans_jax.core.m", src, {"flashkmeans_jax.api.kmeans"})
  assert deps == [("flashkmeans_jax.api.kmeans", 2)]
  assert _layer("flashkmeans_jax.api.kmeans") > _layer("flashkmeans_jax.core.m")


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size(module):
  lines = len(_modules()[module].read_text().splitlines())
  assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"


def test_no_private_names_across_modules():
  roots = [PKG, PKG.parent / "tests", PKG.parent / "benchmarks"]
  bad = []
  for root in roots:
    for p in sorted(root.rglob("*.py")):
      if p.name == "test_layering.py":
        continue
      bad += [f"{p.relative_to(PKG.parent)}:{ln} uses {name}"
              for name, ln in private_names_used(p)]
  assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_private_name_check_can_fail(tmp_path):
  src = tmp_path / "m.py"
  src.write_text("from flashkmeans_jax.lloyd import loop\nloop._hidden()\n"
                 "from flashkmeans_jax.core.validation import _concrete\n")
  assert sorted(n for n, _ in private_names_used(src)) == [
      "flashkmeans_jax.core.validation._concrete", "loop._hidden"]
