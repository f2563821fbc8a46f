"""Named pass pipelines: which passes run, in which order, for which backend.

A target profile names its pipeline (by default its backend's). Every pipeline starts
from the target-independent ``default`` list; backend pipelines may append passes
that only they need. (TFLite's NHWC layout is assigned while lowering, in
``backends/tflite/layout.py``: ONNX has no NHWC convolution to rewrite into.)
Keeping the lists here, as data, makes "what runs for jetson-orin-nano" a lookup.
"""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir
from onnx_ir.passes.common import (
    CommonSubexpressionEliminationPass,
    DeduplicateHashedInitializersPass,
    InlinePass,
    LiftConstantsToInitializersPass,
    NameFixPass,
    RemoveUnusedFunctionsPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
    ShapeInferencePass,
    TopologicalSortPass,
)

from deploycomp.errors import DeployError
from deploycomp.ir import ORT_DEFAULT_DOMAIN_OPS
from deploycomp.passes.affine_depthwise import AffineToDepthwiseConvPass
from deploycomp.passes.constant_folding import ConstantFoldingPass
from deploycomp.passes.contrib_ops import ContribOpsToCorePass
from deploycomp.passes.explicit_defaults import ExplicitDefaultsPass
from deploycomp.passes.fix_input_shapes import FixInputShapesPass
from deploycomp.passes.identity_removal import IdentityRemovalPass
from deploycomp.passes.if_condition import ScalarIfConditionPass
from deploycomp.passes.if_to_where import IfToWherePass
from deploycomp.passes.function_ops import ExpandFunctionOpsPass
from deploycomp.passes.loop_unroll import LoopUnrollPass
from deploycomp.passes.scan_unroll import ScanUnrollPass
from deploycomp.passes.tflite_pads import TFLitePadsPass
from deploycomp.passes.spectral import DFTToMatMulPass, STFTToConvPass
from deploycomp.passes.integer_ops import IntegerOpsToFloatPass
from deploycomp.passes.qoperator import QOperatorToQDQPass
from deploycomp.passes.log_sum_exp import ReduceLogSumExpPass
from deploycomp.passes.lstm_peepholes import PeepholeLSTMToScanPass
from deploycomp.passes.manager import Pipeline
from deploycomp.passes.cast_last import CastLastPass
from deploycomp.passes.ml_labels import StringClassLabelsPass
from deploycomp.passes.ml_ops import MLOpsToCorePass
from deploycomp.passes.rewrite import RewriteRulesPass
from deploycomp.passes.rules import DEFAULT_RULES, TFLITE_RULES
from deploycomp.passes.to_float32 import Float16ToFloat32Pass, Float64ToFloat32Pass
from deploycomp.passes.unused_initializers import RemoveUnusedInitializersPass
from deploycomp.passes.variadic import VariadicOpsPass
from deploycomp.passes.weight_folding import WeightFoldingPass

__all__ = ["PIPELINES", "TENSORRT_FUNCTION_OPS", "TFLITE_FUNCTION_OPS", "build_pipeline", "check_pipeline_name", "explain_rules",
           "pipeline_names"]

TENSORRT_FUNCTION_OPS = frozenset({"AffineGrid", "CenterCropPad", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"})
"""The same for NVIDIA's ONNX parser (TensorRT-RTX 1.7's refused each of ONNX's node cases
for these; it takes opset 23's Attention and RotaryEmbedding)."""

TFLITE_FUNCTION_OPS = frozenset({"AffineGrid", "Attention", "CenterCropPad", "NegativeLogLikelihoodLoss",
                                 "RotaryEmbedding", "Shrink", "SoftmaxCrossEntropyLoss"})
"""ONNX ops defined as functions that TFLite has no kernel for, written out as their
definition in its pipeline (:mod:`deploycomp.passes.function_ops`). Not these: Range and
the window functions (their bodies loop; with constant inputs they fold anyway),
Bernoulli (random), SequenceMap (sequences), DynamicQuantizeLinear (a model's own int8
arithmetic, :mod:`deploycomp.passes.integer_ops`)."""

def default_pipeline(shapes: dict[str, tuple[int, ...]]) -> Pipeline:
    """Target-independent: fold, fuse, deduplicate, clean up.

    Whole-model shape inference runs once, after the shapes are pinned; inside the
    loop the folder infers shapes node by node for what it and the rewrites create.
    """
    return Pipeline(
        prologue=[
            # a model's local functions (a torch exporter's modules as functions) into the
            # graph: no backend runs a call to one, and every pass sees their nodes
            InlinePass(),
            ExplicitDefaultsPass(),  # before shape inference reads another default
            FixInputShapesPass(shapes),
            ShapeInferencePass(),
            LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
            IntegerOpsToFloatPass(),
            QOperatorToQDQPass(),  # QLinearConv, QLinearAdd, ...: the same arithmetic as QDQ
            StringClassLabelsPass(),  # no backend has string tensors: a label's position instead
            MLOpsToCorePass(),
            # ONNX Runtime's ops no runtime reads where its optimizer writes them (backends
            # that run none of its fused ops take more: :func:`_with_core_contrib_ops`)
            ContribOpsToCorePass(ORT_DEFAULT_DOMAIN_OPS),
            WeightFoldingPass(),
            VariadicOpsPass(),
            ScalarIfConditionPass(),
        ],
        loop=[
            ConstantFoldingPass(),
            # a real signal's DFT as a MatMul with its basis, an STFT as a strided Conv (after
            # folding: their lengths and windows constant)
            DFTToMatMulPass(),
            STFTToConvPass(),
            RewriteRulesPass("RewriteRules[default]", DEFAULT_RULES),
            IdentityRemovalPass(),
            CommonSubexpressionEliminationPass(),
            RemoveUnusedNodesPass(),
        ],
        epilogue=[
            DeduplicateHashedInitializersPass(size_limit=1 << 30),
            CommonSubexpressionEliminationPass(),  # nodes that differed only by a duplicate weight
            LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),  # made by rewrites
            RemoveUnusedNodesPass(),
            RemoveUnusedInitializersPass(),
            RemoveUnusedFunctionsPass(),
            RemoveUnusedOpsetsPass(),
            # rewrites insert nodes where their pattern matched; a replacement read by nodes
            # earlier in the list (a Slice -> Split rewrite in a wake-word model) leaves the
            # graph out of order, which ONNX Runtime sorts for itself but a clone refuses
            TopologicalSortPass(),
            # every node named (IR 3 exports leave them unnamed): the int8 search keeps layers
            # float by name, and reports and errors name them
            NameFixPass(),
        ],
    )


def _with_core_contrib_ops(pipeline: Pipeline, only: frozenset[str] | None = None) -> Pipeline:
    """ONNX Runtime's fused ``com.microsoft`` ops as core ops
    (:mod:`deploycomp.passes.contrib_ops`), for a backend that runs none of them; ``only``
    those (:data:`OPENVINO_CONTRIB_OPS`). OpenVINO reads most itself, and keeps them: its
    int8 build of an ONNX Runtime-optimized MiniLM met the budget with its own Attention
    (0.99988) and missed it written out (0.82 all-int8, still 0.82 with 8 of 18 layers
    float)."""
    at = next(i for i, p in enumerate(pipeline.prologue) if isinstance(p, ContribOpsToCorePass))
    pipeline.prologue[at] = ContribOpsToCorePass(only if only is None else only | ORT_DEFAULT_DOMAIN_OPS)
    return pipeline


def tflite_pipeline(shapes: dict[str, tuple[int, ...]]) -> Pipeline:
    """The default, ONNX Runtime's fused ops as core ops, and each ``If`` as both branches
    and a ``Where`` (:mod:`deploycomp.passes.if_to_where`): TFLite computes both anyway,
    and so the branches' layers are the graph's, for the optimizer and for int8; each
    ``Scan`` of a known length written out step by step (:mod:`deploycomp.passes.scan_unroll`), as
    is each ``Loop`` whose constants decide its trip count (:mod:`deploycomp.passes.loop_unroll`), ops
    ONNX defines as functions that TFLite has no kernel for are written out as their definition
    (:data:`TFLITE_FUNCTION_OPS`: opset 23's Attention, ...), and
    a ``Pad`` with negative pads or edge padding as crops, pads and concatenated edges
    (:mod:`deploycomp.passes.tflite_pads`). After
    constant folding, which inlines a branch whose condition is known. Its rewrites also
    fold an affine before a Conv into it (:data:`deploycomp.passes.rules.TFLITE_RULES`), and
    an affine by per-channel constants they leave is a 1x1 depthwise Conv
    (:mod:`deploycomp.passes.affine_depthwise`).
    float64 and float16 are computed in float32 (:mod:`deploycomp.passes.to_float32`):
    TFLite has float64 kernels for a few ops only, and float16 ones for none of the
    model's (a float16 export stopped in LiteRT's MAX_POOL_2D, an internal error; its
    fp16 precision stores float16 weights and computes float32 all the same)."""
    pipeline = _with_core_contrib_ops(default_pipeline(shapes))
    # after inlining, before anything reads types
    pipeline.prologue[1:1] = [Float64ToFloat32Pass(), Float16ToFloat32Pass()]
    # (once the inputs' types are known: a context-dependent definition depends on them)
    at = next(i for i, p in enumerate(pipeline.prologue) if isinstance(p, ShapeInferencePass)) + 1
    pipeline.prologue.insert(at, ExpandFunctionOpsPass(TFLITE_FUNCTION_OPS))
    pipeline.loop.insert(1, IfToWherePass())
    pipeline.loop.insert(2, ScanUnrollPass())
    pipeline.loop.insert(3, LoopUnrollPass())
    pipeline.loop.insert(4, TFLitePadsPass())
    at = next(i for i, p in enumerate(pipeline.loop) if isinstance(p, RewriteRulesPass))
    pipeline.loop[at] = RewriteRulesPass("RewriteRules[tflite]", TFLITE_RULES)
    pipeline.epilogue.insert(0, AffineToDepthwiseConvPass())  # what no rule folded into a Conv
    return pipeline


def tensorrt_pipeline(shapes: dict[str, tuple[int, ...]]) -> Pipeline:
    """The default, ONNX Runtime's fused ops as core ops (NVIDIA's parser has no plugin
    for them), and a Cast to uint8 moved past the transposes and reshapes after it
    (:mod:`deploycomp.passes.cast_last`): TensorRT has uint8 at its I/O only."""
    pipeline = _with_core_contrib_ops(default_pipeline(shapes))
    pipeline.loop.append(CastLastPass())
    at = next(i for i, p in enumerate(pipeline.prologue) if isinstance(p, ShapeInferencePass)) + 1
    pipeline.prologue.insert(at, ExpandFunctionOpsPass(TENSORRT_FUNCTION_OPS))
    return pipeline


OPENVINO_CONTRIB_OPS = frozenset({"FusedConv", "FusedMatMul"})
"""ONNX Runtime's ops the OpenVINO pipeline writes as core ops too (it reads the rest
itself, :func:`_with_core_contrib_ops`; every pipeline writes out
:data:`deploycomp.ir.ORT_DEFAULT_DOMAIN_OPS`): a ``FusedConv`` is a ``Conv`` and its activation,
which its int8 quantizes (an ORT-optimized PP-OCR cls had "built int8" with 24 of its 54
convolutions float and nothing said); ``FusedMatMul`` likewise."""


def openvino_pipeline(shapes: dict[str, tuple[int, ...]]) -> Pipeline:
    """The default, and an LSTM with peephole weights as a ``Scan`` over its cell
    (:mod:`deploycomp.passes.lstm_peepholes`): OpenVINO computes the LSTM op as if they
    were not there. After constant folding, which makes the weights constants. And
    ``ReduceLogSumExp`` from the reductions OpenVINO reads right
    (:mod:`deploycomp.passes.log_sum_exp`): it drops the op's ``axes``."""
    pipeline = _with_core_contrib_ops(default_pipeline(shapes), OPENVINO_CONTRIB_OPS)
    pipeline.loop.insert(1, PeepholeLSTMToScanPass())
    pipeline.loop.insert(2, ReduceLogSumExpPass())
    return pipeline


PIPELINES: dict[str, Callable[[dict[str, tuple[int, ...]]], Pipeline]] = {
    "default": default_pipeline,
    "openvino": openvino_pipeline,
    "onnxruntime": default_pipeline,
    "tflite": tflite_pipeline,
    "tensorrt": tensorrt_pipeline,
}


def pipeline_names() -> list[str]:
    return sorted(PIPELINES)


def check_pipeline_name(name: str) -> None:
    """A usage error (exit 2) for a pipeline name none has (a KeyError had read as an
    internal error)."""
    if name not in PIPELINES:
        raise DeployError(f"unknown pipeline {name!r}; known: {', '.join(pipeline_names())}")


def build_pipeline(name: str, shapes: dict[str, tuple[int, ...]]) -> Pipeline:
    check_pipeline_name(name)
    return PIPELINES[name](shapes)


def explain_rules(model: ir.Model, name: str, shapes: dict[str, tuple[int, ...]]) -> list:
    """How often each rewrite rule of pipeline ``name`` fires on ``model``, and why not.

    Runs the pipeline for real with per-rule counting, then asks every rule that never
    fired why it does not match the optimized graph. Commuted variants of a rule share
    its name and are reported once.
    """
    from deploycomp.passes.manager import run_passes
    from deploycomp.passes.rewrite import RewriteRulesPass, RuleExplanation, explain, rule_name

    pipeline = build_pipeline(name, shapes)
    rewrites = [p for p in pipeline.passes if isinstance(p, RewriteRulesPass)]
    for p in rewrites:
        p.count_per_rule = True
    optimized, _ = run_passes(model, pipeline)
    fired = sum((p.fired for p in rewrites), start=type(rewrites[0].fired)()) if rewrites else {}
    rules = {rule_name(r): r for p in rewrites for r in p.rules}
    out = [RuleExplanation(n, fired[n], "fired") for n in rules if fired.get(n)]
    unfired = [r for p in rewrites for r in p.rules if not fired.get(rule_name(r))]
    merged: dict[str, RuleExplanation] = {}
    for item in explain(optimized, unfired):
        if item.rule not in merged or (item.near_miss and not merged[item.rule].near_miss):
            merged[item.rule] = item
    return out + list(merged.values())
