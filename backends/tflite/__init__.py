"""TFLite backend: its target profiles load and validate; the lowering is not written yet."""

from deploycomp.backends.base import PendingBackend

__all__ = ["BACKEND"]

BACKEND = PendingBackend("tflite", "TFLite")
