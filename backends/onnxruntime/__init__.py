"""ONNX Runtime: the fp32 reference runner, and a backend that ships the optimized ONNX.

The adapter (and with it ONNX and the SDK) is imported on first use of a name below:
listing targets and checking which backends are usable reads only ``REQUIRES``.
"""

from deploycomp.backends import lazy_exports

REQUIRES: tuple[str, ...] = ("onnxruntime",)
"""Top-level modules the SDK provides (checked without importing them)."""
EXTRA = "onnxruntime"
"""What to pip install for them."""

__all__ = ["EXTRA", "REQUIRES", "BACKEND", "ORTRunner", "OnnxRuntimeBackend", "source_runner"]


__getattr__ = lazy_exports(__name__, __all__)
