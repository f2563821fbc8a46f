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

from deploycomp.backends.tflite.layout import NCHW_TO_NHWC, identity, reshape_layout, transpose_layout
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


def _int8_table(lo: Lowering, table: ir.Value) -> int | None:
    """A float tensor for ``table`` where it is an int8 table of rows, each with its own
    scale (:attr:`deploycomp.quant.policy.QDQPolicy.int8_tables`): the rows stay int8 in the
    file, a DEQUANTIZE of the constant (done once by LiteRT) gives them to the gather. None
    for any other table (its values written as they are)."""
    from deploycomp.backends.tflite.flatbuffer import Quantization
    from deploycomp.backends.tflite.quantized import quantized_weight

    found = quantized_weight(lo, table)
    if found is None:
        return None
    data, scale, axis = found
    if data.dtype != np.int8 or data.ndim != 2 or axis != 0 or scale.size != data.shape[0]:
        return None
    stored = lo.w.constant(f"{table.name}/int8", data,
                           Quantization(tuple(float(s) for s in scale), (0,) * scale.size, 0))
    rows = lo.w.tensor(table.name, data.shape, np.float32)
    lo.emit("DEQUANTIZE", [stored], [rows])
    return rows


@lowers("Gather")
def lower_gather(lo: Lowering, node: ir.Node) -> None:
    x, indices = node.inputs[:2]
    rank = len(lo.shape(x))
    axis = _axis(node.attributes.get_int("axis", 0), rank)
    if axis == 0 and (table := _int8_table(lo, x)) is not None:
        lo.emit("GATHER", [table, _wrapped_indices(lo, indices, lo.shape(x)[0])],
                [lo.output(node.outputs[0], identity(len(lo.shape(node.outputs[0]))))],
                lo.w.options("Gather", axis=0, batchDims=0))
        return
    idx = lo.const(indices)
    if idx is None or idx.ndim > 1:
        perm = identity(rank)
        out_perm = identity(len(lo.shape(node.outputs[0])))
        axis_in_perm = axis
        index_tensor = _wrapped_indices(lo, indices, lo.shape(x)[axis])
    else:
        perm = lo.perm(x)
        axis_in_perm = perm.index(axis)
        idx = np.where(idx < 0, idx + lo.shape(x)[axis], idx).astype(np.int32)
        index_tensor = lo.constant("gather/indices", idx)
        out_perm = perm if idx.ndim == 1 else tuple(a - (a > axis) for a in perm if a != axis)
    lo.emit("GATHER", [lo.input(x, perm), index_tensor], [lo.output(node.outputs[0], out_perm)],
            lo.w.options("Gather", axis=axis_in_perm, batchDims=0))


def _wrapped_indices(lo: Lowering, indices: ir.Value, dims) -> int:
    """Indices with negatives counted from the end (ONNX) as TFLite's gathers want them:
    constants wrapped now, tensors by a FLOOR_MOD by the dimension (``dims``: one size, or
    one per index component along the last axis)."""
    data = lo.const(indices)
    if data is not None:
        return lo.constant("gather/indices", np.mod(data, np.asarray(dims, data.dtype)).astype(np.int32))
    rank = len(lo.shape(indices))
    source = lo.input(indices, identity(rank))
    wrapped = lo.temp(f"{indices.name}/wrapped", lo.w.shape(source), lo.w.dtype(source))
    lo.emit("FLOOR_MOD", [source, lo.constant("gather/dims", np.asarray(dims, lo.w.dtype(source)))], [wrapped])
    return wrapped


@lowers("GatherND")
def lower_gather_nd(lo: Lowering, node: ir.Node) -> None:
    """GATHER_ND in ONNX order (batch_dims 0), negative indices wrapped."""
    data, indices = node.inputs[:2]
    if node.attributes.get_int("batch_dims", 0):
        raise UnsupportedError("tflite: GatherND with batch_dims")
    k = lo.shape(indices)[-1]
    index = _wrapped_indices(lo, indices, lo.shape(data)[:k])
    rank = len(lo.shape(data))
    lo.emit("GATHER_ND", [lo.input(data, identity(rank)), index],
            [lo.output(node.outputs[0], identity(len(lo.shape(node.outputs[0]))))])


def _element_coords(lo: Lowering, indices: ir.Value, dims: tuple[int, ...], axis: int, what: str) -> int:
    """The full coordinates (``shape x rank``, int32) of each element ``indices`` points
    at: the index itself along ``axis`` (wrapped when negative), the element's own
    position along every other axis. Constant indices give a constant; others are
    concatenated at run time from the cast indices and constant position grids."""
    shape, rank = lo.shape(indices), len(dims)
    grid = np.indices(shape, dtype=np.int32)
    given = lo.const(indices)
    if given is not None:
        grid[axis] = np.mod(given, dims[axis])
        return lo.constant(f"{what}/coords", np.moveaxis(grid, 0, -1))
    wrapped = _wrapped_indices(lo, indices, dims[axis])
    if lo.w.dtype(wrapped) != "int32":
        cast = lo.temp(f"{indices.name}/i32", shape, np.int32)
        lo.emit("CAST", [wrapped], [cast])
        wrapped = cast
    column = lo.temp(f"{indices.name}/column", (*shape, 1), np.int32)
    lo.emit("RESHAPE", [wrapped, lo.int32((*shape, 1))], [column], lo.w.options("Reshape", newShape=[*shape, 1]))
    parts = [lo.constant(f"{what}/grid", grid[a][..., None]) if a != axis else column for a in range(rank)]
    coords = lo.temp(f"{indices.name}/coords", (*shape, rank), np.int32)
    lo.emit("CONCATENATION", parts, [coords], lo.w.options("Concatenation", axis=rank, fusedActivationFunction=0))
    return coords


@lowers("GatherElements")
def lower_gather_elements(lo: Lowering, node: ir.Node) -> None:
    """GATHER_ND with the full coordinates of every output element (:func:`_element_coords`)."""
    data, indices = node.inputs[:2]
    dims = lo.shape(data)
    rank = len(dims)
    axis = _axis(node.attributes.get_int("axis", 0), rank)
    coords = _element_coords(lo, indices, dims, axis, "gather_elements")
    lo.emit("GATHER_ND", [lo.input(data, identity(rank)), coords], [lo.output(node.outputs[0], identity(rank))])


@lowers("ScatterND")
def lower_scatter_nd(lo: Lowering, node: ir.Node) -> None:
    """Constant indices (PyTorch's in-place slice assignments): SCATTER_ND writes the updates
    into zeros and SELECT_V2 takes them where a constant mask says, the data elsewhere."""
    data, indices, updates = node.inputs[:3]
    if node.attributes.get_string("reduction", "none") != "none":
        raise UnsupportedError("tflite: ScatterND with a reduction")
    idx = _const_input(lo, node, 1, "indices")
    dims = lo.shape(data)
    rank = len(dims)
    idx = np.mod(idx, np.asarray(dims[:idx.shape[-1]], idx.dtype)).astype(np.int32)
    mask = np.zeros(dims, np.bool_)
    for position in idx.reshape(-1, idx.shape[-1]):
        mask[tuple(position)] = True
    scattered = lo.temp(f"{node.outputs[0].name}/scattered", dims, lo.dtype(data))
    lo.emit("SCATTER_ND", [lo.constant("scatter/indices", idx), lo.input(updates, identity(len(lo.shape(updates)))),
                           lo.int32(dims)], [scattered])
    lo.emit("SELECT_V2", [lo.constant("scatter/mask", mask), scattered, lo.input(data, identity(rank))],
            [lo.output(node.outputs[0], identity(rank))])


@lowers("ScatterElements", "Scatter")
def lower_scatter_elements(lo: Lowering, node: ir.Node) -> None:
    """Each update's full coordinates (its own position, the index along ``axis``), then
    SCATTER_ND, which sums updates that land on one position: with ``reduction="add"``
    (a graph network's message passing, indices computed at run time) the data plus that
    sum; without a reduction and constant indices a SELECT_V2 by the constant mask of
    written positions; without a reduction and computed indices (a Kaldi front-end's
    reflection of a waveform's end, at its run-time length) as the segments below."""
    data, indices, updates = node.inputs[:3]
    dims = lo.shape(data)
    rank = len(dims)
    axis = _axis(node.attributes.get_int("axis", 0), rank)
    reduction = node.attributes.get_string("reduction", "none")
    if reduction == "add":
        coords = _element_coords(lo, indices, dims, axis, "scatter_add")
        summed = lo.temp(f"{node.outputs[0].name}/summed", dims, lo.dtype(data))
        lo.emit("SCATTER_ND", [coords, lo.input(updates, identity(rank)), lo.int32(dims)], [summed])
        lo.emit("ADD", [lo.input(data, identity(rank)), summed], [lo.output(node.outputs[0], identity(rank))],
                lo.w.options("Add", fusedActivationFunction=0))
        return
    if reduction in _SEGMENT:
        _scatter_by_segments(lo, node, dims, axis, reduction)
        return
    if reduction != "none":
        raise UnsupportedError(f"tflite: {node.op_type} with reduction {reduction!r}")
    if lo.const(indices) is None:  # written where an update lands, one of them where several do
        _scatter_by_segments(lo, node, dims, axis, reduction)
        return
    idx = _const_input(lo, node, 1, "indices")
    grid = np.indices(idx.shape, dtype=np.int32)
    grid[axis] = np.mod(idx, dims[axis])
    coords = np.moveaxis(grid, 0, -1)
    mask = np.zeros(dims, np.bool_)
    mask[tuple(grid)] = True
    scattered = lo.temp(f"{node.outputs[0].name}/scattered", dims, lo.dtype(data))
    lo.emit("SCATTER_ND", [lo.constant("scatter/coords", coords), lo.input(updates, identity(rank)), lo.int32(dims)],
            [scattered])
    lo.emit("SELECT_V2", [lo.constant("scatter/mask", mask), scattered, lo.input(data, identity(rank))],
            [lo.output(node.outputs[0], identity(rank))])


_SEGMENT = {"max": ("UNSORTED_SEGMENT_MAX", "MAXIMUM"), "min": ("UNSORTED_SEGMENT_MIN", "MINIMUM"),
            "mul": ("UNSORTED_SEGMENT_PROD", "MUL")}
"""ScatterElements reductions as (TFLite's per-segment reduction, how it meets the data)."""


def _flat_positions(lo: Lowering, indices: ir.Value, dims: tuple[int, ...], axis: int) -> int:
    """Each element of ``indices``, flattened, as the flat position in the data it points
    at (int32): a constant of the element's own position along the other axes, plus the
    (wrapped) index times the stride of ``axis``."""
    shape, rank = lo.shape(indices), len(dims)
    strides = [int(np.prod(dims[a + 1:], dtype=np.int64)) for a in range(rank)]
    grid = np.indices(shape, dtype=np.int64)
    base = sum((grid[a] * strides[a] for a in range(rank) if a != axis), np.zeros(shape, np.int64)).reshape(-1)
    given = lo.const(indices)
    if given is not None:
        flat = base + np.mod(given, dims[axis]).reshape(-1).astype(np.int64) * strides[axis]
        return lo.constant("scatter/positions", flat.astype(np.int32))
    wrapped = _wrapped_indices(lo, indices, dims[axis])
    count = int(np.prod(shape, dtype=np.int64))
    column = lo.temp(f"{indices.name}/flat", (count,), lo.w.dtype(wrapped))
    lo.emit("RESHAPE", [wrapped, lo.int32([count])], [column], lo.w.options("Reshape", newShape=[count]))
    if lo.w.dtype(column) != "int32":
        cast = lo.temp(f"{indices.name}/flat_i32", (count,), np.int32)
        lo.emit("CAST", [column], [cast])
        column = cast
    scaled = lo.temp(f"{indices.name}/scaled", (count,), np.int32)
    lo.emit("MUL", [column, lo.constant("scatter/stride", np.asarray([strides[axis]], np.int32))], [scaled],
            lo.w.options("Mul", fusedActivationFunction=0))
    positions = lo.temp(f"{indices.name}/positions", (count,), np.int32)
    lo.emit("ADD", [scaled, lo.constant("scatter/base", base.astype(np.int32))], [positions],
            lo.w.options("Add", fusedActivationFunction=0))
    return positions


def _scatter_by_segments(lo: Lowering, node: ir.Node, dims: tuple[int, ...], axis: int, reduction: str) -> None:
    """``reduction`` max, min or mul (a graph network's pooling of messages, indices
    computed at run time): the updates reduced per flat data position (TFLite's
    UNSORTED_SEGMENT_*), then met with the data. A position no update reaches gets the
    reduction's identity from TFLite (the lowest float for max, 1 for mul), and for max
    and min the data is taken there outright (a -inf in the data stays -inf).
    ``reduction`` none: the updates' maximum per position replaces the data where an
    update lands (one of the updates where several do: ONNX leaves their order open)."""
    data, indices, updates = node.inputs[:3]
    rank, size = len(dims), int(np.prod(dims, dtype=np.int64))
    segment_op, meet = _SEGMENT.get(reduction, ("UNSORTED_SEGMENT_MAX", None))
    positions = _flat_positions(lo, indices, dims, axis)
    count = lo.w.shape(positions)[0]
    dtype = lo.dtype(data)
    flat_updates = lo.temp(f"{node.outputs[0].name}/updates", (count,), dtype)
    lo.emit("RESHAPE", [lo.input(updates, identity(len(lo.shape(updates)))), lo.int32([count])], [flat_updates],
            lo.w.options("Reshape", newShape=[count]))
    reduced = lo.temp(f"{node.outputs[0].name}/reduced", (size,), dtype)
    lo.emit(segment_op, [flat_updates, positions, lo.int32([size])], [reduced])
    shaped = lo.temp(f"{node.outputs[0].name}/reduced_shaped", dims, dtype)
    lo.emit("RESHAPE", [reduced, lo.int32(dims)], [shaped], lo.w.options("Reshape", newShape=list(dims)))
    source, out = lo.input(data, identity(rank)), lo.output(node.outputs[0], identity(rank))
    options = lo.w.options("Mul", fusedActivationFunction=0) if meet == "MUL" else None
    if reduction == "mul":
        lo.emit(meet, [source, shaped], [out], options)
        return
    met = shaped
    if meet is not None:
        met = lo.temp(f"{node.outputs[0].name}/met", dims, dtype)
        lo.emit(meet, [source, shaped], [met])
    hits = lo.temp(f"{node.outputs[0].name}/hits", (size,), dtype)
    lo.emit("UNSORTED_SEGMENT_SUM", [lo.constant("scatter/ones", np.ones(count, dtype)), positions, lo.int32([size])],
            [hits])
    hit = lo.temp(f"{node.outputs[0].name}/hit", (size,), np.bool_)
    lo.emit("GREATER", [hits, lo.constant("scatter/zero", np.zeros((), dtype))], [hit])
    hit_shaped = lo.temp(f"{node.outputs[0].name}/hit_shaped", dims, np.bool_)
    lo.emit("RESHAPE", [hit, lo.int32(dims)], [hit_shaped], lo.w.options("Reshape", newShape=list(dims)))
    lo.emit("SELECT_V2", [hit_shaped, met, source], [out])


@lowers("Expand")
def lower_expand(lo: Lowering, node: ir.Node) -> None:
    """BROADCAST_TO in the stored layout (the target shape permuted as the input is)."""
    x, y = node.inputs[0], node.outputs[0]
    dims = lo.shape(y)
    rank = len(dims)
    perm = lo.perm(x) if len(lo.shape(x)) == rank else identity(rank)
    source = lo.broadcast_input(x, rank, perm)
    stored = [dims[p] for p in perm]
    if lo.w.shape(source) == tuple(stored):
        lo.alias(y, source, perm)
        return
    lo.emit("BROADCAST_TO", [source, lo.int32(stored)], [lo.output(y, perm)])


@lowers("Tile")
def lower_tile(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    repeats = _const_input(lo, node, 1, "repeats")
    perm = lo.perm(x)
    lo.emit("TILE", [lo.input(x), lo.int32([int(repeats[a]) for a in perm])], [lo.output(node.outputs[0], perm)])


@lowers("CumSum")
def lower_cumsum(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    axis = _axis(int(_const_input(lo, node, 1, "axis").reshape(-1)[0]), len(lo.shape(x)))
    perm = lo.perm(x)
    options = lo.w.options("Cumsum", exclusive=bool(node.attributes.get_int("exclusive", 0)),
                           reverse=bool(node.attributes.get_int("reverse", 0)))
    lo.emit("CUMSUM", [lo.input(x), lo.constant("cumsum/axis", np.asarray(perm.index(axis), np.int32))],
            [lo.output(node.outputs[0], perm)], options)


@lowers("TopK")
def lower_topk(lo: Lowering, node: ir.Node) -> None:
    """TOPK_V2 over the last stored axis (the input is stored with ``axis`` last); the
    smallest k are the largest of -x. Indices come out int32 and are cast to int64."""
    x = node.inputs[0]
    k = int(_const_input(lo, node, 1, "k").reshape(-1)[0])
    rank = len(lo.shape(x))
    axis = _axis(node.attributes.get_int("axis", -1), rank)
    perm = lo.perm(x)
    if perm[-1] != axis:
        perm = tuple(a for a in perm if a != axis) + (axis,)
    source = lo.input(x, perm)
    largest = node.attributes.get_int("largest", 1)
    values, indices = node.outputs[:2]
    stored = tuple(lo.shape(values)[a] for a in perm)
    if not largest:
        negated = lo.temp(f"{values.name}/neg_in", lo.w.shape(source), lo.w.dtype(source))
        lo.emit("NEG", [source], [negated])
        source = negated
    top = lo.output(values, perm) if largest else lo.temp(f"{values.name}/neg", stored, lo.dtype(x))
    where = lo.temp(f"{indices.name}/i32", stored, np.int32)
    lo.emit("TOPK_V2", [source, lo.constant("topk/k", np.asarray(k, np.int32))], [top, where])
    if not largest:
        lo.emit("NEG", [top], [lo.output(values, perm)])
    lo.emit("CAST", [where], [lo.output(indices, perm)])


@lowers("OneHot")
def lower_one_hot(lo: Lowering, node: ir.Node) -> None:
    """ONE_HOT in ONNX order; negative indices count from the end of ``depth``."""
    indices = node.inputs[0]
    depth = int(_const_input(lo, node, 1, "depth").reshape(-1)[0])
    off, on = _const_input(lo, node, 2, "values").reshape(-1)[:2]
    out = node.outputs[0]
    rank = len(lo.shape(out))
    axis = _axis(node.attributes.get_int("axis", -1), rank)
    dtype = lo.dtype(out)
    lo.emit("ONE_HOT", [_wrapped_indices(lo, indices, depth), lo.constant("one_hot/depth", np.asarray(depth, np.int32)),
                        lo.w.constant("one_hot/on", np.asarray(on, dtype)), lo.w.constant("one_hot/off", np.asarray(off, dtype))],
            [lo.output(out, identity(rank))], lo.w.options("OneHot", axis=axis))


@lowers("Trilu")
def lower_trilu(lo: Lowering, node: ir.Node) -> None:
    """SELECT_V2 by a constant triangular mask (broadcast over the leading dims)."""
    x = node.inputs[0]
    dims = lo.shape(x)
    given = _const_input(lo, node, 1, "k")
    k = int(given.reshape(-1)[0]) if given is not None else 0
    ones = np.ones(dims[-2:], np.bool_)
    mask = np.triu(ones, k) if node.attributes.get_int("upper", 1) else np.tril(ones, k)
    perm = lo.perm(x)
    mask = np.transpose(mask.reshape((1,) * (len(dims) - 2) + mask.shape), perm)
    lo.emit("SELECT_V2", [lo.constant("trilu/mask", mask), lo.input(x), lo.scalar(0, lo.dtype(x))],
            [lo.output(node.outputs[0], perm)])


@lowers("DepthToSpace", "SpaceToDepth")
def lower_depth_to_space(lo: Lowering, node: ir.Node) -> None:
    """DEPTH_TO_SPACE / SPACE_TO_DEPTH in NHWC: TFLite's channel order is ONNX's DCR one;
    a CRD DepthToSpace first GATHERs the channels into DCR order."""
    x = node.inputs[0]
    bs = node.attributes.get_int("blocksize")
    source = lo.input(x, NCHW_TO_NHWC)
    builtin, kind = ("DEPTH_TO_SPACE", "DepthToSpace") if node.op_type == "DepthToSpace" else \
        ("SPACE_TO_DEPTH", "SpaceToDepth")
    if node.op_type == "DepthToSpace" and node.attributes.get_string("mode", "DCR") == "CRD":
        channels = lo.w.shape(source)[3]
        cout = channels // (bs * bs)
        order = np.asarray([(d % cout) * bs * bs + d // cout for d in range(channels)], np.int32)
        gathered = lo.temp(f"{x.name}/dcr", lo.w.shape(source), lo.w.dtype(source))
        lo.emit("GATHER", [source, lo.constant("d2s/order", order)], [gathered], lo.w.options("Gather", axis=3, batchDims=0))
        source = gathered
    lo.emit(builtin, [source], [lo.output(node.outputs[0], NCHW_TO_NHWC)], lo.w.options(kind, blockSize=bs))


_REDUCE = {"ReduceMean": "MEAN", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN", "ReduceSum": "SUM",
           "ReduceProd": "REDUCE_PROD", "GlobalAveragePool": "MEAN", "GlobalMaxPool": "REDUCE_MAX"}


def _reduce_axes(lo: Lowering, node: ir.Node) -> tuple[list[int], bool] | None:
    """(ONNX axes, keepdims) of a reduction; None for an empty-axes no-op."""
    rank = len(lo.shape(node.inputs[0]))
    if node.op_type.startswith("Global"):
        return list(range(2, rank)), True
    keep = bool(node.attributes.get_int("keepdims", 1))
    attr = node.attributes.get_ints("axes", None)
    given = _const_input(lo, node, 1, "axes") if attr is None else np.asarray(attr)
    if given is None or given.size == 0:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            return None
        given = np.arange(rank)
    return sorted({_axis(int(a), rank) for a in given}), keep


@lowers(*_REDUCE)
def lower_reduce(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    reduction = _reduce_axes(lo, node)
    if reduction is None:
        lo.alias(node.outputs[0], lo.input(x), lo.perm(x))
        return
    axes, keep = reduction
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


@lowers("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")
def lower_reduce_composite(lo: Lowering, node: ir.Node) -> None:
    """SUM of |x| or x*x (then SQRT or LOG), or log-sum-exp as max + log(sum(exp(x - max)))
    so that it does not overflow; reduced with kept dims, then reshaped if keepdims=0."""
    x = node.inputs[0]
    axes, keep = _reduce_axes(lo, node) or ([], True)  # no axes: the same formula element-wise
    perm = lo.perm(x)
    if not axes and node.op_type == "ReduceLogSumExp":
        lo.alias(node.outputs[0], lo.input(x), perm)
        return
    source = lo.input(x)
    shape = lo.w.shape(source)
    kept = tuple(1 if perm[i] in axes else d for i, d in enumerate(shape))
    stored_axes = lo.int32(sorted(perm.index(a) for a in axes))
    name, dtype = node.outputs[0].name, lo.dtype(x)
    none = {"fusedActivationFunction": 0}

    def step(builtin, ins, dims, options=None):
        out = lo.temp(f"{name}/{builtin.lower()}", dims, dtype)
        lo.emit(builtin, ins, [out], options)
        return out

    peak = None
    if node.op_type == "ReduceL1":
        source = step("ABS", [source], shape)
    elif node.op_type in ("ReduceL2", "ReduceSumSquare"):
        source = step("MUL", [source, source], shape, lo.w.options("Mul", **none))
    elif node.op_type == "ReduceLogSumExp":
        peak = step("REDUCE_MAX", [source, stored_axes], kept, lo.w.options("Reducer", keepDims=True))
        source = step("EXP", [step("SUB", [source, peak], shape, lo.w.options("Sub", **none))], shape)
    total = step("SUM", [source, stored_axes], kept, lo.w.options("Reducer", keepDims=True)) if axes else source
    if node.op_type == "ReduceL2":
        total = step("SQRT", [total], kept)
    elif node.op_type in ("ReduceLogSum", "ReduceLogSumExp"):
        total = step("LOG", [total], kept)
        if peak is not None:
            total = step("ADD", [total, peak], kept, lo.w.options("Add", **none))
    if keep:
        lo.alias(node.outputs[0], total, perm)
        return
    out_perm = tuple(a - sum(r < a for r in axes) for a in perm if a not in axes)
    dims = [lo.shape(node.outputs[0])[a] for a in out_perm]
    lo.emit("RESHAPE", [total, lo.int32(dims)], [lo.output(node.outputs[0], out_perm)],
            lo.w.options("Reshape", newShape=dims))
