"""sha256 of files, in 1 MB blocks: bundles, models, data and the build cache's keys.

Its own module so that hashing imports nothing heavy (``deploycomp.ir`` imports ONNX):
a fleet rerun served from the cache, ``verify`` and ``diff`` start fast."""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
