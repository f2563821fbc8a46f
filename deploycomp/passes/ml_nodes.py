"""Core-op nodes written in place of one ``ai.onnx.ml`` op (:mod:`deploycomp.passes.ml_ops`,
:mod:`deploycomp.passes.ml_trees`, :mod:`deploycomp.passes.ml_svm`)."""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["Emitter"]


class Emitter:
    """``add(op, inputs, suffix, **attributes)`` appends a node named after the ML op it
    replaces (``<name>__<suffix>``, so a refusal or a profile points at it) to ``nodes``
    and returns its first output."""

    def __init__(self, name: str, nodes: list[ir.Node]):
        self.name, self.nodes = name, nodes

    def __call__(self, op: str, inputs: list, suffix: str, **attributes) -> ir.Value:
        made = ir.node(op, inputs, attributes=attributes, name=f"{self.name}__{suffix}")
        self.nodes.append(made)
        return made.outputs[0]
