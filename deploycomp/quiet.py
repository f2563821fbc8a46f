"""Native libraries' log lines, silenced unless ``-v``.

Some runtimes write informational lines straight to file descriptor 2 from C++ (LiteRT:
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on every interpreter), which
no Python logging setting reaches and which land on top of the progress bar and in CI
logs. :func:`native_stderr_quiet` points fd 2 at /dev/null around such a call, unless the
``deploycomp`` logger is at INFO or below (``-v``) or ``DEPLOYCOMP_NATIVE_LOGS=1``.
Errors still surface: the runtimes also raise them as Python exceptions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

__all__ = ["native_stderr_quiet"]


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    if os.environ.get("DEPLOYCOMP_NATIVE_LOGS") == "1" or logging.getLogger("deploycomp").isEnabledFor(logging.INFO):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (e.g. captured): nothing to silence
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
