#!/usr/bin/env bash
# Creates (once) the project's virtual environment in .venv with a Python >= 3.12
# and installs the package with its development extras. Sourced by the other
# scripts; prints where it found Python.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
  local c
  for c in "${FLASHKMEANS_PYTHON:-}" python3.13 python3.12 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for c in "$(pyenv root)"/versions/3.1[2-9]*/bin/python3; do
      if [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        echo "$c"; return 0
      fi
    done
  fi
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  PY="$(find_python)" || {
    echo "error: flashkmeans-jax needs Python >= 3.12 (JAX >= 0.11 does) and none was found:" >&2
    echo "       tried python3.13, python3.12, python3 and pyenv's versions; install one or set FLASHKMEANS_PYTHON." >&2
    exit 1
  }
  echo "using $PY ($("$PY" --version 2>&1))" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import flashkmeans_jax, pytest, sklearn, hypothesis' 2>/dev/null \
   || [ "$ROOT/pyproject.toml" -nt "$VENV/.installed" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]" >&2
  touch "$VENV/.installed"
fi
export PY="$VENV/bin/python"
