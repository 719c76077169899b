"""Many archives: sharded datasets, their manifest, object storage and the executors that pack them.

::

    source (folder, tar, URL) ─► shards (plan, pack each shard with archive.pack) ─► manifest.json
    manifest / folder / URL ─► sharded (one reader over every shard) ─► members

``manifest`` (the dataset's manifest), ``shards`` (sharded pack and resume), ``sharded`` (reading
a dataset or an archive from any source), ``remote`` (fsspec URLs, range reads),
``executors`` (local processes, Ray). May import: ``archive``, ``codec``, ``model``, ``entropy``,
``errors``.
"""
