"""``python -m flashkmeans_jax``: the command-line tool (the demo without input)."""

from flashkmeans_jax.cli import main

if __name__ == "__main__":
  raise SystemExit(main())
