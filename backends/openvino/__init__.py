"""OpenVINO IR for Intel/x86 CPUs and GPUs (``deploycomp.backends.openvino``).

The adapter (and with it ONNX and the SDK) is imported on first use of a name below:
listing targets and checking which backends are usable reads only ``REQUIRES``.
"""

from deploycomp.backends import lazy_exports

REQUIRES: tuple[str, ...] = ("openvino",)
"""Top-level modules the SDK provides (checked without importing them)."""
EXTRA = "openvino"
"""What to pip install for them."""

__all__ = ["EXTRA", "REQUIRES", "BACKEND", "OpenVINOBackend"]


__getattr__ = lazy_exports(__name__, __all__)
