"""Trial builds: a candidate model lowered for the target into a scratch folder and run in
the target's own runtime, which is how the fp16 and int8 searches of a build judge it.

A search's verdicts come from the runtime the bundle will use, not from ONNX Runtime's
simulation of it (each backend rounds, fuses and saturates in its own way), so a trial is
lowered with the same options as the build itself (:func:`backend_options`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.errors import UnsupportedError
from deploycomp.ir import add_initializer
from deploycomp.passes.unused_initializers import RemoveUnusedInitializersPass
from deploycomp.targets import TargetProfile
from deploycomp.validate import channel_name

if TYPE_CHECKING:
    from deploycomp.pipeline import BuildOptions

__all__ = ["SEARCH_MARGIN", "backend_options", "int8_io", "refused", "trial_runner", "with_channel_outputs",
           "without_outputs", "worst_cosine"]

log = logging.getLogger(__name__)

SEARCH_MARGIN = 0.75
"""The int8 search holds candidates to this share of the fidelity budget's error on the
judged (calibration) inputs, leaving the rest for inputs it has not seen: measured on
PP-OCR det (budget 0.98), the whole budget let TensorRT's build pass there and miss
validation (cosine 0.969); half of it kept 32 layers float in TFLite where 2 meet
validation; three quarters: 2 float layers in TFLite (validation 0.986), 1 in TensorRT
(0.985)."""


@contextlib.contextmanager
def trial_runner(backend, target: TargetProfile, model: ir.Model, precision: str, options: Mapping[str, Any]):
    """``model`` lowered for the target into a scratch folder (a ``trial`` artifact, thrown
    away), loaded in its runtime: how a search judges a candidate."""
    from deploycomp.bundle import scratch_folder

    with scratch_folder() as tmp:
        lowered = backend.lower(model, target, precision, tmp, {**options, "trial": True})
        yield backend.load(tmp, lowered.info)


def refused(trials: list[dict], error: UnsupportedError, **counts: int):
    """A search candidate the target's runtime refused (OpenVINO's plugin threw compiling a
    mix of precisions it reads otherwise): a miss, not the build's end, with the reason in
    the search's trial record."""
    from deploycomp.quant.sensitivity import Verdict

    trials.append({**counts, "met": False, "refused": str(error)[:300]})
    log.info("search candidate %d refused by the runtime: %s", len(trials), error)
    return Verdict(False)


def worst_cosine(metrics: Mapping[str, dict]) -> float:
    """The worst output's cosine (an integer output's share of ids equal) of compare_outputs' metrics."""
    return min(m["cosine"] for m in metrics.values())


def int8_io(opts: BuildOptions, target: TargetProfile) -> bool:
    """Whether the bundle's inputs and outputs are int8 too (full integer: an Edge TPU runs nothing else)."""
    if opts.int8_io is not None:
        return opts.int8_io
    return target.backend == "tflite" and opts.precision == "int8" and target.device == "EDGETPU"


def backend_options(opts: BuildOptions, target: TargetProfile, profiles: dict[str, tuple]) -> dict[str, Any]:
    """What a build (and each of its trials) asks its backend's lowering for, from the build's options."""
    trt_profiles = {n: {"min": list(lo), "opt": list(opt), "max": list(hi)} for n, (lo, opt, hi) in profiles.items()}
    return {k: v for k, v in {"io_layout": opts.io_layout, "int8_io": int8_io(opts, target) or None,
                              "profiles": trt_profiles or None}.items() if v is not None}


def with_channel_outputs(model: ir.Model, channels: Mapping[str, int]) -> tuple[ir.Model, list[str]]:
    """``model``, or where ``channels`` (output -> its channel axis) names any, a copy of it
    with each of their channels also an output of its own (a ``Gather``, named as
    :func:`deploycomp.validate.channel_name` names the channel); and those outputs' names.
    What a search ranks, so that it ranks layers by what they cost each judged channel
    (``--judge-channels``): a quality map 1/30 of its output's scale is nothing in the
    output's error."""
    if not channels:
        return model, []
    copy = model.clone()
    added = []
    for out in list(copy.graph.outputs):
        axis = channels.get(out.name)
        if axis is None or out.shape is None or not isinstance(out.shape[axis], int):
            continue
        for c in range(out.shape[axis]):
            name = channel_name(out.name, axis, c)
            index = add_initializer(copy.graph, f"{name}/index", np.asarray(c, np.int64))
            node = ir.node("Gather", [out, index], attributes={"axis": axis}, name=f"{name}/gather")
            node.outputs[0].name, node.outputs[0].type = name, out.type
            node.outputs[0].shape = ir.Shape([d for i, d in enumerate(out.shape) if i != axis])
            copy.graph.append(node)
            copy.graph.outputs.append(node.outputs[0])
            added.append(name)
    return copy, added


def without_outputs(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of ``model`` without the outputs ``names`` (:func:`with_channel_outputs`) and
    the nodes that compute only them."""
    if not names:
        return model
    copy = model.clone()
    drop = set(names)
    for value in [v for v in copy.graph.outputs if v.name in drop]:
        copy.graph.outputs.remove(value)
    ir.passes.common.RemoveUnusedNodesPass()(copy)
    RemoveUnusedInitializersPass()(copy)
    return copy
