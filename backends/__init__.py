"""Backend registry: ``deploycomp.backends.<name>`` modules, imported on first use.

Each backend package exposes ``BACKEND``, an object implementing
:class:`deploycomp.backends.base.Backend`. Importing a backend package must not import
its SDK, so listing backends and checking availability never fails.
"""

from __future__ import annotations

import importlib

from deploycomp.backends.base import Backend, Lowered, Runner, SupportReport

__all__ = ["BACKENDS", "Backend", "Lowered", "Runner", "SupportReport", "availability", "get_backend"]

BACKENDS = ("openvino", "onnxruntime", "tflite", "tensorrt")


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return importlib.import_module(f"deploycomp.backends.{name}").BACKEND


def availability() -> dict[str, str | None]:
    """Backend name -> None if usable here, else the reason it is not."""
    from deploycomp.backends.base import ensure_available
    from deploycomp.errors import DeployError

    out: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            ensure_available(get_backend(name))
            out[name] = None
        except DeployError as e:
            out[name] = str(e)
    return out
