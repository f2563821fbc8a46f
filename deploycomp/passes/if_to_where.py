"""An ``If`` as both of its branches and a ``Where`` by its condition.

ONNX branches have no side effects, so computing both and selecting by the condition
is exact. It costs the branch not taken, and is what a backend without lazy control flow
does anyway (TFLite: XNNPACK takes no IF subgraph, so the lowering computed both and a
SELECT_V2 already). As an ONNX rewrite it happens before the int8 flow rather than while
lowering, and the branches' layers become layers of the graph: calibrated, quantized and
searched like any other. A wake-word model's verifier head (3 of its 6 Gemms) sat in an
``If`` the QDQ pass does not enter, and stayed float on TFLite.

Rewritten only where it is exact and shape-safe: each pair of branch outputs tensors of
one static shape and type (a ``Where`` would broadcast different shapes into a third).
An ``If`` with a constant condition is left to constant folding, which inlines the taken
branch.
"""

from __future__ import annotations

import math
from collections import Counter

import onnx_ir as ir

from deploycomp.ir import replace_value

__all__ = ["IfToWherePass"]


def _rewritable(node: ir.Node) -> bool:
    if node.op_type != "If" or node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
        return False
    cond = node.inputs[0]
    if cond.const_value is not None or cond.shape is None or not cond.shape.is_static():
        return False
    if math.prod(cond.shape.numpy()) != 1:
        return False
    then, other = (node.attributes[a].as_graph() for a in ("then_branch", "else_branch"))
    if not (len(then.outputs) == len(other.outputs) == len(node.outputs)):
        return False
    for a, b in zip(then.outputs, other.outputs):
        if not isinstance(a.type, ir.TensorType):  # a sequence or an optional: Where selects tensors only
            return False
        if a.shape is None or b.shape is None or not a.shape.is_static() or a.shape != b.shape or a.type != b.type:
            return False
        if len(a.shape) < len(cond.shape):  # a [1] condition would broadcast a scalar output to [1]
            return False
    return True


def _hoist(branch: ir.Graph, graph: ir.Graph, before: ir.Node, names: set[str]) -> None:
    """Move ``branch``'s initializers and nodes into ``graph``, before ``before``; a name
    ``graph`` has already (sibling branches may both name a value ``x``) takes a suffix."""
    def unique(value: ir.Value) -> None:
        while value.name in names:
            value.name = f"{value.name}__{branch.name or 'branch'}"
        names.add(value.name)

    for name in list(branch.initializers):
        value = branch.initializers.pop(name)
        unique(value)
        graph.register_initializer(value)
    for node in list(branch):
        branch.remove(node)
        for value in node.outputs:
            unique(value)
        graph.insert_before(before, node)


def _defined(graph: ir.Graph) -> Counter:
    """Each name ``graph`` and its subgraphs define, with how often."""
    names = Counter(v.name for v in graph.inputs)
    names.update(list(graph.initializers))  # (a mapping would be taken as counts)
    names.update(v.name for n in ir.traversal.RecursiveGraphIterator(graph) for v in n.outputs)
    return names


class IfToWherePass(ir.passes.InPlacePass):
    """Each rewritable ``If`` of the main graph (the branches' own ``If``s after them, as
    they come to the main graph) becomes its branches' nodes and one ``Where`` per output."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        pending = [n for n in graph if _rewritable(n)]
        while pending:
            node = pending.pop(0)
            then, other = (node.attributes[a].as_graph() for a in ("then_branch", "else_branch"))
            names = set(_defined(graph) - _defined(then) - _defined(other))  # what the hoisted ones must not be
            cond = node.inputs[0]
            pairs = list(zip(node.outputs, then.outputs, other.outputs))
            inner = [n for branch in (then, other) for n in branch if _rewritable(n)]
            for branch in (then, other):
                _hoist(branch, graph, node, names)
            for i, (out, a, b) in enumerate(pairs):
                where = ir.node("Where", [cond, a, b], name=f"{node.name or out.name}__where{i}")
                where.outputs[0].shape, where.outputs[0].type = out.shape or a.shape, out.type or a.type
                graph.insert_before(node, where)
                replace_value(out, where.outputs[0], "__if")
            graph.remove(node, safe=True)
            pending.extend(inner)
            modified = True
        return ir.passes.PassResult(model, modified)
