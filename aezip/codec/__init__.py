"""One image ⇄ bytes: the codec.

::

    image file ─► imagefile (read, orient, decide: coded or stored) ─► codec.Codec.encode ─► image stream
    image stream ─► codec.Codec.decode ─► imagefile (write in the original format)

``codec`` (the Codec and the image stream), ``imagefile`` (image files in and out), ``quality``
(per-image quality targets), ``metrics`` (PSNR). May import: ``model``, ``entropy``, ``errors``.
"""
