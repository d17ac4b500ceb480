"""Command-line entry point. Without arguments it runs the built-in demo."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="flashkmeans-jax",
      description="Exact k-means with JAX. With no input file, runs the built-in demo.")
  parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  args = parser.parse_args(argv)
  from flashkmeans_jax.demo import run_demo
  run_demo(seed=args.seed)
  return 0
