"""OpenVINO IR for Intel/x86 CPUs and GPUs (``deploycomp.backends.openvino``).

The adapter (and with it ONNX and the SDK) is imported on first use of a name below:
listing targets and checking which backends are usable reads only ``REQUIRES``.
"""

from importlib import import_module

REQUIRES: tuple[str, ...] = ("openvino",)
"""Top-level modules the SDK provides (checked without importing them)."""
EXTRA = "openvino"
"""What to pip install for them."""

__all__ = ["EXTRA", "REQUIRES", "BACKEND", "OpenVINOBackend"]


def __getattr__(name: str):
    if name in __all__:
        value = getattr(import_module(f"{__name__}.adapter"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
