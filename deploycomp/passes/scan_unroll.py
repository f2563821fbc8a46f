"""A ``Scan`` of a known length as its body, once per step.

TFLite has no ``Scan``: its control flow is ``WHILE`` over subgraphs, which XNNPACK does
not take. Where the trip count is in the shapes (every scan input's scan axis static),
the loop is its body written out that many times: step ``t`` reads slice ``t`` of each
scan input (a ``Gather`` on the scan axis, from the end for a reversed one), the states
the step before wrote, and writes its states and scan-output slices, which are stacked
on their axis at the end. That is the loop's definition, so it is exact. scikit-learn's
nearest-neighbour classifiers reach ONNX as one (skl2onnx writes the distance to each of
the training points as a ``Scan`` over them), and TFLite refused them by name.

Only bodies without subgraphs of their own, and only up to :data:`MAX_STEPS` steps and
:data:`MAX_NODES` nodes written out: a long recurrence stays a ``Scan`` and a backend
that cannot run one says so.
"""

from __future__ import annotations

import onnx_ir as ir
import numpy as np

from deploycomp.ir import add_initializer
from deploycomp.passes.unrolling import body_constants, copy_step, has_subgraphs, replace_outputs, stacked

__all__ = ["MAX_NODES", "MAX_STEPS", "ScanUnrollPass"]

MAX_STEPS = 512
"""The longest ``Scan`` written out."""

MAX_NODES = 20_000
"""The most nodes a ``Scan`` may become."""


def _ints(node: ir.Node, name: str, count: int, default: int) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else [default] * count


def _plan(node: ir.Node) -> tuple[int, list[int], list[int], list[int], list[int]] | None:
    """(steps, scan input axes, their directions, scan output axes, their directions) of a
    ``Scan`` that can be written out, else None."""
    if node.op_type != "Scan" or node.domain not in ("", "ai.onnx") or "body" not in node.attributes:
        return None
    body = node.attributes["body"].as_graph()
    m = node.attributes.get_int("num_scan_inputs", 0)
    n = len(node.inputs) - m
    if m < 1 or n < 0 or len(body.inputs) != n + m or len(body.outputs) != len(node.outputs):
        return None
    if has_subgraphs(body):
        return None
    scans = node.inputs[n:]
    if any(v is None or v.shape is None or not v.shape.is_static() for v in scans):
        return None
    in_axes = [a % len(v.shape) for a, v in zip(_ints(node, "scan_input_axes", m, 0), scans)]
    steps = {v.shape[a] for a, v in zip(in_axes, scans)}
    k = len(node.outputs) - n
    out_axes = _ints(node, "scan_output_axes", k, 0)
    if len(steps) != 1 or len(in_axes) != m or len(out_axes) != k:
        return None
    count = steps.pop()
    if not 0 < count <= MAX_STEPS or count * (len(body) + m + k) > MAX_NODES:
        return None
    if any(a < 0 for a in out_axes):  # relative to the stacked rank: needs the slices' rank
        ranks = [body.outputs[n + j].shape for j in range(k)]
        if any(r is None for r in ranks):
            return None
        out_axes = [a % (len(r) + 1) for a, r in zip(out_axes, ranks)]
    return (count, in_axes, _ints(node, "scan_input_directions", m, 0), out_axes,
            _ints(node, "scan_output_directions", k, 0))


class ScanUnrollPass(ir.passes.InPlacePass):
    """Each ``Scan`` of the main graph that :func:`_plan` accepts becomes its body written
    out once per step (see the module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 17))
        if self.opset < 9:  # Scan-8 scans a batch with sequence lengths: another form
            return ir.passes.PassResult(model, False)
        for node in list(graph):
            plan = _plan(node)
            if plan is not None:
                self._unroll(graph, node, *plan)
                modified = True
        return ir.passes.PassResult(model, modified)

    def _unroll(self, graph: ir.Graph, node: ir.Node, steps: int, in_axes: list[int], in_dirs: list[int],
                out_axes: list[int], out_dirs: list[int]) -> None:
        body = node.attributes["body"].as_graph()
        m = node.attributes.get_int("num_scan_inputs", 0)
        n = len(node.inputs) - m
        states, scans = list(node.inputs[:n]), list(node.inputs[n:])
        name = node.name or "scan"
        made: list[ir.Node] = []
        slices: list[list[ir.Value]] = [[] for _ in range(len(node.outputs) - n)]
        index = {t: add_initializer(graph, f"{name}__step{t}", np.asarray(t, np.int64)) for t in range(steps)}
        constants = body_constants(graph, body, name)
        for t in range(steps):
            mapping: dict[ir.Value, ir.Value] = {**constants, **dict(zip(body.inputs[:n], states))}
            for j, (x, axis, reverse) in enumerate(zip(scans, in_axes, in_dirs)):
                pick = ir.node("Gather", [x, index[steps - 1 - t if reverse else t]], attributes={"axis": axis},
                               name=f"{name}__in{j}_step{t}")
                made.append(pick)
                mapping[body.inputs[n + j]] = pick.outputs[0]
            step, outs = copy_step(body, mapping, f"{name}_step{t}")
            made.extend(step)
            states = outs[:n]
            for j, value in enumerate(outs[n:]):
                slices[j].append(value)
        results: list[ir.Value] = list(states)
        for j, (parts, axis, reverse) in enumerate(zip(slices, out_axes, out_dirs)):
            nodes, value = stacked(graph, parts[::-1] if reverse else parts, axis, f"{name}__out{j}", self.opset)
            made.extend(nodes)
            results.append(value)
        replace_outputs(graph, node, made, results, "scan")
