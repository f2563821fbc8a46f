"""sha256 of files, in 1 MB blocks: bundles, models, data and the build cache's keys.

Its own module so that hashing imports nothing heavy (``deploycomp.ir`` imports ONNX):
a fleet rerun served from the cache, ``verify`` and ``diff`` start fast."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

__all__ = ["array_sha256", "code_digest", "sha256_file"]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(array) -> str:
    """sha256 of an array's bytes in C order (a ``--freeze``d tensor's record, and the check
    of the value an application feeds in its place, hash alike)."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The sha256 of deploycomp's own installed files (its modules, backends and target
    profiles, by relative path): the package version stays 0.1.0 over hundreds of
    commits, and a fleet served bundles an older deploycomp had built after an upgrade."""
    import deploycomp
    import deploycomp.backends
    import deploycomp.profiles

    h = hashlib.sha256()
    roots = {Path(p).resolve() for m in (deploycomp, deploycomp.backends, deploycomp.profiles) for p in m.__path__}
    for root in sorted(roots):
        for f in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml", ".yml", ".json") and p.is_file()
                        and "__pycache__" not in p.parts):
            h.update(f"{root.name}/{f.relative_to(root).as_posix()}".encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
