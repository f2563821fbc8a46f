"""Bias correction: give each quantized layer back the mean shift int8 puts on its output.

Quantizing a layer changes the expected value of every output channel, not only its
noise. Two causes, both systematic: the rounding of a channel's few weights (largest in
depthwise convs, 9 weights per channel), and the clipping of the input's range
(percentile and entropy ranges cut the tails, whose mean is not zero). A shifted channel
mean is an offset the next layers amplify; noise mostly averages out. The fix needs no
training (Nagel et al., "Data-Free Quantization", 2019; NNCF's fast bias correction does
the same on data): measure the shift and subtract it from the layer's bias.

The shift is computed per layer, from that layer alone, so corrections do not stack:

    shift[o] = sum_{c,k} Wq[o,c,k] * E[Q(x)][c] - W[o,c,k] * E[x][c]

with ``W``/``Wq`` the float and int8-dequantized weights, ``x`` the layer's float input
and ``Q`` the fake quantization its QuantizeLinear/DequantizeLinear pair applies, the
means per input channel over the calibration samples (one more streaming pass of the
float model, two vectors per layer kept). Zero padding is exact in both terms and is
ignored. Layers: Conv (also grouped and depthwise), Gemm with a constant ``B``, and
MatMul with a constant ``B`` whose only consumer adds a constant bias. Layers left in
float keep their bias untouched (:func:`apply_bias_shifts` skips them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.ir import float_only
from deploycomp.quant.calibrate import stream_into
from deploycomp.quant.constants import add_to_bias, attributes, bias_slot, constant, weight_matrix
from deploycomp.quant.policy import QDQPolicy, weight_axis
from deploycomp.quant.qdq import effective_ranges, fake_quantize, quantizable_tensors, quantize_weight, reader_encoding

__all__ = ["BiasStatistics", "CORRECTABLE_OPS", "add_to_bias", "apply_bias_shifts", "bias_shifts", "bias_slot"]


@dataclass
class _Layer:
    """A correctable layer: its weight and its input's channel axis."""

    node: ir.Node
    weight: np.ndarray
    channel_axis: int

    def input_means(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Sums of the input that the layer's weights multiply, and how many outputs they
        cover. A Conv's are per (input channel, kernel tap) over the output positions that
        tap reads, so zero padding and strides are exact; others' are per input channel."""
        if self.node.op_type != "Conv":
            flat = np.moveaxis(x, self.channel_axis, -1).reshape(-1, x.shape[self.channel_axis])
            return flat.sum(0, dtype=np.float64), flat.shape[0]
        attrs = attributes(self.node)
        kernel = self.weight.shape[2:]
        rank = len(kernel)
        pads = list(attrs.get("pads", [0] * 2 * rank))
        strides = list(attrs.get("strides", [1] * rank))
        dilations = list(attrs.get("dilations", [1] * rank))
        parts, outputs = [x.sum(0, dtype=np.float64) if x.shape[0] > 1 else x[0]], 1
        for d in range(rank):
            size = x.shape[2 + d]
            out = (size + pads[d] + pads[d + rank] - dilations[d] * (kernel[d] - 1) - 1) // strides[d] + 1
            outputs *= out
            parts = [tap for part in parts
                     for tap in _tap_sums(part, 1, size, out, strides[d], pads[d], dilations[d], kernel[d])]
        return np.stack(parts, -1), outputs * x.shape[0]  # (C, taps), taps in the weight's order

    def shift(self, mean_x: np.ndarray, mean_qx: np.ndarray, weight_qmax: int = 127) -> np.ndarray:
        w = self.weight.astype(np.float64)
        axis = weight_axis(self.node.op_type, attributes(self.node), w.ndim)
        q, scale = quantize_weight(self.weight, axis, weight_qmax)
        wq = q.astype(np.float64) * scale
        if self.node.op_type == "Conv":
            groups = int(attributes(self.node).get("group", 1))
            out_ch, per_group = w.shape[0], w.shape[1]
            # the input channels each output channel reads: its group's slice of the means
            rows = (np.arange(out_ch) // (out_ch // groups))[:, None] * per_group + np.arange(per_group)
            taps = (out_ch, per_group, -1)
            return (wq.reshape(taps) * mean_qx[rows]).sum((1, 2)) - (w.reshape(taps) * mean_x[rows]).sum((1, 2))
        return mean_qx @ weight_matrix(self.node, wq) - mean_x @ weight_matrix(self.node, w)


def _tap_sums(x: np.ndarray, axis: int, size: int, out: int, stride: int, pad: int, dilation: int,
              kernel: int) -> list[np.ndarray]:
    """For each kernel tap along ``axis``, the sum over the positions that tap reads
    (``i * stride - pad + t * dilation`` for the ``out`` outputs, inside the tensor), that
    axis reduced. The positions of a tap are one residue class mod ``stride`` minus a few
    at the edges, so each class is summed once (one pass over the tensor, views only) and
    each tap subtracts its edges: PP-OCR det's bias correction was mostly copies of
    shifted inputs before."""
    def rows(start: int, stop: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, max(start, stop), stride)
        return x[tuple(index)].sum(axis, dtype=np.float64)

    classes = [rows(r, size) for r in range(min(stride, size))]
    taps = []
    for t in range(kernel):
        first = t * dilation - pad  # the position output 0 reads
        last = first + (out - 1) * stride
        lo = first if first >= 0 else first - (first // stride) * stride  # first inside, same class
        hi = min(last, size - 1 - (size - 1 - first) % stride)  # last inside, same class
        if lo > hi:
            taps.append(np.zeros_like(classes[0]))
            continue
        rho = lo % stride
        taps.append(classes[rho] - rows(rho, lo) - rows(hi + stride, size))
    return taps


CORRECTABLE_OPS = ("Conv", "Gemm", "MatMul")


def _layers(model: ir.Model, ops: tuple[str, ...]) -> list[_Layer]:
    out = []
    for node in model.graph:
        if node.op_type not in ops or not node.name or len(node.inputs) < 2 or float_only(node):
            continue
        w = constant(node.inputs[1])
        if w is None or w.dtype != np.float32:
            continue
        attrs = attributes(node)
        if node.op_type == "Conv":
            out.append(_Layer(node, w, 1))
        elif node.op_type == "Gemm" and not attrs.get("transA", 0) and w.ndim == 2:
            out.append(_Layer(node, w, 1))
        elif node.op_type == "MatMul" and bias_slot(node) is not None:
            out.append(_Layer(node, w, -1))
    return out


def _read(x: np.ndarray, encoding: tuple | None, done: dict[tuple, np.ndarray]) -> np.ndarray:
    """``x`` as a layer reads it quantized with ``encoding`` (scale, zero point, shift; see
    :func:`deploycomp.quant.qdq.reader_encoding`); ``x`` itself when not quantized."""
    if encoding is None:
        return x
    scale, zp, shift = encoding
    key = (np.asarray(scale).tobytes(), np.asarray(zp).tobytes(), shift)
    if key not in done:
        done[key] = fake_quantize(x - np.float32(shift), scale, zp) + np.float32(shift) if shift else fake_quantize(x, scale, zp)
    return done[key]


class BiasStatistics:
    """The per-layer input sums bias correction needs, as a consumer of a float run
    (:func:`deploycomp.quant.calibrate.stream_into`). ``model``: the layers (weights);
    ``range_sets``: one or more sets of ranges (candidate calibrations of the same model)
    to give shifts for, the float input sums taken once for all; ``only``: just these
    layers; ``transform``: tensor name -> the value ``model`` has there, computed from the
    streamed one (so a rewritten model's shifts come from the original's run)."""

    per_tensor = True  # a layer reads one tensor: its sums depend on that tensor alone

    def __init__(self, model: ir.Model, policy: QDQPolicy, range_sets: Sequence[Mapping[str, tuple[float, float]]],
                 only: set[str] | None = None, transform: Mapping[str, Callable] | None = None):
        layers = _layers(model, tuple(op for op in policy.compute_ops if op in CORRECTABLE_OPS))
        if only is not None:
            layers = [layer for layer in layers if layer.node.name in only]
        uses = quantizable_tensors(model, policy)
        self.encodings: list[dict] = []  # per range set: layer -> the QDQ encoding of what it reads
        for ranges in range_sets:
            encoded, encodings = effective_ranges(policy, dict(ranges), uses), {}
            for layer in layers:
                source = layer.node.inputs[0]
                if source.name in encoded and any(c is layer.node and i == 0 for c, i in uses.get(source.name, [])):
                    encodings[layer.node.name] = reader_encoding(policy, source, encoded[source.name], layer.node, 0)
            self.encodings.append(encodings)
        self.layers, self.weight_qmax = layers, policy.weight_qmax
        self.transform = dict(transform or {})
        self.readers: dict[str, list[_Layer]] = {}
        for layer in layers:
            self.readers.setdefault(layer.node.inputs[0].name, []).append(layer)
        self.tensors = sorted(self.readers)
        # node name -> [sum of x, outputs covered, sum of Q(x) per range set]
        self.sums: dict[str, list] = {}

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        for name in self.tensors:
            if name not in values:
                continue
            x = self.transform[name](values[name]) if name in self.transform else values[name]
            read: dict[tuple, np.ndarray] = {}  # one fake-quantized copy per distinct encoding
            for layer in self.readers[name]:
                quantized = [_read(x, e.get(layer.node.name), read) for e in self.encodings]
                sx, n = layer.input_means(x)
                sqs = [layer.input_means(qx)[0] if qx is not x else sx for qx in quantized]
                total = self.sums.setdefault(layer.node.name, [0.0, 0, [0.0] * len(sqs)])
                total[0], total[1] = total[0] + sx, total[1] + n
                total[2] = [a + b for a, b in zip(total[2], sqs)]

    def shifts(self, index: int = 0) -> dict[str, np.ndarray]:
        """Node name -> the mean output shift (per output channel) quantizing it with range
        set ``index`` causes."""
        out = {}
        for layer in self.layers:
            total = self.sums.get(layer.node.name)
            if total is None or not total[1]:
                continue
            shift = layer.shift(total[0] / total[1], total[2][index] / total[1], self.weight_qmax)
            if np.all(np.isfinite(shift)):
                out[layer.node.name] = shift.astype(np.float32)
        return out


def bias_shifts(model: ir.Model, policy: QDQPolicy, ranges: Mapping[str, tuple[float, float]],
                samples: Iterable[Mapping[str, np.ndarray]], only: set[str] | None = None) -> dict[str, np.ndarray]:
    """Node name -> the mean output shift (per output channel) quantizing that layer causes;
    ``only``: just these layers (the others' inputs and weights are known not to change)."""
    sums = BiasStatistics(model, policy, [ranges], only)
    stream_into(model, [sums], samples)
    return sums.shifts()


def apply_bias_shifts(model: ir.Model, shifts: Mapping[str, np.ndarray], skip: set[str] = frozenset()) -> int:
    """Subtract each layer's shift from its bias (created for a Conv/Gemm without one);
    layers in ``skip`` (kept in float) are left as they are. Returns the layers corrected."""
    done = 0
    for layer in _layers(model, CORRECTABLE_OPS):
        node = layer.node
        if node.name in skip or node.name not in shifts:
            continue
        done += add_to_bias(model.graph, node, -shifts[node.name], f"{node.name}__bias_corrected")
    return done
