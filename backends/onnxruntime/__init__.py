"""ONNX Runtime: the fp32 reference runner, and a backend that ships the optimized ONNX."""

from deploycomp.backends.onnxruntime.adapter import BACKEND, ORTRunner, OnnxRuntimeBackend

__all__ = ["BACKEND", "ORTRunner", "OnnxRuntimeBackend"]
