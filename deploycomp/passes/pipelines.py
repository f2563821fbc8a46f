"""Named pass pipelines: which passes run, in which order, for which backend.

A target profile names its pipeline (by default its backend's). Every pipeline starts
from the target-independent ``default`` list; backend pipelines may append passes
that only they need (the NHWC layout pass for TFLite arrives with that backend).
Keeping the lists here, as data, makes "what runs for jetson-orin-nano" a lookup.
"""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir
from onnx_ir.passes.common import (
    CommonSubexpressionEliminationPass,
    DeduplicateHashedInitializersPass,
    LiftConstantsToInitializersPass,
    RemoveUnusedFunctionsPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
    ShapeInferencePass,
)

from deploycomp.passes.constant_folding import ConstantFoldingPass
from deploycomp.passes.fix_input_shapes import FixInputShapesPass
from deploycomp.passes.identity_removal import IdentityRemovalPass
from deploycomp.passes.rewrite import RewriteRulesPass
from deploycomp.passes.rules import DEFAULT_RULES

__all__ = ["PIPELINES", "build_pipeline", "pipeline_names"]

PassList = list[ir.passes.PassBase]


def default_pipeline(shapes: dict[str, tuple[int, ...]]) -> PassList:
    """Target-independent: fold, fuse, deduplicate, clean up (to a fixed point)."""
    return [
        FixInputShapesPass(shapes),
        ShapeInferencePass(),
        LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        ConstantFoldingPass(),
        RewriteRulesPass("RewriteRules[default]", DEFAULT_RULES),
        IdentityRemovalPass(),
        CommonSubexpressionEliminationPass(),
        DeduplicateHashedInitializersPass(size_limit=1 << 30),
        RemoveUnusedNodesPass(),
        RemoveUnusedFunctionsPass(),
        RemoveUnusedOpsetsPass(),
    ]


PIPELINES: dict[str, Callable[[dict[str, tuple[int, ...]]], PassList]] = {
    "default": default_pipeline,
    "openvino": default_pipeline,
    "onnxruntime": default_pipeline,
    "tflite": default_pipeline,
    "tensorrt": default_pipeline,
}


def pipeline_names() -> list[str]:
    return sorted(PIPELINES)


def build_pipeline(name: str, shapes: dict[str, tuple[int, ...]]) -> PassList:
    try:
        factory = PIPELINES[name]
    except KeyError:
        raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(pipeline_names())}") from None
    return factory(shapes)
