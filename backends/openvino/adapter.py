"""ONNX -> OpenVINO IR (``model.xml`` + ``model.bin``) and a runner that executes it.

Precision is two separate decisions in OpenVINO, and both are recorded:

* storage: ``fp16`` compresses weights to f16 in the ``.bin`` (half the size);
  OpenVINO decompresses them on the fly.
* execution: the CPU plugin's ``INFERENCE_PRECISION_HINT``. Left unset, the plugin
  runs **bf16 on CPUs with AVX512-BF16/AMX**, so an "fp32" IR silently executes in
  bf16 there. The runner therefore always sets the hint (f32 for fp32, bf16 for bf16,
  f16 for fp16, f32 for fp16 where the CPU has no native f16: the plugin would run
  bf16 there) and reads back what the compiled model actually uses, plus the runtime
  precision of every compute layer, into the manifest. A CPU without native f16/bf16
  falls back to f32, and the manifest then says f32. An fp16 build whose tensors leave
  f16's range on real inputs, or whose f16 execution misses its budget, executes f32 on
  its f16 weights (``execute: f32`` in the lowered info), as does one whose f16 execution
  is the slower on the target's own CPU (timed at build): the plugin applies its f16
  inference precision to every node, and OpenVINO's per-node fp32 mark
  (``ov::disable_fp16_compression``) is a C++ type that neither the Python API nor the
  IR reader sets (measured with 2026.4 on a Xeon with AVX512-FP16: an STFT front-end
  gave 18,624 Inf with every node marked). Where the fp16 search or the range check
  keeps tensors fp32, their producers' and readers' weights stay f32 in the ``.bin``:
  the adapter stores the other constants f16 itself (that mark cannot keep one f32
  either).

Op support is checked with the ONNX frontend's partial conversion: nodes it cannot
translate remain ``ONNXFrameworkNode`` and are reported by op type.
"""

from __future__ import annotations

import os
import re
import weakref
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx_ir as ir

from deploycomp.backends.openvino import EXTRA, REQUIRES
from deploycomp.backends.base import Lowered, SupportReport, require_modules, unsupported_node
from deploycomp.bundle import scratch_folder
from deploycomp.errors import BackendUnavailable, UnsupportedError
from deploycomp.fp16_search import weights_rounded
from deploycomp.ir import save_model
from deploycomp.targets import TargetProfile

__all__ = ["BACKEND", "OpenVINOBackend", "OpenVINORunner"]

_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
"""Inference precision hint per build precision. int8 graphs carry QDQ: the quantized
layers run int8 kernels and the rest runs at the hint (f32, never an implicit bf16)."""
_PRECISION_NAME = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_COMPUTE_LAYERS = {"Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution",
                   # recurrent layers (LSTM/GRU/RNN as a sequence op or unrolled in a loop): no
                   # QDQ enters them, so an int8 model with any runs them float; counted, or a
                   # GRU encoder with one int8 FullyConnected said "executes int8"
                   "RNNSeq", "RNNCell", "TensorIterator"}


def _ov():
    require_modules("openvino", ("openvino",), "openvino")
    import openvino

    return openvino


FRONTEND_ONLY = "OpenVINO's ONNX frontend alone (read_model), without convert_model's offline transformations"


def _read_onnx(ov: Any, path: Path, trial: bool = False) -> Any:
    """The ONNX file as an OpenVINO model. A shipped IR goes through ``convert_model``,
    whose offline transformations fold each QDQ pair into a FakeQuantize and drop the
    shape arithmetic (PP-OCR cls's int8 IR: 0.53 MB; read as is, 1.06 MB). A ``trial``
    (an int8 candidate, judged and thrown away) is read by the ONNX frontend alone
    (``Core.read_model``): ``compile_model`` runs the same transformations anyway, and it
    is 30x faster (PP-OCR rec's QDQ graph: 0.05 s vs 1.5 s, with identical outputs and
    the same 56 int8 kernels)."""
    return ov.Core().read_model(str(path)) if trial else ov.convert_model(str(path))


def _int8_weights(model: ir.Model) -> bool:
    """Whether weights reach the model through DequantizeLinear of 8-bit constants."""
    return any(n.op_type == "DequantizeLinear" and n.inputs[0] is not None and n.inputs[0].const_value is not None
               and n.inputs[0].dtype in (ir.DataType.INT8, ir.DataType.UINT8) for n in model.graph)


def _precision_name(ov_type: Any) -> str:
    text = str(getattr(ov_type, "get_type_name", lambda: ov_type)())
    text = text.replace("<Type: '", "").replace("'>", "")
    return _PRECISION_NAME.get(text, text)


def _passthrough_outputs(graph: ir.Graph) -> list[int]:
    """Positions of ``graph``'s outputs that are its own inputs, unchanged."""
    inputs = {id(v) for v in graph.inputs}
    return [i for i, v in enumerate(graph.outputs) if id(v) in inputs]


def _for_openvino(model: ir.Model) -> ir.Model:
    """``model``, with each output that is an input unchanged written through an
    ``Identity``: a graph's (the converted input lost its name) and a ``Loop`` body's (a
    loop-carried value the body does not touch: Paddle2ONNX carries weights that way).
    OpenVINO's ONNX frontend (2026.4) counts the body's twice and refuses the Loop ("canonical inputs size (41), does not match ... (25)" on
    SLANet, whose 501-step decoder carries 16 values through unchanged); through an
    Identity it converts and runs to ONNX Runtime's outputs. A copy, only where needed."""
    def loops(m: ir.Model):
        return [n for n in ir.traversal.RecursiveGraphIterator(m.graph) if n.op_type == "Loop" and "body" in n.attributes]

    graphs = [n.attributes["body"].value for n in loops(model)]
    if not any(_passthrough_outputs(g) for g in [model.graph, *graphs]):
        return model
    model = model.clone()
    # the graph's own too: an input that is also an output lost its name in the conversion
    # ("a_1"), and every run of the bundle failed to find the input fed as "a"
    for graph in [model.graph, *(n.attributes["body"].value for n in loops(model))]:
        for i in _passthrough_outputs(graph):
            value = graph.outputs[i]
            through = ir.node("Identity", [value], name=f"{graph.name or 'graph'}__passthrough_{i}")
            through.outputs[0].name = f"{value.name}__passthrough"
            through.outputs[0].type, through.outputs[0].shape = value.type, value.shape
            graph.append(through)
            graph.outputs[i] = through.outputs[0]
    return model


def _release(held: dict[str, Any]) -> None:
    """A runner's plugin objects dropped, then the signal stack their engine may have
    restored onto freed memory disabled (:mod:`deploycomp.backends.openvino.signal_stack`)."""
    from deploycomp.backends.openvino import signal_stack

    held.clear()
    signal_stack.repair()


def _cpu_hint(core: Any, device: str, precision: str) -> str:
    """The CPU plugin's inference precision for a build precision. An f16 hint on a CPU
    without native f16 but with AVX512-BF16 (AMD Zen 4, measured with OpenVINO 2026.4)
    executes **bf16**: 8 mantissa bits where fp16 has 11 (PP-OCRv3 det: cosine 0.9908
    against the fp16 budget's 0.999). There an fp16 build executes f32 on its f16
    weights, as it does on CPUs with neither."""
    if precision == "fp16" and "FP16" not in core.get_property(device.split(".")[0], "OPTIMIZATION_CAPABILITIES"):
        return "f32"
    return _HINT[precision]


def _bounded(ov: Any, ov_model: Any, profiles: Mapping[str, Mapping[str, list[int]]] | None) -> None:
    """Each ``--profile``d input's dims bounded to its MIN..MAX (a dim alike at both ends
    static): the IR says what the bundle takes, and the CPU plugin plans its memory for no
    more than MAX (the ONNX file leaves those dims unbounded)."""
    if not profiles:
        return
    shapes = {}
    for port in ov_model.inputs:
        profile = next((profiles[n] for n in port.get_names() if n in profiles), None)
        if profile is not None:
            shapes[port] = ov.PartialShape([ov.Dimension(lo, hi) for lo, hi in zip(profile["min"], profile["max"])])
    if shapes:
        ov_model.reshape(shapes)


def _write_problem(folder: Path) -> OSError | None:
    """Why a write into ``folder`` fails now, as the OS says it (a full disk, a file-size
    limit), or None: what OpenVINO's IR writer does not say when it fails (an internal
    error, exit 1, where the machine had run out of room)."""
    probe = Path(folder) / ".deploycomp-write-check"
    try:
        with open(probe, "wb") as f:
            f.write(bytes(1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e
    finally:
        probe.unlink(missing_ok=True)
    return None


class OpenVINORunner:
    """Runs an IR. Outputs are keyed by ``output_names`` (the ONNX graph's, in order) when
    given: after folding, one OpenVINO tensor can carry several names, and ``get_any_name``
    may pick another than the graph output's (Silero VAD with its sample rate frozen)."""

    def __init__(self, xml: Path, device: str, precision: str, threads: int | None = None,
                 output_names: list[str] | None = None, execute: str | None = None):
        ov = _ov()
        core = ov.Core()
        if device not in core.available_devices and device.split(".")[0] not in core.available_devices:
            raise BackendUnavailable(
                f"OpenVINO device {device!r} not present here (available: {', '.join(core.available_devices)})"
            )
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision in _HINT and device.startswith("CPU"):
            config["INFERENCE_PRECISION_HINT"] = execute or _cpu_hint(core, device, precision)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        # the plugin's objects, released together when the runner goes (``_release``: their
        # engine's signal stack then checked, see signal_stack)
        self._held: dict[str, Any] = {}
        weakref.finalize(self, _release, self._held)
        try:
            self._held["compiled"] = core.compile_model(core.read_model(str(xml)), device, config)
        except RuntimeError as e:  # a transformation of the plugin's own threw (an int8 pattern it mishandles)
            stage = re.search(r"\[(\w+)\] END: node:", str(e))
            raise UnsupportedError(f"OpenVINO's {device} plugin cannot compile it: {_failed_ops(str(e))}"
                                   f"{f' in its {stage[1]}' if stage else ''}: {_conversion_reason(str(e))}") from e
        self._held["request"] = self.compiled.create_infer_request()
        # every name a port carries: a graph input read straight by an op OpenVINO folds away
        # (a Cast to the type it already has) can come back named after that op's output
        # (a Keras CRNN's "image" as ".../Cast:0": every run failed with a KeyError)
        self.input_names = [sorted(p.get_names()) for p in self.compiled.inputs]
        self.output_names = ([n for n in output_names] if output_names and len(output_names) == len(self.compiled.outputs)
                             else [p.get_any_name() for p in self.compiled.outputs])
        self.info = {
            "runtime": "openvino",
            "runtime_version": ov.get_version(),
            "device": device,
            "device_name": core.get_property(device.split(".")[0], "FULL_DEVICE_NAME"),
            "requested_precision": precision,
            "executed_precision": _precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "compute_layer_precisions": self._layer_precisions(),
            # what a program that loads model.xml with OpenVINO's own API must pass to
            # compile_model to run what was validated: its CPU defaults to bf16 where the CPU
            # has it (a PP-LCNet fp32 bundle then missed its own fp32 budget, 0.99968)
            "compile_config": {k: v for k, v in config.items() if k != "INFERENCE_NUM_THREADS"},
        }
        if precision == "fp16" and execute is None and config.get("INFERENCE_PRECISION_HINT") == "f32":
            self.info["executes_fp32_because"] = ("this CPU has no native f16 (OpenVINO would execute an f16 hint as "
                                                  "bf16 or emulate it): f16 weights, f32 execution")
        layers = self.info["compute_layer_precisions"]
        int8 = sum(n for k, n in layers.items() if k.split(":")[1] in ("u8", "i8"))
        if int8:
            total = sum(layers.values())
            self.info["int8_compute_layers"] = int8
            if int8 < total:
                self.info["float_compute_layers"] = self._float_compute_layers()
            self.info["executed_precision"] = "int8" if int8 == total else f"int8 ({int8} of {total} OpenVINO compute layers) + fp32"

    @property
    def compiled(self) -> Any:
        return self._held["compiled"]

    @property
    def request(self) -> Any:
        return self._held["request"]

    def _layer_precisions(self) -> dict[str, int]:
        """Compute layers by the precision of the activations they execute on, and kernel.

        ``runtimePrecision`` is not used: for f16-compressed weights it says f16 even
        when the kernel (``primitiveType``, e.g. ``brgconv_avx2_f32``) computes in f32.
        """
        counts: Counter[str] = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            layer = rt["layerType"].astype(str)
            if layer in _COMPUTE_LAYERS:
                activations = _precision_name(op.inputs()[0].get_element_type())
                counts[f"{layer}:{activations}:{rt['primitiveType'].astype(str)}"] += 1
        return dict(sorted(counts.items()))

    def _float_compute_layers(self) -> list[str]:
        """The source nodes (``originalLayersNames``) of compute layers the plugin executes
        on float activations in a model that has int8 ones: a QDQ placed there costs
        accuracy and buys nothing (OpenVINO 2026.4 runs a 1-D ConvTranspose in f32)."""
        names: set[str] = set()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if (rt["layerType"].astype(str) in _COMPUTE_LAYERS
                    and _precision_name(op.inputs()[0].get_element_type()) not in ("u8", "i8")):
                names.update(n for n in rt["originalLayersNames"].astype(str).split(",") if n)
        return sorted(names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # share_outputs=False: the outputs are copied out of the request's buffers already
        # (the next run reuses those); a second copy cost 2.3 s of a build whose outputs
        # hold 19 M values (LORE)
        results = self.request.infer({i: np.require(feeds[_fed(names, feeds)], requirements="C")
                                      for i, names in enumerate(self.input_names)}, share_outputs=False)
        return {name: np.asarray(results[port]) for name, port in zip(self.output_names, self.compiled.outputs)}


def _fed(names: list[str], feeds: Mapping[str, np.ndarray]) -> str:
    """The one of an input port's names the caller fed."""
    for name in names:
        if name in feeds:
            return name
    raise KeyError(f"no input named {' or '.join(names)} given (given: {', '.join(sorted(feeds))})")


_AUTO_NAME = re.compile(r"^(.*?)_\d+$")


def _failed_ops(message: str) -> str:
    """'Conv, ReduceMean' from OpenVINO's 'Conversion is failed for: Conv-16, ReduceMean-16';
    where a transformation of its own threw instead, the op it names ('[BroadcastTransition]
    END: node: opset1::Multiply y (...)': 'Multiply (node 'y')'); '?' where neither is said."""
    match = re.search(r"Conversion is failed for: (.*)", message)
    if match:
        return ", ".join(sorted({re.sub(r"-\d+$", "", op.strip()) for op in match.group(1).split(",")}))
    node = re.search(r"node: opset\d+::(\w+) (\S+)", message)
    return f"{node.group(1)} (node '{node.group(2)}')" if node else "?"


_VALIDATING = re.compile(r"While validating ONNX node '<Node\((?P<op>[^)]*)\): (?P<name>[^>]*)>'")


def _conversion_reason(message: str, order: Mapping[str, int] | None = None) -> str:
    """OpenVINO's specific reason, on one line: of the nodes it could not validate, the
    earliest in the graph (``order``: a node's or output's name -> its position), since
    a node fails after it too where its input came out wrong (an STFT's refusal was
    reported as the ReduceSumSquare reading it); its first one where the order is not known."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    found = [(i, _VALIDATING.match(line)) for i, line in enumerate(lines)
             if line.startswith("While validating ONNX node")]
    if found:
        order = order or {}
        i, _ = min(found, key=lambda f: (order.get(f[1]["name"], len(order)) if f[1] else len(order), f[0]))
        detail = next((ln for ln in lines[i + 1:] if not ln.startswith(("FrontEnd API", "Check "))), "")
        return f"{lines[i].rstrip(':')}: {detail}"[:300]
    return (lines[-1] if lines else "conversion failed")[:300]


def _graph_order(model: ir.Model) -> dict[str, int]:
    """Each main-graph node's name and output names -> its position (what OpenVINO names
    a node by in its validation errors)."""
    return {key: i for i, n in enumerate(model.graph) for key in (n.name, *(v.name for v in n.outputs)) if key}


def _stable_names(ov_model: Any, model: ir.Model) -> None:
    """Replace OpenVINO's process-global auto-numbered op names by positional ones.

    Ops the converter creates get names like ``Reshape_18822`` from a counter that
    depends on everything converted earlier in the process, which would make two
    builds of the same model differ in their ``.xml``. Names that came from the ONNX
    graph are kept.
    """
    onnx_names = {n.name for n in ir.traversal.RecursiveGraphIterator(model.graph)}
    onnx_names |= {v.name for n in ir.traversal.RecursiveGraphIterator(model.graph) for v in n.outputs}
    for index, op in enumerate(ov_model.get_ordered_ops()):
        name = op.get_friendly_name()
        match = _AUTO_NAME.match(name)
        if match and name not in onnx_names:
            op.set_friendly_name(f"{match.group(1)}_{index}")


def _framework_nodes(ov, path: Path) -> list[dict[str, str]]:
    """Nodes the ONNX frontend has no conversion rule for (left as ONNXFrameworkNode)."""
    frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
    input_model = frontend.load(str(path))  # must outlive `partial`: its nodes point into it
    partial = frontend.convert_partially(input_model)
    found = []
    for op in partial.get_ordered_ops():
        if "FrameworkNode" in op.get_type_name():
            attrs = op.get_attributes()
            domain = attrs.get("ONNX_META_domain", "")
            op_type = attrs.get("ONNX_META_type", op.get_type_name())
            found.append({"node": op.get_friendly_name(), "op": f"{domain}::{op_type}" if domain else op_type})
    return found


def _weights_of(ov_model, tensors) -> dict[int, object]:
    """The constants the producers and readers of ``tensors`` (ONNX names, which the ONNX
    frontend keeps as output names) compute with, by ``id``. One ONNX node can convert to
    several OpenVINO ops, the inner ones unnamed (a Conv with a bias: a Convolution reading
    the weights, then an Add writing the named tensor): the walk reaches through unnamed
    outputs, back from a producer and on from a reader."""
    hot = set(tensors)
    found: dict[int, object] = {}

    def through(op, back: bool) -> None:
        stack, seen = [op], set()
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            for port in current.inputs():  # its weights, and (back) the node's inner ops before it
                source = port.get_source_output()
                node = source.get_node()
                if node.get_type_name() == "Constant":
                    found.setdefault(id(node), node)
                elif back and not source.get_names() and node.get_type_name() != "Parameter":
                    stack.append(node)
            if not back:  # a reader's inner ops after it, up to the tensor its ONNX node writes
                stack.extend(target.get_node() for out in current.outputs() if not out.get_names()
                             for target in out.get_target_inputs())

    for op in ov_model.get_ops() if hot else ():
        if {n for out in op.outputs() for n in out.get_names()} & hot:
            through(op, back=True)
        if {n for port in op.inputs() for n in port.get_source_output().get_names()} & hot:
            through(op, back=False)
    return found


def _stored_fp16(data: np.ndarray) -> bool:
    """Whether an fp16 bundle stores a float constant f16: where every value is finite there
    (OpenVINO's own compression clamps a constant with under 75% of its values out of range)."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(data.astype(np.float16)).all())


def _compress_except(ov, ov_model, keep: dict[int, object]) -> int:
    """Store f16 the float constants OpenVINO's own compression would (not its precision-
    sensitive shape computations), except those in ``keep``: each as an f16 constant and a
    Convert, saved without compression; returns how many stayed f32. OpenVINO's per-node
    mark that would keep a constant f32 (``ov::disable_fp16_compression``) is a C++ type
    the Python API cannot set (a key of its name set from Python was ignored, measured
    with 2026.4), and the plugin keeps no single node fp32 in execution anyway: a bundle
    that keeps any tensor fp32 executes f32."""
    from openvino import opset13 as ops
    from openvino._pyopenvino._offline_transformations import compress_model_transformation

    probe = ov_model.clone()
    compress_model_transformation(probe)
    suffix = "_compressed"  # (OpenVINO names each constant it compresses so)
    compressed = {op.get_friendly_name()[: -len(suffix)] for op in probe.get_ops()
                  if op.get_type_name() == "Constant" and op.get_friendly_name().endswith(suffix)}
    kept = 0
    for op in list(ov_model.get_ops()):
        if op.get_type_name() != "Constant" or op.get_friendly_name() not in compressed:
            continue
        data = op.get_data()
        if id(op) in keep or data.dtype != np.float32 or not _stored_fp16(data):
            kept += id(op) in keep
            continue
        half = ops.convert(ops.constant(data.astype(np.float16)), ov.Type.f32)
        half.set_friendly_name(op.get_friendly_name())
        half.output(0).set_names(op.output(0).get_names())
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(half.output(0))
    return kept


_PEEPHOLE_LSTM = "LSTM with peephole weights"


def _peepholes(node: ir.Node) -> bool:
    """An ONNX LSTM whose peephole weights (input 7) are not all zero: OpenVINO 2026.4
    converts them yet computes as if they were not there (a madmom beat tracker's BLSTM:
    cosine 0.125 against ONNX Runtime at fp32; its outputs moved by 0.65 on a one-layer
    repro, 0.006 with the same P zeroed)."""
    if node.op_type != "LSTM" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 8 or node.inputs[7] is None:
        return False
    weights = node.inputs[7].const_value
    return weights is None or bool(np.any(weights.numpy()))


_ANTIALIAS = "Resize with antialias when downscaling"


def _antialiased(node: ir.Node) -> bool:
    """A linear or cubic ``Resize`` with ``antialias=1`` that shrinks an axis (or may: a
    shape the model leaves open): OpenVINO 2026.4 converts it and resizes as if the
    attribute were not there (a probe's 0..1 images came out up to 0.45 off ONNX Runtime;
    the fp16 and int8 bundles of a model ending in a global pool validated all the same)."""
    if node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or not node.attributes.get_int("antialias", 0):
        return False
    if node.attributes.get_string("mode", "nearest") == "nearest":
        return False  # (the attribute applies to linear and cubic only)
    before, after = node.inputs[0].shape, node.outputs[0].shape
    if before is None or after is None or len(before) != len(after):
        return True
    return any(not isinstance(i, int) or not isinstance(o, int) or o < i for i, o in zip(before, after))


_DFT_AXIS = "DFT over an axis OpenVINO misreads"


def _dft_axis_misread(node: ir.Node, opset: int) -> bool:
    """A ``DFT`` the spectral pass left (its axis not the last signal axis, a length not
    constant...) whose axis OpenVINO 2026.4 does not read as ONNX does: an opset-20 axis
    input (or its default, -2) it takes as 1 whatever it holds, a negative ``axis``
    attribute it counts from another end (a probe's inverse transform over axis -2
    validated to cosine -0.07; -2 as an attribute was off by 1.5 too)."""
    if node.op_type != "DFT" or node.domain not in ("", "ai.onnx"):
        return False
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    rank = len(shape) if shape is not None else None
    if opset >= 20:
        given = node.inputs[2] if len(node.inputs) > 2 else None
        if given is None:
            axis = -2
        elif given.const_value is None:
            return True
        else:
            axis = int(given.const_value.numpy().reshape(-1)[0])
        return rank is None or axis % rank != 1
    attribute = node.attributes.get("axis")
    return attribute is not None and attribute.as_int() < 0


class OpenVINOBackend:
    name = "openvino"
    requires = REQUIRES
    extra = EXTRA
    fp16_compute = "whole"  # see backends.base.Backend
    dynamic_shapes = True  # see backends.base.Backend: a --profile's dims stay dynamic, bounded
    # its CPU plugin computes int64 as int32 (2026.4, no property turns it off): 2**31 + 1
    # came back as -2147483647 from a bundle that validated on small ids
    int64_range = (-2**31, 2**31 - 1, "OpenVINO's CPU plugin computes int64 as int32")
    # where the shipped conversion misses the budget (see backends.base.Backend): OpenVINO's
    # offline transformations (``convert_model``) moved an ORT-quantized PP-OCRv4 det from
    # cosine 0.998 (its ONNX frontend alone, as every int8 trial reads it) to 0.891
    fallback_lowerings = ({"offline_transformations": False},)

    def check(self, model: ir.Model, target: TargetProfile) -> SupportReport:
        """Convert with OpenVINO. The converted model is kept for :meth:`lower`, so a build
        converts once. On failure, ops the frontend has no rule for are listed by type; a
        model that fails for another reason (e.g. dynamic ranks inside ``If`` branches) is
        reported with OpenVINO's own first reason."""
        ov = _ov()
        report = SupportReport(self.name)
        with scratch_folder() as tmp:
            path = tmp / "model.onnx"
            save_model(_for_openvino(model), path)
            try:
                self._converted = (weakref.ref(model), _read_onnx(ov, path))
            except Exception as e:  # OpConversionFailure and friends: find out which nodes
                # OpenVINO names a node after its output: the ONNX node's own name and record
                by_name = {v.name: n for n in model.graph for v in n.outputs if v is not None}
                report.unsupported = [unsupported_node(by_name[u["node"]], u["op"]) if u["node"] in by_name else u
                                      for u in _framework_nodes(ov, path)]
                if not report.unsupported:
                    report.notes.append(_conversion_reason(str(e), _graph_order(model)))
                    report.unsupported.append({"node": "", "op": _failed_ops(str(e))})
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.op_type in target.unsupported_ops:
                report.unsupported.append(unsupported_node(node))
            elif _peepholes(node):
                report.unsupported.append(unsupported_node(node, _PEEPHOLE_LSTM))
            elif _antialiased(node):
                report.unsupported.append(unsupported_node(node, _ANTIALIAS))
            elif _dft_axis_misread(node, model.opset_imports.get("", 1)):
                report.unsupported.append(unsupported_node(node, _DFT_AXIS))
        if any(u["op"] == _PEEPHOLE_LSTM for u in report.unsupported):
            report.notes.append("OpenVINO 2026.4 converts an LSTM's peephole weights (input P) but computes as if "
                                "they were not there; the host pipeline writes one with constant weights, default "
                                "activations, layout 0 and no clip or input_forget as a Scan of its cell")
        return report

    def lower(self, model: ir.Model, target: TargetProfile, precision: str, out_dir: Path,
              options: Mapping[str, Any] | None = None) -> Lowered:
        if precision not in _HINT:
            raise UnsupportedError(f"openvino backend: precision {precision} is not available yet")
        ov = _ov()
        cached = getattr(self, "_converted", None)
        frontend_only = not (options or {}).get("offline_transformations", True)
        if cached is not None and cached[0]() is model and not frontend_only:
            ov_model = cached[1]
            self._converted = None
        else:
            with scratch_folder() as tmp:
                path = tmp / "model.onnx"
                save_model(_for_openvino(model), path)  # > 2 GB models go through external data
                try:
                    ov_model = _read_onnx(ov, path, trial=bool((options or {}).get("trial")) or frontend_only)
                except Exception as e:
                    raise UnsupportedError(f"OpenVINO cannot convert the model: "
                                           f"{_conversion_reason(str(e), _graph_order(model))}") from e
        _stable_names(ov_model, model)
        _bounded(ov, ov_model, (options or {}).get("profiles"))
        hot = (options or {}).get("fp32_tensors") or () if precision == "fp16" else ()
        xml = out_dir / "model.xml"
        compress = precision == "fp16" and (options or {}).get("fp16_weights", True)
        kept = 0
        if compress and hot:  # the weights of the fp32 tensors' producers and readers stay f32
            kept = _compress_except(ov, ov_model, _weights_of(ov_model, hot))
            compress = False
        try:
            ov.save_model(ov_model, str(xml), compress_to_fp16=compress)  # int8 weights stay int8
        except RuntimeError as e:  # its writer says only "basic_ios::clear: iostream error"
            problem = _write_problem(out_dir)
            if problem is not None:
                raise problem from e
            raise
        return Lowered(
            files=[xml, xml.with_suffix(".bin")],
            info={
                "format": "openvino-ir",
                "xml": xml.name,
                "device": target.device,
                "precision": precision,
                # what model.bin holds: a model that arrives int8 keeps its int8 weights at any
                # precision ("f32" had been said of them), and an int8 build whose search kept
                # every layer float has none ("i8 (QDQ)" had been said of it)
                "weights": "i8 (QDQ)" if _int8_weights(model) else {"fp16": "f16"}.get(precision, "f32"),
                "openvino_version": ov.get_version(),
                "output_names": [v.name for v in model.graph.outputs],
                **({"fp32_weights": kept} if kept else {}),
                **({"lowered_as": FRONTEND_ONLY} if frontend_only else {}),
                **({"execute": "f32"} if hot else {}),  # the CPU plugin keeps no single node fp32
            },
        )

    @staticmethod
    def fp16_reference(model: ir.Model, fp32_tensors=()) -> ir.Model:
        """What an fp16 bundle of ``model`` computes executed f32 (on a CPU without native
        f16, and wherever the bundle keeps a tensor fp32), as an fp32 ONNX model: every
        float weight rounded through f16, except those of the readers and writers of
        ``fp32_tensors`` (the fp16 search ranks on it)."""
        return weights_rounded(model, fp32_tensors, _stored_fp16)

    @staticmethod
    def f32_execution(lowered: Mapping[str, Any]) -> dict[str, Any] | None:
        """The same fp16 files executed f32 (f16 weights, f32 inference precision): the
        pipeline's answer where f16 execution misses the budget or runs slower."""
        return {**lowered, "execute": "f32"} if lowered.get("precision") == "fp16" else None

    def load(self, bundle_dir: Path, lowered: Mapping[str, Any]) -> OpenVINORunner:
        return OpenVINORunner(bundle_dir / lowered["xml"], lowered["device"], lowered["precision"],
                              output_names=lowered.get("output_names"), execute=lowered.get("execute"))

    def source_runner(self, source: Path, target: TargetProfile, output_names: list[str]) -> OpenVINORunner:
        """OpenVINO at fp32 on the unmodified ONNX file (none of deploycomp's passes): when
        a float bundle misses against ONNX Runtime, this tells a build that changed the
        outputs from a runtime that computes the model differently. Raises what OpenVINO
        raises where it cannot read the file as it is."""
        return OpenVINORunner(Path(source), target.device, "fp32", output_names=output_names)


BACKEND = OpenVINOBackend()
