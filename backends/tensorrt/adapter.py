"""TensorRT: a TensorRT-ready ONNX and a build plan anywhere; the engine where the GPU is.

TensorRT 10+ builds strongly typed networks (TensorRT 11 has no implicit int8 at all),
so the precision is in the ONNX: fp32 as is, fp16 as real fp16 tensors with the
overflow-prone ops kept fp32 (:mod:`.fp16`), int8 as the QDQ graph of the ``tensorrt``
policy (symmetric int8, per-channel weights, float biases, QDQ on residual Adds).

``lower`` writes ``model.onnx`` + ``build_plan.json`` and checks the ONNX with NVIDIA's
own parser (``tensorrt`` or, without a GPU, ``tensorrt-rtx``), naming rejected nodes.
When ``tensorrt`` and a GPU are present it also builds the engine; otherwise
``deploycomp engine BUNDLE`` does that on the device. ``load`` runs the engine if it
can, else the bundle's ONNX in onnxruntime, labelled as a functional reference of what
TensorRT is given, so the fidelity of the typed graph is checked on any machine.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any, Mapping

import onnx_ir as ir

from deploycomp.backends.tensorrt import EXTRA, REQUIRES
from deploycomp.backends.base import Lowered, SupportReport, unsupported_node
from deploycomp.backends.tensorrt import parser as nvparser
from deploycomp.backends.tensorrt.plan import PLAN_FILE, make_plan
from deploycomp.errors import DeployError, UnsupportedError, node_label
from deploycomp.ir import save_model
from deploycomp.targets import TargetProfile

__all__ = ["BACKEND", "TensorRTBackend"]

PRECISIONS = ("fp32", "fp16", "int8")


def _static_profiles(model: ir.Model) -> dict[str, dict[str, list[int]]]:
    out = {}
    for value in model.graph.inputs:
        dims = [d if isinstance(d, int) else -1 for d in (value.shape or [])]
        out[value.name] = {"min": dims, "opt": dims, "max": dims}
    return out


def _rejected(model: ir.Model, parsed: nvparser.ParseResult) -> list[dict[str, str]]:
    """The parser's unsupported nodes as support-report entries, with the output of each
    node the model has by that name (:func:`~deploycomp.backends.base.unsupported_node`).
    Where the parser names no node (a check inside an op's importer: a ScatterElements
    reduction), it stopped at the first node of that op in graph order: that node, and
    every other of its op after it, for the count (the refusal had read "1 node(s), first:
    an unnamed ScatterElements" of a model with 8, all named)."""
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    by_name = {n.name: n for n in nodes}
    out = []
    for u in parsed.unsupported:
        same_op = [n for n in nodes if n.op_type == u["op"]] if not u["node"] else []
        if u["node"] in by_name:
            out.append(unsupported_node(by_name[u["node"]], u["op"]))
        elif same_op:
            out += [unsupported_node(n) for n in same_op if not any(e["node"] == n.name for e in out)]
        else:
            out.append({"node": u["node"], "op": u["op"]})
    return out


class TensorRTBackend:
    name = "tensorrt"
    requires = REQUIRES
    """The ONNX + plan need no NVIDIA package; the parser check and the engine are optional."""
    extra = EXTRA
    fp16_compute = "tensors"  # see backends.base.Backend
    dynamic_shapes = True  # see backends.base.Backend: a --profile is an optimization profile
    precisions = PRECISIONS

    def check(self, model: ir.Model, target: TargetProfile) -> SupportReport:
        report = SupportReport(self.name)
        ml = []
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.domain == "ai.onnx.ml":
                ml.append(unsupported_node(node))
            elif node.op_type in target.unsupported_ops:
                report.unsupported.append(unsupported_node(node))
        # no string tensors and no ONNX-ML ops in TensorRT: its parser's answers named
        # "Initializers, Input" as ops or quoted a plugin-registry assertion, and printed a
        # line of its own (a g2p model's string input, a scikit-learn tree ensemble)
        strings = [v for v in (*model.graph.inputs, *model.graph.outputs) if v.dtype == ir.DataType.STRING]
        if strings or ml:
            report.unsupported += ml
            for v in strings:
                kind = "input" if v.is_graph_input() else "output"
                report.unsupported.append({"node": v.name, "op": f"string {kind} '{v.name}'"})
            report.notes.insert(0, "TensorRT has no " + " and no ".join(
                [w for w, found in (("string tensors", strings), ("ONNX-ML (ai.onnx.ml) ops", ml)) if found]))
            return report
        parsed = self._parse(model)
        if parsed is None:
            report.notes.append("NVIDIA's ONNX parser is not installed here (pip install tensorrt-rtx): "
                                "op support was not checked against TensorRT")
        else:
            report.notes.append(f"parsed by {parsed.parser}: {'all nodes supported' if parsed.ok else 'rejected'}")
            report.unsupported += _rejected(model, parsed)
            if not parsed.ok:
                report.notes.insert(0, parsed.errors[0] if parsed.errors else "the parser rejected the model")
        return report

    def _parse(self, model: ir.Model) -> nvparser.ParseResult | None:
        """NVIDIA's parser on ``model``; the last result is kept, so an fp32 build, whose
        ``lower`` hands over the graph ``check`` saw, is serialized and parsed once."""
        cached = getattr(self, "_parsed", None)
        if cached is not None and cached[0]() is model:
            return cached[1]
        parsed = nvparser.parse_onnx(ir.to_proto(model).SerializeToString())
        self._parsed = (weakref.ref(model), parsed)
        return parsed

    def lower(self, model: ir.Model, target: TargetProfile, precision: str, out_dir: Path,
              options: Mapping[str, Any] | None = None) -> Lowered:
        if precision not in PRECISIONS:
            raise UnsupportedError(f"tensorrt backend: precision {precision} is not available")
        options = dict(options or {})
        if precision == "fp16":
            from deploycomp.backends.tensorrt.fp16 import to_fp16

            model = to_fp16(model, fp32_tensors=options.get("fp32_tensors") or ())
        parsed = self._parse(model)
        if parsed is not None and not parsed.ok:
            first = (_rejected(model, parsed) or [{"node": "?", "op": "?"}])[0]
            where = node_label(first["node"], first["op"], first.get("output", ""))
            where = f"{where} ({first['op']})" if where.startswith("node ") else where
            raise UnsupportedError(f"NVIDIA's ONNX parser ({parsed.parser}) rejects the {precision} ONNX at "
                                   f"{where}: {parsed.errors[0] if parsed.errors else ''}")
        files = save_model(model, out_dir / "model.onnx")
        profiles = options.get("profiles") or _static_profiles(model)
        plan = make_plan(files[0].name, target, precision, profiles)
        (out_dir / PLAN_FILE).write_text(json.dumps(plan.to_json(), indent=2) + "\n", encoding="utf-8")
        info: dict[str, Any] = {
            "format": "tensorrt-onnx",
            "onnx": files[0].name,
            "plan": PLAN_FILE,
            "precision": precision,
            "typed_as": {"fp32": "fp32 tensors", "fp16": "fp16 tensors, sensitive ops fp32",
                         "int8": "QDQ (explicit quantization)"}[precision],
            "nvidia_parser": parsed.parser if parsed else None,
            "engine": None,
            "reference": "reference.npz",
        }
        quantized = any(n.op_type == "QuantizeLinear" and n.inputs[0].const_value is None
                        for n in ir.traversal.RecursiveGraphIterator(model.graph))
        if precision == "int8" and not quantized:
            # every layer kept float: no activation is quantized, the engine computes fp32
            info |= {"typed_as": "fp32 tensors (no layer stayed int8)", "graph_precision": "fp32"}
        elif precision != "int8" and quantized:
            # a model that arrives int8: explicit quantization, whatever the builder flags (its
            # fp32 and int8 builds write the same file; the fp32 one had said "executes fp32")
            info |= {"typed_as": f"QDQ of its own (explicit quantization), the rest {precision}",
                     "graph_precision": "int8"}
        files.append(out_dir / PLAN_FILE)
        engine = self._maybe_build_engine(out_dir, plan)
        if engine:
            info["engine"] = engine
            files += [out_dir / engine["engine"], out_dir / engine["timing_cache"]]
        return Lowered(files=files, info=info)

    @staticmethod
    def _maybe_build_engine(out_dir: Path, plan) -> dict[str, Any] | None:
        from deploycomp.backends.tensorrt.engine import build_engine, require_engine_builder

        try:
            trt, gpu = require_engine_builder()
        except DeployError:
            return None  # no TensorRT or no GPU here: `deploycomp engine` on the device
        return build_engine(out_dir, plan, trt) | {"gpu": gpu}

    def fp16_reference(self, model: ir.Model, fp32_tensors=()) -> ir.Model:
        """What an fp16 bundle of ``model`` computes, as an fp32 ONNX model: the typed graph
        with every fp16 tensor rounded through fp16 (its functional reference; the fp16
        search ranks layers on it, :mod:`deploycomp.fp16_search`)."""
        from deploycomp.backends.tensorrt.fp16 import simulate_fp16, to_fp16

        return simulate_fp16(to_fp16(model, fp32_tensors=fp32_tensors))

    def load(self, bundle_dir: Path, lowered: Mapping[str, Any]):
        engine = lowered.get("engine")
        if engine and (bundle_dir / engine["engine"]).is_file():
            from deploycomp.backends.tensorrt.engine import TensorRTRunner

            try:
                return TensorRTRunner(bundle_dir / engine["engine"])
            except DeployError:
                pass  # built on another machine: fall back to the functional reference
        from deploycomp.backends.onnxruntime import ORTRunner

        # exact QDQ arithmetic: TensorRT's int8 is that arithmetic, ORT's fused kernels are not;
        # fp16 tensors rounded through fp16, which ORT's CPU kernels would otherwise skip
        source = bundle_dir / lowered["onnx"]
        if lowered["precision"] == "fp16":
            from deploycomp.backends.tensorrt.fp16 import simulate_fp16

            source = ir.to_proto(simulate_fp16(ir.load(source))).SerializeToString()
        runner = ORTRunner(source, arithmetic="exact_qdq")
        runner.info.update(runtime="onnxruntime (functional reference of the TensorRT ONNX; no engine here)",
                           functional_reference=True,  # its latency says nothing about the device
                           executed_precision=f"{lowered.get('graph_precision', lowered['precision'])} graph on "
                                              "the ORT CPU provider"
                           + (" (fp16 tensors rounded through fp16)" if lowered["precision"] == "fp16" else ""))
        return runner


BACKEND = TensorRTBackend()
