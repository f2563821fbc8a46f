"""TensorRT backend: typed ONNX + build plan anywhere, the engine on the GPU machine."""

from deploycomp.backends.tensorrt.adapter import BACKEND, TensorRTBackend

__all__ = ["BACKEND", "TensorRTBackend"]
