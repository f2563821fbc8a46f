"""``Pad``s TFLite has no kernel for, as ops it has: negative pads as a ``Slice`` (the
crop) before the pad of what is left, and ``edge`` padding as the edge element's slice
concatenated as many times as the pad is wide.

A negative pad removes elements; TFLite's PAD and MIRROR_PAD take non-negative paddings
only, and no mode repeats the edge element (MIRROR_PAD reflects). A Kaldi-style
pre-emphasis (an ASR package's wespeaker front-end) shifts each frame by one sample as
``Pad(frames, [0, 0, 1, 0, 0, -1], mode=edge)``: the Android build was refused by name. Cropping first and padding the rest is the same tensor: a side of an
axis is either cropped or padded, an edge pad repeats the element at its own end, which
the crop at the other end keeps, and a reflection reads elements next to its own end
(as long as the cropped axis is longer than the pad, which ONNX requires of the
reflection anyway). TFLite's pipeline only; the others run both themselves.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer, replace_node
from deploycomp.passes.op_rewrite import OpRewritePass
from deploycomp.passes.rules._util import const

__all__ = ["TFLitePadsPass"]


def _pads(node: ir.Node) -> tuple[list[int], np.ndarray, np.ndarray] | None:
    """The axes, begin and end pads of a ``Pad`` with constant pads (and axes)."""
    x = node.inputs[0]
    pads = const(node.inputs[1]) if len(node.inputs) > 1 else None
    if x is None or x.shape is None or pads is None:
        return None
    rank = len(x.shape)
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    axes = const(axes_value) if axes_value is not None else np.arange(rank)
    if axes is None:
        return None
    axes = [int(a) % rank for a in axes.reshape(-1)]
    pads = pads.reshape(-1).astype(np.int64)
    return axes, pads[: len(axes)], pads[len(axes):]


def _crop(node: ir.Node, axes: list[int], begin: np.ndarray, end: np.ndarray) -> ir.Node:
    crop = [(a, -min(b, 0), min(e, 0)) for a, b, e in zip(axes, begin, end) if b < 0 or e < 0]
    graph, name = node.graph, node.name or "pad"
    starts = add_initializer(graph, f"{name}_crop_starts", np.array([s for _, s, _ in crop], np.int64))
    # an end of 0 removes nothing: the axis's end (int64 max, as ONNX's Slice clamps it)
    ends = add_initializer(graph, f"{name}_crop_ends",
                           np.array([e if e < 0 else np.iinfo(np.int64).max for _, _, e in crop], np.int64))
    slice_axes = add_initializer(graph, f"{name}_crop_axes", np.array([a for a, _, _ in crop], np.int64))
    return ir.node("Slice", [node.inputs[0], starts, ends, slice_axes], name=f"{name}_crop")


def _edges(node: ir.Node, x: ir.Value, axes: list[int], begin: np.ndarray, end: np.ndarray) -> list[ir.Node]:
    """``x`` padded by repeating its edge elements: per axis, its first element's slice
    ``begin`` times and its last's ``end`` times around it (a ``Concat``)."""
    graph, name = node.graph, node.name or "pad"
    new: list[ir.Node] = []
    for a, b, e in zip(axes, begin, end):
        if b <= 0 and e <= 0:
            continue
        axis = add_initializer(graph, f"{name}_edge_axis{a}", np.array([a], np.int64))
        parts = []
        for side, count, start, stop in (("first", b, 0, 1), ("last", e, -1, np.iinfo(np.int64).max)):
            if count > 0:
                starts = add_initializer(graph, f"{name}_{side}{a}_start", np.array([start], np.int64))
                ends = add_initializer(graph, f"{name}_{side}{a}_end", np.array([stop], np.int64))
                new.append(ir.node("Slice", [x, starts, ends, axis], name=f"{name}_{side}{a}"))
                parts.append((side, int(count), new[-1].outputs[0]))
        inputs = [v for side, count, v in parts if side == "first" for _ in range(count)] + [x]
        inputs += [v for side, count, v in parts if side == "last" for _ in range(count)]
        new.append(ir.node("Concat", inputs, attributes={"axis": a}, name=f"{name}_edge{a}"))
        x = new[-1].outputs[0]
    return new


def _rewrite(node: ir.Node) -> bool:
    found = _pads(node)
    if found is None:
        return False
    axes, begin, end = found
    edge = node.attributes.get_string("mode", "constant") == "edge"
    if not (begin < 0).any() and not (end < 0).any() and not edge:
        return False
    new: list[ir.Node] = []
    x = node.inputs[0]
    if (begin < 0).any() or (end < 0).any():
        new.append(_crop(node, axes, begin, end))
        x = new[-1].outputs[0]
    begin, end = np.maximum(begin, 0), np.maximum(end, 0)
    if edge:
        new += _edges(node, x, axes, begin, end)
    elif begin.any() or end.any():
        remaining = add_initializer(node.graph, f"{node.name or 'pad'}_positive_pads", np.concatenate([begin, end]))
        rest = [x, remaining, *(list(node.inputs[2:]) if len(node.inputs) > 2 else [])]
        new.append(ir.node("Pad", rest, attributes=dict(node.attributes), name=f"{node.name or 'pad'}_rest"))
    if not new:  # an edge pad of nothing
        new.append(ir.node("Identity", [x], name=f"{node.name or 'pad'}_none"))
    replace_node(node, new, "__tflite_pads")
    return True


class TFLitePadsPass(OpRewritePass):
    op_types = frozenset({"Pad"})

    def rewrite(self, node: ir.Node, model: ir.Model) -> bool:
        return _rewrite(node)
