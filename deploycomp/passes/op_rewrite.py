"""A pass that rewrites each node of some core op types, one node at a time."""

from __future__ import annotations

import abc

import onnx_ir as ir

__all__ = ["OpRewritePass"]


class OpRewritePass(ir.passes.InPlacePass):
    """Calls :meth:`rewrite` on every node of :attr:`op_types` (core domain, subgraphs
    included, a snapshot of the graph: a rewrite may add and remove nodes); modified when
    any call says it changed something."""

    op_types: frozenset[str] = frozenset()

    @abc.abstractmethod
    def rewrite(self, node: ir.Node, model: ir.Model) -> bool:
        """Rewrite ``node`` in place; whether anything changed."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.op_type in self.op_types and node.domain in ("", "ai.onnx"):
                modified |= self.rewrite(node, model)
        return ir.passes.PassResult(model, modified)
