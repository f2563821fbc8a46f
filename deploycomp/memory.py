"""Memory this process can still have, for what sizes itself to it (the fleet's local pool,
the float taps the int8 ranking keeps, whether the QDQ sessions keep ONNX Runtime's arena).

The machine's free memory is not the whole answer on a CI runner: a container's cgroup
limit (Docker's ``--memory``, a Kubernetes pod's limit) and ``ulimit -v`` bound a build
long before a large host's free memory does. Sized by ``/proc/meminfo`` alone, an int8
build of U^2-Net-p kept 2 GiB of taps on a 22 GB host whatever its container allowed, and
under ``ulimit -v 3G`` it ran out of memory at 2.1 GB resident."""

from __future__ import annotations

from pathlib import Path

__all__ = ["available_bytes", "cgroup_headroom", "address_space_headroom"]

UNLIMITED = 1 << 60
"""cgroup v1 writes "no limit" as a number near 2^63 (page-rounded): anything above this is none."""


def available_bytes() -> int | None:
    """The least of: the kernel's estimate of memory available without swapping
    (``MemAvailable`` in ``/proc/meminfo``), what this process's cgroup still allows
    (:func:`cgroup_headroom`) and what its address-space limit still allows
    (:func:`address_space_headroom`); ``None`` where none of them can be read."""
    known = [b for b in (_meminfo_available(), cgroup_headroom(), address_space_headroom()) if b is not None]
    return min(known) if known else None


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def _inactive_file(stat: Path, key: str) -> int:
    """Page cache the kernel reclaims before it runs out (counted in a cgroup's usage)."""
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The least a limited cgroup of this process, or one above it, still allows: its
    limit less its usage (less the page cache it can reclaim), for cgroup v2
    (``memory.max``, ``memory.current``) and v1 (``memory.limit_in_bytes``,
    ``memory.usage_in_bytes``); ``None`` where no cgroup sets a limit. A container's
    mount starts below the path ``/proc/self/cgroup`` names: the path, its tails, then the
    mount's root are tried (:func:`_headrooms`)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    least: int | None = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            mount, files = root, ("memory.max", "memory.current", "memory.stat", "inactive_file")
            if (root / "unified").is_dir() and not (root / "cgroup.controllers").exists():
                mount = root / "unified"  # (a hybrid host: v2 beside v1)
        elif "memory" in controllers.split(","):
            mount, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat",
                                             "total_inactive_file")
        else:
            continue
        for headroom in _headrooms(mount, path.strip("/"), *files):
            least = headroom if least is None else min(least, headroom)
    return least


def _headrooms(mount: Path, path: str, limit_file: str, usage_file: str, stat_file: str, inactive: str):
    """Each limited cgroup's headroom from the process's own up to the mount's root."""
    parts = [p for p in path.split("/") if p]
    # the deepest folder the mount holds of the path or of a tail of it (a container's mount
    # starts below the host's path), else the mount's root
    folder = next((mount.joinpath(*parts[i:]) for i in range(len(parts)) if mount.joinpath(*parts[i:]).is_dir()),
                  mount)
    while True:
        limit = _number(folder / limit_file)
        if limit is not None:
            usage = _number(folder / usage_file) or 0
            yield max(0, limit - max(0, usage - _inactive_file(folder / stat_file, inactive)))
        if folder == mount or mount not in folder.parents:
            return
        folder = folder.parent


def address_space_headroom(status: Path = Path("/proc/self/status")) -> int | None:
    """What ``ulimit -v`` (``RLIMIT_AS``) still allows this process: its soft limit less
    the address space it holds now (``VmSize``); ``None`` without a limit."""
    try:
        import resource
    except ImportError:  # (not on Windows)
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft
