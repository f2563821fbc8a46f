"""Activation equalization: move per-channel range spread out of a tensor into weights.

Activations are quantized per tensor, so one scale serves every channel. When a
tensor's channels span very different ranges (measured in PP-OCRv4 rec: the first
conv's output, read by a depthwise conv, spans 0.35 to 27 across 16 channels), the
small channels get a handful of int8 levels. Cross-layer equalization (Nagel et al.,
"Data-Free Quantization", 2019) fixes it exactly in float, with no training.

For a tensor ``x`` made by a producer whose output channels can be scaled (Conv, MatMul +
constant bias, LayerNormalization's scale and bias, an affine ``x * a (+ b)`` with
constants), optionally through a Relu (``relu(x / s) = relu(x) / s`` for ``s > 0``), and
read only by layers with constant weights (Conv, Gemm, MatMul), channel ``c`` is divided
by ``s_c`` in the producer and multiplied back into every reader's weights. Weights are
quantized per output channel, so where every reader is depthwise (one input channel per
output channel) the readers and the producer take any scale for free, and ``s_c`` makes
every channel's range equal to the largest. That is what :func:`equalize` does. Readers
that mix channels share each output channel's weight scale across their inputs, so a
scale there is a trade, searched per site by :mod:`deploycomp.quant.smoothing` (which
uses the sites found here). The ranges are per-channel absolute maxima over the
calibration samples (one streaming pass of the float model before the statistics that
set the QDQ ranges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.ir import float_only
from deploycomp.quant.calibrate import ChannelExtremes, Consumer, stream_into
from deploycomp.quant.constants import add_initializer, attributes, constant, set_constant_input
from deploycomp.quant.qdq import is_depthwise

__all__ = ["SCALE_LIMIT", "EqualizationSite", "equalization_sites", "equalize", "explicit_sites", "scale_explicitly",
           "scale_producer", "scale_readers"]

SCALE_LIMIT = 1e3
"""Largest factor a channel is scaled by either way; beyond it float32 weights lose digits."""

EXPLICIT_SCALE_LIMIT = 16.0
"""Largest factor an explicit site's channel is scaled up by. The factors come from the
calibration set's channel ranges; a channel quiet there and loud on other inputs is
clipped by the factor's excess. PP-OCRv3 rec on TensorRT, validated on held-out lines:
up to 1000x, all-int8 validated at cosine 0.970 (a tensor went 0.9 range widths past
its calibration range); 64x, 0.975 with 7 float layers; 16x, 0.990 with 2; 4x, 0.980
with 10. Without it: 0.981 with 16 float layers."""


@dataclass
class EqualizationSite:
    """A tensor whose channels can be rescaled: the constants that make its channels (each
    as (node, input index, how it maps to channels)) and the layers that read it."""

    tensor: ir.Value
    producer: ir.Node
    constants: list[tuple[ir.Node, int, str]]
    readers: list[ir.Node]
    explicit: bool = False
    """No constant of the producer can take the scale (it is followed by HardSwish, say):
    an explicit per-channel ``Mul`` before the readers does (:func:`explicit_sites`)."""

    @property
    def channel_axis(self) -> int:
        return 1 if self.readers[0].op_type == "Conv" else -1

    def per_channel(self, values: np.ndarray) -> np.ndarray:
        """One value per channel, shaped to broadcast against the tensor."""
        shape = [1] * len(self.tensor.shape)
        shape[self.channel_axis] = values.size
        return values.reshape(shape)

    @property
    def depthwise_only(self) -> bool:
        return all(is_depthwise(r) for r in self.readers)


def _optional_const(node: ir.Node, index: int) -> bool:
    return index >= len(node.inputs) or node.inputs[index] is None or constant(node.inputs[index]) is not None


def _const_operand(node: ir.Node) -> int | None:
    """Index of the constant operand of a binary Mul/Add whose other operand is computed."""
    consts = [i for i, v in enumerate(node.inputs) if constant(v) is not None]
    return consts[0] if len(node.inputs) == 2 and len(consts) == 1 else None


def _scalable_constants(node: ir.Node) -> tuple[list[tuple[ir.Node, int, str]], ir.Value | None]:
    """The constants to divide by ``s_c`` so that channel c of ``node``'s result shrinks
    by ``s_c``, and that result; ([], None) if there is none.

    Kinds: ``out_axis0`` (a Conv weight's output channels), ``columns`` (a MatMul
    weight's), ``vector`` (one value per channel: biases, LayerNorm scale) and
    ``broadcast`` (a Mul/Add constant, made per-channel)."""
    last = list(node.outputs[0].uses())
    follow_add = (len(last) == 1 and last[0][0].op_type == "Add" and _const_operand(last[0][0]) is not None)
    if node.op_type == "Conv" and constant(node.inputs[1]) is not None and _optional_const(node, 2):
        extra = [(node, 2, "vector")] if len(node.inputs) > 2 and node.inputs[2] is not None else []
        return [(node, 1, "out_axis0")] + extra, node.outputs[0]
    if node.op_type == "LayerNormalization":
        axis = int(attributes(node).get("axis", -1))
        rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else 0
        scale = constant(node.inputs[1])
        if axis in (-1, rank - 1) and scale is not None and scale.ndim == 1 and _optional_const(node, 2):
            extra = [(node, 2, "vector")] if len(node.inputs) > 2 and node.inputs[2] is not None else []
            return [(node, 1, "vector")] + extra, node.outputs[0]
    if node.op_type == "MatMul":
        w = constant(node.inputs[1])
        if w is not None and w.ndim == 2 and follow_add:
            add = last[0][0]
            if constant(add.inputs[_const_operand(add)]).size == w.shape[1]:
                return [(node, 1, "columns"), (add, _const_operand(add), "vector")], add.outputs[0]
    if node.op_type == "Mul" and _const_operand(node) is not None:
        # an affine x * a (+ b) after an activation (PP-LCNetV3's learnable affine blocks)
        found = [(node, _const_operand(node), "broadcast")]
        if follow_add:
            add = last[0][0]
            return found + [(add, _const_operand(add), "broadcast")], add.outputs[0]
        return found, node.outputs[0]
    return [], None


SHARED_WEIGHT_ELEMENTS = 1024
"""A constant of at least this many elements that several nodes read is left alone:
rescaled for one reader it becomes a copy per reader (a reaction-mapping transformer
whose layers share their weights 7-8 times: its TensorRT int8 bundle grew from 85 to
229 MB, 132 MB of them rescaled float copies). Smaller ones (a bias, a norm's scale, a
scalar the optimizer merged with its equals) are copied."""


def _shared(value: ir.Value | None) -> bool:
    """Whether ``value`` is a constant of :data:`SHARED_WEIGHT_ELEMENTS` or more that another node reads too."""
    array = constant(value) if value is not None else None
    return array is not None and array.size >= SHARED_WEIGHT_ELEMENTS and len(list(value.uses())) > 1


def _reader_ok(node: ir.Node, value: ir.Value) -> bool:
    if float_only(node):  # (an exact procedure: a tree ensemble's walk compares what it computes)
        return False
    if (not node.inputs or node.inputs[0] is not value or len(node.inputs) < 2 or constant(node.inputs[1]) is None
            or _shared(node.inputs[1])):
        return False
    attrs = attributes(node)
    if node.op_type == "Conv":
        return True
    if node.op_type == "Gemm":
        return not attrs.get("transA", 0) and constant(node.inputs[1]).ndim == 2
    return node.op_type == "MatMul" and constant(node.inputs[1]).ndim == 2


def equalization_sites(model: ir.Model, compute_ops: tuple[str, ...],
                       per_tensor_constant_ops: tuple[str, ...] = ()) -> list[EqualizationSite]:
    """Tensors whose channels can be rescaled. ``per_tensor_constant_ops``: ops whose
    constants the runtime quantizes per tensor (see ``QDQPolicy.per_tensor_constant_ops``);
    producers that would need a per-channel constant there are left out."""
    graph_outputs = {v.name for v in model.graph.outputs}
    sites = []
    for node in model.graph:
        constants, value = _scalable_constants(node)
        if value is None or value.shape is None or float_only(node):
            continue
        if any(n.op_type in per_tensor_constant_ops or _shared(n.inputs[i]) for n, i, _ in constants):
            continue
        uses = list(value.uses())
        if len(uses) == 1 and uses[0][0].op_type == "Relu" and value.name not in graph_outputs:
            value = uses[0][0].outputs[0]  # relu(x / s) = relu(x) / s
            uses = list(value.uses())
        if value.name in graph_outputs or not uses or value.shape is None:
            continue
        readers = [u for u, _ in uses]
        if not all(r.op_type in compute_ops and _reader_ok(r, value) for r in readers):
            continue
        if len({r.op_type == "Conv" for r in readers}) != 1:
            continue  # NCHW and channels-last readers would disagree on the channel axis
        sites.append(EqualizationSite(value, node, constants, readers))
    return sites


def explicit_sites(model: ir.Model, sites: Sequence[EqualizationSite], compute_ops: tuple[str, ...] = ("Conv",),
                   accept: Callable[[EqualizationSite], bool] = lambda site: site.depthwise_only
                   ) -> list[EqualizationSite]:
    """Tensors whose producer cannot take a per-channel scale (not one of ``sites``:
    HardSwish, Sigmoid-gated, a Concat) read only by ``compute_ops`` with constant
    weights, of those the ones ``accept`` takes (by default: only depthwise convolutions
    read it). Scaling one costs an explicit per-channel ``Mul`` before the readers, worth
    it where the runtime quantizes activations per tensor and fuses an element-wise op
    into the quantize that follows (TensorRT: :attr:`QDQPolicy.explicit_equalization`)."""
    taken = {s.tensor.name for s in sites}
    graph_outputs = {v.name for v in model.graph.outputs}
    found = []
    for node in model.graph:
        for value in node.outputs:
            if value is None or value.name in taken or value.name in graph_outputs or value.shape is None:
                continue
            readers = [u for u, _ in value.uses()]
            if (value.dtype != ir.DataType.FLOAT or not readers
                    or not all(r.op_type in compute_ops and _reader_ok(r, value) for r in readers)
                    or len({r.op_type == "Conv" for r in readers}) != 1):
                continue
            site = EqualizationSite(value, node, [], readers, explicit=True)
            if len(value.shape) >= (3 if readers[0].op_type == "Conv" else 2) and isinstance(
                    value.shape[site.channel_axis], int) and accept(site):
                found.append(site)
    return found


def scale_explicitly(model: ir.Model, site: EqualizationSite, inv: np.ndarray, keep_name: bool = False) -> None:
    """``site.tensor * inv`` (per channel) in a new ``Mul`` that every reader reads instead.
    ``keep_name``: the ``Mul``'s result takes the tensor's name (the producer's result is
    renamed), so a rewrite described by what it does to the values of a named tensor (a
    smoothing's :class:`~deploycomp.quant.smoothing.ChannelAffine`) still names what the
    readers read."""
    name = site.tensor.name
    factor = add_initializer(model.graph, f"{name}__eq_scale", site.per_channel(inv).astype(np.float32))
    mul = ir.node("Mul", [site.tensor, factor], name=f"{name}__eq")
    mul.outputs[0].shape, mul.outputs[0].type = site.tensor.shape, site.tensor.type
    if keep_name:
        site.tensor.name = f"{name}__unscaled"
        mul.outputs[0].name = name
    else:
        mul.outputs[0].name = f"{name}__eq"
    position = {node: i for i, node in enumerate(model.graph)}
    model.graph.insert_before(min(site.readers, key=position.__getitem__), mul)
    for reader in site.readers:
        reader.replace_input_with(0, mul.outputs[0])


def _scales(act_range: np.ndarray, limit: float = SCALE_LIMIT) -> np.ndarray:
    """Every live channel brought to the widest one's range (depthwise readers only), by
    a factor of at most ``limit``."""
    live = act_range > 0
    scales = np.where(live, act_range / max(act_range.max(), 1e-12), 1.0)
    return np.clip(scales, 1 / limit, limit)


def scale_producer(model: ir.Model, site: EqualizationSite, inv: np.ndarray) -> None:
    for node, index, kind in site.constants:
        c = constant(node.inputs[index])
        if kind == "out_axis0":
            scaled = c * inv.reshape(-1, *[1] * (c.ndim - 1))
        elif kind == "columns":
            scaled = c * inv[None, :]
        elif kind == "vector":
            scaled = c * inv.reshape(c.shape)
        else:
            factor = site.per_channel(inv)
            scaled = np.broadcast_to(c, np.broadcast_shapes(c.shape, factor.shape)) * factor
        set_constant_input(model.graph, node, index, scaled, f"{node.name}__eq")


def scale_readers(model: ir.Model, site: EqualizationSite, scales: np.ndarray) -> None:
    for r in site.readers:
        w = constant(r.inputs[1])
        if r.op_type == "Conv":
            groups = int(attributes(r).get("group", 1))
            per_group = w.shape[1]
            # weight [o, j] reads input channel (o's group) * per_group + j
            channel = (np.arange(w.shape[0]) // (w.shape[0] // groups))[:, None] * per_group + np.arange(per_group)
            scaled = w * scales[channel].reshape(w.shape[0], per_group, *[1] * (w.ndim - 2))
        elif r.op_type == "Gemm" and attributes(r).get("transB", 0):
            scaled = w * scales[None, :]
        else:
            scaled = w * scales[:, None]
        set_constant_input(model.graph, r, 1, scaled, f"{r.name}__eq_weight")


def equalize(model: ir.Model, compute_ops: tuple[str, ...], samples: Iterable[Mapping[str, np.ndarray]],
             per_tensor_constant_ops: tuple[str, ...] = (), also: Sequence[Consumer] = (),
             explicit: bool = False) -> list[dict]:
    """Equalize, in place, every site of ``model`` whose readers are all depthwise (where the
    rescaling costs the weights nothing); one record per site changed. ``also``: other
    consumers of the run that measures the sites (they see the model before equalization;
    only the sites' tensors and their producers' intermediates change value).
    ``explicit``: also the depthwise-only tensors whose producer cannot take the scale,
    through a ``Mul`` of their own (:func:`explicit_sites`)."""
    sites = [s for s in equalization_sites(model, compute_ops, per_tensor_constant_ops) if s.depthwise_only]
    if explicit:
        sites += explicit_sites(model, sites)
    if not sites and not also:
        return []
    measured = ChannelExtremes({s.tensor.name: s.channel_axis for s in sites})
    stream_into(model, [measured, *also], samples)
    records = []
    for site in sites:
        act = measured.amax(site.tensor.name)  # float64: in float32 a spread like 1e2 / 1e-39 overflows
        if act is None:
            continue
        scales = _scales(act, EXPLICIT_SCALE_LIMIT if site.explicit else SCALE_LIMIT)
        if np.allclose(scales, 1.0):
            continue
        if site.explicit:
            scale_explicitly(model, site, 1.0 / scales)
        else:
            scale_producer(model, site, 1.0 / scales)
        scale_readers(model, site, scales)
        live = act > 0
        after = act / scales
        records.append({"tensor": site.tensor.name, "producer": site.producer.name,
                        **({"explicit_mul": True} if site.explicit else {}),
                        "readers": [r.name for r in site.readers],
                        "spread_before": float(act.max() / act[live].min()) if live.any() else 1.0,
                        "spread_after": float(after.max() / after[live].min()) if live.any() else 1.0})
    return records
