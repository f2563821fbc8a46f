"""``python -m deploycomp`` is the ``deploycomp`` command."""

from deploycomp.cli import entry

entry()
