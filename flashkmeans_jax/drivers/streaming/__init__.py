"""Out-of-core k-means: host memory streamed to the device chunk by chunk."""
