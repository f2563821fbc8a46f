"""deploycomp: a hardware-aware deployment compiler for ONNX models.

    import deploycomp
    runner = deploycomp.build("model.onnx", "dist/model-host", target="host", precision="fp16",
                              inputs={"images": (1, 3, 320, 320)})
    outputs = deploycomp.load("dist/model-host").run({"images": x})

The package face is lazy: ``import deploycomp`` loads neither ONNX nor a backend SDK
until a function is called, so ``deploycomp --help`` and ``--version`` start fast.
"""

from __future__ import annotations

import logging as _logging
from importlib import import_module
from typing import TYPE_CHECKING

from deploycomp import privacy as _privacy

_privacy.install()
# a library's log lines go where the application's logging sends them, and nowhere when it
# sends them nowhere (Python's last-resort handler had printed a build's progress notes on
# a service's stderr); the command line configures logging itself
_logging.getLogger("deploycomp").addHandler(_logging.NullHandler())

__version__ = "0.1.0"


def _source_checkout() -> None:
    """Run from a source checkout (``python -m deploycomp`` in its root, where the folder
    shadows any installed copy), ``deploycomp.backends`` and ``deploycomp.profiles`` are the
    top-level ``backends/`` and ``targets/`` folders, as the wheel and an editable install map
    them: a finder for those two names alone, asked last, so an install's own mapping wins
    (a benchmark run from the root over a non-editable install had failed every build with
    "No module named 'deploycomp.backends'"). An install has no ``setup.py`` beside the
    package: it pays two file checks, nothing more."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not (os.path.isfile(os.path.join(root, "setup.py")) and os.path.isfile(os.path.join(root, "backends", "__init__.py"))):
        return
    import importlib.abc
    import importlib.util

    folders = {"deploycomp.backends": "backends", "deploycomp.profiles": "targets"}

    class SourceFolders(importlib.abc.MetaPathFinder):
        def __init__(self, root: str):
            self.root = root

        def find_spec(self, name, path=None, target=None):
            if name not in folders:
                return None
            folder = os.path.join(self.root, folders[name])
            return importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                          submodule_search_locations=[folder])

    if not any(type(f).__name__ == "SourceFolders" and getattr(f, "root", None) == root for f in sys.meta_path):
        sys.meta_path.append(SourceFolders(root))  # (once: a reload of the package finds it there)


_source_checkout()

__all__ = ["DeployError", "__version__", "build", "load", "optimize"]

_LAZY = {"build": "deploycomp.api", "load": "deploycomp.api", "optimize": "deploycomp.api",
         "DeployError": "deploycomp.errors"}

if TYPE_CHECKING:
    from deploycomp.api import build, load, optimize
    from deploycomp.errors import DeployError


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deploycomp' has no attribute {name!r}")
