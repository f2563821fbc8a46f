"""Drop initializers nothing reads, in subgraphs as well as the main graph.

onnx-ir's RemoveUnusedNodesPass prunes main-graph initializers only. Folding inside
``If``/``Loop`` bodies (Silero VAD's LSTM weights, for one) leaves the originals behind
in the subgraph, and the saved model would grow instead of shrink.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["RemoveUnusedInitializersPass"]


class RemoveUnusedInitializersPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in [model.graph, *model.graph.subgraphs()]:
            for name, value in list(graph.initializers.items()):
                if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
                    del graph.initializers[name]
                    modified = True
        return ir.passes.PassResult(model, modified)
