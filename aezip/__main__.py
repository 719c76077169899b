"""``python -m aezip`` runs the command line."""

from aezip.cli import main

main()
