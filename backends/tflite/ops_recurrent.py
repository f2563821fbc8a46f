"""ONNX LSTM, GRU and RNN -> TFLite, unrolled over their (static) sequence length.

TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM has its own gate layout, no GRU, and XNNPACK
takes none of it. With a static sequence length a recurrent layer is a short chain of
ops XNNPACK runs: the input projection of every step at once (one FULLY_CONNECTED over
(seq * batch, input) with both biases folded in, SPLIT into steps), then per step a
FULLY_CONNECTED of the hidden state, the gate nonlinearities and the state update, exact
to float rounding. Cost grows with the sequence length; above :data:`MAX_STEPS` steps, or
with ``sequence_lens`` shorter than the sequence, ``clip``, ``input_forget`` or
non-constant peepholes, the layer is refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.backends.tflite.layout import identity
from deploycomp.backends.tflite.lowering import Lowering, lowers
from deploycomp.errors import UnsupportedError

MAX_STEPS = 1024
"""Longest sequence unrolled (each step is a handful of ops)."""

_ACTIVATIONS = {"Sigmoid": "LOGISTIC", "Tanh": "TANH", "Relu": "RELU"}
_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_NONE = {"fusedActivationFunction": 0}


class _Unrolled:
    """Emits one recurrent layer's ops: small helpers over (batch, n) float tensors."""

    def __init__(self, lo: Lowering, node: ir.Node):
        self.lo, self.node, self.name = lo, node, node.outputs[0].name if node.outputs[0] else node.name
        self.count = 0

    def tensor(self, shape) -> int:
        self.count += 1
        return self.lo.temp(f"{self.name}/{self.count}", tuple(shape))

    def op(self, builtin: str, ins: list[int], options=None) -> int:
        lo = self.lo
        shape = np.broadcast_shapes(*(lo.w.shape(i) for i in ins))
        out = self.tensor(shape)
        lo.emit(builtin, ins, [out], options)
        return out

    def add(self, a: int, b: int) -> int:
        return self.op("ADD", [a, b], self.lo.w.options("Add", **_NONE))

    def sub(self, a: int, b: int) -> int:
        return self.op("SUB", [a, b], self.lo.w.options("Sub", **_NONE))

    def mul(self, a: int, b: int) -> int:
        return self.op("MUL", [a, b], self.lo.w.options("Mul", **_NONE))

    def act(self, name: str, x: int) -> int:
        return self.op(_ACTIVATIONS[name], [x])

    def dense(self, x: int, weight: np.ndarray, bias: np.ndarray | None = None) -> int:
        """x (rows, k) @ weight(n, k).T + bias: FULLY_CONNECTED."""
        lo = self.lo
        out = self.tensor((lo.w.shape(x)[0], weight.shape[0]))
        bias_index = lo.constant("rnn/bias", bias.astype(np.float32)) if bias is not None else -1
        lo.emit("FULLY_CONNECTED", [x, lo.constant("rnn/weight", weight.astype(np.float32)), bias_index], [out],
                lo.w.options("FullyConnected", fusedActivationFunction=0, keepNumDims=False))
        return out

    def split(self, x: int, parts: int, axis: int) -> list[int]:
        lo = self.lo
        shape = list(lo.w.shape(x))
        shape[axis] //= parts
        outs = [self.tensor(shape) for _ in range(parts)]
        lo.emit("SPLIT", [lo.constant("rnn/axis", np.asarray(axis, np.int32)), x], outs,
                lo.w.options("Split", numSplits=parts))
        return outs

    def reshape(self, x: int, shape, out: int | None = None) -> int:
        lo = self.lo
        out = out if out is not None else self.tensor(shape)
        lo.emit("RESHAPE", [x, lo.int32(shape)], [out], lo.w.options("Reshape", newShape=list(shape)))
        return out

    def concat(self, parts: list[int], axis: int, shape, out: int | None = None) -> int:
        """CONCATENATION of at most 4 inputs at a time (XNNPACK's limit), as a tree."""
        lo = self.lo
        while len(parts) > 4:
            grouped = []
            for i in range(0, len(parts), 4):
                group = parts[i:i + 4]
                if len(group) == 1:
                    grouped.append(group[0])
                    continue
                dims = list(lo.w.shape(group[0]))
                dims[axis] = sum(lo.w.shape(g)[axis] for g in group)
                grouped.append(self.concat(group, axis, dims))
            parts = grouped
        out = out if out is not None else self.tensor(shape)
        if len(parts) == 1:
            return self.reshape(parts[0], shape, out)
        lo.emit("CONCATENATION", parts, [out], lo.w.options("Concatenation", axis=axis, fusedActivationFunction=0))
        return out


def _check(lo: Lowering, node: ir.Node) -> dict:
    """The layer's geometry and options; refuses what unrolling does not reproduce."""
    op = node.op_type
    x = node.inputs[0]
    layout = node.attributes.get_int("layout", 0)
    seq, batch, _ = lo.shape(x) if layout == 0 else tuple(lo.shape(x)[i] for i in (1, 0, 2))
    direction = node.attributes.get_string("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    hidden = node.attributes.get_int("hidden_size")
    if seq > MAX_STEPS:
        raise UnsupportedError(f"tflite: {op} over {seq} steps (unrolled up to {MAX_STEPS})")
    if node.attributes.get_float("clip", None) is not None:
        raise UnsupportedError(f"tflite: {op} with clip")
    if op == "LSTM" and node.attributes.get_int("input_forget", 0):
        raise UnsupportedError("tflite: LSTM with input_forget")
    peepholes = node.inputs[7] if op == "LSTM" and len(node.inputs) > 7 else None
    P = lo.const(peepholes) if peepholes is not None else None
    if peepholes is not None and P is None:
        raise UnsupportedError("tflite: LSTM with non-constant peephole weights")
    lens = node.inputs[4] if len(node.inputs) > 4 else None
    if lens is not None:
        given = lo.const(lens)
        if given is None or not np.all(given == seq):
            raise UnsupportedError(f"tflite: {op} with sequence_lens other than the whole sequence")
    names = list(node.attributes.get_strings("activations", _DEFAULTS[op] * dirs))
    if any(a not in _ACTIVATIONS for a in names):
        raise UnsupportedError(f"tflite: {op} with activations {', '.join(names)}")
    given = (list(node.inputs) + [None] * 4)[1:4]  # W, R and the optional B
    weights = [lo.const(v) if v is not None else None for v in given]
    if weights[0] is None or weights[1] is None or (given[2] is not None and weights[2] is None):
        raise UnsupportedError(f"tflite: {op} with non-constant weights")
    per = len(_DEFAULTS[op])
    return dict(seq=seq, batch=batch, dirs=dirs, hidden=hidden, layout=layout, direction=direction,
                activations=[names[d * per:(d + 1) * per] for d in range(dirs)],
                W=weights[0].astype(np.float32), R=weights[1].astype(np.float32),
                B=weights[2].astype(np.float32) if weights[2] is not None else
                np.zeros((dirs, 2 * _GATES[op] * hidden), np.float32),
                P=P.astype(np.float32) if P is not None and np.any(P) else None)


def _initial(u: _Unrolled, node: ir.Node, index: int, g: dict) -> list[int]:
    """The initial state of each direction as (batch, hidden): given (split by direction) or zeros."""
    lo = u.lo
    value = node.inputs[index] if len(node.inputs) > index else None
    dirs, batch, hidden = g["dirs"], g["batch"], g["hidden"]
    if value is None:
        return [lo.constant("rnn/zeros", np.zeros((batch, hidden), np.float32))] * dirs
    perm = (1, 0, 2) if g["layout"] else identity(3)
    flat = u.reshape(lo.input(value, perm), (dirs * batch, hidden))
    return u.split(flat, dirs, 0) if dirs > 1 else [flat]


def _outputs(u: _Unrolled, node: ir.Node, g: dict, steps: list[list[int]], finals: list[list[int]]) -> None:
    """Y (seq, dirs, batch, H) from every step's h, in time order; Y_h / Y_c (dirs, batch, H).
    With ``layout=1`` the same tensors are stored for ONNX's batch-first order (a relabel)."""
    lo = u.lo
    seq, dirs, batch, hidden = g["seq"], g["dirs"], g["batch"], g["hidden"]
    y = node.outputs[0] if node.outputs else None
    if y is not None and (y.uses() or y.name in lo.graph_outputs):
        perm = (1, 2, 0, 3) if g["layout"] else identity(4)
        per_dir = []
        for hs in steps:
            stacked = u.concat(hs, 0, (seq * batch, hidden))
            per_dir.append(u.reshape(stacked, (seq, 1, batch, hidden)))
        out = lo.output(y, perm)
        if dirs == 1:
            u.reshape(per_dir[0], (seq, 1, batch, hidden), out)
        else:
            u.concat(per_dir, 1, (seq, dirs, batch, hidden), out)
    for k, value in enumerate(node.outputs[1:]):
        if value is None or not (value.uses() or value.name in lo.graph_outputs):
            continue
        perm = (1, 0, 2) if g["layout"] else identity(3)
        out = lo.output(value, perm)
        states = [f[k] for f in finals]
        if dirs == 1:
            u.reshape(states[0], (1, batch, hidden), out)
        else:
            u.reshape(u.concat(states, 0, (dirs * batch, hidden)), (dirs, batch, hidden), out)


def _projected_steps(u: _Unrolled, node: ir.Node, g: dict, weight: np.ndarray, bias: np.ndarray) -> list[int]:
    """The input projection of every step, (batch, gates * H) each, in time order."""
    lo = u.lo
    perm = (1, 0, 2) if g["layout"] else identity(3)
    x = lo.input(node.inputs[0], perm)
    flat = u.reshape(x, (g["seq"] * g["batch"], lo.w.shape(x)[2]))
    projected = u.dense(flat, weight, bias)
    if g["seq"] == 1:
        return [projected]
    batch, width = g["batch"], weight.shape[0]
    steps = []
    for t in range(g["seq"]):  # SLICEs, which XNNPACK runs (its SPLIT takes at most 4 outputs)
        step = u.tensor((batch, width))
        lo.emit("SLICE", [projected, lo.int32([t * batch, 0]), lo.int32([batch, width])], [step])
        steps.append(step)
    return steps


def _order(g: dict, d: int) -> list[int]:
    reverse = g["direction"] == "reverse" or (g["direction"] == "bidirectional" and d == 1)
    return list(reversed(range(g["seq"]))) if reverse else list(range(g["seq"]))


@lowers("LSTM")
def lower_lstm(lo: Lowering, node: ir.Node) -> None:
    """Gates i, o, f, c (ONNX order): c = f * c + i * g(c~), h = o * h(c); with peepholes
    P = (p_i, p_o, p_f), i and f also read p * c of the previous cell state, o of the new
    one (madmom's beat trackers)."""
    g = _check(lo, node)
    u = _Unrolled(lo, node)
    H = g["hidden"]
    h0, c0 = _initial(u, node, 5, g), _initial(u, node, 6, g)
    steps, finals = [], []
    for d in range(g["dirs"]):
        f_act, g_act, h_act = g["activations"][d]
        xs = _projected_steps(u, node, g, g["W"][d], g["B"][d][:4 * H] + g["B"][d][4 * H:])
        peep = ([lo.constant("rnn/peephole", g["P"][d][k * H:(k + 1) * H]) for k in range(3)]
                if g["P"] is not None else None)
        h, c = h0[d], c0[d]
        outs = [None] * g["seq"]
        for t in _order(g, d):
            i, o, f, cand = u.split(u.add(xs[t], u.dense(h, g["R"][d])), 4, 1)
            if peep is not None:
                i, f = u.add(i, u.mul(c, peep[0])), u.add(f, u.mul(c, peep[2]))
            c = u.add(u.mul(u.act(f_act, f), c), u.mul(u.act(f_act, i), u.act(g_act, cand)))
            if peep is not None:
                o = u.add(o, u.mul(c, peep[1]))
            h = u.mul(u.act(f_act, o), u.act(h_act, c))
            outs[t] = h
        steps.append(outs)
        finals.append([h, c])
    _outputs(u, node, g, steps, finals)


@lowers("GRU")
def lower_gru(lo: Lowering, node: ir.Node) -> None:
    """Gates z, r, h (ONNX order): h = n + z * (h - n), n from r * h (or, with
    linear_before_reset, from r * (h R_h + Rb_h))."""
    g = _check(lo, node)
    u = _Unrolled(lo, node)
    H = g["hidden"]
    before_reset = node.attributes.get_int("linear_before_reset", 0)
    h0 = _initial(u, node, 5, g)
    steps, finals = [], []
    for d in range(g["dirs"]):
        f_act, g_act = g["activations"][d]
        wb, rb = g["B"][d][:3 * H], g["B"][d][3 * H:]
        folded = wb + np.concatenate([rb[:2 * H], np.zeros(H, np.float32) if before_reset else rb[2 * H:]])
        xs = _projected_steps(u, node, g, g["W"][d], folded)
        R = g["R"][d]
        h = h0[d]
        outs = [None] * g["seq"]
        for t in _order(g, d):
            xz, xr, xn = u.split(xs[t], 3, 1)
            if before_reset:
                hz, hr, hn = u.split(u.dense(h, R, np.concatenate([np.zeros(2 * H, np.float32), rb[2 * H:]])), 3, 1)
            else:
                hz, hr = u.split(u.dense(h, R[:2 * H]), 2, 1)
            z = u.act(f_act, u.add(xz, hz))
            r = u.act(f_act, u.add(xr, hr))
            n = u.act(g_act, u.add(xn, u.mul(r, hn) if before_reset else u.dense(u.mul(r, h), R[2 * H:])))
            h = u.add(n, u.mul(z, u.sub(h, n)))
            outs[t] = h
        steps.append(outs)
        finals.append([h])
    _outputs(u, node, g, steps, finals)


@lowers("RNN")
def lower_rnn(lo: Lowering, node: ir.Node) -> None:
    """h = f(x W + h R + Wb + Rb)."""
    g = _check(lo, node)
    u = _Unrolled(lo, node)
    H = g["hidden"]
    h0 = _initial(u, node, 5, g)
    steps, finals = [], []
    for d in range(g["dirs"]):
        xs = _projected_steps(u, node, g, g["W"][d], g["B"][d][:H] + g["B"][d][H:])
        h = h0[d]
        outs = [None] * g["seq"]
        for t in _order(g, d):
            h = u.act(g["activations"][d][0], u.add(xs[t], u.dense(h, g["R"][d])))
            outs[t] = h
        steps.append(outs)
        finals.append([h])
    _outputs(u, node, g, steps, finals)
