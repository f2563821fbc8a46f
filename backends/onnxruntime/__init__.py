"""ONNX Runtime: the fp32 reference runner, and a backend that ships the optimized ONNX.

The adapter (and with it ONNX and the SDK) is imported on first use of a name below:
listing targets and checking which backends are usable reads only ``REQUIRES``.
"""

from importlib import import_module

REQUIRES: tuple[str, ...] = ("onnxruntime",)
"""Top-level modules the SDK provides (checked without importing them)."""
EXTRA = "onnxruntime"
"""What to pip install for them."""

__all__ = ["EXTRA", "REQUIRES", "BACKEND", "ORTRunner", "OnnxRuntimeBackend"]


def __getattr__(name: str):
    if name in __all__:
        value = getattr(import_module(f"{__name__}.adapter"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
