"""TFLite backend: ONNX lowered to ``.tflite`` by deploycomp itself, run in LiteRT.

The adapter (and with it ONNX and the SDK) is imported on first use of a name below:
listing targets and checking which backends are usable reads only ``REQUIRES``.
"""

from deploycomp.backends import lazy_exports

REQUIRES: tuple[str, ...] = ("ai_edge_litert", "flatbuffers")
"""Top-level modules the SDK provides (checked without importing them)."""
EXTRA = '"deploycomp[tflite]"'
"""What to pip install for them."""

__all__ = ["EXTRA", "REQUIRES", "BACKEND", "TFLiteBackend", "TFLiteRunner"]


__getattr__ = lazy_exports(__name__, __all__)
