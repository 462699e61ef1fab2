"""``python -m curastream``: the same command as ``curastream``."""

from curastream.cli import main

main(prog_name="curastream")
