"""Other libraries' log lines: native runtimes' silenced unless ``-v`` in a process
deploycomp owns; Python libraries' warnings about steps the build checks anyway held back
while an API call builds (:func:`libraries_quiet`).

Some runtimes write informational lines straight to file descriptor 2 from C++ (LiteRT:
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on every interpreter), which
no Python logging setting reaches and which land on top of the progress bar and in CI
logs. :func:`native_stderr_quiet` points fd 2 at /dev/null around such a call, unless the
``deploycomp`` logger is at INFO or below (``-v``) or ``DEPLOYCOMP_NATIVE_LOGS=1``.
Errors still surface: the runtimes also raise them as Python exceptions.

fd 2 is the whole process's: only a process deploycomp owns (the command line, a fleet's
workers: :func:`own_process`) has it pointed away. In a service that imports deploycomp
it stays where the service put it, since every other thread's stderr would go to
/dev/null for the while (10 of 75 log lines of another thread lost over 100 loads), and
two overlapping loads had left it there for good (one saved the other's /dev/null).
Nested and overlapping silences share one redirection, counted under a lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Iterator

__all__ = ["QUIET_LIBRARIES", "libraries_quiet", "native_stderr_quiet", "own_process"]

QUIET_LIBRARIES = ("onnx_ir", "onnxscript")
"""Loggers held to errors without ``-v``: onnx-ir's shape inference logs a failure (the
model left unchanged, which the build's validation judges anyway) as a warning with a
whole traceback, and onnxscript's optimizer its skipped folds. ``-v`` shows their
warnings; their per-node info (a line for every constant folded: 79 of a build's 150
lines on PP-OCRv6 tiny rec) only ``-vv``."""

_owned = False
_lock = threading.Lock()
_depth = 0
_saved: int | None = None


def own_process() -> None:
    """Say that this process is deploycomp's own (its command line, a fleet worker): native
    log lines may then be silenced."""
    global _owned
    _owned = True


def _silence(fd: int) -> None:
    global _depth, _saved
    with _lock:
        if _depth == 0:
            sys.stderr.flush()
            saved = os.dup(fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            except OSError:
                os.close(saved)
                raise
            finally:
                os.close(devnull)
            _saved = saved
        _depth += 1


def _restore(fd: int) -> None:
    global _depth, _saved
    with _lock:
        _depth -= 1
        if _depth == 0 and _saved is not None:
            os.dup2(_saved, fd)
            os.close(_saved)
            _saved = None


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    if (not _owned or os.environ.get("DEPLOYCOMP_NATIVE_LOGS") == "1"
            or logging.getLogger("deploycomp").isEnabledFor(logging.INFO)):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (e.g. captured): nothing to silence
        yield
        return
    _silence(fd)
    try:
        yield
    finally:
        _restore(fd)


_libraries_depth = 0
_libraries_quieted: list[logging.Logger] = []


@contextlib.contextmanager
def libraries_quiet() -> Iterator[None]:
    """:data:`QUIET_LIBRARIES` held to errors while deploycomp builds, in a program that
    calls it, where the program has not set their levels itself (a level it set stays):
    a service's stderr had shown onnx-ir's "Skipped deduplication of initializer" on
    every build through Python's last-resort handler. Nested and overlapping calls share
    one change, undone by the last."""
    global _libraries_depth
    if logging.getLogger("deploycomp").isEnabledFor(logging.INFO):
        yield
        return
    loggers = [logging.getLogger(name) for name in QUIET_LIBRARIES]
    with _lock:
        if _libraries_depth == 0:
            _libraries_quieted[:] = [lg for lg in loggers if lg.level == logging.NOTSET]
            for logger in _libraries_quieted:
                logger.setLevel(logging.ERROR)
        _libraries_depth += 1
    try:
        yield
    finally:
        with _lock:
            _libraries_depth -= 1
            if _libraries_depth == 0:
                for logger in _libraries_quieted:
                    logger.setLevel(logging.NOTSET)
                _libraries_quieted.clear()
