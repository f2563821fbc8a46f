"""Insert QuantizeLinear/DequantizeLinear into an onnx-ir model, as a policy says.

Encodings (ONNX QuantizeLinear: ``q = saturate(round(x / s) + zp)``):

* asymmetric u8/s8 activation in ``[lo, hi]`` (widened to contain 0, so that zero
  padding is exact): ``s = (hi - lo) / (qmax - qmin)``, ``zp = qmin - round(lo / s)``;
* symmetric s8: ``s = max(|lo|, |hi|) / 127``, ``zp = 0``;
* weights: s8 symmetric per output channel, stored already quantized as an int8
  initializer read by one DequantizeLinear (``axis`` = the output-channel axis);
* biases (policies with ``int32_bias``): int32 with ``scale = s_input * s_weight`` per
  output channel and zero point 0, the TFLite spec's encoding.

Nodes named in ``keep_float`` (sensitive layers) are left entirely in float, except
those also in ``weights_only``: their weights are quantized and their activations are
not, the form a runtime's dynamic-range (hybrid) kernels read
(:mod:`deploycomp.quant.dynamic`).
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from deploycomp.analysis import compared
from deploycomp.ir import float_only
from deploycomp.passes.unused_initializers import RemoveUnusedInitializersPass
from deploycomp.quant.constants import (add_initializer, add_to_bias, attributes, bias_slot, constant, explicit_pad,
                                        weight_matrix)
from deploycomp.quant.dynamic import DYNAMIC, MARK
from deploycomp.quant.policy import QDQPolicy, weight_axis

__all__ = ["SHIFT_GAIN", "QDQPass", "activation_params", "effective_ranges", "fake_quantize", "is_depthwise", "per_channel_tensors",
           "quantizable_tensors", "quantize_weight", "reader_encoding", "searchable_nodes", "shift_one_sided",
           "tensor_encoding", "within_requant_bound"]


def activation_params(lo, hi, dtype: str, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of the range ``[lo, hi]``; arrays of each when the range is
    per channel (``lo`` and ``hi`` arrays: see :func:`per_channel_tensors`)."""
    per_channel = bool(np.ndim(lo) or np.ndim(hi))
    lo, hi = np.broadcast_arrays(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    lo, hi = np.minimum(lo.ravel(), 0.0), np.maximum(hi.ravel(), 0.0)
    if symmetric:
        scale, zp = np.maximum(np.maximum(-lo, hi), 1e-8) / 127, np.zeros(lo.shape, np.int8)
    else:  # whole arrays: a range per channel costs no Python loop (thousands on a transformer)
        qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
        scale = np.maximum(hi - lo, 1e-8) / (qmax - qmin)
        zp = np.clip(qmin - np.rint(lo / scale), qmin, qmax).astype(np.uint8 if dtype == "uint8" else np.int8)
    if per_channel:
        return scale.astype(np.float32), zp
    return np.float32(scale[0]), zp.reshape(())


def fake_quantize(x: np.ndarray, scale, zp: np.ndarray) -> np.ndarray:
    """``DequantizeLinear(QuantizeLinear(x))`` in numpy: what a quantized consumer reads
    (a per-channel encoding runs along axis 1, as the QDQ pass writes it)."""
    info = np.iinfo(zp.dtype)
    if np.ndim(scale) == 1:
        shape = (1, -1) + (1,) * max(x.ndim - 2, 0)
        scale, zp = np.reshape(scale, shape), np.reshape(zp, shape)
    # float32 bounds: integer ones make np.clip compute in float64 (5x slower on a feature
    # map; bias correction's statistics pass fake-quantizes every layer input per range set)
    low = (info.min - zp.astype(np.int64)).astype(np.float32)
    high = (info.max - zp.astype(np.int64)).astype(np.float32)
    q = np.divide(x, scale, dtype=np.float32)  # one float32 buffer, updated in place
    np.rint(q, out=q)
    np.clip(q, low, high, out=q)  # saturate(q + zp) - zp
    q *= scale
    return q


def weight_scales(arr: np.ndarray, axis: int, qmax: int = 127) -> np.ndarray:
    """Each channel's (along ``axis``) symmetric int8 weight scale, float32, shaped to
    broadcast against ``arr``."""
    reduce = tuple(i for i in range(arr.ndim) if i != axis)
    return (np.maximum(np.abs(arr).max(axis=reduce, keepdims=True), 1e-12) / qmax).astype(np.float32)


def quantize_weight(arr: np.ndarray, axis: int, qmax: int = 127,
                    floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """s8 symmetric per-channel along ``axis`` in [-qmax, qmax]: (int8 values, float32
    scales shaped to broadcast); ``floor``: each channel's least scale (see
    :meth:`QDQPass._bias_floor`)."""
    arr = arr.astype(np.float32)
    scale = weight_scales(arr, axis, qmax)
    if floor is not None:
        scale = np.maximum(scale, np.reshape(floor, scale.shape)).astype(np.float32)
    return np.clip(np.round(arr / scale), -qmax, qmax).astype(np.int8), scale


def _is_const(v: ir.Value | None) -> bool:
    return constant(v) is not None


FUSABLE_ACTIVATIONS = ("Relu", "Clip")


def _quantized_output(node: ir.Node, graph_outputs: set[str]) -> ir.Value | None:
    """The tensor whose range is a quantized op's output range: its output, or the output
    of a Relu/Clip reading only it (runtimes fuse that activation into the op)."""
    value = node.outputs[0]
    if value.name in graph_outputs or value.dtype != ir.DataType.FLOAT:
        return None
    uses = list(value.uses())
    if len(uses) == 1 and uses[0][0].op_type in FUSABLE_ACTIVATIONS:
        follower = uses[0][0].outputs[0]
        return None if follower.name in graph_outputs else follower
    return value


def quantizable_tensors(model: ir.Model, policy: QDQPolicy, keep_float: set[str] = frozenset()) -> dict[str, list]:
    """Activation tensor name -> [(consumer node, input index)] the policy quantizes."""
    out: dict[str, list] = {}
    graph_outputs = {v.name for v in model.graph.outputs}
    decided = compared(model.graph)  # a decision on exact values (a tree's split) follows: computed float
    for node in model.graph:
        if node.name in keep_float or node.domain not in ("", "ai.onnx") or float_only(node):
            continue
        elementwise = node.op_type in policy.elementwise_ops and (
            all(not _is_const(v) for v in node.inputs)
            or (policy.elementwise_with_constants and any(not _is_const(v) for v in node.inputs)))
        if elementwise and not policy.quantize_graph_outputs and _scalars(node):
            elementwise = False  # see _scalars
        if elementwise and id(node) in decided:
            elementwise = False
        quantized = node.op_type in policy.compute_ops or elementwise
        if policy.quantize_outputs and quantized:
            produced = _quantized_output(node, graph_outputs)
            if produced is not None:
                for consumer, index in produced.uses():
                    if id(consumer) in decided:
                        continue
                    if consumer.graph is model.graph and (consumer, index) not in out.get(produced.name, []):
                        out.setdefault(produced.name, []).append((consumer, index))
        if node.op_type in policy.compute_ops:
            slots = [0] + ([1] if node.op_type == "MatMul" and not _is_const(node.inputs[1]) else [])
        elif elementwise:
            slots = [i for i, v in enumerate(node.inputs) if not _is_const(v)]
        else:
            continue
        for i in slots:
            v = node.inputs[i]
            if v is None or _is_const(v) or v.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
                continue
            if (node, i) not in out.get(v.name, []):
                out.setdefault(v.name, []).append((node, i))
    return out


def _scalars(node: ir.Node) -> bool:
    """Whether every activation an element-wise node reads holds one value: scale arithmetic
    (the float form of ONNX Runtime's dynamic quantization multiplies each input's scale by
    a weight's), which int8 saves nothing on and clips where an input's range is wider than
    any calibration input's (a T5 encoder's TFLite build kept ten such int8 Muls with every
    searchable layer float: 0.969 on its validation sentences, its float form 0.999). Left
    float, except in a full-integer model, whose every op must be int8."""
    values = [v for v in node.inputs if v is not None and not _is_const(v)]
    return bool(values) and all(v.shape is not None and v.shape.is_static() and math.prod(v.shape.numpy()) == 1
                                for v in values)


def is_depthwise(node: ir.Node) -> bool:
    """A Conv whose every group reads one input channel (weight ``(C * m, 1, k...)``)."""
    if node.op_type != "Conv" or len(node.inputs) < 2 or node.inputs[1] is None:
        return False
    group = attributes(node).get("group", 1)
    weight = node.inputs[1]
    shape = weight.const_value.shape if weight.const_value is not None else weight.shape
    return group > 1 and shape is not None and len(shape) > 1 and shape[1] == 1


PER_TENSOR_PRODUCERS = frozenset({"Concat"})
"""Producers whose output keeps one scale even where only depthwise convolutions read it:
OpenVINO moves a quantizer after a ``Concat`` onto the ``Concat``'s inputs, and 2026.4's
``MoveFakeQuantize`` left a per-channel one's 16 channel constants against an input of 8
(compiling failed: "Argument shapes are inconsistent"; a fingerprint model's int8 build
stopped with an internal error)."""


def per_channel_tensors(model: ir.Model, policy: QDQPolicy) -> set[str]:
    """The quantized tensors the policy encodes per channel (along axis 1): those only
    depthwise convolutions read, where the policy says its runtime can
    (:attr:`~deploycomp.quant.policy.QDQPolicy.per_channel_depthwise_inputs`), unless a
    :data:`PER_TENSOR_PRODUCERS` op makes them."""
    if not policy.per_channel_depthwise_inputs:
        return set()
    return {name for name, consumers in quantizable_tensors(model, policy).items()
            if all(index == 0 and is_depthwise(node) for node, index in consumers)
            and all(len(list(node.inputs[0].uses())) == len(consumers) for node, _ in consumers)
            and not ((producer := consumers[0][0].inputs[0].producer()) is not None
                     and producer.op_type in PER_TENSOR_PRODUCERS)}


def searchable_nodes(model: ir.Model, policy: QDQPolicy) -> list[ir.Node]:
    """Nodes the float-layer search may keep float: the compute layers, and the element-wise
    nodes the policy quantizes (TFLite's Add/Mul, TensorRT's residual Add). Leaving only
    compute layers to choose from, a model whose error sits on an Add (an audio front-end's
    power spectrum to 4e10) missed its budget with every compute layer float."""
    readers = {id(node) for consumers in quantizable_tensors(model, policy).values() for node, _ in consumers}
    return [n for n in model.graph if n.name and not float_only(n) and (n.op_type in policy.compute_ops or id(n) in readers)]


def effective_ranges(policy: QDQPolicy, ranges: dict[str, tuple[float, float]],
                     uses: dict[str, list]) -> dict[str, tuple[float, float]]:
    """The range each quantized tensor is encoded with: its own, except that outputs of the
    policy's scale-preserving ops take the range of the tensor they read, and a tensor the
    calibration never opened (zero on every sample: a ReLU that never fires) takes the
    range of the nearest tensor upstream that has one (:func:`_opened`)."""
    out = dict(ranges)
    for name, consumers in uses.items():
        if name in out and not _opened(out[name]):
            out[name] = _upstream_range(consumers[0][0].inputs[consumers[0][1]], ranges) or out[name]
    if not policy.shared_scale_ops:
        return out
    for name, consumers in uses.items():
        value = consumers[0][0].inputs[consumers[0][1]]
        root = value
        while root.producer() is not None and root.producer().op_type in policy.shared_scale_ops:
            root = root.producer().inputs[0]
        if root is not value and root.name in ranges:
            out[name] = ranges[root.name]
    return out


def within_requant_bound(model: ir.Model, policy: QDQPolicy, ranges: dict, uses: dict[str, list],
                         keep_float: set[str] = frozenset()) -> dict:
    """``ranges`` with the output range of each int8 compute layer widened where its step
    would be finer than the accumulator's step over :attr:`QDQPolicy.requant_bound`
    (input scale x largest weight scale): XNNPACK refuses such a conv (a 1x1 depthwise
    conv of a BatchNorm's factors, 30 on channels a ReLU never opens, reading a tensor
    of range 2e4, needed 300 output steps per accumulator step). The wider step is
    what the kernel can give; any finer one could not run."""
    if not policy.requant_bound or not policy.quantize_outputs:
        return ranges
    inputs = effective_ranges(policy, ranges, uses)
    graph_outputs = {v.name for v in model.graph.outputs}
    out = dict(ranges)
    for node in model.graph:
        if node.op_type not in policy.compute_ops or node.name in keep_float or len(node.inputs) < 2:
            continue
        source, weights = node.inputs[0], constant(node.inputs[1])
        produced = _quantized_output(node, graph_outputs)
        if (source is None or weights is None or produced is None or source.name not in inputs
                or (node, 0) not in uses.get(source.name, []) or produced.name not in out
                or np.ndim(inputs[source.name][0]) or np.ndim(out[produced.name][0])):
            continue
        axis = weight_axis(node.op_type, attributes(node), weights.ndim)
        weight_step = float(weight_scales(weights, axis, policy.weight_qmax).max())
        args = (policy.activation_dtype, policy.activation_symmetric)
        need = float(activation_params(*inputs[source.name], *args)[0]) * weight_step / policy.requant_bound
        have = float(activation_params(*out[produced.name], *args)[0])
        if have < need:
            k = need / have * (1 + 1e-6)
            lo, hi = out[produced.name]
            out[produced.name] = (float(lo) * k, float(hi) * k)
    return out


def _upstream_range(value: ir.Value, ranges: dict) -> tuple | None:
    """The range of the nearest tensor up ``value``'s chain of first inputs that the
    calibration opened (:func:`_opened`); None if none."""
    while not _opened(ranges.get(value.name)):
        producer = value.producer()
        if producer is None or not producer.inputs or producer.inputs[0] is None:
            return None
        value = producer.inputs[0]
    return ranges[value.name]


def _opened(rng) -> bool:
    """Whether ``rng`` spans more than :func:`activation_params`' floor. A tensor that is
    zero throughout has no scale of its own: any encoding holds its zero, but a floor
    scale (4e-11) is one no runtime's kernel can requantize into or out of (XNNPACK
    refuses a conv whose accumulator step is 2.7e7 output steps, and an ADD whose operand
    scales are 1e9 apart). The range of the tensor it was computed from keeps those ratios
    near one."""
    if rng is None:
        return False
    return float(np.max(np.maximum(rng[1], 0.0) - np.minimum(rng[0], 0.0))) > 1e-8


def tensor_encoding(policy: QDQPolicy, value: ir.Value, rng: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of a quantized activation: from its range, unless the runtime's
    kernel fixes the encoding of its producer's output (TFLite's int8 LOGISTIC)."""
    scale, zp = activation_params(*rng, policy.activation_dtype, policy.activation_symmetric)
    producer = value.producer()
    for op, fixed_scale, fixed_zp in policy.fixed_output_params:
        if producer is not None and producer.op_type == op:
            return np.float32(fixed_scale), np.array(fixed_zp, zp.dtype)
    return scale, zp


SHIFT_GAIN = 1.5
"""A one-sided tensor is shifted (:func:`shift_one_sided`) when the symmetric step is at
least this many times the asymmetric one: 2 for a ReLU's output, 1.9 after HardSwish."""


SHIFTABLE_OPS = ("Conv", "Gemm", "MatMul")


def _shiftable(node: ir.Node, index: int) -> bool:
    """A layer reading the tensor as its data, with constant float weights and a constant
    bias to fold a shift of that input into (:func:`~deploycomp.quant.constants.bias_slot`:
    a MatMul's is the Add after it); a Conv with explicit pads (not ``auto_pad``), a Gemm
    without ``transA``."""
    if node.op_type not in SHIFTABLE_OPS or index != 0 or len(node.inputs) < 2 or not _is_const(node.inputs[1]):
        return False
    attrs = attributes(node)
    if constant(node.inputs[1]).dtype != np.float32 or bias_slot(node) is None or attrs.get("transA", 0):
        return False
    return attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET")


def _one_sided(rng: tuple) -> bool:
    """Whether a symmetric encoding of ``rng`` has :data:`SHIFT_GAIN` times the step an
    asymmetric one would (a range per channel is left alone)."""
    if np.ndim(rng[0]) or np.ndim(rng[1]):
        return False
    lo, hi = min(float(rng[0]), 0.0), max(float(rng[1]), 0.0)
    return hi > lo and max(-lo, hi) / 127 >= SHIFT_GAIN * (hi - lo) / 255


def _shifted(rng: tuple) -> tuple[float, tuple[float, float]]:
    """The shift (the middle of ``rng`` widened to hold 0, so a pad of 0 stays in range)
    and the range less it."""
    lo, hi = min(float(rng[0]), 0.0), max(float(rng[1]), 0.0)
    c = (lo + hi) / 2
    return c, (lo - c, hi - c)


def reader_encoding(policy: QDQPolicy, value: ir.Value, rng: tuple, reader: ir.Node,
                    index: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(scale, zero point, shift) of what ``reader`` reads of ``value`` quantized with range
    ``rng``: ``fake_quantize(x - shift, scale, zp) + shift`` is what it computes with
    (the shift is 0 unless :func:`shift_one_sided` applies)."""
    if policy.shift_one_sided and _shiftable(reader, index) and _one_sided(rng):
        c, moved = _shifted(rng)
        return (*tensor_encoding(policy, value, moved), c)
    return (*tensor_encoding(policy, value, rng), 0.0)


def shift_one_sided(graph: ir.Graph, value: ir.Value, rng: tuple, readers: list[ir.Node],
                    weight_qmax: int) -> list[tuple[ir.Value, tuple[float, float], list[ir.Node]]]:
    """``readers`` of ``value`` (:func:`_shiftable`: Conv, Gemm, MatMul + bias) read
    ``value - c`` (``c`` the middle of ``rng``) instead, their bias raised by ``c`` times
    the sum of their int8 weights per output channel, a Conv's zero pads made explicit
    before the shift (a pad of ``x`` is 0, of ``x - c`` it would be ``-c``): exact in float, and ``x - c`` is two-sided, so a
    symmetric int8 encoding's step is the asymmetric one's. Returns (each shifted tensor,
    its range, its readers): one per distinct padding.

    Measured on CenterFace in TensorRT's encoding (the image 0..255 into the first conv,
    ReLU outputs into the others), NMSE of its offset output on the validation photos: the
    first conv quantized alone 0.062 -> 0.0013 (OpenVINO's u8: 0.0003), the depthwise conv
    after it 0.060 -> 0.017 (0.018), every layer int8 0.16 -> 0.10 (0.09). The ``Sub`` and
    ``Pad`` are element-wise work on the device before the quantize (not measured: no GPU
    here); a kept-float conv is left as it was."""
    c, moved_range = _shifted(rng)
    by_pads: dict[tuple, list[ir.Node]] = {}
    for reader in readers:
        by_pads.setdefault(tuple(attributes(reader).get("pads", ()) or ()), []).append(reader)
    shift = add_initializer(graph, f"{value.name}__shift", np.array(c, np.float32))
    out = []
    for k, (pads, group) in enumerate(by_pads.items()):
        source, tag = value, f"{value.name}__shifted{k if k else ''}"
        first = group[0]
        if any(pads):
            pad = explicit_pad(graph, value, pads, tag)
            graph.insert_before(first, pad)
            source = pad.outputs[0]
        moved = ir.node("Sub", [source, shift], name=tag)
        moved.outputs[0].name, moved.outputs[0].type, moved.outputs[0].shape = tag, value.type, source.shape
        graph.insert_before(first, moved)
        for reader in group:
            w = constant(reader.inputs[1])
            q, scale = quantize_weight(w, weight_axis(reader.op_type, attributes(reader), w.ndim), weight_qmax)
            # (inputs, outputs): each output's weights over every input the shift moved
            raised = c * weight_matrix(reader, q.astype(np.float64) * scale).sum(axis=0)
            add_to_bias(graph, reader, raised, f"{reader.name}__shifted_bias")
            if any(pads):
                reader.attributes["pads"] = ir.AttrInt64s("pads", [0] * len(pads))
        out.append((moved.outputs[0], moved_range, group))
    return out


TABLE_BYTES = 1 << 20
"""A Gather's constant table this large or more is stored int8 where the policy says so
(:meth:`QDQPass._quantize_table`); a smaller one (a position embedding, a class table) is
not worth its error."""


def on_a_grid(values: np.ndarray, levels: int = 256) -> bool:
    """Whether ``values`` lie on one evenly spaced grid of at most ``levels`` points: a
    table the model stores quantized itself (ONNX Runtime's dynamic quantization keeps a
    T5 encoder's 32128 x 512 embedding as uint8, one scale, which the passes expand to
    float). Its rows stored int8 again, each at its own scale, would round the model's own
    levels onto another grid: that second rounding took the encoder from cosine 0.9990 to
    0.8510 with every layer float. A sample of the values (at most 65536) finds the step,
    then every value is checked against it, a few million at a time."""
    flat = np.asarray(values).reshape(-1)
    sample = np.unique(flat[:: max(1, flat.size // 65536)].astype(np.float64))
    if sample.size > levels or flat.size == 0:
        return False
    lo, step = float(sample[0]), 1.0
    if sample.size > 1:  # the span over its count of steps: float32 levels differ from the step by ulps
        span = float(sample[-1] - sample[0])
        step = span / np.rint(span / float(np.diff(sample).min()))
    least, most = np.inf, -np.inf  # the grid's points in use, in steps from ``lo``
    for start in range(0, flat.size, 1 << 22):
        chunk = flat[start:start + (1 << 22)].astype(np.float64)
        k = np.rint((chunk - lo) / step)
        least, most = min(least, k.min()), max(most, k.max())
        if most - least >= levels or np.abs(lo + k * step - chunk).max() > 1e-3 * step:
            return False
    return True


@dataclass
class QDQPass(ir.passes.InPlacePass):
    policy: QDQPolicy
    ranges: dict[str, tuple[float, float]]
    keep_float: set[str] = field(default_factory=set)
    weights_only: set[str] = field(default_factory=set)

    def _quantize_weights(self, graph: ir.Graph, node: ir.Node, index: int) -> bool:
        w = node.inputs[1]
        if not _is_const(w) or w.dtype != ir.DataType.FLOAT:
            return False
        arr = w.const_value.numpy()
        axis = weight_axis(node.op_type, attributes(node), arr.ndim)
        floor = self._bias_floor(node, arr.shape[axis])
        base = f"{w.name}__{node.name or f'node{index}'}"
        # a weight several nodes read is encoded once, where each reads it alike (the same
        # axis, no bias floor of its own): per reader, a transformer that shares its layers'
        # weights carried each 7-8 times in its TensorRT bundle
        key = (id(w), axis, None if floor is None else floor.tobytes())
        if key not in self._encoded:
            q, scale = quantize_weight(arr, axis, self.policy.weight_qmax, floor)
            self._encoded[key] = (add_initializer(graph, base + "_q", q),
                                  add_initializer(graph, base + "_scale", scale.reshape(-1)),
                                  add_initializer(graph, base + "_zp", np.zeros(scale.size, np.int8)), scale)
        qv, sv, zv, scale = self._encoded[key]
        dq = ir.node("DequantizeLinear", [qv, sv, zv], attributes={"axis": axis}, name=base + "_dq")
        graph.insert_before(node, dq)
        dq.outputs[0].name = base + "_dq"
        dq.outputs[0].shape, dq.outputs[0].type = w.shape, w.type
        node.replace_input_with(1, dq.outputs[0])
        self._quantize_bias(graph, node, base, scale.reshape(-1))
        return True

    def _quantize_table(self, graph: ir.Graph, table: ir.Value) -> bool:
        """``table`` as int8 rows (a scale each) behind a DequantizeLinear, where it is a
        2-D float constant of :data:`TABLE_BYTES` or more that only ``Gather`` along its
        rows reads (:attr:`~deploycomp.quant.policy.QDQPolicy.int8_tables`), and not one
        the model quantized itself (:func:`on_a_grid`)."""
        if (not _is_const(table) or table.dtype != ir.DataType.FLOAT or table.is_graph_input()
                or table.is_graph_output()):
            return False
        arr = table.const_value.numpy()
        readers = table.uses()
        if (arr.ndim != 2 or arr.nbytes < TABLE_BYTES or not readers
                or any(u.node.op_type != "Gather" or u.idx != 0 or u.node.attributes.get_int("axis", 0) != 0
                       for u in readers) or on_a_grid(arr)):
            return False
        q, scale = quantize_weight(arr, 0, 127)
        base = f"{table.name}__table"
        dq = ir.node("DequantizeLinear", [add_initializer(graph, base + "_q", q),
                                          add_initializer(graph, base + "_scale", scale.reshape(-1)),
                                          add_initializer(graph, base + "_zp", np.zeros(scale.size, np.int8))],
                     attributes={"axis": 0}, name=base + "_dq")
        dq.outputs[0].name = base + "_dq"
        dq.outputs[0].shape, dq.outputs[0].type = table.shape, table.type
        graph.insert_before(min((u.node for u in readers), key=list(graph).index), dq)
        for use in list(readers):
            use.node.replace_input_with(0, dq.outputs[0])
        return True

    def _bias_floor(self, node: ir.Node, channels: int) -> np.ndarray | None:
        """Each output channel's least weight scale for its int32 bias to fit: the bias is
        encoded at the input's step times the weight's, and a pruned channel (weights
        1e-13, a bias of 3) would need 1e14 steps; clipped to int32, the channel lost its
        bias (a pruned MobileNetV3's 194 bias channels sat at 2^31 in TFLite, all-int8
        cosine 0.18 on a three-layer repro). A coarser scale rounds such weights to 0,
        which they nearly are (TFLite's own converter does the same)."""
        if not self.policy.int32_bias or node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3:
            return None
        bias, source = node.inputs[2], node.inputs[0]
        input_scale = self._scales.get(source.name) if source is not None else None
        if not _is_const(bias) or input_scale is None or np.ndim(input_scale):
            return None
        values = np.abs(bias.const_value.numpy().astype(np.float64)).reshape(-1)
        if values.size not in (1, channels):
            return None
        return np.broadcast_to(values / (float(input_scale) * (2**31 - 2)), (channels,)).astype(np.float32)

    def _quantize_bias(self, graph: ir.Graph, node: ir.Node, base: str, weight_scale: np.ndarray) -> None:
        if not self.policy.int32_bias or node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.inputs) < 3:
            return
        bias, source = node.inputs[2], node.inputs[0]
        input_scale = self._scales.get(source.name) if source is not None else None
        if not _is_const(bias) or input_scale is None or np.ndim(input_scale):
            return
        values = bias.const_value.numpy().astype(np.float64)
        weight_scale = np.asarray(weight_scale).ravel()
        if weight_scale.size not in (1, values.size) and values.size % weight_scale.size == 0:
            # a grouped ConvTranspose's weight is (C_in, C_out / g, k...): its per-channel scales
            # along axis 1 repeat for each group's block of output channels
            weight_scale = np.tile(weight_scale, values.size // weight_scale.size)
        channels = weight_scale.shape if weight_scale.size > 1 else (values.size,)
        if values.shape != channels:
            # a Gemm's C may be a scalar or (1, N), broadcast over the rows (a MatMul + Add
            # exported as one Gemm keeps the Add's shape); the int32 encoding, like a TFLite
            # FULLY_CONNECTED's bias, is one value per output channel, which Gemm reads the
            # same way. Any other C (one per row too) stays float.
            if not (values.size == 1 or (values.size == channels[0] and values.shape[-1] == values.size)):
                return
            values = np.broadcast_to(values.reshape(-1), channels)
        scale = (input_scale * weight_scale).astype(np.float32)
        q = np.clip(np.round(values / np.broadcast_to(scale, values.shape)), -(2**31), 2**31 - 1).astype(np.int32)
        qv = add_initializer(graph, base + "_bias_q", q)
        sv = add_initializer(graph, base + "_bias_scale", np.broadcast_to(scale, values.shape).copy())
        zv = add_initializer(graph, base + "_bias_zp", np.zeros(values.shape, np.int32))
        dq = ir.node("DequantizeLinear", [qv, sv, zv], attributes={"axis": 0}, name=base + "_bias_dq")
        graph.insert_before(node, dq)
        dq.outputs[0].name = base + "_bias_dq"
        dq.outputs[0].shape, dq.outputs[0].type = ir.Shape(values.shape), bias.type
        node.replace_input_with(2, dq.outputs[0])

    def _quantize_graph_outputs(self, graph: ir.Graph, ranges) -> bool:
        """Q -> DQ at the end of every float graph output; the DQ output keeps its name. Its
        nodes and values are suffixed ``__out_q``/``__out_dq``: the same tensor may also get
        a QDQ pair for an int8 reader (``__q``/``__dq``). An output that is a graph input is
        left alone (renaming it would rename the input)."""
        modified = False
        for i, value in enumerate(list(graph.outputs)):
            if value.name not in ranges or value.dtype != ir.DataType.FLOAT or value.is_graph_input():
                continue
            name = value.name
            # a kernel's fixed encoding too: a Softmax output's calibrated 0..0.77 capped every
            # probability above it at 0.772 on an --int8-io TFLite bundle, where TFLite's own
            # encoding of [0, 1] (1/256, -128) holds them all
            scale, zp = tensor_encoding(self.policy, value, ranges[name])
            value.name = f"{name}__float"
            sv = add_initializer(graph, f"{name}__out_scale", np.array(scale, np.float32))
            zv = add_initializer(graph, f"{name}__out_zp", zp)
            q = ir.node("QuantizeLinear", [value, sv, zv], name=f"{name}__out_q")
            dq = ir.node("DequantizeLinear", [q.outputs[0], sv, zv], name=f"{name}__out_dq")
            q.outputs[0].name, dq.outputs[0].name = f"{name}__out_q", name
            q.outputs[0].shape, q.outputs[0].type = value.shape, ir.TensorType(ir.DataType.from_numpy(zp.dtype))
            dq.outputs[0].shape, dq.outputs[0].type = value.shape, value.type
            graph.extend([q, dq])
            graph.outputs[i] = dq.outputs[0]
            modified = True
        return modified

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        p = self.policy
        uses = quantizable_tensors(model, p, self.keep_float)
        ranges = effective_ranges(p, within_requant_bound(model, p, self.ranges, uses, self.keep_float), uses)
        self._scales: dict[str, np.float32] = {}  # DequantizeLinear output name -> activation scale
        self._encoded: dict[tuple, tuple[ir.Value, ir.Value, ir.Value, np.ndarray]] = {}  # see _quantize_weights
        position = {node: i for i, node in enumerate(graph)}  # consumers are all original nodes
        modified = False
        encodings = []  # (tensor, range, [(consumer, input index)])
        for name, consumers in uses.items():
            if name not in ranges:
                continue
            value = consumers[0][0].inputs[consumers[0][1]]
            shiftable = [node for node, index in consumers if _shiftable(node, index)] if p.shift_one_sided else []
            if shiftable and _one_sided(ranges[name]):
                for moved, rng, readers in shift_one_sided(graph, value, ranges[name], shiftable, p.weight_qmax):
                    encodings.append((moved, rng, [(r, 0) for r in readers]))
                consumers = [(node, index) for node, index in consumers if node not in shiftable]
            if consumers:
                encodings.append((value, ranges[name], consumers))
        if p.quantize_graph_outputs:
            # full-integer I/O: a float graph input no int8 reader quantized (its readers kept
            # float, or a Transpose first: tf2onnx's NHWC) is still taken int8, dequantized for
            # them. MTCNN's O-Net on Android with --int8-io had kept a float32 input while its
            # manifest said int8 I/O
            quantized = {v.name for v, _, _ in encodings}
            encodings += [(v, ranges[v.name], list(v.uses())) for v in graph.inputs
                          if v.name not in quantized and v.name in ranges and v.dtype == ir.DataType.FLOAT and v.uses()]
        for value, rng, consumers in encodings:
            name = value.name
            scale, zp = tensor_encoding(p, value, rng)
            sv = add_initializer(graph, f"{name}__scale", np.array(scale, np.float32))
            zv = add_initializer(graph, f"{name}__zp", zp)
            axis = {"axis": 1} if np.ndim(scale) else {}  # a scale per channel (per_channel_tensors)
            q = ir.node("QuantizeLinear", [value, sv, zv], attributes=axis, name=f"{name}__q")
            dq = ir.node("DequantizeLinear", [q.outputs[0], sv, zv], attributes=axis, name=f"{name}__dq")
            q.outputs[0].name, dq.outputs[0].name = f"{name}__q", f"{name}__dq"
            dq.outputs[0].shape, dq.outputs[0].type = value.shape, value.type
            q.outputs[0].shape, q.outputs[0].type = value.shape, ir.TensorType(ir.DataType.from_numpy(zp.dtype))
            first = min((c for c, _ in consumers), key=position.__getitem__)
            graph.insert_before(first, [q, dq])
            for consumer, index in consumers:
                consumer.replace_input_with(index, dq.outputs[0])
            self._scales[dq.outputs[0].name] = scale
            modified = True
        if p.quantize_graph_outputs:
            modified |= self._quantize_graph_outputs(graph, ranges)
        for index, node in enumerate(list(graph)):
            dynamic = node.name in self.weights_only
            if (node.op_type in p.compute_ops and (node.name not in self.keep_float or dynamic) and len(node.inputs) > 1
                    and not float_only(node)):  # (a tree walk's path table and leaf values, int8: its scores 11% off)
                if self._quantize_weights(graph, node, index):
                    modified = True
                    if dynamic:
                        node.metadata_props[MARK] = DYNAMIC
        if p.int8_tables:
            for table in {id(n.inputs[0]): n.inputs[0] for n in graph if n.op_type == "Gather" and n.inputs}.values():
                modified |= self._quantize_table(graph, table)
        # the float weights and biases now stored as int8/int32 are read by nothing: drop them,
        # or an ONNX artifact (TensorRT's) would carry both copies
        RemoveUnusedInitializersPass()(model)
        return ir.passes.PassResult(model, modified)
