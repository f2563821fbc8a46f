"""Run only what a change can reach: the part of a model downstream of the nodes a QDQ
copy changed, fed with the float model's own tensors at its frontier.

The quantize-one ranking (:mod:`deploycomp.quant.sensitivity`) runs one model per
searchable node, each the float model with a single node quantized. Everything upstream
of that node is the float model, computed again for every node: on PP-OCRv3 det (95
nodes, 4 samples) those runs were most of the ranking's 34 s. Here the float model runs
once per sample with the frontier tensors as extra outputs (:class:`FloatTaps`), and each
copy is cut to its downstream cone (:func:`downstream_of_changes`); outputs outside the
cone are the float outputs themselves.

The taps of all nodes may not fit in memory at once (PP-PicoDet's layout detector at
800x608: the frontiers of its 205 searchable nodes over 4 samples take 1.4 GB):
:func:`tap_groups` splits the nodes, in graph order, into groups whose taps fit
:func:`tap_budget`, and the float model runs once per group and sample.

A copy is run whole instead when the cut does not apply: a node with subgraphs in the
cone (a ``Loop`` body reads outer-scope tensors no frontier lists), a frontier tensor the
float model does not name or size, or a node whose own taps would not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from deploycomp.memory import available_bytes
from deploycomp.quant.calibrate import tensor_bytes
from deploycomp.quant.sessions import in_place_reference

__all__ = ["Cut", "FloatTaps", "TAP_BUDGET_BYTES", "downstream_of_changes", "frontier_of", "tap_budget", "tap_groups"]

TAP_BUDGET_BYTES = 2 << 30
"""At most this many bytes of float tensors are kept for all samples together, and at
most a quarter of the memory available (:func:`tap_budget`). The frontiers of every node
of a 640x640 detector over 4 samples take about 0.5 GB, of an 800x608 one 1.4 GB: under
1 GB, the lazy ranking took the layout detector's taps again for every group it opened
(49 float runs, 8 s of a 37 s build)."""

MIN_TAP_BUDGET_BYTES = 256 << 20


def tap_budget() -> int:
    """:data:`TAP_BUDGET_BYTES`, or a quarter of the memory available now if less (not
    under 256 MB); 1 GB where the available memory is unknown."""
    available = available_bytes()
    if available is None:
        return min(TAP_BUDGET_BYTES, 1 << 30)
    return min(TAP_BUDGET_BYTES, max(MIN_TAP_BUDGET_BYTES, available // 4))


@dataclass
class Cut:
    model: bytes
    """The serialized sub-model: the cone's nodes, the frontier tensors as its inputs."""
    inputs: list[str]
    outputs: list[str]
    """The graph outputs the cone computes (the others keep their float values)."""
    weights: tuple[tuple[str, np.ndarray], ...] = ()
    """The large weights ``model`` references in place (:func:`deploycomp.quant.sessions.session`
    takes them): a ViT's cut near its input had serialized 97 MB for every unit ranked."""


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name a node may read: its inputs and whatever its subgraphs name (an
    ``If`` branch reads outer-scope tensors that are not among the node's inputs)."""
    names = {name for name in node.input if name}
    for attr in node.attribute:
        for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else
                      attr.graphs if attr.type == onnx.AttributeProto.GRAPHS else []):
            for inner in graph.node:
                names |= _reads(inner)
    return names


def _cone(graph: onnx.GraphProto, start: set[str]) -> tuple[list[onnx.NodeProto], list[str]]:
    """The nodes named in ``start`` and everything downstream of them, in the graph's
    (topological) order, and the tensors they read that none of them writes (initializers
    aside): the frontier."""
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in _reads(node):
            readers.setdefault(name, []).append(i)
    cone: set[int] = {i for i, n in enumerate(graph.node) if n.name in start}
    todo = list(cone)
    while todo:
        for out in graph.node[todo.pop()].output:
            for j in readers.get(out, ()):
                if j not in cone:
                    cone.add(j)
                    todo.append(j)
    nodes = [graph.node[i] for i in sorted(cone)]
    produced = {o for n in nodes for o in n.output}
    initializers = {t.name for t in graph.initializer}
    frontier: list[str] = []
    for node in nodes:
        for name in node.input:
            if name and name not in produced and name not in initializers and name not in frontier:
                frontier.append(name)
    return nodes, frontier


def frontier_of(float_model: onnx.ModelProto, nodes: str | Sequence[str]) -> list[str]:
    """The float tensors a copy with ``nodes`` (one name or several) changed reads at its
    cut (its QDQ nodes read the nodes' own inputs, which the frontier holds already)."""
    return _cone(float_model.graph, {nodes} if isinstance(nodes, str) else set(nodes))[1]


def downstream_of_changes(float_nodes: Mapping[str, Sequence[str]], changed: onnx.ModelProto | ir.Model,
                          seeds: Sequence[str], available: Mapping[str, int]) -> Cut | None:
    """The part of ``changed`` that can differ from the float model: the nodes named in
    ``seeds``, every node the float model lacks or whose inputs it wires otherwise
    (``float_nodes``: name -> inputs), and everything downstream of those; ``None`` where
    the cut does not apply (see the module docstring). ``available``: the float tensors
    the taps hold, with their ONNX element types.

    An ``ir.Model`` is cut before it is serialized (:func:`_cut_ir`): serializing the
    whole copy and then cutting it took 27 of the 51 ms a PP-OCRv5 rec unit cost in
    Python, with the ranking's threads waiting on each other for the interpreter."""
    if isinstance(changed, ir.Model):
        if not any(_ir_has_subgraph(n) for n in changed.graph):
            return _cut_ir(float_nodes, changed, seeds, available)
        changed = ir.to_proto(changed)
    graph = changed.graph
    start = set(seeds) | {n.name for n in graph.node if float_nodes.get(n.name) != list(n.input)}
    nodes, frontier = _cone(graph, start)
    if any(_has_subgraph(n) for n in nodes) or not set(frontier) <= set(available):
        return None
    produced = {o for n in nodes for o in n.output}
    used = {name for n in nodes for name in n.input}
    sub = onnx.helper.make_graph(
        nodes, graph.name, [onnx.helper.make_tensor_value_info(name, available[name], None) for name in frontier],
        [o for o in graph.output if o.name in produced], [t for t in graph.initializer if t.name in used])
    model = onnx.helper.make_model(sub, opset_imports=changed.opset_import, ir_version=changed.ir_version)
    model.functions.extend(changed.functions)
    return Cut(model.SerializeToString(), frontier, [o.name for o in graph.output if o.name in produced])


def _ir_has_subgraph(node: ir.Node) -> bool:
    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())


def _named(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    tensor.name = name
    return tensor


def _cut_ir(float_nodes: Mapping[str, Sequence[str]], changed: ir.Model, seeds: Sequence[str],
            available: Mapping[str, int]) -> Cut | None:
    """:func:`downstream_of_changes` on a model without subgraphs, serializing only the cone
    (the same nodes, frontier and outputs as the ModelProto path: a test checks it)."""
    graph = changed.graph
    start = set(seeds)
    order: dict[ir.Node, int] = {}
    for i, node in enumerate(graph):
        order[node] = i
        if node.name in start or float_nodes.get(node.name) != [v.name if v is not None else "" for v in node.inputs]:
            start.add(node.name)
    cone = {node for node in graph if node.name in start}
    todo = list(cone)
    while todo:
        for out in todo.pop().outputs:
            for user, _ in out.uses():
                if user not in cone and user in order:
                    cone.add(user)
                    todo.append(user)
    nodes = sorted(cone, key=order.__getitem__)
    produced = {v.name for n in nodes for v in n.outputs}
    frontier: list[str] = []
    used: dict[str, ir.Value] = {}
    for node in nodes:
        for value in node.inputs:
            if value is None or not value.name or value.name in produced:
                continue
            if value.is_initializer():
                used[value.name] = value
            elif value.name not in frontier:
                frontier.append(value.name)
    if not set(frontier) <= set(available):
        return None
    outputs = [v for v in graph.outputs if v.name in produced]
    tensors, weights = [], []
    for name, v in used.items():
        reference = in_place_reference(name, v.const_value)
        if reference is not None:
            weights.append((name, reference[1]))
        tensors.append(_named(ir.serde.serialize_tensor(reference[0] if reference else v.const_value), name))
    sub = onnx.helper.make_graph(
        [ir.serde.serialize_node(n) for n in nodes], graph.name or "cut",
        [onnx.helper.make_tensor_value_info(name, available[name], None) for name in frontier],
        [ir.serde.serialize_value(v) for v in outputs], tensors)
    model = onnx.helper.make_model(sub, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in changed.opset_imports.items()],
                                   ir_version=changed.ir_version)
    model.functions.extend(ir.serde.serialize_function(f) for f in changed.functions.values())
    return Cut(model.SerializeToString(), frontier, [v.name for v in outputs], tuple(weights))


def tap_groups(model: ir.Model, frontiers: Mapping[str, Sequence[str]], samples: int,
               budget: int | None = None) -> list[tuple[list[str], set[str] | None]]:
    """``frontiers`` (node -> its frontier tensors, in graph order) split into groups whose
    taps on ``samples`` samples fit ``budget`` (:func:`tap_budget`): (nodes in graph
    order, tensors to tap); tensors ``None`` for a node that runs whole (its taps unknown
    in size or too large on their own)."""
    budget = tap_budget() if budget is None else budget
    sizes = tensor_bytes(model, {t for f in frontiers.values() for t in f})
    groups: list[tuple[list[str], set[str] | None]] = []
    nodes: list[str] = []
    tensors: set[str] = set()
    used = 0
    for node, frontier in frontiers.items():
        need = [sizes[t] for t in frontier]
        alone = None if None in need else sum(need) * samples
        if alone is None or alone > budget:
            groups.append(([node], None))
            continue
        extra = sum(sizes[t] for t in set(frontier) - tensors) * samples
        if nodes and used + extra > budget:
            groups.append((nodes, tensors))
            nodes, tensors, used = [], set(), 0
            extra = alone
        nodes.append(node)
        tensors |= set(frontier)
        used += extra
    if nodes:
        groups.append((nodes, tensors))
    return groups


class FloatTaps:
    """The float model's tensors named ``names`` on each sample (graph inputs come from
    the samples themselves), or ``None`` from :meth:`collect` when they would not fit."""

    def __init__(self, values: list[dict[str, np.ndarray]], types: dict[str, int]):
        self.values = values
        self.types = types
        """Every tapped tensor's (and graph input's) ONNX element type."""

    @staticmethod
    def collect(model: ir.Model, names: set[str], samples: Sequence[Mapping[str, np.ndarray]],
                run) -> "FloatTaps | None":
        """``run(model, samples)``: each sample's outputs of an ``ir.Model``."""
        inputs = {v.name for v in model.graph.inputs}
        by_name = {v.name: v for node in model.graph for v in node.outputs}
        wanted = sorted(names - inputs)
        sizes = tensor_bytes(model, set(wanted))
        if None in sizes.values() or sum(sizes.values()) * len(samples) > tap_budget():
            return None
        tapped = model.clone()
        taken = {v.name for v in tapped.graph.outputs}
        clone_values = {v.name: v for node in tapped.graph for v in node.outputs}
        for name in wanted:
            if name not in taken:
                tapped.graph.outputs.append(clone_values[name])
        outs = run(tapped, samples)
        types = {v.name: int(v.dtype.value) for v in model.graph.inputs if v.dtype is not None}
        types.update({name: int(by_name[name].dtype.value) for name in wanted})
        return FloatTaps([{**{k: np.asarray(v) for k, v in s.items()}, **{k: o[k] for k in wanted}}
                          for s, o in zip(samples, outs)], types)
