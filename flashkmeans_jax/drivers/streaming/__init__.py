"""Out-of-core k-means: host memory streamed to the device chunk by chunk.

The public calls are :mod:`flashkmeans_jax.api.streaming`. Here, from the
host down:

* :mod:`.driver`: a run (Lloyd passes, ``n_init`` restarts, the labelling pass);
* :mod:`.host_seeding`: starting centroids from host data;
* :mod:`.streamer`: resident chunks and one pass over all rows;
* :mod:`.io_callback_pass`: ``method="io_callback"``, a pass as one program;
* :mod:`.passes`: what a chunk adds to a pass (the statistics core, merged);
* :mod:`.plan`: chunk size, residency, pass order and transfer method;
* :mod:`.host_io`: reading and staging host chunks; :mod:`.progress`: the bar.
"""
