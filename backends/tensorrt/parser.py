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
import logging
from dataclasses import dataclass, field

__all__ = ["ParseResult", "parse_onnx", "parser_module"]

MODULES = ("tensorrt", "tensorrt_rtx")

log = logging.getLogger(__name__)


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
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    ok = bool(parser.parse(onnx_bytes))
    result = ParseResult(f"{trt.__name__} {trt.__version__}", ok)
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        desc = (str(error.desc()).strip().splitlines() or [""])[0] if hasattr(error, "desc") else str(error)
        node, op = (error.node_name(), error.node_operator()) if hasattr(error, "node_name") else ("", "")
        importer = str(error.func()) if hasattr(error, "func") else ""
        if not op and importer.startswith("import") and len(importer) > len("import"):
            # some checks name neither node nor op (a ScatterElements reduction it does not
            # take read "cannot run op(s) ?"), but the importer that refused is the op's
            op = importer[len("import"):]
        if desc.lower() in ("", "false", "true"):  # a failed check's bare condition says nothing
            desc = f"its support check for {op or 'this node'} failed"
        elif "Plugin not found" in desc:  # the parser's own assertion ('creator && "Plugin not found, ...')
            desc = "TensorRT has no layer for this op and no plugin of that name is registered"
        result.errors.append(desc[:300])
        result.unsupported.append({"node": node or "", "op": op or "?", "reason": desc[:300]})
    return result


def _logger(trt):
    """TensorRT's messages to this module's logger (shown with ``-v``), not to stderr: the
    parser's errors are read back one by one and said once, in the build's own error line
    (TensorRT's default logger printed them to stderr first, timestamped)."""
    try:
        class ToLogging(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                log.debug("%s [%s] %s", trt.__name__, getattr(severity, "name", severity), msg)

        return ToLogging()
    except (AttributeError, TypeError):  # a TensorRT without a subclassable ILogger
        return trt.Logger(trt.Logger.ERROR)
