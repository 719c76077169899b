"""The ``aezip`` command line: ``app`` (the group and the one-archive commands), ``shards`` (the
sharded-dataset options and commands). The top layer: may import every other.
"""

from aezip.cli.app import main

__all__ = ["main"]
