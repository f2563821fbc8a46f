"""What a graph is and costs: I/O, opsets, op histogram, parameters, MACs and bytes.

Used by ``deploycomp inspect`` and by the roofline latency estimate. MACs are counted
for the ops that dominate inference (Conv, ConvTranspose, MatMul, Gemm, and LSTM, GRU and
RNN: their input and state products at every step); everything
else is counted as memory traffic only. Counts need static shapes: on a model with
dynamic dims the unknown nodes are listed instead of guessed.

Bytes moved is estimated as weights read once plus every activation written once and
read once, at the precision the target executes: the usual roofline simplification
that ignores cache reuse, so it bounds memory time from above.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import onnx_ir as ir

from deploycomp.ir import float_only, uses_through
from deploycomp.shapes import dynamic_dims, input_shapes

__all__ = ["COMPARISONS", "ELEMENTWISE", "MOVES", "SELECTIONS", "GraphCost", "analyze", "angle_outputs", "compared",
           "control_flow_layers", "cpu_split", "dim_values", "int8_mac_share", "integer_valued_inputs", "level_outputs", "lookup_ranges",
           "mac_share", "nan_inputs", "node_macs", "RECURRENT", "REPEATING", "roofline_ms"]

MOVES = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
"""Ops whose output holds their data input's elements, only rearranged (any other input
is a shape or axes): each commutes with anything done to every element alike."""

SELECTIONS = frozenset({"Slice", "Gather", "Split", "Concat", "Expand", "Tile", "Pad"})
"""Ops whose output holds some of their data inputs' elements, repeated or selected (a
Pad's added values aside)."""

COMPARISONS = frozenset({"Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal", "Sign"})
"""Ops whose output decides on their inputs' exact values (a tree's split, a threshold, a
one-class SVM's side): an input rounded to a coarser grid (int8 steps, fp16) moves
values across the boundary."""


ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Clip", "Relu", "LeakyRelu",
                         "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Pow", "Where", "Cast"})
"""Ops that compute each output element from the inputs' elements at the same place."""


def compared(graph: ir.Graph) -> set[int]:
    """The ids of ``graph``'s nodes whose inputs reach a :data:`COMPARISONS` op element
    for element: comparisons, and nodes that only move, select or compute elements one by
    one on the way to one (a scikit-learn pipeline's scaled features, gathered for each
    split of a tree). One pass from the last node up."""
    found: set[int] = set()
    for node in reversed(list(graph)):
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in COMPARISONS or (node.op_type in MOVES | SELECTIONS | ELEMENTWISE and any(
                id(user) in found for out in node.outputs if out is not None for user, _ in out.uses())):
            found.add(id(node))
    return found


def angle_outputs(graph: ir.Graph) -> list[str]:
    """The graph outputs holding an ``Atan``'s result, moved, selected or computed from element
    for element (tf2onnx's atan2: ``Atan`` and a ``Where`` adding pi; a head's ``Concat``).
    Such a value wraps at +-pi: where it lies near the cut, two runtimes (or int8 and float)
    can put it on either side, 2 pi apart, and cosine counts that as a large error though
    the angle barely moved (a fingerprint model's direction map: 19-27 of 213k pixels, on
    which its int8 and fp16 searches spent minutes). ``Sin``/``Cos`` of it do not wrap."""
    found: set[int] = set()
    outputs: list[str] = []
    graph_outputs = {id(v) for v in graph.outputs}
    for node in graph:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Atan" or (node.op_type in MOVES | SELECTIONS | ELEMENTWISE and any(
                v is not None and v.producer() is not None and id(v.producer()) in found for v in node.inputs)):
            found.add(id(node))
            outputs += [v.name for v in node.outputs if v is not None and id(v) in graph_outputs]
    return outputs


BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


@dataclass
class GraphCost:
    inputs: dict[str, list]
    outputs: dict[str, list]
    opsets: dict[str, int]
    op_histogram: dict[str, int]
    nodes: int
    parameters: int
    weight_bytes: int
    macs: int
    activation_elements: int
    dynamic_inputs: dict[str, list[int]]
    uncounted_nodes: list[str] = field(default_factory=list)
    uncosted_ops: dict[str, int] = field(default_factory=dict)
    """Ops of :data:`UNCOSTED` in the model, by type: compute the FLOPs leave out."""
    unsized_tensors: int = 0
    """Node outputs of no known size (a size computed from an input's values): the bytes
    moved leave them out, so a roofline estimate is a lower bound."""
    memory_elements: int = 0
    """The activation elements a runtime that fuses element-wise ops into their producers
    writes to memory (:func:`_in_memory`): what the roofline's memory time counts."""
    kernels: int = 0
    """Nodes that end such a fused group (each a kernel a runtime launches)."""
    io_elements: int = 0
    """Elements of the graph's inputs and outputs: what crosses to an accelerator that keeps
    its activations on chip (a profile's ``on_chip_mb``)."""
    gathered_parameters: int = 0
    """Of the parameters, the elements of tables only a ``Gather`` reads (a text encoder's
    word embeddings): an inference reads the rows it gathers, which its output counts, not
    the table (BERT-base's 23.4M-element table had been counted as read whole each time)."""

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_json(self) -> dict:
        return {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "opsets": self.opsets,
            "nodes": self.nodes,
            "op_histogram": self.op_histogram,
            "parameters": self.parameters,
            "weight_bytes": self.weight_bytes,
            "macs": self.macs,
            "flops": self.flops,
            "activation_elements": self.activation_elements,
            "dynamic_inputs": self.dynamic_inputs,
            "uncounted_nodes": self.uncounted_nodes[:20],
            "uncosted_ops": self.uncosted_ops,
            "unsized_tensors": self.unsized_tensors,
            "memory_elements": self.memory_elements,
            "kernels": self.kernels,
            "io_elements": self.io_elements,
            "gathered_parameters": self.gathered_parameters,
        }


def _static(shape: ir.Shape | None, dims: Mapping[str, int] | None = None) -> list[int] | None:
    """``shape`` as ints; named dims take their value from ``dims`` (see :func:`dim_values`)."""
    if shape is None:
        return None
    out = [d if isinstance(d, int) else (dims or {}).get(getattr(d, "value", None)) for d in shape]
    if not all(isinstance(d, int) and d >= 0 for d in out):
        return None
    return out


def dim_values(graph: ir.Graph, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """The values the graph inputs' named dims take at ``shapes`` (input name -> concrete
    shape, e.g. a sample's): a TensorRT bundle keeps a dynamic batch (``x_d0``) that shape
    inference carries through the graph, and the MAC shares counted at a sample's batch are
    those of every batch (they had been null)."""
    out: dict[str, int] = {}
    for value in graph.inputs:
        if value.shape is None or value.name not in shapes:
            continue
        for d, size in zip(value.shape, shapes[value.name]):
            if not isinstance(d, int) and getattr(d, "value", None):
                out[d.value] = int(size)
    return out


RECURRENT = frozenset({"LSTM", "GRU", "RNN"})
"""Recurrent layers: each step multiplies the input by W and the state by R, for every
gate and direction."""


_CONV_WEIGHT_AT = {"ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1}
"""Convolutions of quantized or fused forms (ONNX Runtime's), by their weight's position:
the same MACs as the Conv they stand for."""
_MATMUL_LIKE = ("MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "FusedMatMul")
UNCOSTED = frozenset({"DynamicQuantizeLSTM", "Attention", "MultiHeadAttention", "GroupQueryAttention", "QAttention",
                      "Einsum"})
"""Ops that compute as much as a layer but whose MACs are not counted here: ``inspect``
names them beside its FLOPs (a diacritizer's two DynamicQuantizeLSTM read as 0 FLOPs)."""


def node_macs(node: ir.Node, dims: Mapping[str, int] | None = None) -> int | None:
    """MACs of one compute node, or None when its shapes are unknown (named dims take their
    value from ``dims``)."""
    if node.op_type in RECURRENT:
        x, w, r = (_static(v.shape, dims) if v is not None else None for v in (list(node.inputs) + [None] * 3)[:3])
        if x is None or w is None or r is None or len(x) != 3:
            return None
        return x[0] * x[1] * (math.prod(w) + math.prod(r))  # steps x batch (either layout) x gate weights
    out = _static(node.outputs[0].shape, dims) if node.outputs else None
    if node.op_type in ("Conv", "ConvTranspose") or node.op_type in _CONV_WEIGHT_AT:
        at = _CONV_WEIGHT_AT.get(node.op_type, 1)
        w = _static(node.inputs[at].shape, dims) if len(node.inputs) > at and node.inputs[at] else None
        x = _static(node.inputs[0].shape, dims)
        if w is None or out is None or x is None:
            return None
        if node.op_type != "ConvTranspose":
            # out: N, Cout, *spatial; w: Cout, Cin/g, *kernel
            return math.prod(out) * math.prod(w[1:])
        # ConvTranspose: each input element scatters into Cout/g * kernel outputs
        return math.prod(x) * math.prod(w[1:])
    if node.op_type in ("MatMul", "Gemm") or node.op_type in _MATMUL_LIKE:
        a = _static(node.inputs[0].shape, dims)
        if a is None or out is None:
            return None
        trans_a = node.attributes.get("transA")
        k = a[-2] if node.op_type == "Gemm" and trans_a is not None and trans_a.as_int() else a[-1]
        return math.prod(out) * k
    return 0


def mac_share(layers: Iterable[ir.Node], selected: Callable[[ir.Node], bool],
              dims: Mapping[str, int] | None = None) -> float | None:
    """The share of ``layers``' MACs in those ``selected`` (to 4 places): what runs int8,
    or fp16; None without static shapes (named dims: ``dims``) or without MACs."""
    macs = [(node_macs(n, dims), selected(n)) for n in layers]
    if not macs or any(m is None for m, _ in macs):
        return None
    total = sum(m for m, _ in macs)
    return round(sum(m for m, chosen in macs if chosen) / total, 4) if total else None


REPEATING = ("Loop", "Scan")
"""Control flow whose body runs a number of times the graph does not fix."""


def control_flow_layers(graph: ir.Graph, ops: Iterable[str]) -> tuple[list[ir.Node], bool]:
    """The compute nodes (``ops`` and recurrent layers) inside ``graph``'s control-flow
    bodies (If branches, Loop and Scan bodies, nested ones too), and whether any of them
    is in a body that repeats. No QDQ enters a body, so they run float, and a layer count
    of the main graph leaves them out: an openWakeWord model's verifier (3 Gemms in an
    ``If`` branch) was reported as 100% of its MACs int8 on OpenVINO with half its Gemms
    float."""
    ops = set(ops) | set(RECURRENT)
    found: list[ir.Node] = []
    repeats = False

    def walk(g: ir.Graph, repeating: bool) -> None:
        nonlocal repeats
        for node in g:
            if g is not graph and node.op_type in ops:
                found.append(node)
                repeats |= repeating
            for attr in node.attributes.values():
                subs = ([attr.as_graph()] if attr.type == ir.AttributeType.GRAPH else
                        attr.as_graphs() if attr.type == ir.AttributeType.GRAPHS else [])
                for sub in subs:
                    walk(sub, repeating or node.op_type in REPEATING)

    walk(graph, False)
    return found, repeats


def int8_mac_share(graph: ir.Graph, compute_ops: Iterable[str], floating: Iterable[str],
                   dims: Mapping[str, int] | None = None) -> float | None:
    """The share of a QDQ model's compute MACs that runs int8: the main graph's compute
    layers less the ``floating`` ones (names) and recurrent layers (no QDQ enters them),
    with every compute layer inside control flow counted float
    (:func:`control_flow_layers`). None without static shapes, and where a layer sits in a
    Loop or Scan body: its MACs repeat a number of times the graph does not say."""
    compute_ops = set(compute_ops)
    floating = set(floating)
    nested, repeats = control_flow_layers(graph, compute_ops)
    if repeats:
        return None
    layers = [n for n in graph if (n.op_type in compute_ops or n.op_type in RECURRENT) and not float_only(n)]
    inside = {id(n) for n in nested}
    return mac_share([*layers, *nested], lambda n: id(n) not in inside and n.name not in floating
                     and n.op_type not in RECURRENT, dims)


def _value_elements(value: ir.Value, dims: Mapping[str, int] | None = None) -> int:
    shape = _static(value.shape, dims)
    return math.prod(shape) if shape is not None else 0


_FUSED_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})

FUSED_ELEMENTWISE = frozenset({
    "Abs", "Add", "And", "BatchNormalization", "Cast", "Ceil", "Clip", "Cos", "DequantizeLinear", "Div", "Elu",
    "Equal", "Erf", "Exp", "Floor", "Gelu", "Greater", "HardSigmoid", "HardSwish", "LeakyRelu", "Less", "Log",
    "Max", "Min", "Mish", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "QuantizeLinear", "Reciprocal", "Relu",
    "Round", "Selu", "Sigmoid", "Sign", "Sin", "Softplus", "Sqrt", "Sub", "Tanh", "Where"})
"""Element-wise ops: a runtime computes them in the kernel of whatever produces their
input (TensorRT's point-wise fusion, OpenVINO's and XNNPACK's fused activations), so a
tensor only such ops read never reaches memory."""

VIEWS = frozenset({"Concat", "Constant", "Flatten", "Gather", "Identity", "Reshape", "Shape", "Slice", "Split",
                   "Squeeze", "Unsqueeze"})
"""Ops whose outputs are views of their inputs or written by their producers in place (a
Concat's inputs into its buffer): no kernel and no memory pass of their own."""


def _in_memory(node: ir.Node, output: ir.Value, graph_outputs: set[str]) -> bool:
    """Whether a fusing runtime writes ``output`` to memory: a graph output, or a tensor
    something other than an element-wise op reads. YOLOv8n's SiLU pairs (a Sigmoid and a
    Mul over every conv's output), its Concats and Splits had been 3.4x its convolutions'
    traffic, and its TensorRT fp16 estimates 1.4-2.3x the published measurements."""
    if node.op_type in VIEWS and node.domain in ("", "ai.onnx"):
        return False
    readers = [user for user, _ in output.uses()]
    return output.name in graph_outputs or not readers or any(
        r.op_type not in FUSED_ELEMENTWISE or r.domain not in ("", "ai.onnx") for r in readers)


def analyze(model: ir.Model, dims: Mapping[str, int] | None = None) -> GraphCost:
    """The model's cost; named dims (a TensorRT profile's batch) counted at ``dims``
    (:func:`dim_values`): unset, a profile build's roofline estimate had counted no FLOPs."""
    graph = model.graph
    hist: Counter[str] = Counter()
    macs = 0
    uncounted: list[str] = []
    act = in_memory = kernels = 0
    nodes = 0
    unsized = 0
    graph_outputs = {v.name for v in graph.outputs}
    for node in ir.traversal.RecursiveGraphIterator(graph):
        nodes += 1
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        hist[key] += 1
        m = node_macs(node, dims)
        if m is None:
            uncounted.append(node.name or node.op_type)
        else:
            macs += m
        if node.op_type not in _FUSED_QDQ or node.domain not in ("", "ai.onnx"):
            # (a QDQ pair's outputs are no pass over memory of their own: every runtime that
            # runs int8 folds them into the layers around them; counted, an ORT-quantized
            # PP-OCR cls was estimated 2.4x slower than its dynamic-quantization twin)
            act += sum(_value_elements(o, dims) for o in node.outputs)
            written = [o for o in node.outputs if o is not None and _in_memory(node, o, graph_outputs)]
            in_memory += sum(_value_elements(o, dims) for o in written)
            kernels += bool(written)
        unsized += sum(1 for o in node.outputs if o is not None and o.dtype is not None and o.dtype.is_floating_point()
                       and _static(o.shape, dims) is None)
    tensors = [v.const_value for v in graph.initializers.values() if v.const_value is not None]
    tensors += [n.attributes["value"].as_tensor() for n in graph if n.op_type == "Constant" and "value" in n.attributes]
    params = sum(t.size for t in tensors)
    weight_bytes = sum(t.nbytes for t in tensors)
    gathered = sum(v.const_value.size for v in graph.initializers.values() if v.const_value is not None
                   and (uses := list(v.uses())) and all(u.op_type == "Gather" and i == 0 for u, i in uses))
    return GraphCost(
        inputs=input_shapes(model),
        outputs={v.name: [d if isinstance(d, int) else str(d) for d in (v.shape or [])] for v in graph.outputs},
        opsets=dict(model.opset_imports),
        op_histogram=dict(hist.most_common()),
        nodes=nodes,
        parameters=int(params),
        weight_bytes=int(weight_bytes),
        macs=int(macs),
        activation_elements=int(act),
        dynamic_inputs=dynamic_dims(model),
        uncounted_nodes=uncounted,
        uncosted_ops={op: n for op, n in hist.items() if op.split("::")[-1] in UNCOSTED},
        unsized_tensors=unsized,
        memory_elements=int(in_memory),
        kernels=kernels,
        io_elements=sum(_value_elements(v, dims) for v in (*graph.inputs, *graph.outputs)),
        gathered_parameters=int(gathered),
    )


def cpu_split(model: ir.Model, ops: Iterable[str]) -> dict | None:
    """Where a device compiler that hands the ops ``ops`` to the host CPU splits ``model``
    (a profile's ``cpu_fallback_ops``): at the first of them in the graph's order,
    everything from there on running on the CPU (the Edge TPU compiler partitions a graph
    once). None when the model has none of them. YOLOv8n's box decoding divides once near
    its end: its build had been refused whole."""
    ops = set(ops)
    nodes = [n for n in model.graph if n.op_type not in _FUSED_QDQ]  # (an int8 model's encodings)
    first = next((i for i, n in enumerate(nodes) if n.op_type in ops), None)
    if first is None:
        return None
    macs = [node_macs(n) or 0 for n in nodes]
    total = sum(macs)
    return {"first_node": nodes[first].name, "op": nodes[first].op_type, "cpu_nodes": len(nodes) - first,
            "nodes": len(nodes), "device_mac_share": round(sum(macs[:first]) / total, 4) if total else None}


def roofline_ms(cost: GraphCost, precision: str, peak_tops: float, bandwidth_gbps: float, efficiency: float,
                int8_share: float | None = None, float_tops: float | None = None, kernel_us: float = 0.0,
                memory_efficiency: float | None = None, on_chip_mb: float | None = None,
                activation_share: float | None = None) -> dict:
    """Latency estimate: the slower of compute-bound and memory-bound time, plus a fixed
    time per kernel (``kernel_us``: a profile's ``kernel_overhead_us``).

    Weights are stored at ``precision`` (fp16 for fp16, int8 for int8); activations
    likewise, those a fusing runtime writes (:attr:`GraphCost.memory_elements`), each
    written once and read once. ``memory_efficiency``: the share of the bandwidth reached
    (``efficiency`` unless given). ``on_chip_mb``: an accelerator that keeps its
    activations and this many MB of weights on chip (the Edge TPU's 8 MB): only the
    inputs, the outputs and the weights beyond it cross the bandwidth, each inference.
    ``activation_share``: the share of the MACs whose activations are int8 where it is
    less than ``int8_share`` (dynamic-range layers: int8 weights and kernels, float
    activations; YOLOv8n's TFLite int8 build with 46% of its MACs such had been estimated
    at a byte an activation). ``int8_share``: for an int8 build, the share of its MACs that run int8 (for
    an fp16 build, fp16); the rest is counted at fp32 (``float_tops``) and its bytes at 4
    each, in proportion (a detector's TensorRT int8 build with 7% of its MACs int8 had been
    estimated as fast as its all-int8 build; an fp16 build with 15 of 16 segments kept fp32
    as fast as an all-fp16 one).
    """
    shared = int8_share is not None and float_tops is not None  # (a share of the MACs in ``precision``, the rest fp32)
    share = min(max(int8_share, 0.0), 1.0) if shared else 1.0
    moved = share if activation_share is None else min(share, max(activation_share, 0.0))

    def bytes_per_element(part: float) -> float:  # ``part`` at ``precision``, the rest at fp32
        return part * BYTES_PER_ELEMENT[precision] + (1 - part) * BYTES_PER_ELEMENT["fp32"]

    elem, activation = bytes_per_element(share), bytes_per_element(moved)
    read = cost.parameters - cost.gathered_parameters  # (the rows a Gather reads are its output's)
    if on_chip_mb is None:
        bytes_moved = read * elem + 2 * cost.memory_elements * activation
    else:
        bytes_moved = max(0.0, read * elem - on_chip_mb * 1e6) + cost.io_elements * activation
    compute_ms = (cost.flops * share / peak_tops
                  + (cost.flops * (1 - share) / float_tops if share < 1.0 else 0.0)) / (1e12 * efficiency) * 1e3
    memory_ms = bytes_moved / (bandwidth_gbps * 1e9 * (memory_efficiency or efficiency)) * 1e3
    overhead_ms = cost.kernels * kernel_us / 1e3
    left_out = {k: v for k, v in (("nodes_of_unknown_cost", len(cost.uncounted_nodes)),
                                  ("tensors_of_unknown_size", cost.unsized_tensors)) if v}
    return {
        "estimate_ms": round(max(compute_ms, memory_ms) + overhead_ms, 4),
        "compute_ms": round(compute_ms, 4),
        "memory_ms": round(memory_ms, 4),
        **({"kernel_overhead_ms": round(overhead_ms, 4), "kernels": cost.kernels} if kernel_us else {}),
        "bound": "compute" if compute_ms >= memory_ms else "memory",
        "flops": cost.flops,
        "bytes": int(bytes_moved),
        "kind": "roofline estimate",
        # (given whenever a share was: a consumer of --json had found it at 98% and not at 100%)
        **({f"{precision}_mac_share": round(share, 4)} if shared else {}),
        # (a dewarper's grid sampling at a size computed from an input's values: "0.00 ms"
        # for 25 ms measured, with no word that nothing was counted)
        **({"lower_bound": True, "not_counted": left_out} if left_out else {}),
    }



def level_outputs(model: ir.Model) -> set[str]:
    """Integer outputs that are float values rounded to levels (an 8-bit image, a
    spectrogram's uint8 magnitudes): those reached from a float -> integer ``Cast``
    through ops that only move elements. Their neighbouring values are near each other,
    so they are judged as numbers, where an id (an ArgMax's class, a CTC path's
    character, however cast) is right or wrong."""
    floats = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16}
    levels = set()
    for output in model.graph.outputs:
        if output.dtype is None or output.dtype in floats or output.dtype == ir.DataType.BOOL:
            continue
        value, seen = output, set()
        while value is not None and id(value) not in seen:
            seen.add(id(value))
            node = value.producer()
            if node is None or node.domain not in ("", "ai.onnx"):
                break
            if node.op_type == "Cast":
                source = node.inputs[0]
                if source is not None and source.dtype in floats:
                    levels.add(output.name)
                    break
                value = source  # integer to integer: keep walking
            elif node.op_type in MOVES | SELECTIONS and node.inputs:
                value = node.inputs[0]
            else:
                break
    return levels


NAN_READERS = frozenset({("", "IsNaN"), ("ai.onnx", "IsNaN"), ("ai.onnx.ml", "Imputer"),
                         ("ai.onnx.ml", "TreeEnsembleRegressor"), ("ai.onnx.ml", "TreeEnsembleClassifier"),
                         ("ai.onnx.ml", "TreeEnsemble")})
"""Ops that give a NaN a meaning: a test for it, an imputer that replaces it, a tree
ensemble that sends it down one side of each split (LightGBM's and XGBoost's missing
values)."""


def nan_inputs(model: ir.Model) -> frozenset[str]:
    """Inputs that may carry NaN by design: those a :data:`NAN_READERS` op reads, through
    any ops (subgraphs included), or an ``IsNaN`` reads through ops that carry an input's
    elements one by one (:data:`MOVES`, :data:`SELECTIONS`, :data:`ELEMENTWISE`). A
    gradient-boosted model's missing feature is a NaN in its input; elsewhere a NaN in the
    data is a mistake in the data. An ``IsNaN`` behind a layer or a softmax tests what they
    computed: PyTorch's attention export writes ``Where(IsNaN(softmax), 0, softmax)``, and
    a reCAPTCHA tile classifier's image input had been taken to accept NaN pixels."""
    readers = [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if (n.domain, n.op_type) in NAN_READERS]
    inputs = {id(v): v.name for v in model.graph.inputs if v.name}
    found, seen = set(), set()
    carries = MOVES | SELECTIONS | ELEMENTWISE
    # (value, whether only element-carrying ops may lie between it and its reader)
    stack = [(v, n.op_type == "IsNaN") for n in readers for v in n.inputs if v is not None]
    while stack:
        value, strict = stack.pop()
        if (id(value), strict) in seen:
            continue
        seen.add((id(value), strict))
        if id(value) in inputs:
            found.add(inputs[id(value)])
        node = value.producer()
        if node is not None and strict and (node.domain not in ("", "ai.onnx") or node.op_type not in carries):
            continue
        if node is not None and (id(node), strict) not in seen:  # (a node of several outputs: once)
            seen.add((id(node), strict))
            stack.extend((v, strict) for v in node.inputs if v is not None)
            for attr in node.attributes.values():  # a subgraph's nodes may read outer values by name
                graphs = attr.value if isinstance(attr.value, (list, tuple)) else [attr.value]
                for graph in graphs:
                    if isinstance(graph, ir.Graph):
                        stack.extend((v, strict) for n in ir.traversal.RecursiveGraphIterator(graph)
                                     for v in n.inputs if v is not None)
    return frozenset(found)


def _integer_cast(node: ir.Node) -> bool:
    return node.op_type == "Cast" and ir.DataType(node.attributes.get_int("to", 0)).is_integer()


INDEX_ARITHMETIC = ELEMENTWISE | COMPARISONS | frozenset({"Not", "And", "Or", "Mod"})
"""Element-wise ops an exporter puts between ids and their table: tf2onnx wraps a Keras
embedding's negative ids (``x + rows * (x < 0)`` through ``Less``, ``Not``, ``Cast``,
``Mul`` and ``Add``)."""

INDEX_WINDOW = 4
""":func:`lookup_ranges` maps the ids from ``-INDEX_WINDOW * rows`` to ``INDEX_WINDOW *
rows`` through the arithmetic on the way to a table; a valid span reaching the window's
edge is taken as unbounded there."""


def lookup_ranges(model: ir.Model) -> dict[str, tuple[int, int, str, int]]:
    """Integer inputs that index a table: input -> (lowest, highest + 1, the table's node,
    its rows).
    Each is followed through ops that move or cast its elements (:data:`MOVES`) or compute
    each from it and constants (:data:`INDEX_ARITHMETIC`) to the ``Gather`` that reads the
    result as indices of a constant-size axis (``-rows`` to ``rows - 1``, as ONNX allows);
    the ids that arithmetic maps there are the range (:func:`_valid_ids`), and the
    tightest table wins. ONNX Runtime refuses an index past it, OpenVINO and TFLite compute
    something (a Khmer segmenter's bundles gave outputs for token ids past its vocabulary,
    exit 0; a Keras embedding's, through tf2onnx's wrap of negative ids, too), so a
    bundle's runner checks them (``io.inputs[].index_range``)."""
    found: dict[str, tuple[int, int, str, int]] = {}
    for value in model.graph.inputs:
        if value.dtype is None or not value.dtype.is_integer():
            continue
        uses = list(uses_through(value, lambda n: n.op_type in MOVES | INDEX_ARITHMETIC, any_input=True))
        # the nodes computing element by element from the ids
        cone = {id(u.node): u.node for u in uses
                if u.node.domain in ("", "ai.onnx") and u.node.op_type in MOVES | INDEX_ARITHMETIC}
        for use in uses:
            node = use.node
            if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or use.idx != 1:
                continue
            shape, axis = node.inputs[0].shape if node.inputs[0] is not None else None, node.attributes.get_int("axis", 0)
            rows = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
            if not isinstance(rows, int) or (span := _valid_ids(value, node.inputs[1], rows, cone, model)) is None:
                continue
            if value.name in found:
                span = (max(span[0], found[value.name][0]), min(span[1], found[value.name][1]))
                if span == found[value.name][:2]:
                    continue
            found[value.name] = (*span, node.name or node.outputs[0].name, rows)
    return found


def _valid_ids(ids: ir.Value, index: ir.Value, rows: int, cone: Mapping[int, ir.Node],
               model: ir.Model) -> tuple[int, int] | None:
    """The span of ``ids`` whose ``index`` (computed from them element by element, through
    ``cone``, with constants of one element) lies in ``-rows .. rows - 1``, found by
    computing it (ONNX's reference evaluator) for every id of a window around the table
    (:data:`INDEX_WINDOW`); None where the index depends on anything else, or the valid
    ids are not one span (refusing ids the model takes would be worse than not checking)."""
    import numpy as np
    import onnx

    from deploycomp.node_eval import node_function

    nodes, constants, stack, seen = [], {}, [index], set()
    while stack:  # the nodes between the ids and the index, each with its constants
        v = stack.pop()
        if v is ids or id(v) in seen:
            continue
        seen.add(id(v))
        node = v.producer()
        if node is None or id(node) not in cone:
            return None
        nodes.append(node)
        for i, inp in enumerate(node.inputs):
            if inp is None or (node.op_type in MOVES and i > 0):
                continue
            if (const := ir.convenience.get_const_tensor(inp)) is not None:
                if const.size != 1:
                    return None
                constants[inp.name] = const.numpy().reshape(())
            else:
                stack.append(inp)
    if not nodes:
        return -rows, rows
    dtype = ids.dtype.numpy()
    protos = []
    position = {id(n): i for i, n in enumerate(model.graph)}
    for node in sorted(nodes, key=lambda n: position[id(n)]):
        proto = ir.serde.serialize_node(node)
        if node.op_type in MOVES:  # (each element stays itself: a window is one axis)
            proto = onnx.helper.make_node("Identity", proto.input[:1], proto.output)
        protos.append(proto)
    info = np.iinfo(dtype)
    window = np.arange(max(int(info.min), -INDEX_WINDOW * rows), min(int(info.max), INDEX_WINDOW * rows) + 1,
                       dtype=np.int64).astype(dtype)
    try:
        run = node_function(protos, {ids.name: window}, [index.name], constants, model.opset_imports.get("", 13))
        out = np.asarray(run(**{ids.name: window})[0]).reshape(-1)
    except Exception:  # an op the evaluator does not know: no check rather than a wrong one
        return None
    if out.shape != window.shape:
        return None
    ok = (out >= -rows) & (out < rows)
    starts, ends = np.flatnonzero(np.diff(ok.astype(np.int8)) == 1) + 1, np.flatnonzero(np.diff(ok.astype(np.int8)) == -1) + 1
    if ok[0]:
        starts = np.concatenate([[0], starts])
    if ok[-1]:
        ends = np.concatenate([ends, [len(ok)]])
    if len(starts) != 1:
        return None
    lo = int(info.min) if starts[0] == 0 else int(window[starts[0]])
    hi = int(info.max) + 1 if ends[0] == len(ok) else int(window[ends[0]])
    return None if (lo, hi) == (int(info.min), int(info.max) + 1) else (lo, hi)


def integer_valued_inputs(model: ir.Model) -> list[str]:
    """Float inputs the model casts to an integer type (through ops that only move their
    elements): ids or counts carried as floats, which an int8 input encoding rounds to its
    steps (a Thai segmenter's character ids 1-163 through --int8-io: cosine 0.197)."""
    return [value.name for value in model.graph.inputs
            if value.dtype is not None and value.dtype.is_floating_point()
            and any(_integer_cast(use.node) for use in uses_through(value, lambda n: n.op_type in MOVES))]
