"""A ``Loop`` whose trip count the graph's constants decide, as its body once per step.

TFLite has no ``Loop`` (its ``WHILE`` runs subgraphs XNNPACK does not take). tf2onnx
writes each Keras recurrent layer as one: ``Loop(M, cond)`` over a body that counts its
steps in loop-carried integers and stops when a counter reaches the sequence length
(``cond = (counter + 1 < M) and (t + 1 < steps)``), and the sequence length is a
constant once the input shapes are. The trip count is then found by running only what
``cond`` depends on (those counters, from their constant starting values) with ONNX's
reference evaluator, and the loop becomes its body written out that many times: step
``t`` reads ``t`` as its iteration number, ``True`` as its condition (the step before
said go on), and the states the step before wrote; the scan outputs are stacked on a
new first axis. That is the loop's definition, so it is exact. chars2vec (two Keras
LSTMs, 12 steps each) was refused on Android for its ``Loop``.

A loop whose condition depends on anything else (the data: SLANet's decoder stops at an
end token) stays a ``Loop``, as does a body with subgraphs of its own, one of over
:data:`deploycomp.passes.scan_unroll.MAX_STEPS` steps or over
:data:`~deploycomp.passes.scan_unroll.MAX_NODES` nodes written out, and one of no step
with scan outputs (their shape is the body's); a backend that cannot run it says so.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer
from deploycomp.node_eval import node_function
from deploycomp.passes.scan_unroll import MAX_NODES, MAX_STEPS
from deploycomp.passes.unrolling import body_constants, copy_step, has_subgraphs, replace_outputs, stacked

__all__ = ["LoopUnrollPass", "trip_count"]


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _control(body: ir.Graph, carried: int) -> tuple[list[ir.Node], list[int]] | None:
    """The body's nodes the condition depends on, in graph order, and the loop-carried
    states among them (by position); None where it reads a value of the outer graph that
    is not a constant."""
    inputs = {id(v): i for i, v in enumerate(body.inputs)}
    producer = {id(o): n for n in body for o in n.outputs if o is not None}
    needed, states, stack, seen = set(), set(), [body.outputs[0]], set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if id(value) in inputs:
            position = inputs[id(value)]
            if position >= 2:  # a state: its next value is part of the control too
                states.add(position - 2)
                stack.append(body.outputs[1 + position - 2])
            continue
        node = producer.get(id(value))
        if node is None:
            if _constant(value) is None:
                return None
            continue
        needed.add(id(node))
        stack.extend(v for v in node.inputs if v is not None)
    if any(s >= carried for s in states):
        return None
    return [n for n in body if id(n) in needed], sorted(states)


def trip_count(node: ir.Node, opset: int, limit: int = MAX_STEPS) -> int | None:
    """How many steps the ``Loop`` ``node`` runs, where its constants decide it (see the
    module docstring); None where they do not, or past ``limit``."""
    body = node.attributes["body"].as_graph()
    carried = len(node.inputs) - 2
    if carried < 0 or len(body.inputs) != carried + 2 or len(body.outputs) < carried + 1:
        return None
    m = _constant(node.inputs[0]) if node.inputs[0] is not None else None
    if node.inputs[0] is not None and m is None:
        return None
    go = _constant(node.inputs[1]) if node.inputs[1] is not None else np.asarray(True)
    if go is None:
        return None
    trips = int(m.reshape(())) if m is not None else None
    found = _control(body, carried)
    if found is None:
        return None
    nodes, states = found
    starts = [_constant(node.inputs[2 + s]) for s in states]
    if any(s is None for s in starts):
        return None
    if not nodes and not states:  # the condition is a body input passed on, or a constant
        cond = body.outputs[0]
        steady = bool(go) if cond is body.inputs[1] else (_constant(cond) if cond.producer() is None else None)
        if steady is None:
            return None
        if not bool(go) or trips == 0:
            return 0
        if not bool(steady):  # (one step, which says stop)
            return 1
        return trips if trips is not None and trips <= limit else None
    outer = {}  # constants of the body or the outer graph the control reads
    for n in nodes:
        for v in n.inputs:
            if v is not None and v.producer() not in nodes and v not in body.inputs and (c := _constant(v)) is not None:
                outer[v.name] = c
    names = [body.inputs[0].name, body.inputs[1].name] + [body.inputs[2 + s].name for s in states]
    outs = [body.outputs[0].name] + [body.outputs[1 + s].name for s in states]
    count, cond, values = 0, bool(go), list(starts)
    try:
        step = node_function([ir.serde.serialize_node(n) for n in nodes],
                             dict(zip(names, [np.asarray(0, np.int64), np.asarray(True), *starts])), outs, outer, opset)
        while cond and (trips is None or count < trips):
            if count >= limit:
                return None
            got = step(**{names[0]: np.asarray(count, np.int64), names[1]: np.asarray(cond)},
                       **dict(zip(names[2:], values)))
            cond, values, count = bool(np.asarray(got[0]).reshape(())), list(got[1:]), count + 1
    except Exception:  # an op the evaluator does not know: the loop stays
        return None
    return count


class LoopUnrollPass(ir.passes.InPlacePass):
    """Each ``Loop`` of the main graph whose trip count its constants decide (at most
    :data:`~deploycomp.passes.scan_unroll.MAX_STEPS` steps) becomes its body written out
    once per step (see the module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 17))
        for node in list(graph):
            if node.op_type != "Loop" or node.domain not in ("", "ai.onnx") or "body" not in node.attributes:
                continue
            body = node.attributes["body"].as_graph()
            if has_subgraphs(body):
                continue
            steps = trip_count(node, opset)
            scans = len(body.outputs) - (len(node.inputs) - 1)
            if steps is None or (steps == 0 and scans) or steps * (len(body) + scans) > MAX_NODES:
                continue
            self._unroll(graph, node, steps, opset)
            modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _unroll(graph: ir.Graph, node: ir.Node, steps: int, opset: int) -> None:
        body = node.attributes["body"].as_graph()
        carried = len(node.inputs) - 2
        name = node.name or "loop"
        states = list(node.inputs[2:])
        go = add_initializer(graph, f"{name}__go", np.asarray(True))
        made: list[ir.Node] = []
        slices: list[list[ir.Value]] = [[] for _ in range(len(body.outputs) - 1 - carried)]
        constants = body_constants(graph, body, name)
        for t in range(steps):
            mapping = {**constants, body.inputs[0]: add_initializer(graph, f"{name}__step{t}", np.asarray(t, np.int64)),
                       body.inputs[1]: go, **dict(zip(body.inputs[2:], states))}
            step, outs = copy_step(body, mapping, f"{name}_step{t}")
            made.extend(step)
            states = outs[1:1 + carried]
            for j, value in enumerate(outs[1 + carried:]):
                slices[j].append(value)
        results: list[ir.Value] = list(states)
        for j, parts in enumerate(slices):
            nodes, value = stacked(graph, parts, 0, f"{name}__out{j}", opset)
            made.extend(nodes)
            results.append(value)
        replace_outputs(graph, node, made, results, "loop")
