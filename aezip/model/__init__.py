"""The network: transforms, per-quality gains and priors, its on-disk weights and the shipped
models, and the process-wide runtime settings of the transforms (``runtime``). May import:
``entropy`` (the integer tables a model file carries), ``errors``.
"""
