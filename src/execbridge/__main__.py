"""``python -m execbridge`` runs the command line."""

from execbridge.cli import main

main()
