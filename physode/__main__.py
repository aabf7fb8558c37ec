"""``python -m physode`` runs the command line."""

from physode.cli.main import main

main()
