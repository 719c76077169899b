"""``python -m aezip`` runs the command line."""

from aezip.cli.app import main

main()
