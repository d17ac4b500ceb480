"""The two ops of an iteration, each in its own folder with its reference,
XLA path, Pallas kernel and per-GPU config: ``assign`` (FlashAssign) and
``cluster_sums`` (sort-inverse aggregation). Nothing here validates arguments
or knows about drivers."""
