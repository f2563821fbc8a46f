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

__all__ = ["DEVICE_OR_PIPE", "device_or_pipe", "file_or_bytes", "not_a_file"]

DEVICE_OR_PIPE = "not a regular file (a device or a pipe)"
"""How every such refusal names what it found."""


def device_or_pipe(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists as something other than a file or a folder (a character or
    block device, a FIFO, a socket), following symbolic links."""
    path = Path(path)
    return path.exists() and not path.is_file() and not path.is_dir()


def not_a_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is where a file was expected, as an error says it ("not found", "is a
    folder", "is not a regular file (a device or a pipe)"); None for a regular file."""
    path = Path(path)
    if path.is_file():
        return None
    return "not found" if not path.exists() else "is a folder" if path.is_dir() else f"is {DEVICE_OR_PIPE}"


def file_or_bytes(path: str | os.PathLike) -> str | bytes:
    """``path`` as a native runtime's binding takes it (a str it passes on as UTF-8), or
    the file's bytes where the path is not UTF-8 (a folder named in Latin-1: ONNX Runtime's
    and LiteRT's bindings refused it, an internal error, after the build's other steps had
    read the same file)."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return Path(path).read_bytes()
