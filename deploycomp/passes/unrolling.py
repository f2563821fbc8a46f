"""What writing a loop out step by step needs, whichever loop it is (``Scan``, ``Loop``):
a step of its body copied into the graph, and the slices its steps wrote stacked."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer

__all__ = ["body_constants", "copy_step", "has_subgraphs", "replace_outputs", "stacked"]


def has_subgraphs(body: ir.Graph) -> bool:
    """Whether a node of ``body`` has a graph attribute (a loop or a branch of its own)."""
    return any(isinstance(a, ir.Attr) and a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
               for node in body for a in node.attributes.values())


def body_constants(graph: ir.Graph, body: ir.Graph, name: str) -> dict[ir.Value, ir.Value]:
    """``body``'s initializers (the optimizer lifts a body's constants into them) as
    initializers of ``graph``, once for every step: body value -> graph value."""
    return {value: add_initializer(graph, f"{name}__{value.name}", value.const_value.numpy())
            for value in body.initializers.values() if value.const_value is not None}


def copy_step(body: ir.Graph, mapping: dict[ir.Value, ir.Value], tag: str) -> tuple[list[ir.Node], list[ir.Value]]:
    """``body``'s nodes copied once, reading ``mapping`` (body inputs -> the values this step
    reads; a value of the outer graph stays itself), their names suffixed with ``tag``; and
    the values of ``body``'s outputs in the copy."""
    made = []
    for inner in body:
        copy = ir.node(inner.op_type, [mapping.get(v, v) if v is not None else None for v in inner.inputs],
                       attributes={k: ir.Attr(k, a.type, a.value) for k, a in inner.attributes.items()},
                       domain=inner.domain, num_outputs=len(inner.outputs),
                       name=f"{inner.name or inner.op_type}__{tag}")
        for old, new in zip(inner.outputs, copy.outputs):
            mapping[old] = new
            new.name = f"{old.name}__{tag}" if old.name else None
            new.type, new.shape = old.type, old.shape
        made.append(copy)
    return made, [mapping.get(v, v) for v in body.outputs]


def stacked(graph: ir.Graph, parts: list[ir.Value], axis: int, name: str, opset: int) -> tuple[list[ir.Node], ir.Value]:
    """The nodes that stack ``parts`` (one slice per step) on a new ``axis``, and the result."""
    made, rows = [], []
    axes = add_initializer(graph, f"{name}__axis", np.asarray([axis], np.int64)) if opset >= 13 else None
    for t, part in enumerate(parts):
        grow = (ir.node("Unsqueeze", [part, axes], name=f"{name}_row{t}") if axes is not None
                else ir.node("Unsqueeze", [part], attributes={"axes": [axis]}, name=f"{name}_row{t}"))
        made.append(grow)
        rows.append(grow.outputs[0])
    stack = ir.node("Concat", rows, attributes={"axis": axis}, name=name)
    made.append(stack)
    return made, stack.outputs[0]


def replace_outputs(graph: ir.Graph, node: ir.Node, made: list[ir.Node], results: list[ir.Value], kind: str) -> None:
    """``made`` inserted before the loop ``node``, whose outputs become ``results`` (each
    keeping the loop output's name, type and shape), and the loop removed. A result that is
    no output of ``made`` (a state the body passes through unchanged, a value of the graph)
    is carried by an ``Identity`` that takes the name."""
    graph.insert_before(node, made)
    ours = {id(v) for step in made for v in step.outputs}
    for old, new in zip(node.outputs, results):
        if old is None or new is None:
            continue
        if id(new) not in ours:
            through = ir.node("Identity", [new], name=f"{node.name or kind}__state")
            graph.insert_before(node, [through])
            new = through.outputs[0]
        ours.discard(id(new))
        new.type, new.shape = old.type, old.shape
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        new.name, old.name = old.name, f"{old.name}__{kind}"
    graph.remove(node, safe=True)
