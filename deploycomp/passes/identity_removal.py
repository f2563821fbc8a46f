"""Remove Identity nodes, in every graph and subgraph, without changing any output.

``y = Identity(x)`` is dropped by rewiring ``y``'s consumers to ``x``. When ``y`` is an
output of its graph, ``x`` takes over both the output slot and the name ``y``, which is
only sound when ``x`` is produced by a node of that same graph and is not itself an
output of it. So the node is kept when ``y`` is a graph output and ``x`` is

* a graph input or initializer (the output needs its own value),
* already an output of the graph (two outputs would become one value: a Scan or
  Loop body returning the same value as state and as scan output breaks), or
* produced outside the graph (an outer-scope value captured by a subgraph).

onnx-ir's IdentityEliminationPass misses the last two; ONNX's Scan node tests
(``test_scan9_*``) caught it.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["IdentityRemovalPass"]


def _removable(node: ir.Node) -> bool:
    if node.op_type != "Identity" or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return False
    x, y = (node.inputs[0] if node.inputs else None), node.outputs[0]
    if x is None:
        return False
    if not y.is_graph_output():
        return True
    graph = node.graph
    producer = x.producer()
    return (
        producer is not None
        and producer.graph is graph
        and not x.is_graph_input()
        and not x.is_initializer()
        and x not in graph.outputs
    )


class IdentityRemovalPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if not _removable(node):
                continue
            x, y = node.inputs[0], node.outputs[0]
            if x.type is None:
                x.type = y.type
            if x.shape is None:
                x.shape = y.shape
            is_output = y.is_graph_output()
            ir.convenience.replace_all_uses_with(y, x, replace_graph_outputs=True)
            if is_output:
                x.name = y.name
            node.graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
