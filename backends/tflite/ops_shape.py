"""Data-movement ONNX ops -> TFLite, done in the stored layout wherever it is possible.

Transpose emits nothing (it relabels the layout). Reshape, Flatten, Squeeze and
Unsqueeze are one RESHAPE in the stored layout when the dims they merge or split are
contiguous there (:func:`.layout.reshape_layout`), else the input goes back to ONNX
order first. Axis attributes (Concat, Split, Slice, Pad, Gather, reductions) are
renumbered into the stored layout.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.backends.tflite.layout import identity, reshape_layout, transpose_layout
from deploycomp.backends.tflite.lowering import Lowering, lowers
from deploycomp.errors import UnsupportedError


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _const_input(lo: Lowering, node: ir.Node, i: int, what: str) -> np.ndarray | None:
    if len(node.inputs) <= i or node.inputs[i] is None:
        return None
    value = lo.const(node.inputs[i])
    if value is None:
        raise UnsupportedError(f"tflite: {node.op_type} with non-constant {what}")
    return value


@lowers("Transpose")
def lower_transpose(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    rank = len(lo.shape(x))
    perm = node.attributes.get_ints("perm", list(reversed(range(rank))))
    lo.alias(node.outputs[0], lo.input(x), transpose_layout(lo.perm(x), perm))


@lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def lower_reshape(lo: Lowering, node: ir.Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    src, dst = lo.shape(x), lo.shape(y)
    perm = reshape_layout(lo.perm(x), src, dst)
    source = lo.input(x) if perm is not None else lo.input(x, identity(len(src)))
    if perm is None:
        perm = identity(len(dst))
    shape = [dst[p] for p in perm]
    lo.emit("RESHAPE", [source, lo.int32(shape)], [lo.output(y, perm)], lo.w.options("Reshape", newShape=shape))


def _int8_concat(lo: Lowering, node: ir.Node, inputs: list[ir.Value], rank: int) -> bool:
    """CONCATENATION on int8 when the result is quantized: inputs whose scale differs are
    requantized to the output's first (XNNPACK's int8 concat wants one scale throughout)."""
    from deploycomp.backends.tflite import quantized

    if lo.precision != "int8":
        return False
    sources = [quantized.int8_source(lo, v) for v in inputs]
    qout = quantized.int8_output(lo, node)
    if any(s is None for s in sources) or qout is None or qout.activation != "NONE":
        return False
    quant = quantized.activation_quantization(lo, qout.quantize)
    perm = lo.perm(sources[0])
    ins = []
    for s in sources:
        index = lo.input(s, perm)
        if lo.w.quantization(index) != quant:
            requantized = lo.w.tensor(f"{s.name}/rq", lo.w.shape(index), np.int8, quant)
            lo.emit("QUANTIZE", [index], [requantized])
            index = requantized
        ins.append(index)
    axis = perm.index(_axis(node.attributes.get_int("axis"), rank))
    lo.emit("CONCATENATION", ins, [quantized.write_int8(lo, node, qout, perm)],
            lo.w.options("Concatenation", axis=axis, fusedActivationFunction=0))
    return True


@lowers("Concat")
def lower_concat(lo: Lowering, node: ir.Node) -> None:
    inputs = [v for v in node.inputs if v is not None and 0 not in lo.shape(v)]
    rank = len(lo.shape(node.outputs[0]))
    if _int8_concat(lo, node, inputs, rank):
        return
    dynamic = [v for v in inputs if lo.const(v) is None]
    perm = lo.perm(dynamic[0]) if dynamic else identity(rank)
    axis = perm.index(_axis(node.attributes.get_int("axis"), rank))
    lo.emit("CONCATENATION", [lo.input(v, perm) for v in inputs], [lo.output(node.outputs[0], perm)],
            lo.w.options("Concatenation", axis=axis, fusedActivationFunction=0))


@lowers("Split")
def lower_split(lo: Lowering, node: ir.Node) -> None:
    """Equal parts: SPLIT; unequal: one SLICE per part. (XNNPACK delegates SPLIT and SLICE
    but not SPLIT_V, which would cut the graph into separate delegate partitions.)"""
    x = node.inputs[0]
    rank = len(lo.shape(x))
    axis = _axis(node.attributes.get_int("axis", 0), rank)
    perm = lo.perm(x)
    stored_axis = perm.index(axis)
    sizes = [lo.shape(o)[axis] for o in node.outputs]
    source = lo.input(x)
    if len(set(sizes)) == 1:
        outs = [lo.output(o, perm) for o in node.outputs]
        lo.emit("SPLIT", [lo.constant("split/axis", np.asarray(stored_axis, np.int32)), source], outs,
                lo.w.options("Split", numSplits=len(outs)))
        return
    start = 0
    dims = list(lo.w.shape(source))
    for value, size in zip(node.outputs, sizes):
        begin, extent = [0] * rank, list(dims)
        begin[stored_axis], extent[stored_axis] = start, size
        lo.emit("SLICE", [source, lo.int32(begin), lo.int32(extent)], [lo.output(value, perm)])
        start += size


@lowers("Slice")
def lower_slice(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    dims = lo.shape(x)
    rank = len(dims)
    starts = _const_input(lo, node, 1, "starts")
    ends = _const_input(lo, node, 2, "ends")
    axes = _const_input(lo, node, 3, "axes")
    steps = _const_input(lo, node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else [_axis(int(a), rank) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    begin, end, stride = [0] * rank, list(dims), [1] * rank
    end_mask = 0
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = dims[a]
        s, e = int(s), int(e)
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            begin[a], end[a] = min(max(s, 0), d), min(max(e, 0), d)
        else:
            begin[a], end[a] = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        stride[a] = st
    perm = lo.perm(x)
    for i, a in enumerate(perm):
        if stride[a] < 0 and end[a] < 0:
            end_mask |= 1 << i  # "up to and including index 0": -1 would mean the last element
    order = lambda values: [values[a] for a in perm]  # noqa: E731
    lo.emit("STRIDED_SLICE", [lo.input(x), lo.int32(order(begin)), lo.int32(order(end)), lo.int32(order(stride))],
            [lo.output(node.outputs[0], perm)],
            lo.w.options("StridedSlice", beginMask=0, endMask=end_mask, ellipsisMask=0, newAxisMask=0, shrinkAxisMask=0))


@lowers("Pad")
def lower_pad(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    rank = len(lo.shape(x))
    pads = _const_input(lo, node, 1, "pads")
    value = _const_input(lo, node, 2, "constant_value")
    axes = _const_input(lo, node, 3, "axes")
    axes = list(range(rank)) if axes is None else [_axis(int(a), rank) for a in axes]
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = int(pads[i]), int(pads[i + len(axes)])
    if min(begin + end) < 0:
        raise UnsupportedError("tflite: Pad with negative pads")
    perm = lo.perm(x)
    paddings = lo.constant("pad/paddings", np.asarray([[begin[a], end[a]] for a in perm], np.int32))
    mode = node.attributes.get_string("mode", "constant")
    out = lo.output(node.outputs[0], perm)
    if mode == "reflect":
        lo.emit("MIRROR_PAD", [lo.input(x), paddings], [out], lo.w.options("MirrorPad", mode=0))
    elif mode != "constant":
        raise UnsupportedError(f"tflite: Pad mode {mode!r}")
    elif value is None or float(value) == 0.0:
        lo.emit("PAD", [lo.input(x), paddings], [out])
    else:
        lo.emit("PADV2", [lo.input(x), paddings, lo.scalar(float(value), lo.dtype(x))], [out])


@lowers("Gather")
def lower_gather(lo: Lowering, node: ir.Node) -> None:
    x, indices = node.inputs[:2]
    rank = len(lo.shape(x))
    axis = _axis(node.attributes.get_int("axis", 0), rank)
    idx = lo.const(indices)
    if idx is None or idx.ndim > 1:
        perm = identity(rank)
        out_perm = identity(len(lo.shape(node.outputs[0])))
        axis_in_perm = axis
        index_tensor = lo.input(indices)
    else:
        perm = lo.perm(x)
        axis_in_perm = perm.index(axis)
        idx = np.where(idx < 0, idx + lo.shape(x)[axis], idx).astype(np.int32)
        index_tensor = lo.constant("gather/indices", idx)
        out_perm = perm if idx.ndim == 1 else tuple(a - (a > axis) for a in perm if a != axis)
    lo.emit("GATHER", [lo.input(x, perm), index_tensor], [lo.output(node.outputs[0], out_perm)],
            lo.w.options("Gather", axis=axis_in_perm, batchDims=0))


_REDUCE = {"ReduceMean": "MEAN", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN", "ReduceSum": "SUM",
           "ReduceProd": "REDUCE_PROD", "GlobalAveragePool": "MEAN", "GlobalMaxPool": "REDUCE_MAX"}


@lowers(*_REDUCE)
def lower_reduce(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    rank = len(lo.shape(x))
    if node.op_type.startswith("Global"):
        axes, keep = list(range(2, rank)), True
    else:
        keep = bool(node.attributes.get_int("keepdims", 1))
        attr = node.attributes.get_ints("axes", None)
        given = _const_input(lo, node, 1, "axes") if attr is None else np.asarray(attr)
        if given is None or given.size == 0:
            if node.attributes.get_int("noop_with_empty_axes", 0):
                lo.alias(node.outputs[0], lo.input(x), lo.perm(x))
                return
            given = np.arange(rank)
        axes = sorted({_axis(int(a), rank) for a in given})
    perm = lo.perm(x)
    out_perm = perm if keep else tuple(a - sum(r < a for r in axes) for a in perm if a not in axes)
    builtin = _REDUCE[node.op_type]
    if builtin == "MEAN" and lo.precision == "int8":  # int8 MEAN may rescale: e.g. SE blocks' pooling
        from deploycomp.backends.tflite import quantized

        source, qout = quantized.int8_source(lo, x), quantized.int8_output(lo, node)
        if source is not None and qout is not None and qout.activation == "NONE":
            lo.emit("MEAN", [lo.input(source), lo.int32(sorted(perm.index(a) for a in axes))],
                    [quantized.write_int8(lo, node, qout, out_perm)], lo.w.options("Reducer", keepDims=keep))
            return
    lo.emit(builtin, [lo.input(x), lo.int32(sorted(perm.index(a) for a in axes))],
            [lo.output(node.outputs[0], out_perm)], lo.w.options("Reducer", keepDims=keep))


@lowers("ArgMax", "ArgMin")
def lower_argmax(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    rank = len(lo.shape(x))
    axis = _axis(node.attributes.get_int("axis", 0), rank)
    keep = bool(node.attributes.get_int("keepdims", 1))
    if node.attributes.get_int("select_last_index", 0):
        raise UnsupportedError(f"tflite: {node.op_type} with select_last_index=1")
    perm = lo.perm(x)
    builtin = "ARG_MAX" if node.op_type == "ArgMax" else "ARG_MIN"
    reduced_perm = tuple(a - (a > axis) for a in perm if a != axis)
    out = node.outputs[0]
    target = lo.temp(f"{out.name}/reduced", tuple(lo.shape(x)[a] for a in perm if a != axis), np.int64) if keep else None
    result = target if keep else lo.output(out, reduced_perm)
    lo.emit(builtin, [lo.input(x), lo.constant("arg/axis", np.asarray([perm.index(axis)], np.int32))], [result],
            lo.w.options("ArgMax" if builtin == "ARG_MAX" else "ArgMin", outputType=4))
    if keep:
        shape = [lo.shape(out)[a] for a in perm]
        lo.emit("RESHAPE", [target, lo.int32(shape)], [lo.output(out, perm)], lo.w.options("Reshape", newShape=shape))
