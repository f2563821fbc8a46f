"""OpenVINO IR for Intel/x86 CPUs and GPUs (``deploycomp.backends.openvino``)."""

from deploycomp.backends.openvino.adapter import BACKEND, OpenVINOBackend

__all__ = ["BACKEND", "OpenVINOBackend"]
