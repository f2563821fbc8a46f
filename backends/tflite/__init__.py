"""TFLite backend: ONNX lowered to ``.tflite`` by deploycomp itself, run in LiteRT."""

from deploycomp.backends.tflite.adapter import BACKEND, TFLiteBackend, TFLiteRunner

__all__ = ["BACKEND", "TFLiteBackend", "TFLiteRunner"]
