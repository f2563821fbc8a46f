"""Searched smoothing: per site, the channel shift and scale that int8 hurts least.

Cross-layer equalization (:mod:`deploycomp.quant.equalization`) is free when the reader
is depthwise. When the reader mixes channels (a pointwise conv, a MatMul), every scale
moved into it also changes how its weights quantize, and a fixed trade (SmoothQuant's
alpha 0.5 everywhere) raised PP-OCR rec's int8 error. Measured on that model, the
error is not spread evenly either: one tensor, the output of a learnable affine block
read by a 240 -> 240 pointwise conv, carried 0.058 of the 0.085 output NMSE that all
its activation quantizers cause one at a time. Its channels sit at different offsets
(channel 197 spans 0.23..0.33, its standard deviation 0.012, its reader's weights up
to 39), so one per-tensor scale spends most of its 256 levels on the offsets.

So, per site (a tensor whose producer's channels can be rescaled and whose readers all
take it through a pointwise matrix product, see :func:`searchable_sites`):

* **shift** each channel by its centre ``z_c`` (Outlier Suppression+, Wei et al.,
  2023): ``x' = x - z``; the producer's bias absorbs ``-z`` and each reader's bias
  ``+W z``, exact in float. Only without padding (a pointwise reader) and without a
  Relu in between, where it is exact;
* **scale** channels by ``s_c = a_c^alpha / w_c^(1 - alpha)`` (``a``: the channel's
  half-range after the shift, ``w``: the readers' weight range for it), as in
  SmoothQuant, with alpha searched as AWQ does (Lin et al., 2023);

and keep the candidate (identity included) whose readers' outputs, computed from
sampled rows of the real calibration activations with the policy's own activation and
weight encodings, are closest to float. The error counted is what bias correction
cannot remove when that booster runs (the per-channel mean is subtracted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.passes.rules._util import padded
from deploycomp.quant.constants import add_to_bias, bias_slot
from deploycomp.quant.calibrate import stream_into
from deploycomp.quant.constants import attributes, constant, set_constant_input, weight_matrix
from deploycomp.quant.equalization import (EXPLICIT_SCALE_LIMIT, SCALE_LIMIT, EqualizationSite, equalization_sites,
                                           explicit_sites, scale_explicitly, scale_producer, scale_readers)
from deploycomp.quant.policy import QDQPolicy
from deploycomp.quant.qdq import activation_params, fake_quantize

__all__ = ["ALPHAS", "ChannelAffine", "SampledRows", "searchable_sites", "smooth"]

ALPHAS = (0.25, 0.5, 0.75, 1.0)
"""Scale trades tried per site (with no scaling, each with and without the shift)."""

ROWS = 2048
"""Sampled activation rows (one channel vector each) kept per site across the samples."""


def _pointwise(node: ir.Node) -> bool:
    attrs = attributes(node)
    w = constant(node.inputs[1])
    if node.op_type == "Conv":
        return int(attrs.get("group", 1)) == 1 and all(k == 1 for k in w.shape[2:]) and not padded(node)
    return node.op_type in ("Gemm", "MatMul")


def _matrix(node: ir.Node) -> np.ndarray:
    """The reader's weights as (input channels, output channels): ``y = x @ M``."""
    return weight_matrix(node, constant(node.inputs[1]).astype(np.float64))


def _producer_bias(site: EqualizationSite) -> tuple[ir.Node, int] | None:
    """The producer constant that adds a per-channel value last (what absorbs ``-z``)."""
    for node, index, _ in site.constants:
        if node.op_type == "Add" or (node.op_type in ("Conv", "LayerNormalization") and index == 2):
            return node, index
    if site.producer.op_type in ("Conv", "LayerNormalization"):
        return site.producer, 2  # bias absent: one is added
    return None


@dataclass
class _Searchable:
    site: EqualizationSite
    can_shift: bool


def searchable_sites(model: ir.Model, compute_ops: tuple[str, ...], per_tensor_constant_ops: tuple[str, ...] = (),
                     explicit: bool = False) -> list[_Searchable]:
    """Mixing sites whose readers are all pointwise (1x1 Conv without padding, Gemm,
    MatMul): their output is a matrix product per row, so sampled rows judge them.
    ``explicit``: also the tensors whose producer cannot take the scale (a swish
    ``Mul``, HardSwish, a ``Transpose`` or ``Reshape``), scaled through an explicit
    ``Mul`` (:func:`deploycomp.quant.equalization.explicit_sites`; never shifted).
    Measured on the corpus in TensorRT's encoding: PP-OCRv5 rec's 12 such sites took its
    heavy layers int8 from 49% to 65%."""
    every = equalization_sites(model, compute_ops, per_tensor_constant_ops)
    out = []
    for site in every:
        if site.depthwise_only or not all(_pointwise(r) for r in site.readers):
            continue
        through_relu = site.tensor.producer() is not None and site.tensor.producer().op_type == "Relu"
        can_shift = (not through_relu and _producer_bias(site) is not None
                     and all(bias_slot(r) is not None for r in site.readers))
        out.append(_Searchable(site, can_shift))
    if explicit:
        mixing = explicit_sites(model, every, compute_ops,
                                accept=lambda site: not site.depthwise_only and all(_pointwise(r) for r in site.readers))
        out += [_Searchable(site, False) for site in mixing]
    return out


def _weight_fake_quant(m: np.ndarray, qmax: int) -> np.ndarray:
    """Per output channel (column) symmetric fake quantization in [-qmax, qmax]."""
    scale = np.maximum(np.abs(m).max(axis=0, keepdims=True), 1e-12) / qmax
    return np.clip(np.rint(m / scale), -qmax, qmax) * scale


def _error(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, mats: list[np.ndarray], floats: list[np.ndarray],
           z: np.ndarray, s: np.ndarray, policy: QDQPolicy, centred: bool) -> float:
    """Squared error of the readers' int8 outputs on ``rows`` with channels mapped to
    ``(x - z) / s``; ``floats``: each reader's float output ``rows @ m``, which the
    candidate changes only by ``- z @ m`` (its scale cancels in float)."""
    x = (rows - z.astype(np.float32)) / s.astype(np.float32)  # float32 throughout: what runtimes compute
    a, b = float(((lo - z) / s).min()), float(((hi - z) / s).max())
    scale, zp = activation_params(a, b, policy.activation_dtype, policy.activation_symmetric)
    xq = fake_quantize(x, scale, zp)
    total = 0.0
    for m, exact in zip(mats, floats):
        diff = xq @ _weight_fake_quant(m * s[:, None], policy.weight_qmax).astype(np.float32)
        diff -= exact
        diff += (z @ m).astype(np.float32)
        if centred:
            diff -= diff.mean(axis=0, keepdims=True)
        total += float(np.vdot(diff, diff))
    return total


def _candidates(lo: np.ndarray, hi: np.ndarray, weights: np.ndarray, can_shift: bool, limit: float = SCALE_LIMIT):
    """(shift, alpha or None, z, s) to try, each scale at most ``limit`` either way; identity first."""
    live = (hi > lo) & (weights > 0)
    for shift in (False, True) if can_shift else (False,):
        z = np.where(live, (lo + hi) / 2, 0.0) if shift else np.zeros_like(lo)
        yield shift, None, z, np.ones_like(lo)
        half = np.maximum(np.abs(lo - z), np.abs(hi - z))
        for alpha in ALPHAS:
            s = np.where(live, np.maximum(half, 1e-12) ** alpha / np.maximum(weights, 1e-12) ** (1 - alpha), 1.0)
            s = s / np.exp(np.log(s[live]).mean()) if live.any() else s
            yield shift, alpha, z, np.clip(s, 1 / limit, limit)


def _apply(model: ir.Model, site: EqualizationSite, z: np.ndarray, s: np.ndarray) -> None:
    """``x' = (x - z) / s``: readers' biases take ``W z`` (with their weights as they are),
    the producer's bias ``-z``, then the producer's constants ``1 / s`` (an explicit site:
    a ``Mul`` by ``1 / s`` whose result keeps the tensor's name) and the readers' ``s``."""
    if np.any(z):
        for r in site.readers:
            add_to_bias(model.graph, r, z @ _matrix(r), f"{r.name}__shift_bias")
        node, index = _producer_bias(site)
        old = constant(node.inputs[index]) if index < len(node.inputs) else None
        if node.op_type == "Add":
            centre = site.per_channel(z)
            new = np.broadcast_to(old, np.broadcast_shapes(old.shape, centre.shape)) - centre
        else:
            new = -z if old is None else old - z
        set_constant_input(model.graph, node, index, new, f"{node.name}__shift")
        if old is None:  # a bias added to the producer: scaled below like its other constants
            site = replace(site, constants=site.constants + [(node, index, "vector")])
    if site.explicit:
        scale_explicitly(model, site, 1.0 / s, keep_name=True)
    else:
        scale_producer(model, site, 1.0 / s)
    scale_readers(model, site, s)


class SampledRows:
    """Per-channel extremes and a constant-size sample of rows (one channel vector per
    position) of each searchable site's tensor: a consumer of a float run
    (:func:`deploycomp.quant.calibrate.stream_into`), so it can ride on another step's run
    (``quantize`` feeds it from equalization's) instead of a pass of its own."""

    def __init__(self, sites: Sequence[_Searchable], samples: int, seed: int = 0):
        self.axis = {s.site.tensor.name: s.site.channel_axis for s in sites}
        self.per_sample = max(8, ROWS // max(samples, 1))
        self.rng = np.random.default_rng(seed)
        self.lo: dict[str, np.ndarray] = {}
        self.hi: dict[str, np.ndarray] = {}
        self.rows: dict[str, list[np.ndarray]] = {}

    @property
    def tensors(self) -> list[str]:
        return sorted(self.axis)

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        for name in self.tensors:  # a fixed order: the same rows whoever streams
            if name not in values:
                continue
            x = values[name]
            flat = np.moveaxis(x, self.axis[name], -1).reshape(-1, x.shape[self.axis[name]])
            self.lo[name] = np.minimum(self.lo.get(name, np.inf), flat.min(0))
            self.hi[name] = np.maximum(self.hi.get(name, -np.inf), flat.max(0))
            pick = self.rng.choice(len(flat), size=min(self.per_sample, len(flat)), replace=False)
            self.rows.setdefault(name, []).append(flat[pick].astype(np.float32))


def smooth(model: ir.Model, policy: QDQPolicy, samples: Sequence[Mapping[str, np.ndarray]],
           centred: bool = False, seed: int = 0, sampled: SampledRows | None = None) -> list[dict]:
    """Search and apply the best shift/scale per searchable site of ``model``, in place;
    one record per site changed (its ``transform``: the :class:`ChannelAffine` applied).
    ``centred``: judge without the per-channel mean error (bias correction will remove
    it). ``sampled``: rows already collected from this model's float values (else
    ``samples`` are streamed here)."""
    sites = searchable_sites(model, policy.compute_ops, policy.per_tensor_constant_ops, policy.explicit_equalization)
    if not sites:
        return []
    if sampled is None:
        sampled = SampledRows(sites, len(samples), seed)
        stream_into(model, [sampled], samples)
    lo, hi, rows = sampled.lo, sampled.hi, sampled.rows  # rows are consumed: each site's freed once judged
    records = []
    for item in sites:
        site, name = item.site, item.site.tensor.name
        if name not in rows or not (np.isfinite(lo[name]).all() and np.isfinite(hi[name]).all()):
            continue
        data = np.concatenate(rows.pop(name))
        l, h = lo[name].astype(np.float64), hi[name].astype(np.float64)
        mats = [_matrix(r) for r in site.readers]
        weights = np.max([np.abs(m).max(axis=1) for m in mats], axis=0)
        floats = [(data.astype(np.float64) @ m).astype(np.float32) for m in mats]
        scored = [(_error(data, l, h, mats, floats, z, s, policy, centred), shift, alpha, z, s)
                  for shift, alpha, z, s in _candidates(l, h, weights, item.can_shift,
                                                        EXPLICIT_SCALE_LIMIT if site.explicit else SCALE_LIMIT)]
        base = scored[0][0]
        err, shift, alpha, z, s = min(scored, key=lambda c: c[0])
        if err >= base * 0.98:
            continue  # not worth touching
        _apply(model, site, z, s)
        records.append({"tensor": name, "producer": site.producer.name,
                        **({"explicit_mul": True} if site.explicit else {}), "readers": [r.name for r in site.readers],
                        "shift": shift, "alpha": alpha, "local_error_ratio": err / max(base, 1e-30),
                        "transform": ChannelAffine(z, s, site.channel_axis)})
    return records


@dataclass(frozen=True)
class ChannelAffine:
    """What smoothing did to a tensor's values, ``x' = (x - z) / s`` per channel: the
    smoothed model's value there from the original's (exact in float, up to rounding),
    so one run of the original model calibrates both."""

    z: np.ndarray
    s: np.ndarray
    axis: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        shape = [1] * x.ndim
        shape[self.axis] = -1
        return ((x - self.z.astype(np.float32).reshape(shape)) / self.s.astype(np.float32).reshape(shape)
                ).astype(np.float32)
