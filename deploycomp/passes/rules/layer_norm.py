"""Recognise a decomposed layer normalisation and emit LayerNormalization (opset 17).

    mean = ReduceMean(x, axes)          d = x - mean
    var  = ReduceMean(d ** 2, axes)     (or d * d)
    y    = d / Sqrt(var + eps) * scale           (then "+ bias" joins it: LayerNormBias)
  = LayerNormalization(x, scale, bias, axis=axes[0], epsilon=eps)

valid when ``axes`` are the trailing dims (LayerNormalization normalises over
``axis..rank-1``), both reductions keep dims, ``eps`` is a scalar and ``scale``/``bias``
are constants broadcastable to the normalised shape (they are materialised to it).
Exporters emit this form (PP-OCRv4's SVTR neck has five); onnxscript's fusion expects
the opset-18 form of ReduceMean, this rule reads the axes from either form.
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, pattern

from deploycomp.passes.rules._util import const, initializer, keepdims, reduce_axes, static_shape

__all__ = ["layer_norm_rules"]


class _LayerNormBase(pattern.RewriteRuleClassBase):
    def __init__(self, square: str):
        super().__init__(name=f"{type(self).__name__}[{square}]")
        self.square = square

    def _core(self, op, x, eps):
        mean = op.ReduceMean(x, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["mean"])
        d = op.Sub(x, mean)
        sq = op.Pow(d, pattern.Var("two")) if self.square == "pow" else op.Mul(d, d)
        var = op.ReduceMean(sq, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["var"])
        return op.Div(d, op.Sqrt(op.Add(var, eps)))

    def check(self, context, x, eps, mean, var, scale, bias=None, two=None, **_) -> MatchResult:
        result = MatchResult()
        shape = static_shape(x)
        if shape is None:
            return result.fail("input shape is not static", x)
        rank = len(shape)
        axes = [reduce_axes(mean.producer()), reduce_axes(var.producer())]
        if None in axes:
            return result.fail("reduction axes are not constant")
        norm = [sorted(a % rank for a in ax) for ax in axes]
        if norm[0] != norm[1] or norm[0] != list(range(rank - len(norm[0]), rank)):
            return result.fail(f"axes {axes[0]} are not the trailing dims of rank {rank}")
        if not (keepdims(mean.producer()) and keepdims(var.producer())):
            return result.fail("reductions do not keep dims")
        if two is not None and (const(two) is None or const(two).size != 1 or float(const(two).reshape(-1)[0]) != 2.0):
            return result.fail("Pow exponent is not the constant 2")
        e = const(eps)
        if e is None or e.size != 1:
            return result.fail("epsilon is not a constant scalar", eps)
        norm_shape = shape[norm[0][0]:]
        for name, v in (("scale", scale), ("bias", bias)):
            if v is None:
                continue
            arr = const(v)
            if arr is None:
                return result.fail(f"{name} is not constant", v)
            try:
                if np.broadcast_shapes(arr.shape, norm_shape) != tuple(norm_shape):
                    raise ValueError
            except ValueError:
                return result.fail(f"{name} shape {list(arr.shape)} does not broadcast to {list(norm_shape)}", v)
        self._axis = norm[0][0]
        self._eps = float(e.reshape(-1)[0])
        self._norm_shape = norm_shape
        return result

    def _param(self, op, v, name: str, dtype):
        arr = np.broadcast_to(const(v), self._norm_shape).astype(dtype)
        return initializer(op, v.graph, f"{v.name}__ln_{name}", arr)

    def _emit(self, op, x, scale, bias):
        dtype = const(scale).dtype
        inputs = [x, self._param(op, scale, "scale", dtype)]
        if bias is not None:
            inputs.append(self._param(op, bias, "bias", dtype))
        return op.LayerNormalization(*inputs, axis=self._axis, epsilon=self._eps)


class LayerNormScale(_LayerNormBase):
    def pattern(self, op, x, eps, scale):
        return op.Mul(self._core(op, x, eps), scale)

    def rewrite(self, op, x, scale, **_):
        return self._emit(op, x, scale, None)


class LayerNormBias(pattern.RewriteRuleClassBase):
    """``LayerNormalization(x, scale) + bias`` -> ``LayerNormalization(x, scale, bias)``."""

    def pattern(self, op, x, scale, bias):
        return op.Add(op.LayerNormalization(x, scale, _allow_other_attributes=True, _outputs=["ln"]), bias)

    def check(self, context, x, scale, bias, ln, **_) -> MatchResult:
        b, s = const(bias), const(scale)
        if b is None or s is None:
            return MatchResult().fail("bias or scale is not constant", bias)
        try:
            if np.broadcast_shapes(b.shape, s.shape) != s.shape:
                raise ValueError
        except ValueError:
            return MatchResult().fail(f"bias shape {list(b.shape)} does not broadcast to {list(s.shape)}", bias)
        if len(ln.uses()) != 1 or ln.is_graph_output():
            return MatchResult().fail("the normalised value has other consumers", ln)
        return MatchResult()

    def rewrite(self, op, x, scale, bias, ln, **_):
        s = const(scale)
        b = np.broadcast_to(const(bias), s.shape).astype(s.dtype)
        return op.LayerNormalization(
            x, scale, initializer(op, bias.graph, f"{bias.name}__ln_bias", b), **ln.producer().attributes
        )


def layer_norm_rules() -> tuple:
    return (*(LayerNormScale.rule(square) for square in ("pow", "mul")), *LayerNormBias.rule().commute())
