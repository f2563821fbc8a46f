"""Core nodes written in place of one node of the user's model.

The passes that rewrite an op as others (:mod:`deploycomp.passes.contrib_ops`,
:mod:`deploycomp.passes.qoperator`) name each node they make, and its output, after the
node it replaces (``<node>__<op><i>``): a backend's refusal, a latency profile or a
``--keep-float`` pattern then points back at a node the user can find in their model.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["Replacement"]


class Replacement:
    """The nodes made for ``node`` in ``graph``, in order, to be inserted before it."""

    def __init__(self, graph: ir.Graph, node: ir.Node):
        self.graph, self.nodes = graph, []
        self.base = node.name or node.outputs[0].name

    def __call__(self, op_type: str, *inputs: ir.Value | None, **attributes) -> ir.Value:
        """A new ``op_type`` node reading ``inputs``; its (first) output."""
        return self.node(op_type, *inputs, **attributes).outputs[0]

    def node(self, op_type: str, *inputs: ir.Value | None, num_outputs: int = 1, **attributes) -> ir.Node:
        """A new ``op_type`` node reading ``inputs`` with ``num_outputs`` outputs, named
        ``<node>__<op><i>`` (its first output too; others ``..._<k>``)."""
        made = ir.node(op_type, list(inputs), attributes=attributes or None, num_outputs=num_outputs,
                       name=f"{self.base}__{op_type.lower()}{len(self.nodes)}")
        for k, out in enumerate(made.outputs):
            out.name = made.name if k == 0 else f"{made.name}_{k}"
        self.nodes.append(made)
        return made
