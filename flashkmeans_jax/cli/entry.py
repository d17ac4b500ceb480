"""``main``: parse, run in a stoppable worker, report errors as one line."""

from __future__ import annotations

import sys

from flashkmeans_jax.cli.errors import PROG, CLIError
from flashkmeans_jax.cli.interrupt import run_stoppable
from flashkmeans_jax.cli.outputs import Outputs
from flashkmeans_jax.cli.parser import build_parser


def _run(args, outputs: Outputs) -> int:
  if args.input is None:
    from flashkmeans_jax.demo import run_demo
    run_demo(seed=args.seed)
    return 0
  from flashkmeans_jax.cli.run import cluster
  return cluster(args, outputs)


def main(argv: list[str] | None = None) -> int:
  """Entry point of ``flashkmeans-jax``; returns the exit status (a stop
  signal ends the process with ``128 + signum`` instead)."""
  args = build_parser().parse_args(argv)
  outputs = Outputs()
  try:
    return run_stoppable(lambda: _run(args, outputs), outputs.abort)
  except KeyboardInterrupt:  # only when main() runs outside the main thread
    print(f"{PROG}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001 - one line for the user, traceback with --debug
    if args.debug:
      raise
    msg = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, CLIError):
      msg = f"{msg} ({type(e).__name__})"
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 1
  finally:
    outputs.discard()
