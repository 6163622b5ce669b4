"""The data plane: move the planned reads of one disk from a transport into a chunk sink.

    reads -> fetch (N concurrent transport reads into reused buffers)
          -> bounded queue
          -> process (executor threads: zero check, SHA-256, dedup check, zstd, store)
          -> index updates + progress

Memory is bounded by configuration: at most ``fetchers + queue_depth + workers`` read
buffers of at most ``max_read`` bytes exist at once, whatever the disk size.
This package knows nothing of vSphere: it is given a ``Transport`` and a ``ChunkSink``.
"""
