"""Element-wise ONNX ops -> TFLite: they run in whatever layout their input is stored in.

Binary ops take the layout of their highest-rank non-constant operand; constants are
broadcast and permuted at conversion time, so a bias or a scale never costs a
TRANSPOSE. Relu/Relu6/Clip fold into the producing op's fused activation when that op
has one and nothing else reads its output.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.backends.tflite import quantized
from deploycomp.backends.tflite.lowering import Lowering, lowers
from deploycomp.errors import UnsupportedError

_BINARY = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV", "Max": "MAXIMUM", "Min": "MINIMUM",
           "Pow": "POW", "Equal": "EQUAL", "Less": "LESS", "Greater": "GREATER", "LessOrEqual": "LESS_EQUAL",
           "GreaterOrEqual": "GREATER_EQUAL", "And": "LOGICAL_AND", "Or": "LOGICAL_OR", "PRelu": "PRELU"}
_BINARY_OPTIONS = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div"}
_UNARY = {"Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH", "Exp": "EXP", "Log": "LOG",
          "Sqrt": "SQRT", "Neg": "NEG", "Abs": "ABS", "Floor": "FLOOR", "Ceil": "CEIL", "Round": "ROUND",
          "Sin": "SIN", "Cos": "COS", "Not": "LOGICAL_NOT", "Sign": "SIGN"}


def _layout_of(lo: Lowering, values: list[ir.Value]) -> tuple[int, tuple[int, ...]]:
    rank = max(len(lo.shape(v)) for v in values)
    for v in values:
        if lo.const(v) is None and len(lo.shape(v)) == rank:
            return rank, lo.perm(v)
    return rank, tuple(range(rank))


def binary(lo: Lowering, node: ir.Node, builtin: str, operands: list[ir.Value] | None = None) -> int:
    operands = operands or list(node.inputs)
    rank, perm = _layout_of(lo, operands)
    ins = [lo.broadcast_input(v, rank, perm) for v in operands]
    out = lo.output(node.outputs[0], perm)
    kind = _BINARY_OPTIONS.get(builtin)
    lo.emit(builtin, ins, [out], lo.w.options(kind, fusedActivationFunction=0) if kind else None)
    return out


def _int8_elementwise(lo: Lowering, node: ir.Node, builtin: str, options=None) -> bool:
    """An int8 kernel when every input is an int8 activation and the output is quantized:
    residual ADDs, SiLU's LOGISTIC and MUL, affine MUL/ADD by a constant."""
    if lo.precision != "int8":
        return False
    if any((c := lo.const(v)) is not None and not np.isfinite(c).all() for v in node.inputs):
        return False  # (a -inf mask made an infinite scale, NaN int8 data: LiteRT aborted the process)
    dynamic = [v for v in node.inputs if lo.const(v) is None]
    sources = [quantized.int8_source(lo, v) for v in dynamic]
    out_shape = lo.shape(node.outputs[0])
    if not sources or any(s is None or lo.shape(s) != out_shape for s in sources):
        return False
    qout = quantized.int8_output(lo, node)
    if qout is None:
        return False
    if qout.activation != "NONE" and builtin not in ("ADD", "MUL"):
        return False
    perm = lo.perm(sources[0])
    by_name = dict(zip((v.name for v in dynamic), sources))
    partner = lo.w.quantization(lo.input(sources[0], perm)).scale[0] if builtin == "ADD" else None
    ins = [lo.input(by_name[v.name], perm) if v.name in by_name else
           quantized.constant_int8(lo, v, len(out_shape), perm, partner) for v in node.inputs]
    out = quantized.write_int8(lo, node, qout, perm)
    if builtin in _BINARY_OPTIONS:
        options = lo.w.options(_BINARY_OPTIONS[builtin], fusedActivationFunction=quantized.fused(qout.activation))
    lo.emit(builtin, ins, [out], options)
    return True


@lowers(*_BINARY)
def lower_binary(lo: Lowering, node: ir.Node) -> None:
    builtin = _BINARY[node.op_type]
    if node.op_type in ("Max", "Min") and len([v for v in node.inputs if v is not None]) != 2:
        lower_variadic(lo, node)
        return
    if node.op_type in ("Add", "Mul") and _int8_elementwise(lo, node, builtin):
        return
    if node.op_type in ("Div", "Mul") and _gelu(lo, node):
        return
    if node.op_type == "Div" and lo.dtype(node.inputs[0]).kind in "iu" and lo.dtype(node.inputs[0]) != np.int32:
        _integer_div(lo, node)
        return
    exponent = lo.const(node.inputs[1]) if node.op_type == "Pow" else None
    if exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) in _POWERS \
            and lo.dtype(node.inputs[0]).kind == "f":
        _power(lo, node, float(exponent.reshape(-1)[0]))
        return
    binary(lo, node, builtin)


def _integer_div(lo: Lowering, node: ir.Node) -> None:
    """TFLite's DIV has integer kernels for int32 only (a text recognizer's int64 lengths
    from its widths input: "Div only supports FLOAT32, INT32 ..."): both operands cast to
    int32, divided (truncating toward zero, as ONNX does) and cast back, as TensorFlow's
    own converter narrows int64 (values past int32 would wrap)."""
    rank, perm = _layout_of(lo, list(node.inputs))
    operands = []
    for value in node.inputs:
        tensor = lo.broadcast_input(value, rank, perm)
        narrow = lo.temp(f"{value.name}/i32", lo.w.shape(tensor), np.int32)
        lo.emit("CAST", [tensor], [narrow])
        operands.append(narrow)
    quotient = lo.temp(f"{node.outputs[0].name}/i32", np.broadcast_shapes(*(lo.w.shape(t) for t in operands)), np.int32)
    lo.emit("DIV", operands, [quotient], lo.w.options("Div", fusedActivationFunction=0))
    lo.emit("CAST", [quotient], [lo.output(node.outputs[0], perm)])


_POWERS = (0.5, -0.5, 1.0, -1.0, 2.0, 3.0)
"""Float exponents written as the ops they are (XNNPACK has no POW): SQRT, RSQRT, the
input itself, a reciprocal, x*x, x*x*x."""


def _power(lo: Lowering, node: ir.Node, exponent: float) -> None:
    op = Steps(lo, node)
    if exponent == 0.5:
        op("SQRT", op.x, last=True)
    elif exponent == -0.5:
        op("RSQRT", op.x, last=True)
    elif exponent == 1.0:
        lo.alias(node.outputs[0], op.x, op.perm)
    elif exponent == -1.0:
        op("DIV", 1.0, op.x, last=True)
    elif exponent == 2.0:
        op("MUL", op.x, op.x, last=True)
    else:
        op("MUL", op("MUL", op.x, op.x), op.x, last=True)


def _only_use(value: ir.Value, op_type: str) -> ir.Node | None:
    uses = list(value.uses())
    return uses[0][0] if len(uses) == 1 and uses[0][0].op_type == op_type else None


def _scalar_near(lo: Lowering, value: ir.Value | None, target: float) -> bool:
    data = lo.const(value) if value is not None else None
    return data is not None and data.size == 1 and abs(float(data.reshape(-1)[0]) - target) < 1e-4 * abs(target)


def _gelu(lo: Lowering, node: ir.Node) -> bool:
    """GELU written with Erf, as exported below opset 20 (ONNX has no Gelu there):
    ``inner = Add(Erf(Div(x, sqrt 2)), 1)`` (or ``Mul(x, 1/sqrt 2)``), then
    ``Mul(Mul(x, inner), 0.5)`` (PyTorch's TorchScript exporter) or ``Mul(x, Mul(inner,
    0.5))`` (its dynamo exporter at opset 18, which had lowered to 39 ADDs and 48 MULs of an
    erf approximation where the other form gave one GELU), becomes one GELU op on x,
    matched from its first node; the Erf, Add and Muls are skipped. Anything else (a
    quantized Add in between, other constants) lowers op by op."""
    x, c = node.inputs
    if lo.const(x) is not None or not _scalar_near(lo, c, 2 ** 0.5 if node.op_type == "Div" else 2 ** -0.5):
        return False
    if node.outputs[0].name in lo.graph_outputs:
        return False
    erf = _only_use(node.outputs[0], "Erf")
    add = erf and _only_use(erf.outputs[0], "Add")
    if add is None or not any(_scalar_near(lo, v, 1.0) for v in add.inputs):
        return False
    first = _only_use(add.outputs[0], "Mul")
    if first is None:
        return False
    if x in first.inputs:  # (x * inner) * 0.5
        last = _only_use(first.outputs[0], "Mul")
        if last is None or not any(_scalar_near(lo, v, 0.5) for v in last.inputs):
            return False
    elif any(_scalar_near(lo, v, 0.5) for v in first.inputs):  # x * (inner * 0.5)
        last = _only_use(first.outputs[0], "Mul")
        if last is None or x not in last.inputs:
            return False
    else:
        return False
    if any(v.name in lo.graph_outputs for v in (erf.outputs[0], add.outputs[0], first.outputs[0])):
        return False
    for skipped in (erf, add, first, last):
        lo.skip.add(id(skipped))
    lo.emit("GELU", [lo.input(x)], [lo.output(last.outputs[0], lo.perm(x))], lo.w.options("Gelu", approximate=False))
    return True


@lowers(*_UNARY)
def lower_unary(lo: Lowering, node: ir.Node) -> None:
    # HardSwish stays float between DEQUANTIZE and QUANTIZE: XNNPACK has no int8 HARD_SWISH,
    # and an op it cannot take splits the graph into separate delegate partitions
    if node.op_type == "Sigmoid" and _int8_elementwise(lo, node, _UNARY[node.op_type]):
        return
    x = node.inputs[0]
    perm = lo.perm(x)
    lo.emit(_UNARY[node.op_type], [lo.input(x)], [lo.output(node.outputs[0], perm)])


@lowers("Relu")
def lower_relu(lo: Lowering, node: ir.Node) -> None:
    if not lo.fuse_activation(node, "RELU"):
        lower_simple(lo, node, "RELU")


def lower_simple(lo: Lowering, node: ir.Node, builtin: str, options=None) -> None:
    x = node.inputs[0]
    lo.emit(builtin, [lo.input(x)], [lo.output(node.outputs[0], lo.perm(x))], options)


@lowers("LeakyRelu")
def lower_leaky_relu(lo: Lowering, node: ir.Node) -> None:
    alpha = node.attributes.get_float("alpha", 0.01)
    lower_simple(lo, node, "LEAKY_RELU", lo.w.options("LeakyRelu", alpha=alpha))


@lowers("Gelu")
def lower_gelu(lo: Lowering, node: ir.Node) -> None:
    approximate = node.attributes.get_string("approximate", "none") == "tanh"
    lower_simple(lo, node, "GELU", lo.w.options("Gelu", approximate=approximate))


@lowers("Identity")
def lower_identity(lo: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    lo.alias(node.outputs[0], lo.input(x), lo.perm(x))


@lowers("Clip")
def lower_clip(lo: Lowering, node: ir.Node) -> None:
    """A fused activation where the bounds are one; else MAXIMUM / MINIMUM by the bounds,
    constants or tensors (e.g. a spectrogram floored at its own maximum minus 80 dB)."""
    bounds = lo.clip_bounds(node)
    if bounds is not None:
        name = lo.activation_of(node)
        if name is not None:
            if not lo.fuse_activation(node, name):
                lower_simple(lo, node, name)
            return
    x = node.inputs[0]
    rank, perm = len(lo.shape(x)), lo.perm(x)
    current = lo.input(x)
    shape = lo.w.shape(current)
    for i, builtin in ((1, "MAXIMUM"), (2, "MINIMUM")):
        bound = node.inputs[i] if len(node.inputs) > i else None
        if bound is None:
            continue
        data = lo.const(bound)
        if data is not None and np.isinf(data).all():
            continue
        operand = lo.scalar(float(data), lo.dtype(x)) if data is not None and data.size == 1 else \
            lo.broadcast_input(bound, rank, perm)
        out = lo.temp(f"{node.outputs[0].name}/{builtin.lower()}", shape, lo.dtype(x))
        lo.emit(builtin, [current, operand], [out])
        current = out
    lo.alias(node.outputs[0], current, perm)


@lowers("HardSigmoid")
def lower_hard_sigmoid(lo: Lowering, node: ir.Node) -> None:
    """max(0, min(1, a*x + b)) = relu6(6a*x + 6b) / 6: MUL, ADD with fused RELU6, MUL."""
    alpha = node.attributes.get_float("alpha", 0.2)
    beta = node.attributes.get_float("beta", 0.5)
    x = node.inputs[0]
    perm = lo.perm(x)
    shape = lo.w.shape(lo.input(x))
    name = node.outputs[0].name
    scaled, shifted = lo.temp(f"{name}/scaled", shape), lo.temp(f"{name}/relu6", shape)
    lo.emit("MUL", [lo.input(x), lo.scalar(6 * alpha)], [scaled], lo.w.options("Mul", fusedActivationFunction=0))
    lo.emit("ADD", [scaled, lo.scalar(6 * beta)], [shifted], lo.w.options("Add", fusedActivationFunction=3))
    lo.emit("MUL", [shifted, lo.scalar(1 / 6)], [lo.output(node.outputs[0], perm)],
            lo.w.options("Mul", fusedActivationFunction=0))


@lowers("BatchNormalization")
def lower_batch_norm(lo: Lowering, node: ir.Node) -> None:
    """Inference BatchNorm: one MUL and one ADD by per-channel constants."""
    x, scale, bias, mean, var = node.inputs[:5]
    params = [lo.const(v) for v in (scale, bias, mean, var)]
    if any(p is None for p in params):
        raise UnsupportedError("tflite: BatchNormalization with non-constant statistics")
    s, b, m, v = (p.astype(np.float64) for p in params)
    eps = node.attributes.get_float("epsilon", 1e-5)
    mul = s / np.sqrt(v + eps)
    add = b - m * mul
    rank = len(lo.shape(x))
    per_channel = (1, -1) + (1,) * (rank - 2)
    perm = lo.perm(x)
    shape = lo.w.shape(lo.input(x))
    scaled = lo.temp(f"{node.outputs[0].name}/scaled", shape)
    lo.emit("MUL", [lo.input(x), lo.constant("bn/mul", np.transpose(mul.astype(np.float32).reshape(per_channel), perm))],
            [scaled], lo.w.options("Mul", fusedActivationFunction=0))
    lo.emit("ADD", [scaled, lo.constant("bn/add", np.transpose(add.astype(np.float32).reshape(per_channel), perm))],
            [lo.output(node.outputs[0], perm)], lo.w.options("Add", fusedActivationFunction=0))


@lowers("Cast")
def lower_cast(lo: Lowering, node: ir.Node) -> None:
    lower_simple(lo, node, "CAST")


@lowers("Where")
def lower_where(lo: Lowering, node: ir.Node) -> None:
    rank, perm = _layout_of(lo, list(node.inputs))
    ins = [lo.broadcast_input(v, rank, perm) for v in node.inputs]
    lo.emit("SELECT_V2", ins, [lo.output(node.outputs[0], perm)])


class Steps:
    """A composite element-wise op in the stored layout of its input: each call emits one
    TFLite op (operands are tensor indices, ``int``, or scalars, ``float``) into a new
    tensor; the call with ``last=True`` writes the ONNX node's output."""

    def __init__(self, lo: Lowering, node: ir.Node, x: ir.Value | None = None):
        self.lo, self.node = lo, node
        x = x if x is not None else node.inputs[0]
        self.perm = lo.perm(x)
        self.x = lo.input(x)
        self.dtype = lo.dtype(x)
        self.count = 0

    def __call__(self, builtin: str, *operands, last: bool = False, dtype=None) -> int:
        lo = self.lo
        ins = [lo.scalar(v, self.dtype) if isinstance(v, float) else v for v in operands]
        shape = np.broadcast_shapes(*(lo.w.shape(i) for i in ins))
        self.count += 1
        out = lo.output(self.node.outputs[0], self.perm, dtype) if last else \
            lo.temp(f"{self.node.outputs[0].name}/{self.count}", shape, dtype or self.dtype)
        kind = _BINARY_OPTIONS.get(builtin)
        lo.emit(builtin, ins, [out], lo.w.options(kind, fusedActivationFunction=0) if kind else None)
        return out


@lowers("Sum", "Mean")
def lower_variadic(lo: Lowering, node: ir.Node) -> None:
    """Sum, Mean, and Max/Min of other than two inputs: a chain of binary ops (broadcasting)."""
    builtin = {"Sum": "ADD", "Mean": "ADD", "Max": "MAXIMUM", "Min": "MINIMUM"}[node.op_type]
    operands = [v for v in node.inputs if v is not None]
    rank, perm = _layout_of(lo, operands)
    ins = [lo.broadcast_input(v, rank, perm) for v in operands]
    if len(ins) == 1:
        lo.alias(node.outputs[0], ins[0], perm)
        return
    kind = _BINARY_OPTIONS.get(builtin)
    options = lo.w.options(kind, fusedActivationFunction=0) if kind else None
    current, name = ins[0], node.outputs[0].name
    for i, operand in enumerate(ins[1:], 1):
        last = i == len(ins) - 1 and node.op_type != "Mean"
        shape = np.broadcast_shapes(lo.w.shape(current), lo.w.shape(operand))
        out = lo.output(node.outputs[0], perm) if last else lo.temp(f"{name}/{i}", shape, lo.dtype(operands[0]))
        lo.emit(builtin, [current, operand], [out], options)
        current = out
    if node.op_type == "Mean":
        lo.emit("MUL", [current, lo.scalar(1.0 / len(ins))], [lo.output(node.outputs[0], perm)],
                lo.w.options("Mul", fusedActivationFunction=0))


_ERF = (0.3275911, (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))
"""Abramowitz & Stegun 7.1.26: erf(x) = 1 - t (a1 + t (a2 + ...)) exp(-x^2), t = 1 / (1 + p x),
for x >= 0, absolute error below 1.5e-7 (float32's own rounding near 1 is 6e-8)."""


@lowers("Erf")
def lower_erf(lo: Lowering, node: ir.Node) -> None:
    """TFLite has no ERF: the A&S 7.1.26 polynomial (see :data:`_ERF`) on |x|, signed by x
    (sign(x) as clamp(x * 1e30, -1, 1): ops XNNPACK runs). GELU written out with Erf
    (models below opset 20, where ONNX has no Gelu) lowers through this."""
    op = Steps(lo, node)
    p, coefficients = _ERF
    ax = op("ABS", op.x)
    t = op("DIV", 1.0, op("ADD", op("MUL", ax, p), 1.0))
    poly = op("MUL", t, coefficients[0])
    for a in coefficients[1:]:
        poly = op("MUL", op("ADD", poly, a), t)
    gauss = op("EXP", op("NEG", op("MUL", op.x, op.x)))
    magnitude = op("SUB", 1.0, op("MUL", poly, gauss))
    sign = op("MINIMUM", op("MAXIMUM", op("MUL", op.x, 1e30), -1.0), 1.0)
    op("MUL", sign, magnitude, last=True)


def _softplus(op: Steps, x: int, last: bool = False) -> int:
    """log(1 + exp(x)) as max(x, 0) + log(1 + exp(-|x|)): no overflow for large x."""
    return op("ADD", op("MAXIMUM", x, 0.0), op("LOG", op("ADD", op("EXP", op("NEG", op("ABS", x))), 1.0)), last=last)


@lowers("Softplus")
def lower_softplus(lo: Lowering, node: ir.Node) -> None:
    op = Steps(lo, node)
    _softplus(op, op.x, last=True)


@lowers("Mish")
def lower_mish(lo: Lowering, node: ir.Node) -> None:
    """x * tanh(softplus(x)), softplus computed without overflow."""
    op = Steps(lo, node)
    op("MUL", op.x, op("TANH", _softplus(op, op.x)), last=True)


def _negative_part(op: Steps, alpha: float, inner: float = 1.0) -> int:
    """alpha * (exp(min(x, 0) * inner) - 1): ELU's negative branch, 0 for x >= 0."""
    low = op("MINIMUM", op.x, 0.0)
    if inner != 1.0:
        low = op("MUL", low, inner)
    return op("MUL", op("SUB", op("EXP", low), 1.0), alpha)


@lowers("Elu")
def lower_elu(lo: Lowering, node: ir.Node) -> None:
    """TFLite's ELU has alpha 1; any other alpha is relu(x) + alpha * (exp(min(x, 0)) - 1)."""
    alpha = node.attributes.get_float("alpha", 1.0)
    if alpha == 1.0:
        lower_simple(lo, node, "ELU")
        return
    op = Steps(lo, node)
    op("ADD", op("MAXIMUM", op.x, 0.0), _negative_part(op, alpha), last=True)


@lowers("Selu")
def lower_selu(lo: Lowering, node: ir.Node) -> None:
    alpha = node.attributes.get_float("alpha", 1.67326319217681884765625)
    gamma = node.attributes.get_float("gamma", 1.05070102214813232421875)
    op = Steps(lo, node)
    op("MUL", op("ADD", op("MAXIMUM", op.x, 0.0), _negative_part(op, alpha)), gamma, last=True)


@lowers("Celu")
def lower_celu(lo: Lowering, node: ir.Node) -> None:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    alpha = node.attributes.get_float("alpha", 1.0)
    op = Steps(lo, node)
    op("ADD", op("MAXIMUM", op.x, 0.0), _negative_part(op, alpha, 1.0 / alpha), last=True)


@lowers("Softsign")
def lower_softsign(lo: Lowering, node: ir.Node) -> None:
    op = Steps(lo, node)
    op("DIV", op.x, op("ADD", op("ABS", op.x), 1.0), last=True)


@lowers("Reciprocal")
def lower_reciprocal(lo: Lowering, node: ir.Node) -> None:
    op = Steps(lo, node)
    op("DIV", 1.0, op.x, last=True)


def _ones_like(op: Steps, x: int) -> int:
    """A tensor of ones shaped like ``x`` (``ZEROS_LIKE + 1``): TFLite's ATAN2 takes two
    inputs of one shape, no broadcast."""
    return op("ADD", op("ZEROS_LIKE", x), 1.0)


@lowers("Atan", "Asin", "Acos", "Tan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh")
def lower_trigonometric(lo: Lowering, node: ir.Node) -> None:
    """The inverse and hyperbolic functions TFLite has no op for, from the ones it has
    (tf2onnx writes ``atan2`` as ``Atan`` and sign logic: a fingerprint model's direction
    map was refused). ``atan x = atan2(x, 1)``; ``asin x = atan2(x, sqrt(1 - x^2))`` and
    ``acos x = atan2(sqrt(1 - x^2), x)`` (exact at +-1); ``asinh`` on ``|x|`` with the
    sign put back (no cancellation for large negative x); ``atanh x = log((1 + x) /
    (1 - x)) / 2``."""
    op = Steps(lo, node)
    x, kind = op.x, node.op_type
    if kind == "Atan":
        op("ATAN2", x, _ones_like(op, x), last=True)
    elif kind in ("Asin", "Acos"):
        root = op("SQRT", op("SUB", 1.0, op("MUL", x, x)))
        op("ATAN2", *((x, root) if kind == "Asin" else (root, x)), last=True)
    elif kind == "Tan":
        op("DIV", op("SIN", x), op("COS", x), last=True)
    elif kind in ("Sinh", "Cosh"):
        up, down = op("EXP", x), op("EXP", op("NEG", x))
        op("MUL", op("SUB" if kind == "Sinh" else "ADD", up, down), 0.5, last=True)
    elif kind == "Asinh":
        size = op("ABS", x)
        magnitude = op("LOG", op("ADD", size, op("SQRT", op("ADD", op("MUL", size, size), 1.0))))
        op("MUL", magnitude, op("SIGN", x), last=True)
    elif kind == "Acosh":
        op("LOG", op("ADD", x, op("SQRT", op("SUB", op("MUL", x, x), 1.0))), last=True)
    else:  # Atanh
        op("MUL", op("LOG", op("DIV", op("ADD", x, 1.0), op("SUB", 1.0, x))), 0.5, last=True)


@lowers("ThresholdedRelu")
def lower_thresholded_relu(lo: Lowering, node: ir.Node) -> None:
    """x where x > alpha, else 0: SELECT_V2 on GREATER."""
    op = Steps(lo, node)
    above = op("GREATER", op.x, node.attributes.get_float("alpha", 1.0), dtype=np.bool_)
    op("SELECT_V2", above, op.x, 0.0, last=True)


@lowers("IsNaN")
def lower_isnan(lo: Lowering, node: ir.Node) -> None:
    op = Steps(lo, node)
    op("NOT_EQUAL", op.x, op.x, last=True, dtype=np.bool_)


@lowers("IsInf")
def lower_isinf(lo: Lowering, node: ir.Node) -> None:
    positive = node.attributes.get_int("detect_positive", 1)
    negative = node.attributes.get_int("detect_negative", 1)
    op = Steps(lo, node)
    if positive and negative:
        op("EQUAL", op("ABS", op.x), float("inf"), last=True, dtype=np.bool_)
    elif positive or negative:
        op("EQUAL", op.x, float("inf") if positive else float("-inf"), last=True, dtype=np.bool_)
    else:  # detects nothing
        lo.folded[node.outputs[0].name] = np.zeros(lo.shape(node.outputs[0]), np.bool_)


@lowers("Xor")
def lower_xor(lo: Lowering, node: ir.Node) -> None:
    binary(lo, node, "NOT_EQUAL")


@lowers("Mod")
def lower_mod(lo: Lowering, node: ir.Node) -> None:
    """fmod=0 (the sign of the divisor, Python's %): FLOOR_MOD. fmod=1 (C's fmod, sign of
    the dividend) on floats: x - y * trunc(x / y), trunc as sign * floor(|.|)."""
    if not node.attributes.get_int("fmod", 0):
        binary(lo, node, "FLOOR_MOD")
        return
    if lo.dtype(node.inputs[0]).kind != "f":
        raise UnsupportedError("tflite: Mod with fmod=1 on integers")
    x, y = node.inputs
    rank, perm = _layout_of(lo, [x, y])
    op = Steps(lo, node, x)
    op.perm = perm
    xs, ys = lo.broadcast_input(x, rank, perm), lo.broadcast_input(y, rank, perm)
    q = op("DIV", xs, ys)
    trunc = op("MUL", op("SIGN", q), op("FLOOR", op("ABS", q)))
    op("SUB", xs, op("MUL", ys, trunc), last=True)


@lowers("CastLike")
def lower_cast_like(lo: Lowering, node: ir.Node) -> None:
    lower_simple(lo, node, "CAST")


@lowers("Dropout")
def lower_dropout(lo: Lowering, node: ir.Node) -> None:
    """Inference: the identity (a mask output, if read, is all true)."""
    x = node.inputs[0]
    lo.alias(node.outputs[0], lo.input(x), lo.perm(x))
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        lo.folded[node.outputs[1].name] = np.ones(lo.shape(node.outputs[1]), np.bool_)
