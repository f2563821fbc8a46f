"""Backend registry: ``deploycomp.backends.<name>`` modules, imported on first use.

Each backend package exposes ``BACKEND``, an object implementing
:class:`deploycomp.backends.base.Backend`. Importing a backend package must not import
its SDK, so listing backends and checking availability never fails.
"""

from __future__ import annotations

import importlib

__all__ = ["BACKENDS", "availability", "get_backend", "lazy_exports"]

BACKENDS = ("openvino", "onnxruntime", "tflite", "tensorrt")


def lazy_exports(package: str, names: list[str]):
    """A module ``__getattr__`` for a backend package: ``names`` come from its ``adapter``
    module, imported (with ONNX and the SDK) on first use of one of them."""
    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(f"{package}.adapter"), name)
            setattr(importlib.import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def get_backend(name: str):
    """The backend's adapter object (:class:`deploycomp.backends.base.Backend`)."""
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return importlib.import_module(f"deploycomp.backends.{name}").BACKEND


def availability() -> dict[str, str | None]:
    """Backend name -> None if usable here, else the reason it is not. Reads each
    package's ``REQUIRES`` without importing its adapter or SDK (fast enough for
    ``deploycomp targets``)."""
    from deploycomp.backends.base import require_modules
    from deploycomp.errors import BackendUnavailable

    out: dict[str, str | None] = {}
    for name in BACKENDS:
        package = importlib.import_module(f"deploycomp.backends.{name}")
        try:
            require_modules(name, package.REQUIRES, package.EXTRA)
            out[name] = None
        except BackendUnavailable as e:
            out[name] = str(e)
    return out
