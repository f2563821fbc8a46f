"""What a path a user names turns out to be, said the same way wherever a file is read or
written.

A device or a pipe named where a file is expected is refused before it is opened (reading
``/dev/zero`` as a target profile had filled 23 GB, a FIFO hung a build for ever, hashing
one for a fleet's cache key never ended) and written into, never renamed over (run as
root, ``--outputs /dev/null`` had made ``/dev/null`` a regular file). Each caller keeps
its own error class, so each keeps its documented exit code.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEVICE_OR_PIPE", "device_or_pipe"]

DEVICE_OR_PIPE = "not a regular file (a device or a pipe)"
"""How every such refusal names what it found."""


def device_or_pipe(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists as something other than a file or a folder (a character or
    block device, a FIFO, a socket), following symbolic links."""
    path = Path(path)
    return path.exists() and not path.is_file() and not path.is_dir()
