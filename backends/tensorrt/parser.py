"""NVIDIA's own ONNX parser as the op-support check, with or without a GPU.

The full ``tensorrt`` wheel needs NVIDIA's libraries and a driver; ``tensorrt-rtx``
(TensorRT for RTX, on PyPI) ships the same ``Builder``/``OnnxParser`` API and parses
without a GPU. Whichever is installed parses the exact ONNX the bundle will hand to the
engine builder, in a strongly typed network, so an unsupported node or encoding (a
non-zero int8 zero point, an int32 bias) is reported by name at build time, anywhere.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

__all__ = ["ParseResult", "parse_onnx", "parser_module"]

MODULES = ("tensorrt", "tensorrt_rtx")


def parser_module():
    """The first of ``tensorrt``, ``tensorrt_rtx`` that imports, or None."""
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            return importlib.import_module(name)
        except (ImportError, OSError):  # e.g. the tensorrt placeholder wheel without its libs
            continue
    return None


@dataclass
class ParseResult:
    parser: str
    """Module and version that parsed, e.g. ``tensorrt_rtx 1.7.1.116``."""
    ok: bool
    unsupported: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_onnx(onnx_bytes: bytes, trt=None) -> ParseResult | None:
    """Parse with NVIDIA's parser; None when neither TensorRT package is installed."""
    trt = trt or parser_module()
    if trt is None:
        return None
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    ok = bool(parser.parse(onnx_bytes))
    result = ParseResult(f"{trt.__name__} {trt.__version__}", ok)
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        desc = str(error.desc()).strip().splitlines()[0] if hasattr(error, "desc") else str(error)
        result.errors.append(desc[:300])
        node, op = (error.node_name(), error.node_operator()) if hasattr(error, "node_name") else ("", "")
        result.unsupported.append({"node": node or "", "op": op or "?", "reason": desc[:300]})
    return result
