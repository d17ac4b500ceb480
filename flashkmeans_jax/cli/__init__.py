"""Command-line tool ``flashkmeans-jax`` (also ``python -m flashkmeans_jax``).

``flashkmeans-jax data.npy -k 64`` clusters the rows of a ``.npy``/``.npz``
file or of a raw binary file and prints a one-screen summary; with
``--centroids-out``/``--labels-out`` it writes the results as ``.npy``.
Without an input file it runs the built-in demo (digits and blobs against
scikit-learn).

Inputs larger than ``--stream-above`` bytes are clustered out of core by
:func:`flashkmeans_jax.kmeans_streaming` (the file stays a memory map on the
host); smaller ones are moved to the device whole.

Every argument is checked before any work, by the library's own checks
(:mod:`flashkmeans_jax.core.validation`), so a bad value gets the message
:func:`flashkmeans_jax.kmeans` gives, prefixed with the flag; output paths
are checked and reserved then too (:mod:`.outputs`).

Outputs are written to a temporary file in the target directory and renamed
when complete, so a failed or interrupted run never leaves a partial output
or a temporary file. Errors, and a result that is not finite, end the run
with exit status 1 and one line on stderr (``--debug`` shows the traceback);
SIGINT, SIGTERM and SIGHUP stop it within a fraction of a second with status
``128 + signum`` (:mod:`.interrupt`).

Modules: ``parser`` (the flags), ``inputs`` (reading data and ``--init``),
``outputs`` (output paths and files), ``interrupt`` (signals), ``run`` (one
clustering run), ``entry`` (``main``).
"""

from flashkmeans_jax.cli.entry import main
from flashkmeans_jax.cli.errors import PROG, CLIError
from flashkmeans_jax.cli.inputs import device_memory_bytes, parse_size
from flashkmeans_jax.cli.parser import build_parser

__all__ = ["PROG", "CLIError", "build_parser", "device_memory_bytes", "main", "parse_size"]
