"""Small helpers shared by the rewrite rules: constants, shapes, naming."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["const", "exclusive_uses", "fresh_name", "initializer", "keepdims", "opset", "padded", "per_channel",
           "reduce_axes", "static_shape"]


def const(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant contents, if it is an initializer or folded constant."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def per_channel(arr: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    """``arr`` as one value per channel (axis 1) of an ``N x C x ...`` tensor of rank
    ``out_rank`` it broadcasts against (None where it varies along another axis, or would
    broadcast that tensor wider)."""
    if arr.ndim > out_rank:
        return None
    full = arr.reshape((1,) * (out_rank - arr.ndim) + arr.shape)
    if full.shape[0] != 1 or any(d != 1 for d in full.shape[2:]) or full.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1), (channels,))


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    if value is None or value.shape is None:
        return None
    dims = tuple(value.shape)
    return dims if all(isinstance(d, int) and d >= 0 for d in dims) else None


def exclusive_uses(value: ir.Value, nodes: set[ir.Node]) -> bool:
    """True if every consumer of ``value`` is one of ``nodes`` and it is not a graph output."""
    return not value.is_graph_output() and all(user in nodes for user, _ in value.uses())


def fresh_name(base: ir.Value, suffix: str) -> str:
    return f"{base.name}__{suffix}"


def initializer(op, graph: ir.Graph | None, name: str, array: np.ndarray) -> ir.Value:
    """A rewrite's new constant named ``name``: the graph's own if it already holds that name
    with the same contents (a weight shared by the layers of an unrolled decoder, each
    rewritten alike), else a new one under a name the graph does not have. onnxscript
    registers a rewrite's initializer over an existing one of the same name, and the first
    rewrite's nodes then read a tensor the saved model no longer has (a g2p transformer's
    LayerNorm scale: "not a graph input, initializer, or output of a previous node")."""
    array = np.ascontiguousarray(array)
    taken = graph.initializers if graph is not None else {}
    existing = taken.get(name)
    if (existing is not None and existing.const_value is not None and existing.dtype == ir.DataType.from_numpy(array.dtype)
            and np.array_equal(existing.const_value.numpy(), array)):
        return existing
    unique, k = name, 1
    while unique in taken:
        unique, k = f"{name}_{k}", k + 1
    return op.initializer(ir.tensor(array), name=unique)


def padded(node: ir.Node) -> bool:
    """True if a Conv pads its input (``pads`` or an ``auto_pad`` that pads): a constant
    added to its input then does not reach the border outputs as it reaches the others."""
    attrs = node.attributes
    pads = attrs["pads"].value if "pads" in attrs else ()
    auto = attrs["auto_pad"].value if "auto_pad" in attrs else "NOTSET"
    return any(pads) or auto not in ("NOTSET", "VALID")


def reduce_axes(node: ir.Node) -> list[int] | None:
    """Axes of a Reduce* node, from its attribute (older opsets) or its second input."""
    attr = node.attributes.get("axes")
    if attr is not None:
        return list(attr.as_ints())
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const(node.inputs[1])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    return None


def keepdims(node: ir.Node) -> bool:
    attr = node.attributes.get("keepdims")
    return True if attr is None else bool(attr.as_int())


def opset(context) -> int:
    model = getattr(context, "model", None)
    return model.opset_imports.get("", 0) if model is not None else 0
