"""Nearest centroid for D < 16 without tensor cores: the exact sorted search
for D = 1, a register-tiled FMA kernel (and its XLA twin) for D = 2..15;
reference, config and the op entry point :mod:`.api`."""
