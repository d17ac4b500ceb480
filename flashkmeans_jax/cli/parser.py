"""The argument parser of ``flashkmeans-jax``."""

from __future__ import annotations

import argparse

from flashkmeans_jax.cli.errors import PROG

_EPILOG = """\
examples:
  flashkmeans-jax                                   run the built-in demo
  flashkmeans-jax emb.npy -k 256 --labels-out labels.npy --centroids-out c.npy
  flashkmeans-jax tok.npy -k 4096 --init 'k-means||' --order-out order.npz
  flashkmeans-jax data.npz --key train -k 10 --metric cosine --n-init 4
  flashkmeans-jax vecs.f32 --raw-dtype float32 --raw-shape=-1,768 -k 1024
  flashkmeans-jax big.npy -k 4096 --stream-above 2G --chunk-size 1000000

sizes (--stream-above) accept a plain number of bytes or a suffix K, M, G, T
(powers of 1024); "auto" is a quarter of the device's memory.
outputs are checked before any work (their directory writable, distinct from
each other and from the inputs; an existing file needs --force) and appear
only when complete.
exit status: 0 on success, 1 on an error or a non-finite result (one line on
stderr), 2 on bad usage, 128 + the signal's number when stopped by SIGINT
(130), SIGHUP (129) or SIGTERM (143), leaving no temporary file behind.
"""


def build_parser() -> argparse.ArgumentParser:
  """The parser; every flag's value is checked later by the library's checks."""
  p = argparse.ArgumentParser(
      prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Exact k-means (Lloyd) with JAX and Pallas GPU kernels.\n\n"
                  "Clusters the rows of an [N, D] array stored in a file and prints a\n"
                  "summary; with no input file, runs the built-in demo (digits and\n"
                  "blobs compared with scikit-learn).",
      epilog=_EPILOG)
  p.add_argument("input", nargs="?", metavar="INPUT",
                 help="data file: .npy, .npz (see --key) or raw binary rows (see "
                      "--raw-dtype/--raw-shape). Omit to run the demo.")
  g = p.add_argument_group("input")
  g.add_argument("--key", metavar="NAME",
                 help="array to use from an .npz file (default: its only array)")
  g.add_argument("--raw-dtype", metavar="DTYPE",
                 help="read INPUT as raw binary (a memory map) of this dtype, e.g. float32")
  g.add_argument("--raw-shape", metavar="N,D",
                 help="shape of a raw INPUT; leave N out (--raw-shape ,D) or give -1 "
                      "(--raw-shape=-1,D) to infer it from the file size")
  g.add_argument("--no-check-finite", dest="check_finite", action="store_false",
                 help="let rows holding NaN/Inf through instead of refusing the data "
                      "(and skip the scan for them, one read of a streamed file): such "
                      "rows get label 0, are left out of the centroids and of the "
                      "reported inertia")
  g = p.add_argument_group("clustering")
  g.add_argument("-k", "--clusters", type=int, metavar="K",
                 help="number of clusters (required with INPUT)")
  g.add_argument("--metric", default="sqeuclidean", choices=["sqeuclidean", "cosine", "dot"],
                 help="distance (default sqeuclidean; cosine = spherical k-means)")
  g.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                 help="dtype to cluster in (default: keep float16/bfloat16/float32 data, "
                      "cast anything else to float32)")
  g.add_argument("--max-iter", type=int, default=300, metavar="N",
                 help="most Lloyd iterations (default 300)")
  g.add_argument("--tol", type=float, default=1e-4,
                 help="relative centroid-shift tolerance, scikit-learn's rule (default 1e-4; "
                      "0 runs to a fixed point or --max-iter)")
  g.add_argument("--init", default="k-means++",
                 metavar="{k-means++,k-means||,random,FILE.npy}",
                 help="seeding: k-means++ (default, greedy), k-means|| (scalable "
                      "k-means++: 8 rounds drawing K/4 points each, then k-means++ on "
                      "them; for large K), random, or a .npy file of [K, D] starting "
                      "centroids")
  g.add_argument("--n-init", type=int, default=1, metavar="N",
                 help="seedings to run; the lowest inertia wins (default 1)")
  g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  g.add_argument("--impl", choices=["auto", "xla", "pallas", "pallas_interpret"],
                 default="auto", help="implementation (default auto: Pallas on CUDA GPUs, "
                                      "XLA elsewhere)")
  g.add_argument("--precision", default=None,
                 choices=["default", "highest", "F16_F16_F32", "BF16_BF16_F32"],
                 help="float32 distance precision (default: JAX's, TF32 on NVIDIA GPUs; "
                      "highest: float32-accurate; F16_F16_F32: float16 tensor cores with "
                      "per-row power-of-two scaling, TF32's mantissa at twice its speed)")
  g = p.add_argument_group("large inputs")
  g.add_argument("--stream-above", default="auto", metavar="SIZE",
                 help="stream inputs larger than SIZE bytes through the device in chunks "
                      "(default auto: a quarter of the device memory)")
  g.add_argument("--chunk-size", type=int, metavar="ROWS",
                 help="rows per chunk when streaming (default: chosen from device memory)")
  g = p.add_argument_group("output")
  g.add_argument("--centroids-out", metavar="FILE.npy",
                 help="write the [K, D] centroids here (.npy)")
  g.add_argument("--labels-out", metavar="FILE.npy",
                 help="write the int32 [N] labels here (.npy)")
  g.add_argument("--order-out", metavar="FILE.npz",
                 help="write the points grouped by cluster here (.npz of order [N], a "
                      "stable permutation; offsets [K+1]; sizes [K]): cluster j's points "
                      "are order[offsets[j]:offsets[j+1]]")
  g.add_argument("-f", "--force", action="store_true",
                 help="replace output files that already exist (never an input file)")
  g.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
  g.add_argument("-v", "--verbose", action="store_true",
                 help="print inertia and centroid shift every iteration")
  g.add_argument("--debug", action="store_true", help="show tracebacks on errors")
  return p
