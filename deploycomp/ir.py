"""Loading and saving ONNX models over onnx-ir, safely and in one opset range.

Loading does four things before any pass sees the graph:

1. Parse the protobuf without pulling external data, so a corrupt, truncated or
   non-ONNX file fails fast with a one-line :class:`ModelError`.
2. Check every external-data location (in subgraphs too) resolves inside the model's
   folder. ONNX lets a tensor name any file; a model from the internet could
   otherwise make us read ``/etc/passwd`` or ``../../secrets`` into an artifact.
3. Check every op is known to ONNX (or a domain we pass through) and the opset is in
   range, naming the first offending node.
4. Treat initializers that are also listed as graph inputs as constants. Models of IR
   version < 4 had to list every initializer in ``graph.input`` (later exporters did so
   on request, ``keep_initializers_as_inputs``); ONNX Runtime and onnxsim treat such an
   input as a constant with a default, and so do we unless asked to keep them as
   inputs. Otherwise hundreds of weights become "runtime inputs" that need data, and
   nothing that depends on them folds.
5. Normalise the default-domain opset into ``MIN_OPSET..MAX_OPSET`` with ONNX's
   version converter. Older exporters (PaddlePaddle's opset 11/12) lack per-channel
   DequantizeLinear (13) and LayerNormalization (17) that later stages emit; models
   newer than the backends accept are converted down where the converter can.

The model is then deserialised into onnx-ir with external tensors left memory-mapped,
so models above protobuf's 2 GB limit load without copying their weights.
"""

from __future__ import annotations

import heapq
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from deploycomp.digest import sha256_file
from deploycomp.errors import ModelError, UnsupportedError, few
from deploycomp.paths import DEVICE_OR_PIPE, not_a_file

__all__ = [
    "FLOAT_ONLY",
    "HoldsMapsError",
    "LEFT_BECAUSE",
    "ROLE",
    "MAX_OPSET",
    "add_initializer",
    "external_locations",
    "float_only",
    "io_types_kept",
    "ORT_DEFAULT_DOMAIN_OPS",
    "replace_node", "replace_value",
    "MIN_OPSET",
    "LoadedModel",
    "load_model",
    "model_from_proto",
    "save_model",
    "sha256_file",
    "uses_through",
]

MIN_OPSET = 17
"""Models below this default-domain opset are upgraded to it on load."""

MAX_OPSET = 23
"""Newest default-domain opset the reference runner and backends all accept."""

PASS_THROUGH_DOMAINS = frozenset({"com.microsoft"})
"""Custom domains we load without schema checks (ONNX Runtime contrib ops)."""
ORT_DEFAULT_DOMAIN_OPS = frozenset({"SimplifiedLayerNormalization"})
"""Ops ONNX Runtime's optimizer writes in the default domain that ONNX does not define (its
RMS norm, at ``ORT_ENABLE_EXTENDED``): read as ``com.microsoft`` ops (:func:`_ort_ops_to_ms`),
which :mod:`deploycomp.passes.contrib_ops` writes as core ops (they had been refused as
unknown)."""


@dataclass
class LoadedModel:
    model: ir.Model
    path: Path
    sha256: str
    source_opset: int | None
    initializer_inputs: list[str] = field(default_factory=list)
    """Graph inputs that have an initializer (IR < 4 style): constants unless kept as inputs."""
    ir_version: int = 0
    """The file's IR version (the loaded model's may be raised to match its opset)."""
    external_data: dict[str, str] = field(default_factory=dict)
    """The external-data files the model names -> their sha256 (``sha256`` is the .onnx
    file's alone: two models alike but for their weights files had the same)."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Inner tensors renamed on load (:func:`_free_reserved_names`): the file's name -> the new."""



LEFT_BECAUSE = "deploycomp.left_because"
"""Node metadata key: why a rewrite that would make the node run everywhere left it as it
is (a tree ensemble too large for its tables); a backend's refusal of the node says it."""

ROLE = "deploycomp.role"
"""Node metadata key: what a node a pass wrote is part of, where that decides how a build
treats it (:data:`FLOAT_ONLY`)."""

FLOAT_ONLY = frozenset({"integer-rounding", "iterative-solve", "tree-walk"})
"""Roles of nodes that compute an exact procedure in float: ONNX Runtime's rounding of an
input to u8 (:mod:`deploycomp.passes.integer_ops`), libsvm's pairwise coupling
(:mod:`deploycomp.passes.ml_svm`), a tree ensemble's walk (:mod:`deploycomp.passes.ml_trees`). An int8 build keeps them float and out of its
float-layer search: quantized, the rounding is no rounding and the solve no solve, and
ranking them cost the search its time (a table-edge detector's 13 nodes per chain; an
iris SVC's 3000 coupling nodes on TensorRT)."""


def float_only(node: ir.Node) -> bool:
    """Whether ``node`` has a :data:`FLOAT_ONLY` role."""
    return node.metadata_props.get(ROLE) in FLOAT_ONLY

def _node_graphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs a node holds in its attributes (an If's branches, a Loop's body)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for g in _node_graphs(node):
            yield from _graphs(g)


def _held(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """A graph's initializers, a sparse one's values and indices among them."""
    return [*graph.initializer, *(t for sp in graph.sparse_initializer for t in (sp.values, sp.indices))]


def _bodies(proto: onnx.ModelProto) -> Iterator[tuple[Sequence[onnx.NodeProto], Sequence[onnx.TensorProto]]]:
    """Every list of nodes the model holds, with its initializers: its graphs (control-flow
    bodies too) and its local functions' bodies (and their graphs). A ``Constant`` naming
    ``/etc/passwd`` as its external data inside a function had been read by constant
    folding, and its bytes written into an optimized model."""
    for graph in _graphs(proto.graph):
        yield graph.node, _held(graph)
    for function in proto.functions:
        yield function.node, []
        for node in function.node:
            for g in _node_graphs(node):
                for graph in _graphs(g):
                    yield graph.node, _held(graph)


def _attribute_tensors(nodes: Sequence[onnx.NodeProto]) -> Iterator[tuple[onnx.NodeProto, onnx.TensorProto]]:
    """Each tensor one of ``nodes`` holds in an attribute (a ``Constant``'s value)."""
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield node, attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from ((node, t) for t in attr.tensors)


def _tensors(proto: onnx.ModelProto, initializers: bool = True) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor the model holds, in every graph (control-flow bodies and local functions
    too: :func:`_bodies`), initializers (unless not ``initializers``) and ``Constant``
    values alike, with what it is (for an error naming it)."""
    for nodes, inits in _bodies(proto):
        if initializers:
            yield from ((f"initializer '{t.name}'", t) for t in inits)
        yield from ((f"{node.op_type} '{node.name or (node.output[0] if node.output else '')}'", t)
                    for node, t in _attribute_tensors(nodes))


def _external_tensors(proto: onnx.ModelProto,
                      initializers: bool = True) -> Iterator[tuple[str, onnx.TensorProto, str | None]]:
    """Each tensor of :func:`_tensors` whose data is external: (what it is, the tensor, the
    location it names)."""
    for what, tensor in _tensors(proto, initializers):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield what, tensor, next((e.value for e in tensor.external_data if e.key == "location"), None)


def external_locations(proto: onnx.ModelProto) -> list[str]:
    """The external-data files the model names (relative to its folder), unchecked."""
    return sorted({location for _, _, location in _external_tensors(proto) if location})


def _check_external_data(proto: onnx.ModelProto, model_dir: Path) -> list[str]:
    """The external-data files the model names (relative to its folder), each checked to
    be a file inside that folder."""
    root = model_dir.resolve()
    locations = set()
    for what, tensor, location in _external_tensors(proto):
        if not location:
            raise ModelError(f"{what}: external data has no location")
        if os.path.isabs(location):
            raise ModelError(
                f"{what}: external data path '{location}' is absolute; "
                "only files inside the model's folder are read"
            )
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise ModelError(
                f"{what}: external data path '{location}' points outside "
                f"the model's folder {root}"
            )
        if (kind := not_a_file(target)) is not None:
            raise ModelError(f"{what}: external data file '{location}' {kind}")
        for key in ("offset", "length"):  # (a negative one had read "TypeError: <lambda>() missing ...")
            value = next((e.value for e in tensor.external_data if e.key == key), None)
            if value is not None and not (value.isdigit() and len(value) < 20):
                raise ModelError(f"{what}: external data {key} {value!r} is not a byte count")
        locations.add(location)
    return sorted(locations)


_FOUR_BIT = frozenset(getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n))


def _check_tensor_sizes(proto: onnx.ModelProto) -> None:
    """Each initializer's stored bytes fit its dims and type: one short of them had failed
    deep in the optimizer ("cannot reshape array of size 211 into shape (8,3,3,3)") without
    naming it."""
    for what, t in _tensors(proto):
        if not t.HasField("raw_data") or t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            continue  # (a type numpy has no fixed size for: left to the loader)
        if t.data_type == onnx.TensorProto.STRING or itemsize == 0:
            continue
        bits = 4 if t.data_type in _FOUR_BIT else 8 * itemsize
        need = (math.prod(t.dims) * bits + 7) // 8
        if len(t.raw_data) != need:
            raise ModelError(f"{what}: its data holds {len(t.raw_data)} bytes where its "
                             f"{'x'.join(map(str, t.dims)) or 'scalar'} needs {need}")


def _read_attribute_data(proto: onnx.ModelProto, model_dir: Path) -> None:
    """``Constant`` values stored beside the model, read into it (onnx-ir reads the
    initializers': :func:`model_from_proto`); left external, they reached OpenVINO's
    parser as a path relative to nowhere (a classifier whose weights are ``Constant``
    nodes failed on ``host`` with an internal error)."""
    from onnx.external_data_helper import load_external_data_for_tensor

    for _, tensor, _ in list(_external_tensors(proto, initializers=False)):
        load_external_data_for_tensor(tensor, str(model_dir))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _default_opset(proto: onnx.ModelProto) -> int | None:
    """The default-domain opset, or None for a model of custom-domain ops only."""
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return None


def _check_ops(proto: onnx.ModelProto) -> None:
    opsets = {imp.domain or "": imp.version for imp in proto.opset_import}
    local_functions = {(f.domain, f.name) for f in proto.functions}
    for graph in _graphs(proto.graph):
        for node in graph.node:
            domain = "" if node.domain == "ai.onnx" else node.domain
            if (node.domain, node.op_type) in local_functions or domain in PASS_THROUGH_DOMAINS:
                continue
            label = f"node '{node.name or node.output[0]}'"
            if domain not in opsets:
                raise ModelError(f"{label}: op '{node.op_type}' uses domain '{domain}' the model does not import")
            if not onnx.defs.has(node.op_type, domain):
                if domain:  # a framework's own op (Brevitas' Quant): no ONNX schema, no backend
                    raise ModelError(f"{label}: op '{node.op_type}' of domain '{domain}', which ONNX does not "
                                     "define and no backend runs (export it with standard ONNX ops)")
                raise ModelError(f"{label}: unknown op '{node.op_type}' (not in the ONNX standard)")


def _check_upgradable(proto: onnx.ModelProto, opset: int) -> None:
    """Refuse upgrades the version converter performs but gets wrong.

    Scan changed meaning at opset 9 (its batch axis went away); the converter rewrites
    the node but not the graph's inputs, and the result no longer accepts the model's
    own data (ONNX's ``test_scan_sum`` shows it).
    """
    if opset < 9:
        for graph in _graphs(proto.graph):
            for node in graph.node:
                if node.op_type == "Scan" and node.domain in ("", "ai.onnx"):
                    raise ModelError(
                        f"node '{node.name or node.output[0]}': Scan from opset {opset} cannot be upgraded "
                        "(its batch axis was removed in opset 9); re-export the model with opset >= 9"
                    )


_HELD_DOMAIN = "deploycomp.held"


def _ort_ops_to_ms(proto: onnx.ModelProto) -> None:
    """ONNX Runtime's default-domain ops (:data:`ORT_DEFAULT_DOMAIN_OPS`) in ``com.microsoft``,
    out of the checker's and the version converter's way, as its other fused ops are."""
    moved = False
    for graph in _graphs(proto.graph):
        for node in graph.node:
            if node.domain in ("", "ai.onnx") and node.op_type in ORT_DEFAULT_DOMAIN_OPS:
                node.domain, moved = "com.microsoft", True
    if moved and not any(imp.domain == "com.microsoft" for imp in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


def _check_structure(graph: onnx.GraphProto, outer: frozenset[str] = frozenset(), where: str = "") -> None:
    """Each node reads only what the graph's inputs, initializers, outer scope or another
    node give, no node reads itself through a cycle, every graph output is produced and
    every node has an output: otherwise a one-line model error naming the node (a cycle had
    hung the optimizer for ever; a dangling input or output was an internal error on host).
    A graph that is acyclic but not in topological order (ONNX Runtime sorts it) is sorted,
    stably. Control-flow bodies are checked with the names they can see."""
    own = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    own |= {sp.values.name for sp in graph.sparse_initializer}
    given = set(outer) | own
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        label = f"{where}node '{node.name or i}' ({node.op_type})"
        if not any(node.output):
            raise ModelError(f"{label} has no output")
        for name in node.output:
            if name in producer or name in own:
                raise ModelError(f"{label} writes '{name}', which the graph already has")
            if name:
                producer[name] = i
    listed: set[str] = set()
    for value in graph.output:
        if value.name not in producer and value.name not in given:
            raise ModelError(f"{where}graph output '{value.name}' is produced by no node")
        if value.name in listed:
            raise ModelError(f"{where}graph output '{value.name}' is listed twice")
        listed.add(value.name)
    for value in [*graph.input, *graph.output] if not where else ():
        elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
        if elem in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            raise UnsupportedError(f"{'input' if value in graph.input else 'output'} '{value.name}' is "
                                   f"{onnx.helper.tensor_dtype_to_np_dtype(elem)}: no backend takes complex tensors")
    needs: list[set[int]] = []
    for i, node in enumerate(graph.node):
        wants = set()
        for name in node.input:
            if not name or name in given and name not in producer:
                continue
            if name not in producer:
                raise ModelError(f"{where}node '{node.name or i}' ({node.op_type}) reads '{name}', which nothing "
                                 "in the model produces")
            wants.add(producer[name])
        for g in _node_graphs(node):  # (a body reads the outer scope's names: they must come first too)
            wants |= {producer[n] for n in _free_names(g) & producer.keys()}
        needs.append(wants)
    order: list[int] = []
    waiting = [len(w) for w in needs]
    readers: dict[int, list[int]] = {}
    for i, wants in enumerate(needs):
        for j in wants:
            readers.setdefault(j, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for r in readers.get(i, ()):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) < len(graph.node):
        stuck = min(set(range(len(graph.node))) - set(order))
        node = graph.node[stuck]
        raise ModelError(f"{where}node '{node.name or stuck}' ({node.op_type}) is on a cycle: it depends on its own "
                         "output")
    if order != sorted(order):
        nodes = [graph.node[i] for i in order]
        copies = [onnx.NodeProto() for _ in nodes]
        for copy, node in zip(copies, nodes):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)
    seen = frozenset(given | producer.keys())
    for node in graph.node:
        for g in _node_graphs(node):
            _check_structure(g, seen, f"{where}{node.op_type} '{node.name}' body: ")


def _free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a graph (and the graphs inside it) reads without defining them: its outer scope."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {o for n in graph.node for o in n.output}
    free = {name for n in graph.node for name in n.input if name and name not in defined}
    for n in graph.node:
        for g in _node_graphs(n):
            free |= _free_names(g) - defined
    return free


def _hold_later_ops(proto: onnx.ModelProto, opset: int) -> list[onnx.NodeProto]:
    """Default-domain nodes of ops ONNX defines only after ``opset``, moved out of the
    version converter's way (returned, to be put back). ONNX Runtime registers some for
    older opsets and saves them so: its optimizer writes ``LayerNormalization`` (ONNX 17)
    into an opset-12 model, which it runs, and which the converter refused ("No Adapter
    From Version $16"). Its meaning is the opset-17 op's, so after the conversion the node
    is that op."""
    held = []
    for graph in _graphs(proto.graph):
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type):
                continue
            try:
                onnx.defs.get_schema(node.op_type, opset, "")
            except onnx.defs.SchemaError:  # (not defined yet at that opset)
                node.domain = _HELD_DOMAIN
                held.append(node)
    return held


HELD_WEIGHT_BYTES = 1024
"""Initializers of more bytes than this are taken out of the model while the version
converter copies it (:func:`_converted_without_weights`)."""


def _converted_without_weights(proto: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """``proto`` converted to opset ``target``, its large initializers' bytes held out of
    the converter and put back by name: the converter copies the whole model through C++
    several times (a 97 MB opset-14 ViT peaked at 843 MB to load, 263 MB without), and an
    upgrade's adapters move attributes into new inputs without reading existing weights.
    Where a held initializer's name is gone after the conversion, it converts again with
    every byte in place."""
    def weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
        """The graph's initializers and its Constant nodes' tensors (paddle2onnx's PP-OCR
        files hold every weight so), by the name of the value each defines."""
        found = {t.name: t for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
                value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
                if value is not None:
                    found.setdefault(node.output[0], value)
        return found

    held: dict[str, bytes] = {}
    for name, tensor in weights(proto).items():
        if tensor.HasField("raw_data") and len(tensor.raw_data) > HELD_WEIGHT_BYTES:
            held[name] = tensor.raw_data
            tensor.ClearField("raw_data")
    try:
        converted = onnx.version_converter.convert_version(proto, target)
    finally:
        for name, tensor in weights(proto).items() if held else ():  # (the caller's proto whole again)
            if name in held and not tensor.HasField("raw_data"):
                tensor.raw_data = held[name]
    if not held:
        return converted
    found = {name: t for name, t in weights(converted).items() if name in held and not t.HasField("raw_data")}
    if len(found) < len(held):
        return onnx.version_converter.convert_version(proto, target)
    for name, tensor in found.items():
        tensor.raw_data = held.pop(name)
    return converted


def _put_back(proto: onnx.ModelProto) -> None:
    """The nodes :func:`_hold_later_ops` moved, back in the default domain."""
    for graph in _graphs(proto.graph):
        for node in graph.node:
            if node.domain == _HELD_DOMAIN:
                node.domain = ""
    kept = [o for o in proto.opset_import if o.domain != _HELD_DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)


def _parse(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: {'a folder, not an .onnx file' if path.is_dir() else DEVICE_OR_PIPE}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a valid ONNX model (protobuf parse failed: {e})") from e
    if proto.ir_version == 0 or not proto.graph.output or not proto.opset_import:
        raise ModelError(f"{path}: not a valid ONNX model (no ir_version, outputs or opset imports)")
    return proto


def _initializer_inputs(proto: onnx.ModelProto) -> list[str]:
    initializers = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name in initializers]


def _drop_input_initializers(proto: onnx.ModelProto, names: list[str]) -> None:
    """Kept as runtime inputs (``keep_initializer_inputs``), ``names`` lose their initializers
    in the model the build optimizes: a value that is an input and a constant was folded as
    the constant, and the bundle asked for the input and ignored it (a Gemm given W = 0.5
    computed with the file's W). The reference, ONNX Runtime on the file, is fed them too."""
    drop = set(names)
    kept = [t for t in proto.graph.initializer if t.name not in drop]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)


def _drop_initializer_inputs(proto: onnx.ModelProto, names: list[str]) -> None:
    """Remove ``names`` from the main graph's inputs (their initializers stay): a default
    becomes a constant. Subgraph inputs are formal parameters and are left alone."""
    drop = set(names)
    kept = [i for i in proto.graph.input if i.name not in drop]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    # an initializer need not be an input from IR 4 on; ONNX's tools (the version
    # converter among them) read an IR 3 model's unlisted initializer as undefined
    proto.ir_version = max(proto.ir_version, 4)


def _holds_map(type_proto: onnx.TypeProto) -> bool:
    """Whether a value of this type is or contains a map (ZipMap's sequence<map<...>>)."""
    kind = type_proto.WhichOneof("value")
    if kind == "map_type":
        return True
    if kind == "sequence_type":
        return _holds_map(type_proto.sequence_type.elem_type)
    if kind == "optional_type":
        return _holds_map(type_proto.optional_type.elem_type)
    return False


class HoldsMapsError(UnsupportedError):
    """A model with map-typed values: no compiler step takes it, ``inspect`` still describes it."""


def _refuse_maps(proto: onnx.ModelProto, path: Path) -> None:
    """Map-typed values (scikit-learn's ``ZipMap``: class label -> probability, one map per
    row) have no tensor form in any backend, nor in onnx-ir, which raised an internal error
    naming a hash: a one-line answer naming them and the usual way out."""
    graph = proto.graph
    found = [f"input {v.name!r}" for v in graph.input if _holds_map(v.type)]
    found += [f"output {v.name!r}" for v in graph.output if _holds_map(v.type)]
    found += [f"tensor {v.name!r}" for v in graph.value_info if _holds_map(v.type)]
    zipmaps = [n.name or n.output[0] for n in graph.node if n.op_type == "ZipMap"]
    if not found and zipmaps:
        found = [f"ZipMap {name!r}" for name in zipmaps]
    if found:
        raise HoldsMapsError(
            f"{path}: {few(found)} {'holds' if len(found) == 1 else 'hold'} maps"
            f"{' (ZipMap: a label -> score map per row)' if zipmaps else ''}; deploycomp compiles tensors only: "
            "export the scores as a tensor (skl2onnx: options={id(model): {'zipmap': False}}; onnxmltools' "
            "LightGBM converter: zipmap=False)")


def model_from_proto(proto: onnx.ModelProto, base_dir: Path) -> ir.Model:
    """The onnx-ir model, its external data (``model.onnx.data``) read into memory: every
    later step serializes the model (ONNX Runtime sessions, OpenVINO's and NVIDIA's
    parsers, the quantize-one copies), and a serialized external reference is resolved
    against wherever that reader is, not the model's folder (a Khmer transformer with
    its weights beside it failed on every target but TFLite)."""
    try:
        model = ir.serde.deserialize_model(proto)
    except ir.serde.SerdeError as e:  # its own message names a hash of the failing call: say the root cause
        root = e
        while root.__cause__ is not None:
            root = root.__cause__
        raise ModelError(f"the model cannot be read into onnx-ir: {type(root).__name__}: {root}") from e
    ir.external_data.set_base_dir(model.graph, base_dir)
    try:
        return ir.external_data.load_to_model(model)
    except ValueError as e:  # a data file shorter than the model says ("buffer is smaller than requested size")
        raise ModelError(f"the model's external data in {base_dir} cannot be read (truncated or not this model's?): "
                         f"{e}") from e


def load_model(path: str | os.PathLike, keep_initializer_inputs: bool = False) -> LoadedModel:
    """Parse, check and opset-normalise an ONNX file into an onnx-ir model.

    ``keep_initializer_inputs``: keep initializers listed in ``graph.input`` as runtime
    inputs (overridable defaults) instead of constants."""
    path = Path(path)
    proto = _parse(path)
    locations = _check_external_data(proto, path.parent)
    _read_attribute_data(proto, path.parent)
    _refuse_maps(proto, path)
    source_ir = proto.ir_version
    initializer_inputs = _initializer_inputs(proto)
    if initializer_inputs and not keep_initializer_inputs:
        _drop_initializer_inputs(proto, initializer_inputs)
    elif initializer_inputs:
        _drop_input_initializers(proto, initializer_inputs)
    elif proto.ir_version < 4 and len(initializer_inputs) < len(proto.graph.initializer):
        # an IR 3 file with an initializer it does not list as an input (ONNX Runtime's own
        # mul_1.onnx), which ONNX Runtime runs: read as IR 4, where that is allowed (the version
        # converter had called its weight undefined)
        proto.ir_version = 4
    opset = _default_opset(proto)
    if opset is not None and not 1 <= opset <= onnx.defs.onnx_opset_version():
        raise ModelError(f"{path}: opset {opset} is outside the range ONNX {onnx.__version__} knows (1..{onnx.defs.onnx_opset_version()})")
    _ort_ops_to_ms(proto)
    _check_ops(proto)
    _check_structure(proto.graph)
    _check_tensor_sizes(proto)
    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        target = min(max(opset, MIN_OPSET), MAX_OPSET)
        _check_upgradable(proto, opset)
        held = _hold_later_ops(proto, opset)
        if held:
            proto.opset_import.append(onnx.helper.make_opsetid(_HELD_DOMAIN, 1))
        try:
            proto = _converted_without_weights(proto, target)
        except Exception as e:  # the converter raises bare RuntimeErrors/IndexErrors
            text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            reason = text.split(" failed: ", 1)[-1]  # drop the C++ assertion's file:line prefix
            raise ModelError(f"{path}: cannot convert opset {opset} to {target}: {reason}") from e
        if held:
            _put_back(proto)
        # the converter leaves ir_version alone; runtimes refuse an opset newer than it allows
        try:
            needed = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
        except (ValueError, TypeError):
            needed = proto.ir_version
        proto.ir_version = max(proto.ir_version, needed)
    model = model_from_proto(proto, path.parent)
    renamed = _free_reserved_names(model)
    return LoadedModel(
        model=model,
        renamed=renamed,
        path=path,
        sha256=sha256_file(path),
        source_opset=opset,
        initializer_inputs=initializer_inputs if not keep_initializer_inputs else [],
        ir_version=source_ir,
        external_data={loc: sha256_file(path.parent / loc) for loc in locations},
    )


RESERVED_NAME_PARTS = ("__", "/i8")
"""What the names deploycomp gives the tensors it adds are built with (``x__dq``,
``w__fp16``, TFLite's ``p/i8``): a model's own tensor named so had clashed with one made
from another name (an internal error: "Duplicate definition of name")."""


def _free_reserved_names(model: ir.Model) -> dict[str, str]:
    """Rename the model's inner tensors (not its graph inputs and outputs, which the bundle
    keeps) whose names hold :data:`RESERVED_NAME_PARTS`, each to a free name without them;
    returns the file's names -> the new ones."""
    renamed: dict[str, str] = {}
    graphs = [model.graph, *model.graph.subgraphs()]
    values = {id(v): v for g in graphs for v in [*g.inputs, *g.initializers.values(),
                                                 *(o for n in g for o in n.outputs)]}
    public = {id(v) for v in [*model.graph.inputs, *model.graph.outputs]}
    taken = {v.name for v in values.values() if v.name}
    for key, value in values.items():
        name = value.name
        if key in public or not name or not any(part in name for part in RESERVED_NAME_PARTS):
            continue
        base = name
        for part in RESERVED_NAME_PARTS:
            base = base.replace(part, "_" if part == "__" else "_i8")
        while "__" in base:
            base = base.replace("__", "_")
        free, n = base, 1
        while free in taken:
            free, n = f"{base}_{n}", n + 1
        if value.is_initializer():
            graph = value.graph
            graph.initializers.pop(name)
            value.name = free
            graph.initializers[free] = value
        else:
            value.name = free
        taken.add(free)
        renamed[name] = free
    return renamed


def save_model(model: ir.Model, path: str | os.PathLike, *, external_data: bool | None = None) -> list[Path]:
    """Save ``model``; weights go to a side file when the model exceeds 2 GB.

    Returns the files written (the .onnx and, if any, its external-data file).
    """
    path = Path(path)
    if external_data is None:
        external_data = _tensor_bytes(model) > 1_800_000_000
    if external_data:
        data_name = path.name + ".data"
        ir.save(model, path, external_data=data_name)
        return [path, path.with_name(data_name)]
    ir.save(model, path)
    return [path]


def _tensor_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` (its own dtype) as a new initializer; ``name`` gets a numeric
    suffix if taken (a layer can be rescaled twice: as a reader and as a producer)."""
    unique, n = name, 1
    while unique in graph.initializers:
        unique, n = f"{name}{n}", n + 1
    # ir.Tensor directly: ir.tensor's protocol checks cost ~7x more, and the sensitivity
    # search adds some 300 initializers per candidate model
    data = array if array.flags.c_contiguous else array.copy()
    value = ir.Value(name=unique, const_value=ir.Tensor(data, name=unique))
    value.shape = ir.Shape(array.shape)
    value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    graph.register_initializer(value)
    return value


def replace_node(node: ir.Node, new: list[ir.Node], old_suffix: str) -> None:
    """``node`` (of one output) replaced by the chain ``new``, inserted where it was: the
    last node's output takes its type, shape, name and readers (:func:`replace_value`)."""
    out, result = node.outputs[0], new[-1].outputs[0]
    result.type, result.shape = out.type, out.shape
    node.graph.insert_after(node, new)
    replace_value(out, result, old_suffix)
    node.graph.remove(node, safe=True)


def replace_value(old: ir.Value, new: ir.Value, old_suffix: str) -> None:
    """Every reader of ``old``, graph outputs included, reads ``new``, which takes ``old``'s
    name (a rewrite keeps the model's tensor and output names); ``old`` keeps
    ``old_suffix`` appended until its producer is removed."""
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    name, old.name = old.name, f"{old.name}{old_suffix}"
    new.name = name


def uses_through(value: ir.Value, through: Callable[[ir.Node], bool], any_input: bool = False):
    """Each use of ``value``, and of the outputs of the nodes that read it as their data
    input (``any_input``: as any input) and for which ``through`` holds, and so on (each
    value once)."""
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        for use in v.uses():
            yield use
            if (use.idx == 0 or any_input) and use.node.domain in ("", "ai.onnx") and through(use.node):
                stack.extend(o for o in use.node.outputs if o is not None)


def io_types_kept(model: ir.Model) -> str:
    """How a float16 model's inputs and outputs are typed, which a float32 computation keeps
    (onnxconverter-common's ``keep_io_types`` leaves them float32: "still float16" had
    been said of those too)."""
    floats = {v.dtype for v in [*model.graph.inputs, *model.graph.outputs]
              if v.dtype is not None and v.dtype.is_floating_point()}
    if floats == {ir.DataType.FLOAT16}:
        return "its inputs and outputs still float16"
    if ir.DataType.FLOAT16 not in floats:
        return "its inputs and outputs float32 as the file types them"
    return "its inputs and outputs as the file types them (some float16)"
