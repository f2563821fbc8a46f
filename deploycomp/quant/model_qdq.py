"""A model that arrives quantized: its own QuantizeLinear/DequantizeLinear, in a backend's encoding.

Models are shipped already int8 (``onnxruntime.quantization`` writes QDQ: u8 asymmetric
activations, s8 per-channel weights, int32 biases; Smart Turn's CPU build is one). Their
encodings are the model: the reference runs them, an int8 build keeps them instead of
calibrating again (there is nothing to calibrate against but the model itself), and a
float build runs them too. What a backend cannot read is re-encoded here:

* **u8 -> s8, exact** (TFLite's int8 spec, TensorRT): ``q8 = q - 128`` with ``zp8 = zp -
  128`` is the same set of real values, step for step.
* **asymmetric -> symmetric, shifted** (TensorRT's parser takes zero points of 0 only):
  the tensor is moved by a whole number of steps, ``x - c * scale``, so that its range
  sits around 0, and quantized symmetric with the *same* step; every reader gets the
  shift back exactly: a compute layer with constant weights in its bias (``c * scale``
  times its weights' sums over the input channels: a MatMul, a Gemm, a Conv without
  padding), any other reader (an ``Add``, a ``Softmax``, a ``Reshape``: float in
  TensorRT anyway) through an ``Add`` after the DequantizeLinear. The same values, step
  for step, except the range's top step (256 levels into s8's 255 symmetric ones).
  Measured on Smart Turn (an ORT-quantized Whisper encoder): see :func:`_shift`. A
  padded Conv first gets its zero pads as a ``Pad`` before a copy of the encoding
  (:func:`_pads_before`): a ResNet's every 3x3 conv reads a ReLU's u8 that way.
* **asymmetric -> symmetric, widened** where a reader cannot take the shift back (a
  MatMul of two activations, a graph output): the scale grows to cover
  the same range around 0, ``max(|lo|, |hi|) / 127``, a coarser step for a one-sided
  range (up to 2x): not exact, counted, and validation judges it.
* **int32 bias DequantizeLinear -> float constant, exact** (TensorRT's parser rejects it):
  ``(q - zp) * scale`` is what the DequantizeLinear computes.

Each change is recorded (:class:`ConformQDQPass` ``changes``) and reaches the manifest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from deploycomp.passes.unused_initializers import RemoveUnusedInitializersPass
from deploycomp.passes.rules._util import padded
from deploycomp.quant.constants import add_initializer, attributes, constant, explicit_pad, weight_matrix
from deploycomp.quant.policy import QDQPolicy, weight_axis

__all__ = ["ConformQDQPass", "activation_quantizers", "dequantized_constants", "model_quantization", "weight_only"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def activation_quantizers(model: ir.Model) -> list[ir.Node]:
    """The model's QuantizeLinear nodes of computed tensors (its activation encodings)."""
    return [n for n in model.graph if n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx")
            and constant(n.inputs[0]) is None]


def dequantized_constants(model: ir.Model) -> Counter:
    """The constants the model's DequantizeLinear nodes read (its quantized weights and
    biases), counted by type."""
    return Counter(str(constant(n.inputs[0]).dtype) for n in model.graph
                   if n.op_type == "DequantizeLinear" and constant(n.inputs[0]) is not None)


def weight_only(model: ir.Model) -> Counter:
    """The quantized constants of a model that quantizes its weights alone (no activation
    encodings), by type; empty otherwise (an int4 export: the passes fold them into float)."""
    return Counter() if activation_quantizers(model) else dequantized_constants(model)


def model_quantization(model: ir.Model, compute_ops: tuple[str, ...]) -> dict | None:
    """What int8 the model carries of its own (None: none): activation encodings by zero
    point type and whether all are symmetric (s8, zero point 0), dequantized constants
    (weights, biases) by type, and which compute layers read a dequantized input (int8) or
    not (float)."""
    quantizers = activation_quantizers(model)
    if not quantizers:
        return None
    weights = dequantized_constants(model)
    zero_points = [constant(n.inputs[2]) if len(n.inputs) > 2 else None for n in quantizers]
    dtypes = Counter(str(zp.dtype) if zp is not None else "uint8" for zp in zero_points)
    int8, floats = [], []
    for node in model.graph:
        if node.op_type in compute_ops:
            source = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
            (int8 if source is not None and source.op_type == "DequantizeLinear" else floats).append(node.name)
    return {"activation_encodings": len(quantizers), "activation_dtypes": dict(dtypes),
            "symmetric": all(zp is not None and zp.dtype == np.int8 and not zp.any() for zp in zero_points),
            "dequantized_constants": dict(weights), "int8_layers": int8, "float_layers": floats}


def _params(node: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    scale = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None:
        return None
    zp = constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else np.zeros_like(scale, np.uint8)
    return (scale, zp) if zp is not None else None


def _clamp_input(graph: ir.Graph, quant: ir.Node, lo: float, hi: float) -> None:
    """``quant`` reads its input through ``Clip(lo, hi)``: the range its old encoding clamped to."""
    x = quant.inputs[0]
    base = quant.name or x.name
    clip = ir.node("Clip", [x, add_initializer(graph, f"{base}__clip_lo", np.asarray(lo, np.float32)),
                            add_initializer(graph, f"{base}__clip_hi", np.asarray(hi, np.float32))],
                   name=f"{base}__clip")
    clip.outputs[0].name = f"{base}__clipped"
    clip.outputs[0].type, clip.outputs[0].shape = x.type, x.shape
    graph.insert_before(quant, clip)
    quant.replace_input_with(0, clip.outputs[0])


def _dequantized(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """``(q - zp) * scale`` in float64, per channel along ``axis`` where the scale has one
    per channel: what a DequantizeLinear of a constant computes."""
    shape = [1] * q.ndim
    if scale.size > 1 and q.ndim:
        shape[axis % q.ndim] = -1
    return (q.astype(np.float64) - zp.reshape(shape).astype(np.float64)) * scale.reshape(shape).astype(np.float64)


def _quantized(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """What a QuantizeLinear of a constant computes: ``saturate(round(x / scale) + zp)`` in
    ``zp``'s type, rounding half to even, per channel along ``axis`` where the scale has one
    per channel."""
    shape = [1] * x.ndim
    if scale.size > 1 and x.ndim:
        shape[axis % x.ndim] = -1
    info = np.iinfo(zp.dtype)
    q = np.rint(x.astype(np.float32) / scale.reshape(shape).astype(np.float32)) + zp.reshape(shape).astype(np.float64)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def _fold_quantized_constants(graph: ir.Graph) -> int:
    """Each QuantizeLinear of a constant as the integer constant it computes, so that the
    DequantizeLinear reading it is a constant one, which the rules for constants handle:
    ``quantize_static`` leaves a pair around a constant the folder did not fold (PP-OCR's
    classifier: 35 of them; TensorRT refused their zero points)."""
    folded = 0
    for node in list(graph):
        if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        x, params = constant(node.inputs[0]), _params(node)
        if x is None or x.dtype.kind != "f" or params is None or not np.issubdtype(params[1].dtype, np.integer):
            continue
        q = _quantized(x, params[0], params[1], _axis(node))
        value = add_initializer(graph, f"{node.outputs[0].name}__q", q)
        for use in list(node.outputs[0].uses()):
            use.node.replace_input_with(use.idx, value)
        if node.outputs[0].is_graph_output():
            continue  # (an int8 graph output: left as written)
        graph.remove(node, safe=True)
        folded += 1
    return folded


def _axis(dq: ir.Node) -> int:
    return int(dq.attributes["axis"].value) if "axis" in dq.attributes else 1


def _weights(value: ir.Value | None) -> np.ndarray | None:
    """A compute layer's constant weights as floats: an initializer, or one dequantized."""
    if value is None:
        return None
    w = constant(value)
    if w is not None:
        return w.astype(np.float64)
    dq = value.producer()
    if dq is None or dq.op_type != "DequantizeLinear" or constant(dq.inputs[0]) is None:
        return None
    params = _params(dq)
    return None if params is None else _dequantized(constant(dq.inputs[0]), *params, _axis(dq))


def _taken_back(reader: ir.Node, index: int) -> np.ndarray | None:
    """What ``reader`` adds to its output per unit of a shift of its input ``index`` (the
    bias correction for a shift of 1), or None where no constant can: the input is not
    the layer's data input, its weights are not constant, or zero padding would not
    shift with it."""
    if index != 0 or len(reader.outputs) != 1 or reader.op_type not in ("MatMul", "Gemm", "Conv"):
        return None
    w = _weights(reader.inputs[1])
    if (w is None or (reader.op_type == "MatMul" and w.ndim != 2)
            or (reader.op_type == "Gemm" and attributes(reader).get("transA", 0))
            or (reader.op_type == "Conv" and padded(reader))):
        return None
    per_output = weight_matrix(reader, w).sum(axis=0)  # a Conv's: each output channel's own weights
    return per_output.reshape(-1, *([1] * (w.ndim - 2))) if reader.op_type == "Conv" else per_output


def _add_after(graph: ir.Graph, value: ir.Value, amount: np.ndarray, name: str,
               only: set[int] | None = None) -> None:
    """``value``'s readers (graph outputs too, under its name) read ``value + amount``
    instead; ``only``: just the readers of these ``id``s."""
    add = ir.node("Add", [value, add_initializer(graph, f"{name}__shift", np.asarray(amount, np.float32))],
                  name=f"{name}__unshift")
    add.outputs[0].type, add.outputs[0].shape = value.type, value.shape
    graph.insert_after(value.producer(), add)
    uses = [(u.node, u.idx) for u in value.uses() if u.node is not add and (only is None or id(u.node) in only)]
    for node, idx in uses:
        node.replace_input_with(idx, add.outputs[0])
    outputs = [i for i, out in enumerate(graph.outputs) if out is value]
    for i in outputs:
        graph.outputs[i] = add.outputs[0]
    if outputs:  # a graph output keeps its name
        name, value.name = value.name, f"{value.name}__shifted"
        add.outputs[0].name = name
    else:
        add.outputs[0].name = f"{value.name}__unshifted"


def _asymmetric(zp: np.ndarray) -> bool:
    """Whether a zero point is off the middle of its type (u8: 128, s8: 0)."""
    return bool(np.any(zp.astype(np.int64) - (128 if zp.dtype == np.uint8 else 0)))


def _pads_before(graph: ir.Graph, quant: ir.Node, readers: list[ir.Node]) -> int:
    """Each padded Conv reading ``quant``'s encoding (explicit ``pads``) reads instead a copy
    of the encoding taken after a ``Pad`` of zeros, its own ``pads`` zeroed: the same values
    (a pad of 0 encodes to the zero point and decodes to 0), and the Conv no longer pads
    what :func:`_shift` moves, so it can take the shift back in its bias. One copy per
    distinct padding; the original encoding stays for its other readers. Returns how many
    Convs changed."""
    groups: dict[tuple, list[tuple[ir.Node, ir.Node]]] = {}
    for dq in readers:
        for use in list(dq.outputs[0].uses()):
            node, attrs = use.node, attributes(use.node)
            if (node.op_type == "Conv" and use.idx == 0 and padded(node)
                    and attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET")):
                groups.setdefault(tuple(attrs["pads"]), []).append((dq, node))
    x = quant.inputs[0]
    base = quant.name or quant.outputs[0].name
    for k, (pads, convs) in enumerate(groups.items()):
        tag = f"{base}__padded{k}"
        pad = explicit_pad(graph, x, pads, tag)
        copy = ir.node("QuantizeLinear", [pad.outputs[0], *quant.inputs[1:]], dict(quant.attributes), name=tag)
        copy.outputs[0].name, copy.outputs[0].type = tag, quant.outputs[0].type
        graph.insert_before(quant, [pad, copy])
        decoded: dict[int, ir.Value] = {}  # per DequantizeLinear copied
        for dq, conv in convs:
            if id(dq) not in decoded:
                twin = ir.node("DequantizeLinear", [copy.outputs[0], *dq.inputs[1:]], dict(dq.attributes),
                               name=f"{tag}_dq{len(decoded)}")
                twin.outputs[0].name, twin.outputs[0].type = f"{tag}_dq{len(decoded)}", dq.outputs[0].type
                graph.insert_after(dq, twin)
                decoded[id(dq)] = twin.outputs[0]
            conv.replace_input_with(0, decoded[id(dq)])
            conv.attributes["pads"] = ir.AttrInt64s("pads", [0] * len(pads))
    for dq in readers:
        if not dq.outputs[0].uses() and not any(out is dq.outputs[0] for out in graph.outputs):
            graph.remove(dq, safe=True)
    return sum(len(convs) for convs in groups.values())


def _shift(graph: ir.Graph, quant: ir.Node, readers: list[ir.Node], scale: np.ndarray, zp: np.ndarray) -> bool:
    """Re-encode ``quant`` (per tensor, asymmetric) as symmetric s8 of the same step on its
    input moved by whole steps (see the module docstring); False, changing nothing, where
    a reader cannot take the shift back. Smart Turn (76 asymmetric encodings) on
    TensorRT: 58 shifted, 18 widened (16 read by attention's MatMuls of two activations,
    2 by padded Convs); its output moved from ONNX's QDQ arithmetic by 0.93 of its scale
    with every encoding widened, 0.27 now (ONNX Runtime's own int8 kernels: 0.32)."""
    if scale.size != 1 or any(out is dq.outputs[0] for dq in readers for out in graph.outputs):
        return False
    info = np.iinfo(zp.dtype)
    steps = int(info.min) - int(zp.reshape(-1)[0]) + 127  # the old range [min - zp, max - zp] -> [-127, 128]
    if steps == 0:
        return False
    plan = []
    for dq in readers:
        for use in list(dq.outputs[0].uses()):
            back = _taken_back(use.node, use.idx)
            if back is None and use.node.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger",
                                                     "ConvInteger", "QLinearMatMul", "QLinearConv"):
                return False  # a compute layer TensorRT would run int8: an Add between would stop it
            plan.append((dq, use.node, back))
    step = float(scale.reshape(-1)[0])
    lo, hi = (info.min - int(zp.reshape(-1)[0])) * step, (info.max - int(zp.reshape(-1)[0])) * step
    _clamp_input(graph, quant, lo, hi)  # what the old encoding clamped to, now before the move
    base = quant.name or quant.outputs[0].name
    x = quant.inputs[0]
    sub = ir.node("Sub", [x, add_initializer(graph, f"{base}__shift", np.asarray(steps * step, np.float32))],
                  name=f"{base}__shift")
    sub.outputs[0].name = f"{base}__shifted"
    sub.outputs[0].type, sub.outputs[0].shape = x.type, x.shape
    graph.insert_before(quant, sub)
    quant.replace_input_with(0, sub.outputs[0])
    done: set[int] = set()
    floats: dict[int, set[int]] = {}  # per DequantizeLinear, the readers that get it back through an Add
    for dq, reader, back in plan:
        if back is None:
            floats.setdefault(id(dq), set()).add(id(reader))
        elif id(reader) not in done:  # a layer reading the same tensor twice takes it back once per input
            done.add(id(reader))
            _add_after(graph, reader.outputs[0], steps * step * back, reader.name or reader.outputs[0].name)
    for dq in readers:
        if id(dq) in floats:
            _add_after(graph, dq.outputs[0], steps * step, dq.name or base, only=floats[id(dq)])
    return True


@dataclass
class ConformQDQPass(ir.passes.InPlacePass):
    """Re-encode the model's own QDQ as ``policy`` needs it (see the module docstring)."""

    policy: QDQPolicy
    changes: Counter = field(default_factory=Counter)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        signed = self.policy.activation_dtype == "int8"
        if folded := _fold_quantized_constants(graph):
            self.changes["quantized constants computed (exact)"] += folded
        if self.policy.activation_symmetric:
            self._unpad(model)
        for quant in activation_quantizers(model):
            params = _params(quant)
            if params is None:
                continue
            scale, zp = params
            readers = [use.node for use in quant.outputs[0].uses() if use.node.op_type == "DequantizeLinear"]
            if len(readers) != len(quant.outputs[0].uses()):
                continue  # an integer tensor read by something else: leave it as the model wrote it
            new = None
            asymmetric = _asymmetric(zp)
            if self.policy.activation_symmetric and asymmetric and _shift(graph, quant, readers, scale, zp):
                new = (scale.astype(np.float32), np.zeros(zp.shape, np.int8))
                self.changes["activation encodings made symmetric on their input moved by whole steps, taken back "
                             "after (exact but the top step)"] += 1
            elif self.policy.activation_symmetric and asymmetric:
                info = np.iinfo(zp.dtype)
                lo = (info.min - zp.astype(np.int64)) * scale.astype(np.float64)
                hi = (info.max - zp.astype(np.int64)) * scale.astype(np.float64)
                new = ((np.maximum(np.abs(lo), np.abs(hi)) / 127).astype(np.float32), np.zeros(zp.shape, np.int8))
                self.changes["activation encodings made symmetric (a coarser step)"] += 1
                if zp.size == 1:  # the wider range must not let through what the old one clamped: a ReLU
                    # folded into the conv before it lives on only as a zero point at the bottom of
                    # the range (an ORT-quantized ArcFace ResNet50 on TensorRT: cosine 0.02 without)
                    _clamp_input(graph, quant, float(lo.reshape(-1)[0]), float(hi.reshape(-1)[0]))
                    self.changes["activation clamps kept as a Clip before them (exact)"] += 1
            elif signed and zp.dtype == np.uint8:
                new = (scale, (zp.astype(np.int16) - 128).astype(np.int8))
                self.changes["activation encodings moved from u8 to s8 (exact)"] += 1
            elif self.policy.activation_symmetric and zp.dtype == np.uint8:  # zp 128: symmetric already
                new = (scale, np.zeros(zp.shape, np.int8))
                self.changes["activation encodings moved from u8 to s8 (exact)"] += 1
            if new is None:
                continue
            base = quant.name or quant.outputs[0].name
            sv = add_initializer(graph, f"{base}__scale_{self.policy.name}", np.asarray(new[0], np.float32))
            zv = add_initializer(graph, f"{base}__zp_{self.policy.name}", np.asarray(new[1]))
            for node in (quant, *readers):
                if len(node.inputs) < 3:
                    node.resize_inputs(3)
                node.replace_input_with(1, sv)
                node.replace_input_with(2, zv)
            quant.outputs[0].type = ir.TensorType(ir.DataType.INT8)
        for node in list(graph):
            if node.op_type != "DequantizeLinear" or constant(node.inputs[0]) is None:
                continue
            q = constant(node.inputs[0])
            params = _params(node)
            if params is None:
                continue
            scale, zp = params
            if q.dtype == np.int32 and not self.policy.int32_bias:
                self._fold(graph, node, q, scale, zp, _axis(node))
                self.changes["int32 biases folded to float (exact)"] += 1
            elif self.policy.activation_symmetric and _asymmetric(zp) and self._weight_to_encode(node):
                self._split_other_readers(graph, node)
                self._symmetric_weights(graph, node, q, scale, zp)
            elif self.policy.activation_symmetric and _asymmetric(zp) and not self._weight_uses(node):
                # a constant other than a layer's weight (a detector's anchors and strides, read
                # by an Add): TensorRT's parser takes zero points of 0 only, and it gains nothing
                # int8 here (a YOLOv8n through quantize_static was refused on its 4)
                self._fold(graph, node, q, scale, zp, _axis(node))
                self.changes["asymmetric constants other than weights folded to float (exact)"] += 1
            elif q.dtype == np.uint8 and signed:
                shifted = (q.astype(np.int16) - 128).astype(np.int8)
                node.replace_input_with(0, add_initializer(graph, f"{node.name}__s8", shifted))
                node.replace_input_with(2, add_initializer(graph, f"{node.name}__zp_s8",
                                                           (zp.astype(np.int16) - 128).astype(np.int8)))
                self.changes["u8 constants moved to s8 (exact)"] += 1
        if self.changes:
            RemoveUnusedInitializersPass()(model)  # the encodings and constants replaced above
        return ir.passes.PassResult(model, bool(self.changes))

    def _unpad(self, model: ir.Model) -> None:
        """Padded Convs reading an asymmetric encoding read a padded copy of it instead
        (:func:`_pads_before`), so that the shift that follows reaches them too."""
        graph = model.graph
        for quant in activation_quantizers(model):
            params = _params(quant)
            readers = [use.node for use in quant.outputs[0].uses() if use.node.op_type == "DequantizeLinear"]
            if (params is None or params[0].size != 1 or not _asymmetric(params[1])
                    or len(readers) != len(quant.outputs[0].uses())):
                continue
            if moved := _pads_before(graph, quant, readers):
                self.changes["padded Convs given their zero pads before their input's encoding (exact)"] += moved
            if not quant.outputs[0].uses() and not quant.outputs[0].is_graph_output():
                graph.remove(quant, safe=True)  # every reader now reads a padded copy

    def _weight_uses(self, dq: ir.Node) -> list:
        """The uses of ``dq``'s output as a compute layer's weight."""
        return [u for u in dq.outputs[0].uses() if u.node.op_type in self.policy.compute_ops and u.idx == 1]

    def _weight_to_encode(self, dq: ir.Node) -> bool:
        """Whether ``dq``'s constant is a compute layer's weight that can take another
        encoding: all its readers read it as one, or the others can be given its float
        values (:meth:`_split_other_readers`; not where it is also a graph output)."""
        weights = self._weight_uses(dq)
        return bool(weights) and (len(weights) == len(list(dq.outputs[0].uses()))
                                  or not dq.outputs[0].is_graph_output())

    def _split_other_readers(self, graph: ir.Graph, dq: ir.Node) -> None:
        """Give the other readers of a constant that is also a weight its float values
        (exact), so that the weight can change encoding without changing what they read."""
        weights, uses = self._weight_uses(dq), list(dq.outputs[0].uses())
        if len(weights) < len(uses):
            q, (scale, zp) = constant(dq.inputs[0]), _params(dq)
            folded = add_initializer(graph, f"{dq.outputs[0].name}__float",
                                     _dequantized(q, scale, zp, _axis(dq)).astype(np.float32))
            for use in uses:
                if use not in weights:
                    use.node.replace_input_with(use.idx, folded)
            self.changes["a weight's other readers given its float values (exact)"] += 1

    def _symmetric_weights(self, graph: ir.Graph, dq: ir.Node, q: np.ndarray, scale: np.ndarray,
                           zp: np.ndarray) -> None:
        """Asymmetric int8 weights (``quantize_static`` took a Paddle export's Constant-node
        weights for activations: u8 with a zero point per tensor) as TensorRT's parser takes
        them, symmetric: the same step where every value less its zero point fits in
        [-127, 127] (exact), else each output channel at its own largest value (a rounding)."""
        from deploycomp.quant.qdq import quantize_weight

        axis = _axis(dq)
        steps = q.astype(np.int64) - (zp.astype(np.int64) if zp.size == 1 else
                                      zp.reshape([-1 if i == axis % q.ndim else 1 for i in range(q.ndim)]))
        if np.abs(steps).max() <= 127:
            new_q, new_scale, new_axis = steps.astype(np.int8), scale.astype(np.float32), axis
            self.changes["asymmetric weights made symmetric with the same step (exact)"] += 1
        else:
            reader = self._weight_uses(dq)[0].node
            new_axis = weight_axis(reader.op_type, attributes(reader), q.ndim)
            new_q, per_channel = quantize_weight(_dequantized(q, scale, zp, axis), new_axis)
            new_scale = per_channel.reshape(-1)
            self.changes["asymmetric weights made symmetric per channel (a rounding)"] += 1
        base = dq.name or dq.outputs[0].name
        dq.replace_input_with(0, add_initializer(graph, f"{base}__sym_q", new_q))
        dq.replace_input_with(1, add_initializer(graph, f"{base}__sym_scale", np.asarray(new_scale, np.float32)))
        if len(dq.inputs) < 3:
            dq.resize_inputs(3)
        dq.replace_input_with(2, add_initializer(graph, f"{base}__sym_zp", np.zeros(np.shape(new_scale), np.int8)))
        if np.size(new_scale) > 1:
            dq.attributes["axis"] = ir.AttrInt64("axis", new_axis)
        elif "axis" in dq.attributes:
            del dq.attributes["axis"]

    @staticmethod
    def _fold(graph: ir.Graph, node: ir.Node, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> None:
        """The DequantizeLinear's output as a float constant its readers read instead."""
        value = _dequantized(q, scale, zp, axis)
        folded = add_initializer(graph, f"{node.outputs[0].name}__float", value.astype(np.float32))
        for use in list(node.outputs[0].uses()):
            use.node.replace_input_with(use.idx, folded)
        for i, out in enumerate(graph.outputs):
            if out is node.outputs[0]:
                graph.outputs[i] = folded
        graph.remove(node, safe=True)
