"""ONNX (onnx-ir) -> TFLite operators: the walk, the value table, and the op registry.

:class:`Lowering` walks the optimized graph in order and calls one small function per
ONNX op type (registered with :func:`lowers` in ``ops_*.py``). Each ONNX value maps to
a TFLite tensor plus the layout it is stored in (see :mod:`.layout`); a rule asks for
its inputs in the layout it needs with :meth:`Lowering.input`, which emits a TRANSPOSE
only when the stored layout differs, once per value and layout.

Precision is decided here, not in the rules: for ``fp16`` every float constant of more
than a few elements is stored as float16 and expanded by a DEQUANTIZE op (the standard
TFLite fp16 form, which XNNPACK folds at load time); activations stay float32. A
constant float16 cannot hold (a value past 65504, or one whose values flush to zero or
to subnormals) stays float32: see :func:`fp16_holds`.

A node whose inputs are all constants (``Constant``, ``Range``, ``ConstantOfShape`` the
optimizer left unfolded because folding would grow the file, ``Shape`` of a static
tensor) is evaluated here with ONNX's reference implementation: TFLite has no choice
but to store the result, and an op without a TFLite kernel is then no obstacle.

Graph outputs: TFLite wants every output to be a tensor an operator writes, with its
own name. An ONNX output can instead be a constant (folded, or a DequantizeLinear of a
constant), a graph input (through an Identity), the same tensor as another output, or
an int8 tensor only a scale-preserving op wrote; each gets the tensor that holds its
value and, where that tensor is not yet a distinct operator output, a RESHAPE copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx_ir as ir

from deploycomp.backends.tflite.flatbuffer import FlatbufferWriter
from deploycomp.backends.tflite.layout import NCHW_TO_NHWC, Perm, change, identity, is_identity
from deploycomp.backends.base import unsupported_node
from deploycomp.errors import UnsupportedError, node_label
from deploycomp.quant.policy import POLICIES

__all__ = ["LOWERINGS", "Lowered", "Lowering", "lowers", "unsupported_nodes"]

LOWERINGS: dict[str, Callable[["Lowering", ir.Node], None]] = {}

FP16_MIN_ELEMENTS = 16
"""Float constants at least this large are stored as float16 in fp16 builds."""

FP16_MAX_RELATIVE_ERROR = 1e-3
"""A constant stored as float16 may differ from its float32 values by at most this much
(relative, in the L2 norm); float16 rounding alone gives at most 2**-11 (4.9e-4)."""

NEVER_FOLD = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                        "Bernoulli", "DequantizeLinear", "If", "Loop", "Scan"})
"""Ops not evaluated at conversion time even with constant inputs: random, control flow,
and DequantizeLinear, whose int8 data the int8 lowering reads itself (:mod:`.quantized`)."""

FOLD_MAX_ELEMENTS = 1 << 22
"""An op that has a TFLite lowering is evaluated at conversion time only if its result is
at most this large (an Expand or Tile of a constant runs instead of bloating the file)."""

INT8_PASSTHROUGH = frozenset({"MaxPool", "Resize", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Split", "Slice",
                              "Pad", "Transpose"})
"""Ops TFLite runs on int8 with the output scale equal to the input's."""

FUSED_CLIPS = {(0.0, np.inf): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}
"""Clip bounds that are a TFLite fused activation."""

ACTIVATION = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4}

LAYOUT_FREE = frozenset({"Pad", "QuantizeLinear", "DequantizeLinear", "Identity", "Cast", "Relu", "Clip", "LeakyRelu",
                         "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Elu", "Gelu", "PRelu", "Abs", "Neg", "Exp",
                         "Log", "Sqrt", "Add", "Sub", "Mul", "Div", "Max", "Min", "BatchNormalization"})
"""Ops that run in whatever layout their input is stored in (an input's layout is chosen
by what reads it through them)."""


def lowers(*op_types: str):
    def register(fn):
        for op in op_types:
            LOWERINGS[op] = fn
        return fn

    return register


def _load_rules() -> None:
    from deploycomp.backends.tflite import (  # noqa: F401  (registration)
        ops_control, ops_elementwise, ops_nn, ops_recurrent, ops_shape, quantized)


def _static(value: ir.Value | None) -> bool:
    return value is not None and value.shape is not None and all(isinstance(d, int) for d in value.shape)


def foldable(node: ir.Node, is_constant: Callable[[ir.Value], bool]) -> bool:
    """Whether :class:`Lowering` evaluates ``node`` at conversion time instead of lowering it."""
    if node.domain not in ("", "ai.onnx") or node.op_type in NEVER_FOLD:
        return False
    if node.op_type in ("Shape", "Size") and _static(node.inputs[0]):
        return True
    if not all(v is None or is_constant(v) for v in node.inputs):
        return False
    if node.op_type in LOWERINGS:
        return all(_static(o) and int(np.prod(o.shape, dtype=np.int64)) <= FOLD_MAX_ELEMENTS
                   for o in node.outputs if o is not None)
    return True


def unsupported_nodes(model: ir.Model) -> list[dict[str, str]]:
    """Nodes the lowering can neither lower nor evaluate at conversion time (inside an
    ``If``'s branches too, which :mod:`.ops_control` lowers inline)."""
    _load_rules()
    constant = {v.name for v in model.graph.initializers.values()}
    missing: list[dict[str, str]] = []

    def walk(graph) -> None:
        for n in graph:
            if foldable(n, lambda v: v.name in constant or v.const_value is not None):
                constant.update(o.name for o in n.outputs if o is not None)
            elif n.op_type not in LOWERINGS or n.domain not in ("", "ai.onnx"):
                missing.append(unsupported_node(n))
            elif n.op_type == "If":
                for attr in ("then_branch", "else_branch"):
                    walk(n.attributes[attr].as_graph())

    walk(model.graph)
    return missing


def fp16_holds(data: np.ndarray) -> bool:
    """Whether a float32 constant survives being stored as float16: every value finite
    there (none past 65504) and the whole within :data:`FP16_MAX_RELATIVE_ERROR` of the
    float32 values, which a tensor whose values flush to zero or lose bits as subnormals
    (below 6.1e-5) is not. Such a constant stays float32, exact (e.g. a 1e-7 epsilon
    tensor, a 1e5 mask value)."""
    if not np.isfinite(data).all():
        return False
    with np.errstate(over="ignore"):
        half = data.astype(np.float16)
    if not np.isfinite(half).all():
        return False
    exact = data.astype(np.float64)
    norm = float(np.linalg.norm(exact))
    return norm == 0.0 or float(np.linalg.norm(half.astype(np.float64) - exact)) <= FP16_MAX_RELATIVE_ERROR * norm


def _fp16_exact(data: np.ndarray) -> bool:
    """Whether every value of a float32 constant is a float16 value (integers up to 2048)."""
    with np.errstate(over="ignore"):
        return bool(np.array_equal(data.astype(np.float16).astype(np.float32), data))


def _topological(graph: Iterable[ir.Node]) -> list[ir.Node]:
    """The nodes in an order where every producer comes before its readers, the given order
    wherever it already is one: TFLite runs operators in the order they are written, and a
    rewrite may leave a node after its readers (ONNX Runtime sorts for itself)."""
    nodes = list(graph)
    members = {id(n) for n in nodes}
    placed: set[int] = set()
    order: list[ir.Node] = []
    for root in nodes:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in placed:
                continue
            if expanded:
                placed.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            for value in reversed(node.inputs):
                producer = value.producer() if value is not None else None
                if producer is not None and id(producer) in members and id(producer) not in placed:
                    stack.append((producer, False))
    return order


def _node_error(error: UnsupportedError, node: ir.Node) -> UnsupportedError:
    """``error`` as one line naming the op and the node (also kept as ``.op``, ``.node``)."""
    message = str(error)
    entry = unsupported_node(node)
    label = node_label(entry["node"], node.op_type, entry["output"])
    if label.startswith("node ") and node.op_type not in message:  # the file's name
        label = f"{node.op_type} {label}"
    out = UnsupportedError(f"{message} ({label})".replace("\n", " "))
    out.op, out.node, out.output = node.op_type, entry["node"], entry["output"]
    return out


@dataclass
class Stored:
    """Where an ONNX value lives in the TFLite graph: tensor index and layout."""

    index: int
    perm: Perm


@dataclass
class Lowered:
    flatbuffer: bytes
    io_layouts: dict[str, list[int]]
    op_counts: dict[str, int]
    int8_op_counts: dict[str, int]
    """Operators writing int8 tensors (QUANTIZE included): what runs integer."""
    kept_fp32: list[str] = field(default_factory=list)
    """fp16 builds: float constants stored float32 because float16 cannot hold them."""
    hybrid_op_counts: dict[str, int] = field(default_factory=dict)
    """int8 builds: dynamic-range operators (int8 weights, float activations)."""
    float_compute: list[str] = field(default_factory=list)
    """int8 builds: compute nodes quantized for, lowered to float kernels."""


REPEATED_WEIGHT_COPIES = 32 << 20
"""The most bytes of copies of weights XNNPACK may pack, one per ``FULLY_CONNECTED``
reading each, before the readers of the weights with the most copies share a runtime copy
(:meth:`~deploycomp.backends.tflite.flatbuffer.FlatbufferWriter.share_repeated_weights`).
Measured in LiteRT here (x86; not on an Arm device) on 80-step chains of square products:
at 256 wide (20 MB of copies) the copies ran faster (0.27 against 0.35 ms), at 512
(79 MB) and 1024 (316 MB) the shared weight did (1.5 against 2.5 ms, 12 against 17 ms),
in 12-14 MB instead of 91 and 330."""


class Lowering:
    def __init__(self, model: ir.Model, precision: str = "fp32", io_layout: str = "nhwc", int8_io: bool = False,
                 fp16_exact: bool = False, fp32_nodes: frozenset[int] = frozenset()):
        _load_rules()
        self.model = model
        self.precision = precision
        self.fp16_exact = fp16_exact
        """fp16: store a constant float16 only where float16 holds it exactly (a model that
        arrives int8: its int8 weights' values go float16, its scales and norms stay float32)."""
        self.fp32_nodes = fp32_nodes
        """fp16: the nodes (by ``id``) whose constants stay float32 (the fp16 search's choice, where
        float16 weights cost the budget: :mod:`deploycomp.fp16_search`)."""
        self._node: ir.Node | None = None  # the node being lowered, whose constants these are
        self.io_layout = io_layout
        self.int8_io = int8_io and precision == "int8"
        self.w = FlatbufferWriter(f"deploycomp: {model.graph.name or 'model'}")
        self.values: dict[str, Stored] = {}
        self._layouts: dict[tuple[str, Perm], int] = {}
        self._constants: dict[tuple, int] = {}
        self.graph_outputs = {v.name for v in model.graph.outputs}
        # int8 (see .quantized): dequantized constants, activations behind a DequantizeLinear,
        # and nodes an int8 op already wrote (its fused Relu)
        self.folded: dict[str, np.ndarray] = {}
        self.folded_quant: dict[str, tuple] = {}
        self.dequantized: dict[str, ir.Value] = {}
        self.skip: set[int] = set()
        self._passthrough_quant = None
        self.unit_height: dict[int, int] = {}
        """(N, W, C) or (N, D, H, W, C) tensor -> the same data as (N, 1, W, C) or (N * D, H, W, C)
        (see :meth:`nhwc_input`)."""
        self.kept_fp32: list[str] = []
        self.float_compute: list[str] = []  # int8 builds: compute nodes behind QDQ lowered to float kernels
        self.activation_of_op: dict[int, int] = {}
        """Tensor -> the op whose fused activation applies to it (an op followed by a crop)."""
        self._unwritten: dict[int, int] = {}
        """(N, W, C) tensors a 1-D op wrote as (N, 1, W, C) that no op has read yet."""

    # values -----------------------------------------------------------------------------

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        if value is None:
            return None
        if value.name in self.folded:
            return self.folded[value.name]
        if value.const_value is None:
            return None
        return value.const_value.numpy()

    @staticmethod
    def shape(value: ir.Value) -> tuple[int, ...]:
        if value.shape is None or not all(isinstance(d, int) for d in value.shape):
            raise UnsupportedError(f"tflite: value '{value.name}' has no static shape (shape inference could not fix it)")
        return tuple(value.shape)

    @staticmethod
    def dtype(value: ir.Value) -> np.dtype:
        if value.dtype is None:
            raise UnsupportedError(f"tflite: value '{value.name}' has no known element type")
        return np.dtype(value.dtype.numpy())

    def perm(self, value: ir.Value) -> Perm:
        if self.const(value) is not None:
            return identity(len(self.shape(value)))
        if value.name not in self.values and value.name in self.dequantized:
            return self.values[self.dequantized[value.name].name].perm
        return self.values[value.name].perm

    def input(self, value: ir.Value, perm: Perm | None = None) -> int:
        """Tensor index of ``value`` stored in layout ``perm`` (its current one if None)."""
        data = self.const(value)
        if data is not None:
            return self.constant(value.name, data if perm is None else np.transpose(data, perm))
        if value.name not in self.values and value.name in self.dequantized:  # a float op reads int8 data
            source = self.values[self.dequantized[value.name].name]
            index = self.w.tensor(value.name, self.w.shape(source.index), np.float32)
            self.emit("DEQUANTIZE", [source.index], [index])
            self.values[value.name] = Stored(index, source.perm)
        stored = self.values[value.name]
        if perm is None or tuple(perm) == stored.perm:
            return stored.index
        key = (value.name, tuple(perm))
        if key not in self._layouts:
            shape = tuple(self.shape(value)[p] for p in perm)
            out = self.w.tensor(f"{value.name}/{'x'.join(map(str, perm))}", shape, self.w.dtype(stored.index),
                                self.w.quantization(stored.index))
            self.emit("TRANSPOSE", [stored.index, self.int32(change(stored.perm, perm))], [out])
            self._layouts[key] = out
        return self._layouts[key]

    def broadcast_input(self, value: ir.Value, rank: int, perm: Perm) -> int:
        """``value`` as an operand of an element-wise op whose output has rank ``rank``
        and layout ``perm``: lower-rank operands are first padded with leading 1s."""
        data = self.const(value)
        shape = self.shape(value)
        if data is not None:
            data = data.reshape((1,) * (rank - data.ndim) + data.shape)
            return self.constant(value.name, np.transpose(data, perm))
        if len(shape) == rank:
            return self.input(value, perm)
        full = (1,) * (rank - len(shape)) + shape
        expanded = self.w.tensor(f"{value.name}/rank{rank}", full, self.dtype(value))
        self.emit("RESHAPE", [self.input(value, identity(len(shape))), self.int32(full)], [expanded],
                  self.w.options("Reshape", newShape=list(full)))
        if is_identity(perm):
            return expanded
        out = self.w.tensor(f"{value.name}/rank{rank}/t", tuple(full[p] for p in perm), self.dtype(value))
        self.emit("TRANSPOSE", [expanded, self.int32(perm)], [out])
        return out

    def constant(self, name: str, data: np.ndarray) -> int:
        data = np.asarray(data)
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        # int64 stays int64: an ONNX int64 constant is an operand of int64 ops (index tensors
        # TFLite wants as int32 are made int32 by the rules themselves, see int32())
        fp16 = (self.precision == "fp16" and data.dtype == np.float32 and data.size >= FP16_MIN_ELEMENTS
                and id(self._node) not in self.fp32_nodes)
        key = (data.dtype.str, data.shape, data.tobytes(), fp16)
        if key in self._constants:
            return self._constants[key]
        if fp16 and (_fp16_exact(data) if self.fp16_exact else fp16_holds(data)):
            half = self.w.constant(f"{name}/fp16", data.astype(np.float16))
            index = self.w.tensor(name, data.shape, np.float32)
            self.emit("DEQUANTIZE", [half], [index])
        else:
            if fp16:
                self.kept_fp32.append(name)
            index = self.w.constant(name, data)
        self._constants[key] = index
        return index

    def int32(self, values: Iterable[int]) -> int:
        arr = np.asarray(list(values), dtype=np.int32)
        return self.constant("const/i32", arr)

    def scalar(self, value: float | int, dtype=np.float32) -> int:
        return self.constant("const/scalar", np.asarray(value, dtype=dtype))

    def output(self, value: ir.Value, perm: Perm, dtype: np.dtype | None = None, quant=None) -> int:
        """A new tensor for ONNX ``value`` stored in layout ``perm``."""
        shape = tuple(self.shape(value)[p] for p in perm)
        dtype = dtype or self.dtype(value)
        if quant is None and np.dtype(dtype) == np.int8:
            quant = self._passthrough_quant
        index = self.w.tensor(value.name, shape, dtype, quant)
        self.values[value.name] = Stored(index, tuple(perm))
        return index

    def alias(self, value: ir.Value, index: int, perm: Perm) -> None:
        """``value`` is an existing tensor seen in another layout (Transpose, Identity, fusion)."""
        self.values[value.name] = Stored(index, tuple(perm))

    # 1-D ops as 2-D ones over a unit height -------------------------------------------

    @staticmethod
    def channels_last(rank: int) -> Perm:
        """The layout convolutions and pools want: NHWC, or for a 1-D op's (N, C, W) value (N, W, C)."""
        return NCHW_TO_NHWC if rank == 4 else (0,) + tuple(range(2, rank)) + (1,)

    def nhwc_input(self, value: ir.Value) -> int:
        """``value`` as the 4-D NHWC tensor a TFLite convolution or pool reads.

        TFLite's are 2-D only; a 1-D one (audio front-ends, embedding CNNs) is the 2-D op
        over a unit height: the (N, C, W) value stored (N, W, C) is RESHAPEd to (N, 1, W, C),
        the same bytes. A 3-D one whose kernel is 1 deep (a watermarking GAN's per-frame
        convs, (2+1)-D video models) is the 2-D op over every frame: the (N, C, D, H, W)
        value stored (N, D, H, W, C) is RESHAPEd to (N * D, H, W, C), the same bytes too. A
        value such an op wrote is read in the 4-D form that op wrote, so a chain of them
        reshapes only where something else reads it."""
        rank = len(self.shape(value))
        if rank == 4:
            return self.input(value, NCHW_TO_NHWC)
        if rank not in (3, 5):
            raise UnsupportedError(f"tflite: a {rank - 2}-D convolution or pool (1-D and 2-D only, 3-D 1 deep)")
        index = self.input(value, self.channels_last(rank))
        if index not in self.unit_height:
            shape = self.w.shape(index)
            four = (shape[0], 1, *shape[1:]) if rank == 3 else (shape[0] * shape[1], *shape[2:])
            t4 = self.w.tensor(f"{self.w.tensors[index].name}/4d", four, self.w.dtype(index), self.w.quantization(index))
            self.emit("RESHAPE", [index, self.int32(four)], [t4], self.w.options("Reshape", newShape=list(four)))
            self.unit_height[index] = t4
        return self.unit_height[index]

    def emit_2d(self, builtin: str, inputs: list[int], out: int, options=None) -> int:
        """Emit a 2-D op writing ``out``; a rank-3 ``out`` (N, W, C) is written as (N, 1, W, C),
        a rank-5 one (N, D, H, W, C) as (N * D, H, W, C), and RESHAPEd into it (see
        :meth:`nhwc_input`)."""
        shape = self.w.shape(out)
        if len(shape) == 4:
            return self.emit(builtin, inputs, [out], options)
        four = (shape[0], 1, *shape[1:]) if len(shape) == 3 else (shape[0] * shape[1], *shape[2:])
        t4 = self.w.tensor(f"{self.w.tensors[out].name}/4d", four, self.w.dtype(out), self.w.quantization(out))
        op = self.emit(builtin, inputs, [t4], options)
        self.unit_height[out] = t4
        self._unwritten[out] = t4  # the RESHAPE is emitted when something reads ``out`` itself
        return op

    def _write_unit_height(self, out: int) -> None:
        t4 = self._unwritten.pop(out)
        shape = self.w.shape(out)
        self.w.op("RESHAPE", [t4, self.int32(shape)], [out], self.w.options("Reshape", newShape=list(shape)))

    def temp(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> int:
        return self.w.tensor(name, shape, dtype)

    def emit(self, builtin: str, inputs: list[int], outputs: list[int], options=None) -> int:
        for i in inputs:
            if i in self._unwritten:
                self._write_unit_height(i)
        return self.w.op(builtin, inputs, outputs, options)

    def non_negative(self, index: int) -> bool:
        """Whether tensor ``index`` is >= 0 by construction: a Relu's, Relu6's, sigmoid's or
        |x|'s output (fused or not), an int8 tensor whose zero point is -128, or such a
        tensor moved by a reshape, transpose, zero pad, max pool or (de)quantize."""
        quant = self.w.quantization(index)
        if quant is not None and self.w.dtype(index) == "int8" and len(quant.zero_point) == 1 \
                and quant.zero_point[0] == -128:
            return True
        op_index = self.w.producer.get(self._unwritten.get(index, index))
        if op_index is None:
            return False
        op = self.w.operators[op_index]
        if getattr(op.builtinOptions, "fusedActivationFunction", 0) in (ACTIVATION["RELU"], ACTIVATION["RELU6"]):
            return True
        builtin = self.w.builtin(op_index)
        if builtin in ("RELU", "RELU6", "LOGISTIC", "ABS", "EXP", "SQRT"):
            return True
        if builtin in ("RESHAPE", "TRANSPOSE", "PAD", "MAX_POOL_2D", "QUANTIZE", "DEQUANTIZE"):
            return self.non_negative(int(op.inputs[0]))
        return False

    # fused activations -----------------------------------------------------------------

    def clip_bounds(self, node: ir.Node) -> tuple[float, float] | None:
        """A Clip's (min, max), -inf/inf where absent; None if a bound is not a constant."""
        bounds = []
        for i, default in ((1, -np.inf), (2, np.inf)):
            value = node.inputs[i] if len(node.inputs) > i else None
            if value is None:
                bounds.append(default)
                continue
            data = self.const(value)
            if data is None:
                return None
            bounds.append(float(data))
        return bounds[0], bounds[1]

    def activation_of(self, node: ir.Node) -> str | None:
        """The TFLite fused activation that ``node`` (a Relu or a Clip) is, if any."""
        if node.op_type == "Relu":
            return "RELU"
        if node.op_type == "Clip":
            return FUSED_CLIPS.get(self.clip_bounds(node))
        return None

    def fuse_activation(self, node: ir.Node, activation: str) -> bool:
        """Fold ``activation`` into the op producing ``node``'s input if nothing else reads it."""
        src = node.inputs[0]
        if src is None or src.name in self.graph_outputs or len(src.uses()) != 1 or src.name not in self.values:
            return False
        stored = self.values[src.name]
        written = self._unwritten.get(stored.index, stored.index)  # a 1-D op's output: its 2-D op's
        op_index = self.activation_of_op.get(stored.index, self.w.producer.get(written))
        if op_index is None:
            return False
        options = self.w.operators[op_index].builtinOptions
        if options is None or getattr(options, "fusedActivationFunction", None) != 0:
            return False
        options.fusedActivationFunction = ACTIVATION[activation]
        self.alias(node.outputs[0], stored.index, stored.perm)
        return True

    # the walk ------------------------------------------------------------------------------

    def run(self) -> Lowered:
        missing = unsupported_nodes(self.model)
        if missing:
            ops = sorted({m["op"] for m in missing})
            first = missing[0]
            raise UnsupportedError(f"tflite: no lowering for op(s) {', '.join(ops)} "
                                   f"(first: {node_label(first['node'], first['op'], first['output'])})")
        io_layouts: dict[str, list[int]] = {}
        for value in self.model.graph.inputs:
            perm = self._input_layout(value)
            quantizer = self._input_quantizer(value)
            if quantizer is not None:  # full-integer I/O: the model takes the int8 tensor itself
                from deploycomp.backends.tflite.quantized import activation_quantization

                index = self.output(quantizer.outputs[0], perm, np.int8, activation_quantization(self, quantizer))
                self.w.tensors[index].name = value.name
                self.dequantized[value.name] = quantizer.outputs[0]
            else:
                index = self.output(value, perm)
            self.w.inputs.append(index)
            io_layouts[value.name] = list(perm)
        self.lower_nodes(self.model.graph)
        for value in self.model.graph.outputs:
            name, index, perm = self._graph_output(value)
            self.w.outputs.append(index)
            io_layouts[name] = list(perm)
        self.w.share_repeated_weights(REPEATED_WEIGHT_COPIES)
        return Lowered(self.w.serialize(), io_layouts, self.w.op_counts(), self.w.op_counts("int8"), self.kept_fp32,
                       self.w.hybrid_op_counts(), self.float_compute)

    def lower_nodes(self, graph: Iterable[ir.Node]) -> None:
        """Lower ``graph``'s nodes in order (the main graph, or an ``If`` branch inline)."""
        for node in _topological(graph):
            if id(node) in self.skip:
                continue
            try:
                if self._fold(node):
                    continue
                if self.precision == "int8" and self._int8_passthrough(node):
                    continue
                outer, self._node = self._node, node
                emitted = len(self.w.operators)
                try:
                    LOWERINGS[node.op_type](self, node)
                finally:
                    self._node = outer  # (an If branch is lowered inside its node's rule)
                if self._float_behind_qdq(node, self.w.operators[emitted:]):
                    self.float_compute.append(node.name)
            except UnsupportedError as e:
                if getattr(e, "node", None) is not None:  # already named by a branch's node
                    raise
                raise _node_error(e, node) from None

    def _float_behind_qdq(self, node: ir.Node, emitted: list) -> bool:
        """A compute node whose input was quantized for it, lowered to operators none of
        which reads int8 weights or writes int8 (a batched MatMul with a 3-D constant, a
        tree ensemble's path tables): the QDQ's rounding, a float kernel's cost. Compute
        nodes are the policy's, as the int8 record counts them."""
        if (self.precision != "int8" or node.op_type not in POLICIES["tflite"].compute_ops or not node.inputs
                or node.inputs[0] is None or node.inputs[0].name not in self.dequantized):
            return False
        return not any(self.w.dtype(int(o.outputs[0])) == "int8"
                       or (len(o.inputs) > 1 and o.inputs[1] >= 0 and self.w.dtype(int(o.inputs[1])) == "int8")
                       for o in emitted)

    def _fold(self, node: ir.Node) -> bool:
        """Evaluate ``node`` now if its inputs are constants (see the module docstring)."""
        if not foldable(node, lambda v: self.const(v) is not None):
            return False
        if node.op_type in ("Shape", "Size") and _static(node.inputs[0]):
            dims = np.asarray(self.shape(node.inputs[0]), np.int64)
            if node.op_type == "Size":
                results = [np.asarray(np.prod(dims), np.int64)]
            else:
                start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", len(dims))
                results = [dims[start:end]]
        else:
            from onnx.reference import ReferenceEvaluator

            opsets = {d: v for d, v in self.model.opset_imports.items() if d in ("", "ai.onnx")} or {"": 17}
            feeds = {v.name: self.const(v) for v in node.inputs if v is not None}
            try:
                results = ReferenceEvaluator(ir.serde.serialize_node(node), opsets=opsets).run(None, feeds)
            except Exception as e:  # noqa: BLE001  (an op the reference cannot evaluate: lower it, or name it)
                if node.op_type in LOWERINGS:
                    return False
                raise UnsupportedError(f"tflite: {node.op_type} of constants could not be evaluated "
                                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        for out, data in zip(node.outputs, results):
            if out is not None:
                self.folded[out.name] = np.asarray(data)
        return True

    def _graph_output(self, value: ir.Value) -> tuple[str, int, Perm]:
        """(ONNX name, tensor, layout) of a graph output; copied by a RESHAPE where the tensor
        holding its value is a constant, a graph input or another output (see the module
        docstring). A graph input that is itself an output stays one tensor (its name is
        both)."""
        name = value.name
        if self.int8_io and value.name not in self.values and value.name in self.dequantized:
            value = self.dequantized[value.name]  # full-integer I/O: hand out the int8 tensor
            name = name.removesuffix("__q")
        data = self.const(value)
        if data is not None:  # exact, in its ONNX type (not narrowed to int32 or float16)
            index = self.w.constant(f"{name}/constant", data.astype(self.dtype(value)))
            perm = identity(data.ndim)
        elif value.name in self.values or value.name in self.dequantized:
            perm = self.perm(value) if self.io_layout == "nhwc" else identity(len(self.shape(value)))
            index = self.input(value, perm)
        else:
            raise UnsupportedError(f"tflite: graph output '{name}' is written by no lowered op")
        if index in self._unwritten:
            self._write_unit_height(index)
        is_input = index in self.w.inputs
        if is_input and self.w.tensors[index].name == name:
            return name, index, perm
        if is_input or index in self.w.outputs or self.w.is_constant(index) or index not in self.w.producer:
            shape = self.w.shape(index)
            copy = self.w.tensor(name, shape, self.w.dtype(index), self.w.quantization(index))
            self.emit("RESHAPE", [index, self.int32(shape)], [copy], self.w.options("Reshape", newShape=list(shape)))
            index = copy
        self._rename(index, name)
        return name, index, perm

    def _input_layout(self, value: ir.Value) -> Perm:
        """NHWC for 4-D inputs, NWC for 3-D ones a 1-D convolution or pool reads and NDHWC for
        5-D ones a 3-D one 1 deep reads (through element-wise ops, pads and int8's
        QuantizeLinear/DequantizeLinear), else ONNX order; all ONNX order with
        ``io_layout="nchw"``."""
        rank = len(self.shape(value))
        if self.io_layout != "nhwc":
            return identity(rank)
        readers, frontier, seen = [], [value], set()
        while frontier and rank in (3, 4, 5):
            for node, _ in frontier.pop().uses():
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if node.op_type in LAYOUT_FREE and node.outputs and node.outputs[0].shape is not None \
                        and len(node.outputs[0].shape) == rank:
                    frontier.append(node.outputs[0])
                else:
                    readers.append(node)
        if rank == 4:
            # an input the model itself takes channels-last (a Keras export's NHWC image, put
            # into NCHW by a Transpose) is NHWC as it stands: permuted again it was
            # [N, W, C, H], a layout no camera gives, and a TRANSPOSE to undo it
            to_nchw = [n for n in readers if n.op_type == "Transpose" and list(n.attributes.get_ints("perm", [])) == [0, 3, 1, 2]]
            return identity(rank) if readers and len(to_nchw) == len(readers) else NCHW_TO_NHWC
        if {n.op_type for n in readers} & {"Conv", "ConvTranspose", "MaxPool", "AveragePool"}:
            return self.channels_last(rank)
        return identity(rank)

    def _input_quantizer(self, value: ir.Value) -> ir.Node | None:
        if not self.int8_io:
            return None
        quantizers = [c for c, _ in value.uses() if c.op_type == "QuantizeLinear" and c.graph is self.model.graph]
        if len(quantizers) != 1:
            return None
        return quantizers[0]

    def _int8_passthrough(self, node: ir.Node) -> bool:
        """Run a scale-preserving op (pooling, resize, reshape, split, slice, zero pad,
        transpose) directly on an int8 activation: the output keeps the input's scale and
        zero point, as TFLite's int8 spec requires of these ops, and stays int8 for the
        next int8 op or QuantizeLinear (a requantize), or is dequantized if a float op reads it."""
        if node.op_type not in INT8_PASSTHROUGH or node.inputs[0] is None or node.inputs[0].name not in self.dequantized:
            return False
        if any(v is not None and self.const(v) is None for v in node.inputs[1:]):
            return False
        if node.op_type == "Pad" and len(node.inputs) > 2 and node.inputs[2] is not None and float(self.const(node.inputs[2])):
            return False
        if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            return False
        source = self.dequantized[node.inputs[0].name]
        self._passthrough_quant = self.w.quantization(self.values[source.name].index)
        shadows = [ir.Value(name=f"{o.name}/i8", shape=o.shape, type=ir.TensorType(ir.DataType.INT8)) for o in node.outputs]
        shadow = ir.Node("", node.op_type, [source, *node.inputs[1:]], list(node.attributes.values()),
                         outputs=shadows, name=node.name)
        try:
            LOWERINGS[node.op_type](self, shadow)
        finally:
            self._passthrough_quant = None
            for i in range(len(shadow.inputs)):
                shadow.replace_input_with(i, None)  # leave no uses behind on the real graph's values
        for original, value in zip(node.outputs, shadows):
            self.dequantized[original.name] = value
        return True

    def _rename(self, index: int, name: str) -> None:
        """Graph outputs carry the ONNX name, whichever tensor ended up holding them."""
        for i, t in enumerate(self.w.tensors):
            if t.name == name and i != index:
                t.name = f"{name}/stored"
        self.w.tensors[index].name = name
