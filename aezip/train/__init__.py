"""Training codecs: rate–distortion loss, in-memory crop sampling, step variants, the loop, model
export and the fitting of entropy side files (``fit_entropy``). May import: ``codec``, ``model``,
``entropy``, ``errors``.
"""
