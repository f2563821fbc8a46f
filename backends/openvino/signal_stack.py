"""The calling thread's alternate signal stack, kept on mapped memory.

OpenVINO's CPU plugin (2026.4) gives the thread that creates a plugin engine an alternate
signal stack (``sigaltstack``) of its own and, when the engine is destroyed, restores the
one it found. Engines destroyed out of the order they were made (two compiled models, the
first released last: the int8 search's candidates, ``--precision auto``'s side-by-side
timing) restore a stack another engine has already freed. Python installs its signal
handlers with ``SA_ONSTACK``, so the next SIGTERM or Ctrl-C is delivered onto unmapped
memory and the process dies of SIGSEGV without a word (a CI job cancelled just after an
auto build placed its bundle exited 139 and left the other candidates beside it).

:func:`repair` disables a registered stack that is no longer mapped; the OpenVINO runner
calls it after it releases the plugin's objects. Linux only (``mincore`` tells a mapped
page from an unmapped one); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import sys

__all__ = ["repair"]

_SS_DISABLE = 2  # (Linux's value: <bits/sigstack.h>)


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_loaded = None


def _libc():
    """The C library, loaded once (``mincore``'s pointer arguments declared)."""
    global _loaded
    if _loaded is None:
        _loaded = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _loaded.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return _loaded


def current() -> tuple[int, int] | None:
    """The calling thread's alternate signal stack (address, size), None if it has none."""
    libc = _libc()
    now = _Stack()
    if libc.sigaltstack(None, ctypes.byref(now)) != 0 or now.ss_flags & _SS_DISABLE or not now.ss_sp:
        return None
    return now.ss_sp, now.ss_size


def mapped(address: int, size: int) -> bool:
    """Whether every page of [address, address + size) is mapped in this process."""
    page = mmap.PAGESIZE
    start = address & ~(page - 1)
    pages = (address + max(size, 1) - start + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    ctypes.set_errno(0)
    if _libc().mincore(start, pages * page, vec) == 0:
        return True
    return ctypes.get_errno() != errno.ENOMEM  # (another error says nothing of the mapping)


def repair() -> bool:
    """Disable the calling thread's alternate signal stack where it lies on unmapped memory
    (True if it did): a handler is then run on the thread's own stack."""
    if sys.platform != "linux":
        return False
    try:
        stack = current()
        if stack is None or mapped(*stack):
            return False
        off = _Stack(None, _SS_DISABLE, 0)
        return _libc().sigaltstack(ctypes.byref(off), None) == 0
    except (OSError, AttributeError):  # (no libc to ask: nothing to repair through it)
        return False
