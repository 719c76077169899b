"""A folder tree ⇄ one ``.aez`` archive.

::

    folder ─► pack (collect, check every input, encode with the codec) ─► container.writer ─► a.aez
    a.aez ─► container.reader ─► reader.Archive (members, images) ─► pack.unpack / pack.verify ─► folder

``container/`` (the bytes: spec, reader, writer; imports only ``errors``), ``reader`` (the
:class:`Archive` API), ``pack`` (packing, unpacking, verifying), ``report`` (the reconstruction
report), ``parallel`` (ordered thread map over images). May import: ``codec``, ``model``,
``entropy``, ``errors``.
"""
