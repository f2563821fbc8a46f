"""ONNX -> ``model.tflite`` written by deploycomp, and a runner on LiteRT's interpreter.

No TensorFlow: :mod:`.lowering` emits TFLite operators into a flatbuffer built with
the schema module that ships in ``ai-edge-litert``. The interpreter in that same
package runs the result here (XNNPACK, as on an Arm CPU), which is how every build is
validated against onnxruntime before it is written.

I/O layout: 4-D inputs are NHWC in the ``.tflite`` by default (``io_layout="nhwc"``),
what camera pipelines on phones produce, 3-D inputs a 1-D convolution reads are NWC
(audio features, channels last), and each output keeps the layout the graph ended in,
so that no TRANSPOSE is left anywhere. ``io_layout="nchw"`` keeps ONNX order
at the boundary instead, at the cost of a TRANSPOSE there. Either way the manifest
records each I/O tensor's layout and the runner takes and returns ONNX order.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx_ir as ir

from deploycomp.backends.base import Lowered, SupportReport, require_modules, unsupported_node
from deploycomp.errors import UnsupportedError
from deploycomp.fp16_search import nodes_keeping_fp32, weights_rounded
from deploycomp.targets import TargetProfile

__all__ = ["BACKEND", "TFLiteBackend", "TFLiteRunner"]

PRECISIONS = ("fp32", "fp16", "int8")
IO_LAYOUTS = ("nhwc", "nchw")


def _interpreter_module():
    require_modules("tflite", ("ai_edge_litert", "flatbuffers"), '"deploycomp[tflite]"')
    from ai_edge_litert import interpreter

    return interpreter


def _artifact_tensor(detail: Mapping[str, Any], perm: tuple[int, ...] | None) -> dict[str, Any]:
    """One input or output of the .tflite as LiteRT reports it."""
    out: dict[str, Any] = {"name": detail["name"], "index": int(detail["index"]),
                           "shape": [int(d) for d in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    if np.dtype(detail["dtype"]) in (np.int8, np.uint8, np.int16) and detail["quantization"][0]:
        scale, zero = detail["quantization"]
        out["quantization"] = {"scale": float(scale), "zero_point": int(zero),
                               "real_value": "(stored - zero_point) * scale"}
    if perm and list(perm) != list(range(len(perm))):  # (an input already channels-last keeps its order)
        out["perm_from_onnx"] = [int(p) for p in perm]
    return out


class TFLiteRunner:
    def __init__(self, path: Path, io_layouts: Mapping[str, list[int]], threads: int | None = 2):
        from deploycomp.paths import file_or_bytes
        from deploycomp.quiet import native_stderr_quiet

        interpreter = _interpreter_module()
        with native_stderr_quiet():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" line
            source = file_or_bytes(path)  # (mapped from the file where LiteRT can name it)
            self.interpreter = interpreter.Interpreter(**{"model_content" if isinstance(source, bytes) else
                                                          "model_path": source}, num_threads=threads)
            self.interpreter.allocate_tensors()
        self.inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self.outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        self.io_layouts = {k: tuple(v) for k, v in io_layouts.items()}
        try:  # XNNPACK's partitions are appended to the node list as DELEGATE nodes
            nodes = self.interpreter._interpreter
            partitions = [nodes.NodeName(i) for i in range(nodes.NumNodes())].count("DELEGATE")
        except AttributeError:  # a LiteRT without the private wrapper: unknown
            partitions = None
        import ai_edge_litert

        self.info = {
            "runtime": "litert",
            "runtime_version": getattr(ai_edge_litert, "__version__", "?"),
            "device": "CPU (XNNPACK)",
            "threads": threads,
            "executed_precision": "fp32",
            "xnnpack_partitions": partitions,
            # the tensors as the .tflite has them, for a program that runs it with LiteRT
            # alone: an int8-I/O file's dtype and encoding, an NHWC tensor's shape and the
            # permutation from the ONNX layout (stored = onnx.transpose(perm))
            "artifact_io": {kind: [_artifact_tensor(d, self.io_layouts.get(d["name"])) for d in details.values()]
                            for kind, details in (("inputs", self.inputs), ("outputs", self.outputs))},
        }

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, detail in self.inputs.items():
            data = np.transpose(np.asarray(feeds[name]), self.io_layouts.get(name) or None)
            if detail["dtype"] == np.int8:  # full-integer I/O: quantize as the model's first Quantize did
                scale, zero = detail["quantization"]
                data = np.clip(np.round(data / scale) + zero, -128, 127)
            self.interpreter.set_tensor(detail["index"], np.require(data.astype(detail["dtype"], copy=False), requirements="C"))
        self.interpreter.invoke()
        out = {}
        for name, detail in self.outputs.items():
            stored = self.interpreter.get_tensor(detail["index"])
            if detail["dtype"] == np.int8:
                scale, zero = detail["quantization"]
                stored = (stored.astype(np.float32) - zero) * np.float32(scale)
            perm = self.io_layouts.get(name)
            out[name] = np.transpose(stored, np.argsort(perm)) if perm else stored
        return out


class TFLiteBackend:
    name = "tflite"
    precisions = PRECISIONS
    requires = ("ai_edge_litert", "flatbuffers")
    extra = '"deploycomp[tflite]"'
    fp16_compute = "weights"  # see backends.base.Backend

    def check(self, model: ir.Model, target: TargetProfile) -> SupportReport:
        from deploycomp.backends.tflite.lowering import unsupported_nodes

        report = SupportReport(self.name)
        report.unsupported = unsupported_nodes(model)
        for node in model.graph:
            if node.op_type in target.unsupported_ops and not any(u["node"] == node.name for u in report.unsupported):
                report.unsupported.append(unsupported_node(node))
        if not report.unsupported:
            try:  # attribute-level limits (a Resize mode, a non-constant weight) surface here, before writing
                self._lower_in_memory(model, "fp32", "nhwc")
            except UnsupportedError as e:
                report.notes.append(str(e))
                op = getattr(e, "op", None) or str(e).split(":", 1)[-1].strip().split(" ")[0]
                report.unsupported.append({"node": getattr(e, "node", ""), "op": op, "output": getattr(e, "output", "")})
        return report

    def _lower_in_memory(self, model: ir.Model, precision: str, io_layout: str, int8_io: bool = False,
                         fp16_exact: bool = False, fp32_nodes: frozenset[int] = frozenset()):
        """Lower ``model``; the last result is kept, so an fp32 build lowers once for
        ``check`` and ``lower`` (as the OpenVINO adapter converts once)."""
        from deploycomp.backends.tflite.lowering import Lowering

        key = (precision, io_layout, int8_io, fp16_exact, fp32_nodes)
        cached = getattr(self, "_last", None)
        if cached is not None and cached[0]() is model and cached[1] == key:
            return cached[2]
        result = Lowering(model, precision, io_layout, int8_io, fp16_exact, fp32_nodes).run()
        self._last = (weakref.ref(model), key, result)
        return result

    def lower(self, model: ir.Model, target: TargetProfile, precision: str, out_dir: Path,
              options: Mapping[str, Any] | None = None) -> Lowered:
        options = dict(options or {})
        io_layout = options.get("io_layout") or "nhwc"
        int8_io = bool(options.get("int8_io"))
        if precision not in PRECISIONS:
            raise UnsupportedError(f"tflite backend: precision {precision} is not available yet")
        if io_layout not in IO_LAYOUTS:
            raise UnsupportedError(f"tflite backend: io_layout {io_layout!r}; choose {' or '.join(IO_LAYOUTS)}")
        if precision == "fp16" and options.get("fp16_weights") is False:
            precision = "fp32"  # the weights as the model has them (see the pipeline's fp16 fallback)
        # the readers and writers of the fp16 search's fp32 tensors keep their weights float32
        kept = nodes_keeping_fp32(model, options.get("fp32_tensors") or ()) if precision == "fp16" else frozenset()
        result = self._lower_in_memory(model, precision, io_layout, int8_io, bool(options.get("fp16_exact_weights")),
                                       kept)
        path = out_dir / "model.tflite"
        path.write_bytes(result.flatbuffer)
        extra: dict[str, Any] = {}
        if precision == "fp16":
            extra["fp16_kept_fp32_constants"] = result.kept_fp32  # past float16's range or below its precision
            if kept:
                extra["fp32_weight_nodes"] = len(kept)
        if precision == "int8":
            extra["int8_io"] = int8_io
            hybrid = result.hybrid_op_counts  # int8 weights, float activations: not float ops
            float_ops = {op: n - result.int8_op_counts.get(op, 0) - hybrid.get(op, 0)
                         for op, n in result.op_counts.items() if op not in ("QUANTIZE", "DEQUANTIZE")}
            float_ops = {op: n for op, n in float_ops.items() if n > 0}
            compute = sum(n for op, n in result.op_counts.items() if op not in ("QUANTIZE", "DEQUANTIZE"))
            extra["int8_ops"] = sum(n for op, n in result.int8_op_counts.items() if op != "QUANTIZE")
            extra["dynamic_range_ops"] = sum(hybrid.values())
            if result.float_compute:
                extra["float_compute_layers"] = result.float_compute
            extra["float_ops"] = float_ops
            dynamic = f", {extra['dynamic_range_ops']} dynamic-range" if hybrid else ""
            extra["executed_precision"] = ("fp32" if not extra["int8_ops"] and not hybrid else
                                           "int8" if not float_ops and not hybrid else
                                           # (the runtime's ops: the summary's layers are the model's)
                                           f"int8 ({extra['int8_ops']} of {compute} TFLite ops{dynamic})"
                                           + (" + fp32" if float_ops else ""))
            if target.device == "EDGETPU":  # dynamic-range ops are float at their ends: the CPU's too
                cpu = {op: float_ops.get(op, 0) + hybrid.get(op, 0) for op in {*float_ops, *hybrid}}
                extra["edgetpu_cpu_fallback"] = (
                    f"the Edge TPU compiler maps only int8 ops; these would run on the host CPU: "
                    f"{', '.join(f'{op} x{n}' for op, n in sorted(cpu.items()))}" if cpu else "none")
        return Lowered(
            files=[path],
            info={
                "format": "tflite",
                "tflite": path.name,
                "precision": precision,
                # (an int8 build whose search kept every layer float has no int8 weight)
                "weights": ("i8 per-channel" if precision == "int8" and (extra["int8_ops"] or extra["dynamic_range_ops"])
                            else {"fp16": "f16 (DEQUANTIZE)"}.get(precision, "f32")),
                "io_layout": io_layout,
                "io_layouts": result.io_layouts,
                "ops": result.op_counts,
                "transposes": result.op_counts.get("TRANSPOSE", 0),
            } | extra,
        )

    @staticmethod
    def fp16_reference(model: ir.Model, fp32_tensors=()) -> ir.Model:
        """What an fp16 bundle of ``model`` computes, as an fp32 ONNX model: float16 weights
        (the constants the lowering stores so), float32 arithmetic; the readers and writers
        of ``fp32_tensors`` keep their weights float32 (the fp16 search ranks on it)."""
        from deploycomp.backends.tflite.lowering import FP16_MIN_ELEMENTS, fp16_holds

        return weights_rounded(model, fp32_tensors, lambda data: data.size >= FP16_MIN_ELEMENTS and fp16_holds(data))

    def load(self, bundle_dir: Path, lowered: Mapping[str, Any]) -> TFLiteRunner:
        runner = TFLiteRunner(bundle_dir / lowered["tflite"], lowered.get("io_layouts", {}))
        runner.info["executed_precision"] = lowered.get("executed_precision", "fp32")
        if lowered.get("float_compute_layers"):  # read by the int8 record (executed_float_behind_qdq)
            runner.info["float_compute_layers"] = lowered["float_compute_layers"]
        return runner


BACKEND = TFLiteBackend()
