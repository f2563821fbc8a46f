"""ONNX Runtime adapter: the fp32 reference every build is validated against.

The reference runs the *original* model file (not our optimized graph), on the CPU
provider in fp32, so that a bug in a pass shows up as a fidelity loss instead of
being baked into both sides of the comparison. As a backend it ships the optimized
ONNX itself (``model.onnx``), useful as a portable artifact and for debugging passes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx_ir as ir

from deploycomp.backends.onnxruntime import EXTRA, REQUIRES
from deploycomp.backends.base import Lowered, SupportReport, require_modules, unsupported_node
from deploycomp.errors import InputDataError, ModelError, UnsupportedError, onnxruntime_message, onnxruntime_run_error
from deploycomp.ir import save_model
from deploycomp.paths import file_or_bytes
from deploycomp.quant.exact import exact_qdq_options, written_options
from deploycomp.targets import TargetProfile

__all__ = ["BACKEND", "ORTRunner", "OnnxRuntimeBackend", "source_runner"]


class ORTRunner:
    """Runs an ONNX model on ONNX Runtime's CPU provider.

    ``arithmetic``: ``"fused"`` (ORT's own optimizations, int8 fusions included: the fp32
    reference), ``"exact_qdq"`` (QuantizeLinear/DequantizeLinear run as written, float
    fusions kept: :func:`deploycomp.quant.exact.exact_qdq_options`) or ``"written"`` (every
    node as written, no fusion at all: :func:`deploycomp.quant.exact.written_options`)."""

    def __init__(self, model: str | Path | bytes, threads: int | None = None, arithmetic: str = "fused"):
        require_modules("onnxruntime", ("onnxruntime",), "onnxruntime")
        import onnxruntime as ort

        if arithmetic == "written":
            options = written_options(threads)
        elif arithmetic == "exact_qdq":
            options = exact_qdq_options(threads)
        elif arithmetic == "fused":
            options = ort.SessionOptions()
            options.log_severity_level = 4  # its run errors are raised, said in one line (run)
            # a blocked int4 DequantizeLinear -> MatMul is fused into MatMulNBits, by default at
            # accuracy level 4: activations rounded to int8, which no fp32 reference does (an int4
            # MLP's exact fp32 bundle had read cosine 0.99999 with an error of 0.024, a deeper
            # stack under the fp32 budget); level 0 computes them in fp32
            options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
            if threads:
                options.intra_op_num_threads = threads
        else:
            raise ValueError(f"ORTRunner: arithmetic {arithmetic!r} is not 'fused', 'exact_qdq' or 'written'")
        source = model if isinstance(model, bytes) else file_or_bytes(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        # initializers the file also lists as inputs (ONNX Runtime leaves them out of
        # get_inputs): fed where the feeds hold them (``--keep-initializer-inputs``: the
        # reference had computed with the file's values while the bundle took the fed ones)
        self.overridable = [i.name for i in self.session.get_overridable_initializers()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.info = {
            "runtime": "onnxruntime",
            "runtime_version": ort.__version__,
            "device": "CPU",
            "executed_precision": "fp32",
        }

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        try:
            outs = self.session.run(self.output_names, {n: feeds[n] for n in [*self.input_names, *self.overridable]
                                                         if n in feeds or n in self.input_names})
        except (state.InvalidArgument, state.Fail, state.RuntimeException) as e:
            # the model loaded and ran on other inputs (shapes are checked before): these values
            # it rejects, e.g. token ids past its vocabulary (a Gather out of bounds)
            raise InputDataError(f"ONNX Runtime fails on these inputs: {onnxruntime_run_error(e)}") from None
        return dict(zip(self.output_names, outs))


def source_runner(model: str | Path | bytes, label: str, **options) -> ORTRunner:
    """An :class:`ORTRunner` of the user's own model, whose refusal by ONNX Runtime is the
    model's problem, said in one line (exit 3, or 6 for an op it has no kernel for), not
    an internal error: ``onnxruntime.quantization`` writes per-channel DequantizeLinear
    (``axis``) into an opset-11 model, which ONNX's checker and ONNX Runtime both refuse."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    try:
        return ORTRunner(model, **options)
    except state.NotImplemented as e:
        raise UnsupportedError(f"{label}: ONNX Runtime, the fp32 reference, cannot run it: {_load_error(e)}") from None
    except (state.InvalidGraph, state.InvalidProtobuf, state.InvalidArgument, state.Fail) as e:
        why = _load_error(e)
        if "same node name" in why:  # (legal ONNX, which ONNX Runtime, the reference, refuses)
            why += "; `deploycomp optimize MODEL -o OUT` writes the model with unique node names, which builds"
        raise ModelError(f"{label}: ONNX Runtime cannot load it: {why}") from None


_NODE = re.compile(r'In Node, \("(?P<name>[^"]*)", (?P<op>[^,]+),.*?, Error (?P<error>.*)$', re.S)


def _load_error(e: Exception) -> str:
    """ONNX Runtime's load error without its code prefix, and a node's in/out lists
    (hundreds of characters) cut to its name and op."""
    text = re.sub(r"^Load model from .*? failed:\s*", "", onnxruntime_message(e))
    node = _NODE.search(text)
    if node:
        text = f"node '{node['name']}' ({node['op']}): {node['error'].strip()}"
    return " ".join(text.split())[:400]


class OnnxRuntimeBackend:
    name = "onnxruntime"
    requires = REQUIRES
    extra = EXTRA

    def check(self, model: ir.Model, target: TargetProfile) -> SupportReport:
        report = SupportReport(self.name)
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.op_type in target.unsupported_ops:
                report.unsupported.append(unsupported_node(node))
        return report

    def lower(self, model: ir.Model, target: TargetProfile, precision: str, out_dir: Path,
              options: Mapping[str, Any] | None = None) -> Lowered:
        if precision != "fp32":
            raise UnsupportedError(f"onnxruntime backend: precision {precision} is not available yet")
        files = save_model(model, out_dir / "model.onnx")
        return Lowered(files=files, info={"format": "onnx", "onnx": files[0].name, "precision": precision})

    def load(self, bundle_dir: Path, lowered: Mapping[str, Any]) -> ORTRunner:
        return ORTRunner(bundle_dir / lowered["onnx"])


BACKEND = OnnxRuntimeBackend()
