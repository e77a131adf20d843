"""`python -m sync`: the `kanvoice` command (the web process spawns its worker so)."""

from sync.cli import main

main()
