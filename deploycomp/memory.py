"""Memory the machine has free now, for what sizes itself to it (the fleet's local pool,
the float taps the int8 ranking keeps)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["available_bytes"]


def available_bytes() -> int | None:
    """The kernel's estimate of memory available without swapping (``MemAvailable`` in
    ``/proc/meminfo``), or ``None`` where there is no such file."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
