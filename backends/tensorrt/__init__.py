"""TensorRT backend: typed ONNX + build plan anywhere, the engine on the GPU machine.

The adapter (and with it ONNX and the SDK) is imported on first use of a name below:
listing targets and checking which backends are usable reads only ``REQUIRES``.
"""

from deploycomp.backends import lazy_exports

REQUIRES: tuple[str, ...] = ()
"""Top-level modules the SDK provides (checked without importing them)."""
EXTRA = '"deploycomp[tensorrt]"'
"""What to pip install for them."""

__all__ = ["EXTRA", "REQUIRES", "BACKEND", "TensorRTBackend"]


__getattr__ = lazy_exports(__name__, __all__)
