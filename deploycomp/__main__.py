"""``python -m deploycomp`` is the ``deploycomp`` command."""

from deploycomp.cli import main

main(prog_name="deploycomp")
