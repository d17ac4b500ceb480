#!/usr/bin/env bash
# Installs the project (first run) and runs the built-in demo: k-means on
# scikit-learn's digits and on synthetic blobs, compared with scikit-learn.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$PY" -m flashkmeans_jax "$@"
