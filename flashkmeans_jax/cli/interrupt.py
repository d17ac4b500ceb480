"""Stopping the CLI promptly on SIGINT, SIGTERM and SIGHUP.

Why a worker thread: the in-memory run is one compiled ``lax.while_loop``,
and a Python signal handler only runs between bytecodes of the main thread,
so while the main thread waits inside XLA for that loop (for as long as the
run lasts) a handler, or a ``KeyboardInterrupt``, would have to wait for the
loop to end. XLA offers no way to cancel a running computation. So the whole
run happens in a worker thread, the main thread only waits for it (in short
timed waits, so a signal delivered to any thread is seen within 50 ms), and
the handler -- on the main thread -- deletes the temporary output files
(:meth:`flashkmeans_jax.cli.outputs.Outputs.abort`, under the lock that
guards their creation and renaming), prints one line and ends the process
with ``os._exit(128 + signum)``, which does not wait for the worker, XLA's
threads or a streaming pass in flight. Nothing else needs cleaning: the
inputs are only read and the outputs appear only by the final rename.

A signal that is ignored when the CLI starts (``nohup``, a background job's
SIGINT) stays ignored.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

from flashkmeans_jax.cli.errors import PROG

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
# How long the main thread sleeps between looks at the worker: the latency
# of a signal that the OS delivered to another thread.
_POLL_S = 0.05


def run_stoppable(work: Callable[[], Any], abort: Callable[[], None]) -> Any:
  """Runs ``work()`` in a worker thread and returns its result (or raises
  its exception); a stop signal meanwhile runs ``abort()`` and exits with
  status ``128 + signum``.

  Outside the main thread (where Python cannot install signal handlers)
  ``work()`` runs directly.
  """
  if threading.current_thread() is not threading.main_thread():
    return work()
  result: dict[str, Any] = {}
  done = threading.Event()
  once = threading.Lock()

  def target() -> None:
    try:
      result["value"] = work()
    except BaseException as e:  # noqa: BLE001 - handed to the main thread
      result["error"] = e
    finally:
      done.set()

  def handler(signum: int, frame: Any) -> None:
    if not once.acquire(blocking=False):  # a second signal during the clean-up
      return
    try:
      abort()
    finally:
      try:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: interrupted by {signal.Signals(signum).name}\n")
        sys.stderr.flush()
      except Exception:  # noqa: BLE001 - a closed stream must not block the exit
        pass
      os._exit(128 + signum)

  previous = {}
  for s in STOP_SIGNALS:
    if signal.getsignal(s) is not signal.SIG_IGN:
      previous[s] = signal.signal(s, handler)
  try:
    worker = threading.Thread(target=target, name=f"{PROG}-run", daemon=True)
    worker.start()
    while not done.wait(_POLL_S):
      pass
  finally:
    for s, h in previous.items():
      signal.signal(s, signal.SIG_DFL if h is None else h)  # None: set outside Python
  if "error" in result:
    raise result["error"]
  return result["value"]
