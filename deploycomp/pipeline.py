"""load -> passes -> lower -> validate -> bundle, and nothing else.

Every check that can fail on the user's input (target, precision, backend SDK, model
file, input shapes, op support, validation data) runs before anything is written, and
the bundle is staged and renamed into place, so a failed build leaves nothing at
``--out``. A build that misses a budget is discarded too, unless ``no_fail`` asks to
keep it for inspection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import re
import shutil
import threading
import time
import weakref
from dataclasses import MISSING, dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp import analysis, datasets
from deploycomp import trials as trial
from deploycomp.angles import angle_periods, turns_in_words
from deploycomp.backends import get_backend
from deploycomp.backends.base import ensure_available
from deploycomp.backends.onnxruntime import ORTRunner, source_runner
from deploycomp.boxes import check_boxes, infer_format, not_corners, suggest_rule
from deploycomp.bundle import (FORMAT, artifact_entries, check_output, process_tag, remove_abandoned,
                               staged_bundle)
from deploycomp.digest import array_sha256, code_digest
from deploycomp.errors import (BudgetError, DeployError, InputDataError, OutputExistsError, UnsupportedError, few,
                               runtime_message)
from deploycomp.fp16_ranges import FP16_MAX, HEADROOM, MAX_RANGE_SAMPLES, decision_tensors, fp32_tensors
from deploycomp.feedback import as_stream, check_feedback, suggested_feedback
from deploycomp.feedback import describe as describe_feedback
from deploycomp.int8_build import coverage_hint, int8_hint, own_quantization, search_int8
from deploycomp.ir import MIN_OPSET, float_only, io_types_kept, load_model, save_model
from deploycomp.ctc import check_ctc, suggest_ctc
from deploycomp.masks import check_masks, suggest_mask
from deploycomp.preprocess import load_spec
from deploycomp.paths import DEVICE_OR_PIPE, device_or_pipe
from deploycomp.passes import build_pipeline, run_passes
from deploycomp.passes.integer_ops import INTEGER_OPS
from deploycomp.passes.ml_labels import class_labels, label_positions
from deploycomp.report import source_sides, write_manifest_and_report
from deploycomp.sample_data import OBJECTS, sample_layout, unreadable_array, within_profile
from deploycomp.shapes import (InputSpec, check_profile, check_sizes, check_specs, input_bytes, declare_input_shapes, dynamic_dims, input_shapes,
                               named_dim_clash, shape_error, sized_by_dim_names)
from deploycomp.targets import Fidelity, TargetProfile, check_op_names, cpu_name, is_shipped, load_target
from deploycomp.trials import SEARCH_MARGIN, backend_options, worst_cosine
from deploycomp.validate import (BudgetCheck, budget_shortfall, check_where, compare_outputs, fidelity_failures,
                                 fidelity_met, measure_latency, output_scales, pass_through, peak_rss_growth,
                                 RunTimes, speedup_of, split_channels, summarize, weak_channels, channel_axis, with_user_limits,
                                 MAX_CHANNELS, entry_axis)

__all__ = ["BuildOptions", "BuildResult", "build", "optimize", "prepare"]

log = logging.getLogger(__name__)

@dataclass
class BuildOptions:
    model: Path
    out: Path
    target: str = "host"
    precision: str | None = "fp32"
    """None: fp32, or the target's preferred precision where it has no fp32 (the Edge TPU's int8)."""
    inputs: list[InputSpec] = field(default_factory=list)
    calibration: Path | Iterable[dict] | None = None
    validation_data: Path | Iterable[dict] | None = None
    validation_samples: int | None = datasets.MAX_VALIDATION_SAMPLES
    """How many validation samples are run at most, spread over the set (0 or None: every one)."""
    preprocess: Any = None
    """A preprocessing spec (:mod:`deploycomp.preprocess`: a path, inline YAML or a dict) that
    turns images (an image folder given as data, or the built-in photos) into inputs."""
    sample_kind: str | None = None
    keep_float: list[str] = field(default_factory=list)
    min_cosine: float | None = None
    min_top1: float | None = None
    judge_where: dict = field(default_factory=dict)
    """Outputs judged only where a score output passes a threshold
    (:func:`deploycomp.validate.parse_where`: ``{output: (scores, threshold)}``)."""
    judge_boxes: dict = field(default_factory=dict)
    """Outputs holding a detector's boxes, judged by their overlap with fp32's
    (:func:`deploycomp.boxes.parse_boxes`: ``{output: BoxRule}``)."""
    min_box_iou: float | None = None
    judge_masks: dict = field(default_factory=dict)
    """Dense maps judged by the mask cut from them (:func:`deploycomp.masks.parse_masks`:
    ``{output: MaskRule}``)."""
    min_mask_iou: float | None = None
    judge_ctc: dict = field(default_factory=dict)
    """A CTC recognizer's per-step scores judged by the text they decode to
    (:func:`deploycomp.ctc.parse_ctc`: ``{output: CtcRule}``)."""
    min_text_similarity: float | None = None
    judge_channels: bool = False
    """Each channel of an output that has them (:func:`deploycomp.validate.channel_axis`)
    judged as an output of its own too, by every budget check."""
    profiles: list = field(default_factory=list)
    """Input shape ranges (``--profile``: TensorRT optimization profiles, OpenVINO bounded
    dims): (input name, min, opt, max) shapes; those inputs keep their varying dims dynamic
    in the ONNX, and validation runs at OPT."""
    io_layout: str | None = None
    """TFLite: ``nhwc`` (default) or ``nchw`` layout of 4-D inputs in the artifact."""
    int8_io: bool | None = None
    """TFLite int8: int8 model inputs/outputs (full integer). Default: on for Edge TPU targets."""
    int8_boosters: list[str] | None = None
    """int8 training-free boosters (``equalize``, ``smooth``, ``bias-correction``); None: the backend
    policy's defaults, [] none."""
    int8_range: str | None = None
    """int8 activation range method (see :mod:`deploycomp.quant.observers`) or ``auto``; None:
    the backend policy's."""
    int8_time_limit: float | None = None
    """Seconds (from calibration on) after which the int8 search keeps the first choice that
    meets the budget instead of looking for one with more layers int8
    (:class:`deploycomp.quant.sensitivity.Hurry`); None: no limit."""
    int8_accept: Callable[[list[dict], list[dict]], bool] | None = None
    """A user metric for ``--precision int8``: given the fp32 reference outputs and the
    candidate's outputs on the calibration samples, True if the candidate is good enough.
    It replaces the cosine test when choosing which layers stay float."""
    freeze: dict[str, Any] = field(default_factory=dict)
    """Inputs replaced by constants (``--freeze sr=16000``): a build for one sample rate, one
    mode, one batch of fixed masks. Branches and shapes that depend on them fold; the
    bundle no longer takes them, and the fp32 reference is fed the same values."""
    keep_initializer_inputs: bool = False
    """Keep initializers listed as graph inputs (IR < 4 models) as runtime inputs instead of
    constants (see :func:`deploycomp.ir.load_model`)."""
    feedback: dict[str, str] = field(default_factory=dict)
    """Outputs fed back as inputs (``--feedback stateN=state``): the validation samples run
    as one stream, in order, each step after the first fed the step before's output
    (:mod:`deploycomp.feedback`)."""
    force: bool = False
    no_fail: bool = False
    auto_candidate: bool = False
    """A candidate ``--precision auto`` builds: a budget it misses is auto's to report, among
    the others (its advice, "--precision fp16, or auto" to a bf16 candidate, had reached a
    user who had asked for auto)."""
    progress: Callable[[str], None] = lambda stage: None


class StageClock:
    """Wall seconds per build stage, a stage running from its progress label to the next
    (the manifest's ``measured.stage_seconds``): where a build's time went, and what of it
    a comparison with another tool's quantize call should count (calibration and the
    search, not validation or latency runs). Forwards each label to ``forward``."""

    def __init__(self, forward: Callable[[str], None]):
        self.forward = forward
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._since = time.perf_counter()

    def __call__(self, stage: str) -> None:
        self.stop()
        self._stage = stage
        self.forward(stage)

    def stop(self) -> dict[str, float]:
        """Close the running stage; the seconds so far, rounded."""
        now = time.perf_counter()
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        self._stage, self._since = None, now
        return {k: round(v, 3) for k, v in self.seconds.items()}


@dataclass
class BuildResult:
    bundle: Path
    manifest: dict[str, Any]
    sample: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    """The first validation sample (``auto`` times its candidates on it)."""

    @property
    def ok(self) -> bool:
        return self.manifest["validation"]["ok"]


@dataclass
class Prepared:
    """A loaded, shape-fixed, optimized model with what was learned on the way."""

    model: ir.Model
    source: Path
    sha256: str
    source_opset: int
    shapes: dict[str, tuple[int, ...]]
    assumed: list[str]
    pass_log: Any
    profiles: dict[str, tuple] = field(default_factory=dict)
    """Input shape ranges (``--profile``): input -> (min, opt, max)."""
    frozen: dict[str, np.ndarray] = field(default_factory=dict)
    """Inputs replaced by constants; the reference (the original model) is fed them."""
    repinned: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Inputs whose fixed dims ``--input`` gave other sizes: the reference runs the
    original model with those inputs declared at them."""
    external_data: dict[str, str] = field(default_factory=dict)
    """The source's external-data files -> their sha256 (:class:`deploycomp.ir.LoadedModel`)."""
    integer_ops: int = 0
    """ONNX Runtime dynamic-quantization ops the model arrived with, rewritten as float ops
    on their int8 weights (:mod:`deploycomp.passes.integer_ops`)."""
    renamed: int = 0
    """Inner tensors renamed on load (:attr:`deploycomp.ir.LoadedModel.renamed`)."""
    float_form: Any = field(default=None, repr=False)
    """ONNX Runtime on this optimized model, made once (:func:`_float_form`); False where
    it cannot be."""
    feedback: dict[str, str] = field(default_factory=dict)
    """Outputs fed back as inputs in validation (:attr:`BuildOptions.feedback`)."""
    guessed: dict[str, str] = field(default_factory=dict)
    """Inputs whose shape the build chose itself (a batch of 1, a shape read off a data
    file): input -> the note in ``assumed``."""
    from_data: dict[str, str] = field(default_factory=dict)
    """Those read off a data file: input -> "NAME: shape AxB taken from FILE"."""
    levels: frozenset = frozenset()
    """Integer outputs that are rounded float values, judged as numbers
    (:func:`deploycomp.analysis.level_outputs`)."""
    nan_ok: frozenset = frozenset()
    """Inputs the model tests for NaN, which data may hold (:func:`deploycomp.analysis.nan_inputs`)."""
    where: Any = None
    """The build's ``--judge-where``: which output elements a comparison judges."""
    angles: dict = field(default_factory=dict)
    """Outputs holding angles: each element's turn, 0 where it holds none
    (:func:`deploycomp.angles.angle_periods`)."""
    channels: dict = field(default_factory=dict)
    """``--judge-channels``: outputs whose channels are judged as outputs too -> the axis."""
    boxes: dict = field(default_factory=dict)
    """``--judge-boxes``: outputs judged by their boxes -> the rule, its format resolved."""
    box_format_doubts: list = field(default_factory=list)
    """Of them, those given as ``xyxy`` whose reference detections are no corners: what a
    missed box budget says first (it had been blamed on the runtimes)."""
    masks: dict = field(default_factory=dict)
    """``--judge-mask``: outputs judged by the mask cut from them -> the rule."""
    ctc: dict = field(default_factory=dict)
    """``--judge-ctc``: outputs judged by the text they decode to -> the rule."""

    def compare(self, refs: list, gots: list, scales: Mapping[str, float] | None = None,
                per_sample: dict | None = None) -> dict[str, dict]:
        """:func:`deploycomp.validate.compare_outputs` as every comparison of this build
        makes it (its judged elements, its integer outputs of rounded values, its angles,
        its judged channels)."""
        return compare_outputs(refs, gots, scales, per_sample, where=self.where, levels=self.levels,
                               angles=self.angles, channels=self.channels, boxes=self.boxes, masks=self.masks,
                               ctc=self.ctc, states=self.feedback)

    def scales(self, refs: list) -> dict[str, float]:
        """The outputs' (and judged channels') scales over ``refs``, for comparing parts of them."""
        return output_scales(refs, self.channels)



def _versions() -> dict[str, str]:
    out = {}
    for dist in ("deploycomp", "onnx", "onnx-ir", "onnxscript", "onnxruntime", "openvino", "ai-edge-litert",
                 "flatbuffers", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    # (the package's version has stayed 0.1.0 over hundreds of commits: diff had taken a bundle
    # of another deploycomp for one of the same, and a latency rise of 46% for noise)
    out["deploycomp-code"] = code_digest()
    return out


def _host_info() -> dict[str, Any]:
    return {"machine": platform.machine(), "system": platform.system(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "python": platform.python_version()}


DEFAULT_MAX_BATCH = 8
"""A dynamic batch kept for TensorRT gets the profile 1 / 1 / this, unless --profile says otherwise."""

LATENCY_SECONDS = 1.5
"""How long the bundle and, after it, the ONNX Runtime reference are timed on ``host`` at
most (at least 10 runs each, after a warm-up run; earlier once the median is known to
:data:`deploycomp.validate.LATENCY_PRECISION`): 3 s each made latency a quarter of a
27 s int8 build of PP-OCRv3 det; 1.5 s still times 28-50 runs of it."""

LATENCY_ENDS_SECONDS = 1.0
"""At most this long timing a ``--profile`` bundle at each end of its range (MIN, MAX)."""


def _shape_from_data(declared: list, array_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """One sample's shape for an input declared ``declared`` (ints and dim names), from a
    data array holding samples: stacked on a new leading axis (N x sample), or
    concatenated on the first (a dynamic batch of 1 per sample); None where the array's
    shape does not fit the declared one."""
    def fits(dims) -> bool:
        return all(not isinstance(d, int) or d == a for d, a in zip(declared, dims))

    if len(array_shape) == len(declared) + 1 and fits(array_shape[1:]):
        return tuple(array_shape[1:])
    if len(array_shape) == len(declared) and declared and fits((declared[0], *array_shape[1:])):
        return (declared[0] if isinstance(declared[0], int) else 1, *array_shape[1:])
    return None


def _data_shape(data_shapes: Mapping | None, name: str, inputs: Mapping) -> tuple[str, tuple[int, ...]]:
    """(file, array shape) of input ``name`` in the user's data (:func:`_data_shapes`); a
    .npy's array serves a single-input model."""
    found = (data_shapes or {}).get(name) or ((data_shapes or {}).get("*") if len(inputs) == 1 else None)
    return found or ("", ())


@dataclass
class ResolvedShapes:
    """Every input's shape, and how the build came to each (:func:`_resolve_shapes`)."""

    shapes: dict[str, tuple[int, ...]]
    assumed: list[str]
    """A note for each shape the user did not give as it is."""
    guessed: dict[str, str]
    """Those the build chose itself (:attr:`Prepared.guessed`)."""
    from_data: dict[str, str]
    """Those read off a data file (:attr:`Prepared.from_data`)."""


def _over_memory_at_max(model: ir.Model, name: str, hi: Sequence[int], target: TargetProfile) -> str | None:
    """What to say where one input at its profile's MAX alone takes more than the target's
    memory budget: a 2 GB Orin Nano took a profile whose MAX input was 2.5 GB without a word
    (the bundle is validated and timed at OPT)."""
    budget = target.budgets.max_memory_mb
    value = next((v for v in model.graph.inputs if v.name == name), None)
    size = input_bytes(value, hi) if budget is not None and value is not None else None
    if size is None or (mb := size / 2**20) <= budget:
        return None
    return (f"{name}: at its --profile's MAX {'x'.join(map(str, hi))} the input alone takes {mb:.0f} MB, "
            f"more than {target.name}'s memory budget of {budget:g} MB (the bundle is checked at OPT only)")


def takes_profiles(target: TargetProfile) -> bool:
    """Whether a ``--profile`` applies: the target keeps shapes dynamic and its backend's
    runtime takes a range (``dynamic_shapes``). The refusal and the hints that offer
    ``--profile`` ask this one question (a hint that asked the target alone had offered it
    to a user profile of an ONNX Runtime backend, which the build then refused)."""
    return not target.static_shapes and bool(getattr(get_backend(target.backend), "dynamic_shapes", False))


def _resolve_shapes(model: ir.Model, specs: Iterable[InputSpec], target: TargetProfile,
                    profiles: dict[str, tuple] | None = None,
                    data_shapes: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
                    building: bool = True) -> ResolvedShapes:
    """User shapes, plus batch=1 for a dynamic leading dim; the user's data arrays' shapes
    (``data_shapes``: input -> (file, array shape)) for other dynamic dims; error on
    anything else dynamic.

    Inputs with a profile (``--profile``, or a TensorRT one made here for a dynamic batch
    on a target without static shapes) are validated at the profile's OPT shape, or at the
    data's own sample shape where that is another inside the profile."""
    profiles = profiles if profiles is not None else {}
    assumed: list[str] = []
    guessed: dict[str, str] = {}
    from_data: dict[str, str] = {}
    shapes = check_specs(model, list(specs), assumed)
    given = dict(shapes)
    current = input_shapes(model)
    if "*" in (data_shapes or {}) and len(current) > 1:  # (said first: the dynamic dims' error had hidden it)
        raise InputDataError(f"{data_shapes['*'][0]}: a .npy serves single-input models; this one has inputs "
                             f"{few(current)} (an .npz holds one array per input)")
    for name, (lo, opt, hi) in profiles.items():
        if name not in current:  # (a KeyError beside an --input; else the data's or the dims' error)
            raise InputDataError(f"--profile {name}: the model has no input named {name!r} (inputs: {few(current, 6)})")
        if name in shapes:
            raise InputDataError(f"input '{name}' has both --input and --profile; give one")
        check_profile(model, name, {"MIN": lo, "OPT": opt, "MAX": hi}, given)
        if (said := _over_memory_at_max(model, name, hi, target)) is not None:
            log.warning("%s", said)
            assumed.append(said)
        shapes[name], at = opt, "its --profile's OPT"
        # the user's data at another shape inside the profile: validated at the data's shape
        # (batch-1 samples for a 1 / 4 / 8 profile were refused for not being 4)
        source, array_shape = _data_shape(data_shapes, name, current)
        taken = _sample_shape(current.get(name, list(opt)), opt, array_shape)
        if taken is not None and within_profile(taken, lo, hi):
            shapes[name], at = taken, f"the shape of each sample in {source} (inside its --profile)"
        if tuple(lo) != tuple(hi):  # (the summary had not said that the rest of the range went unchecked)
            assumed.append(f"{name}: validated at {'x'.join(map(str, shapes[name]))}, {at}, not at its other shapes "
                           f"({'x'.join(map(str, lo))} to {'x'.join(map(str, hi))})")
    dynamic = dynamic_dims(model)
    for name, dims in current.items():  # inputs that are static already (scalars too)
        if name not in shapes and name not in dynamic:
            shapes[name] = tuple(dims)
    _profiles_by_dim_names(model, shapes, profiles, assumed)
    named = sized_by_dim_names(model, {n: s for n, s in shapes.items() if n not in profiles})
    unresolved: list[str] = []
    for name, dims in dynamic.items():
        if name in shapes:
            continue
        if name in named:
            shapes[name], note = named[name]
            assumed.append(note)
            continue
        if dims == [0] and len(current[name]) > 1:
            # 1, unless the user's data stacks samples that each hold another batch (N x B x
            # ...): ICLabel's EEG classifier runs only at a multiple of 4 (each component with
            # its 3 flips), and at 1 OpenVINO and TFLite refused its Reshape as if they could not
            source, array_shape = _data_shape(data_shapes, name, current)
            taken = _shape_from_data(current[name], array_shape) if array_shape else None
            batch = (int(taken[0]) or 1) if taken else 1
            rest = tuple(current[name][1:])
            shapes[name] = (batch, *rest)
            per_sample = f" (the batch of each sample in {source})" if batch != 1 else ""
            # a first dim the file names as something else (an LSTM's time axis) is said by name
            dim = str(current[name][0])
            if len(dim) > 2 and not re.search(r"batch|^unk|^none$|dynamic|^dim|^\d", dim.lower()):  # not a placeholder
                per_sample += f" (the file names that dim '{dim}')"
            if target.backend == "tensorrt" and not target.static_shapes:
                profiles[name] = ((batch, *rest), (batch, *rest), (max(batch, DEFAULT_MAX_BATCH), *rest))
                assumed.append(f"{name}: dynamic batch kept; TensorRT profile {batch} / {batch} / "
                               f"{max(batch, DEFAULT_MAX_BATCH)}, validated at {batch}{per_sample}")
            else:
                guessed[name] = f"{name}: batch dim set to {batch}{per_sample}"
                # (said in the summary: the bundle then refuses any other batch)
                assumed.append(f"{guessed[name]}; the bundle takes that batch only "
                               f"(--input {name}:{'x'.join(['N', *map(str, rest)])} for another)")
            continue
        source, array_shape = _data_shape(data_shapes, name, current)
        if (taken := _shape_from_data(current[name], array_shape) if array_shape else None) is not None:
            shapes[name] = taken
            from_data[name] = f"{name}: shape {'x'.join(map(str, taken))} taken from {source}"
            assumed.append(f"{from_data[name]} (an array of {list(array_shape)}; --input sets it)")
            guessed[name] = assumed[-1]
            continue
        unresolved.append(name)
    if unresolved:  # every one named at once: a user who fixes the first should not meet the next
        need = ("it needs static shapes" if target.static_shapes else "validation needs concrete shapes"
                if building else "its pipeline pins every input's shape (optimize without --target keeps them dynamic)")
        first_names = {d for d in current[unresolved[0]] if isinstance(d, str) and d != "?"}
        shared = len(unresolved) > 1 and all(d in first_names for n in unresolved[1:] for d in current[n]
                                             if not isinstance(d, int))
        def template(dims) -> str:
            """A shape to fill in: a leading dynamic dim is the batch, 1 by default
            ("images:Nx3xNxN" had been taken for a command and refused as a shape)."""
            return "x".join(str(d) if isinstance(d, int) else "1" if i == 0 else "N" for i, d in enumerate(dims))

        flags = " ".join(f"--input {n}:{template(current[n])}" for n in (unresolved[:1] if shared else unresolved))
        if shared:  # (the others name the same dims: one --input sizes them all)
            flags += " (the other inputs name the same dims and take its sizes)"
        also = ("" if not (building and takes_profiles(target)) else f" or --profile {unresolved[0]}:MIN:OPT:MAX"
                if len(unresolved) == 1 or shared else " (or --profile NAME:MIN:OPT:MAX for each)")
        first = unresolved[0]
        what = (f"input '{first}' has dynamic dim(s) {dynamic[first]} (shape {current[first]})" if len(unresolved) == 1
                else f"inputs {few(repr(n) for n in unresolved)} have dynamic dims (e.g. '{first}': {current[first]})")
        raise InputDataError(f"{what}; target {target.name}: {need}; pass {flags}{also}; each N is a size your "
                             "application feeds")
    pinned = []  # dims the file leaves dynamic, pinned by --input: the bundle takes those only
    for name, dims in given.items():
        free = [str(d) for d in current.get(name, ()) if not isinstance(d, int)]
        if free and name not in profiles:
            pinned.append((name, dims, free))
    other = " (a --profile keeps them dynamic)" if takes_profiles(target) else ""
    if len(pinned) > PINNED_SAID_ONE_BY_ONE:  # (a graph network's 19 inputs had read as 19 such lines)
        assumed.append(f"{len(pinned)} inputs built at the shapes --input gives "
                       f"({few((f'{n} ' + 'x'.join(map(str, d)) for n, d, _ in pinned), 6)}); the file leaves dims "
                       f"of each dynamic and the bundle takes these shapes only: inputs of other sizes padded or "
                       f"resized as the application does{other}")
    else:
        for name, dims, free in pinned:
            assumed.append(f"{name}: built at {'x'.join(map(str, dims))} as --input gives; the file leaves "
                           f"{', '.join(free)} dynamic and the bundle takes this shape only: inputs of other sizes "
                           f"padded or resized as the application does{other}")
    bounds = [("", shapes)] + [(f" at the --profile {end}", {**shapes, **{n: p[k] for n, p in profiles.items()}})
                               for k, end in ((0, "MIN"), (2, "MAX"))]
    for where, sized in bounds if profiles else bounds[:1]:
        if clash := named_dim_clash(model, sized):
            raise InputDataError(f"{clash}{where}")
    return ResolvedShapes(shapes, assumed, guessed, from_data)


PINNED_SAID_ONE_BY_ONE = 3
"""Inputs whose dynamic dims ``--input`` pinned said one line each up to this many; more
are said in one line."""


def _profiles_by_dim_names(model: ir.Model, shapes: dict[str, tuple[int, ...]], profiles: dict[str, tuple],
                           assumed: list[str]) -> None:
    """A profile for each input no option sized whose every dynamic dim a profiled
    input names alike, as ``--input`` sizes such inputs (:func:`sized_by_dim_names`, at the
    profiles' MIN, OPT, MAX and validated shapes): one ``--profile input_ids:...`` ranges a
    text encoder's ``attention_mask`` too (it had asked for a profile of its own)."""
    if not profiles:
        return
    ends = [sized_by_dim_names(model, {n: p[k] for n, p in profiles.items()}) for k in range(3)]
    validated = sized_by_dim_names(model, {n: shapes[n] for n in profiles}, "--profile")
    for name, (at, note) in validated.items():
        if name not in shapes and all(name in end for end in ends):
            profiles[name], shapes[name] = tuple(end[name][0] for end in ends), at
            assumed.append(f"{note}; profile {' / '.join('x'.join(map(str, end[name][0])) for end in ends)}")


def _data_shapes(opts: BuildOptions) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The user's .npz arrays' shapes (validation data first, then calibration), by input
    name, and a .npy's under ``*`` (a single-input model's): what a dynamic dim no
    ``--input`` fixes can be read from. Raw images (a folder) and iterables give none. A
    file that cannot be read, or holds Python objects, is refused here, with its own
    reason: the dynamic dims' error had hidden it."""
    return _array_shapes((opts.calibration, opts.validation_data))


def _preprocessing_used(spec: Any, sources: Sequence[Any]) -> dict | None:
    """What the bundle's image inputs were made with, for whoever feeds it (it had been
    nowhere in the bundle): ``--preprocess``, or the first image folder's own spec."""
    from deploycomp.preprocess import SPEC_FILE

    if spec is None:
        own = [Path(d) / SPEC_FILE for d in sources if isinstance(d, (str, os.PathLike)) and (Path(d) / SPEC_FILE).is_file()]
        spec = load_spec(own[0]) if own else None
    return spec.model_dump(mode="json") if spec is not None else None


def _shapes_for(prep: Prepared, source: Any) -> dict[str, tuple[int, ...]]:
    """The build's shapes, with each input that has a TensorRT profile at ``source``'s own
    sample shape where that is another inside the profile: calibration data and validation
    data each at theirs (calibration at the profile's OPT beside validation at its MIN
    had been refused, with a hint to --input the build then refused beside --profile)."""
    if not prep.profiles or not isinstance(source, (str, os.PathLike)):
        return prep.shapes
    found = _array_shapes((source,))
    current = input_shapes(prep.model)
    shapes = dict(prep.shapes)
    for name, (lo, _, hi) in prep.profiles.items():
        _, array_shape = _data_shape(found, name, current)
        taken = _sample_shape(current.get(name, list(shapes[name])), shapes[name], array_shape)
        if taken is not None and within_profile(taken, lo, hi):
            shapes[name] = taken
        elif taken is not None:  # (the refusal's hint had been --input, refused beside --profile)
            raise InputDataError(f"{Path(source).name}: input '{name}' has samples of shape "
                                 f"{'x'.join(map(str, taken))}, outside its --profile ({'x'.join(map(str, lo))} "
                                 f"to {'x'.join(map(str, hi))}): give data inside it, or a profile that holds it")
    return shapes


def _sample_shape(dims, shape, array_shape) -> tuple[int, ...] | None:
    """The shape of each sample a data array of ``array_shape`` holds, where it holds no
    samples of ``shape`` (an input of ``dims`` as the file declares them), else None."""
    if not array_shape or sample_layout(tuple(array_shape), tuple(shape)) is not None:
        return None
    return _shape_from_data(dims, tuple(array_shape))


def _array_shapes(sources) -> dict[str, tuple[str, tuple[int, ...]]]:
    """:func:`_data_shapes` of these sources, the later's arrays over the earlier's."""
    import zipfile

    def header(f) -> tuple[tuple[int, ...], np.dtype]:
        major, _ = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)(f)
        return tuple(shape), dtype

    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for source in sources:
        if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file():
            continue
        path = Path(source)
        try:  # the arrays' headers only: a calibration set of photos is not read twice
            if path.suffix == ".npy":
                with open(path, "rb") as f:
                    arrays = {"*": header(f)}
            elif path.suffix == ".npz":
                with zipfile.ZipFile(path) as archive:
                    arrays = {}
                    for member in archive.namelist():
                        if member.endswith(".npy"):
                            with archive.open(member) as f:
                                arrays[member[:-4]] = header(f)
            else:
                continue
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise InputDataError(f"{path}: not a readable {path.suffix} file ({e})") from None
        for name, (shape, dtype) in arrays.items():
            if dtype.hasobject:
                raise unreadable_array(path, name, OBJECTS)
            out[name] = (path.name, shape)
    return out


def _shape_problem(prep: Prepared) -> InputDataError | None:
    """Where a backend refused the model: whether ONNX Runtime cannot run it at the build's
    input shapes either (inputs whose sizes disagree, a batch of 1 where the data held one
    long sample); then the shapes are the problem, not the target (a Concat of a 32-row and
    a 1-row input was "cannot run op(s) Concat", exit 6)."""
    why = shape_error(prep.model, prep.shapes)
    if why is None:
        return None
    try:  # (unless ONNX Runtime cannot take the model at all: then the shapes are not the question)
        source_runner(prep.source, prep.source.name)
    except DeployError:
        return None
    shown = few(f"{n}: {'x'.join(map(str, s)) or 'a scalar'}" for n, s in prep.shapes.items())
    guessed = "; ".join(prep.guessed.values())
    branch = ""
    if deciding := (_branch_inputs(prep.model) if "If" in why else []):
        # (a branch for another input value may not take these shapes: Silero VAD's for 8 kHz,
        # where the data held sr=16000, had been called a shape problem with no word of --freeze)
        branch = (f"; an If's branch fails at these shapes, which may not be the one your inputs take: --freeze "
                  f"{deciding[0]}=VALUE folds the input that picks it (the If reads {few(deciding)})")
    return InputDataError(f"the model does not run at input shape(s) {shown}, in ONNX Runtime either ({why})"
                          + (f"; {guessed}" if guessed else "") + branch + "; --input NAME:SHAPE sets each")


def _branch_inputs(model: ir.Model) -> list[str]:
    """The graph's one-value inputs an ``If``'s condition is computed from (a sample rate,
    a mode): those ``--freeze`` can fold the branch of."""
    inputs = {v.name: v for v in model.graph.inputs}
    found: list[str] = []
    for node in model.graph:
        if node.op_type != "If" or not node.inputs or node.inputs[0] is None:
            continue
        todo, seen = [node.inputs[0]], set()
        while todo:
            value = todo.pop()
            if value is None or id(value) in seen:
                continue
            seen.add(id(value))
            if value.name in inputs and value.shape is not None and all(d == 1 for d in value.shape) \
                    and value.name not in found:  # (a scalar, or a shape of ones)
                found.append(value.name)
            if value.producer() is not None:
                todo.extend(value.producer().inputs)
    return found


def _initializer_note(loaded) -> list[str]:
    """What loading changed of the file that a reader of the bundle's messages needs to know."""
    notes = []
    if loaded.initializer_inputs:
        notes.append(f"{len(loaded.initializer_inputs)} initializer(s) listed as graph inputs (IR {loaded.ir_version} "
                     "style) treated as constants; --keep-initializer-inputs keeps them as inputs")
    from deploycomp.quant.model_qdq import weight_only

    # (an int4 export's 2.1 MB fp32 bundle had said nothing of the 0.3 MB of int4 it came as)
    if weights := weight_only(loaded.model):
        said = ", ".join(f"{n} {kind} tensor{'s' if n > 1 else ''}" for kind, n in sorted(weights.items()))
        notes.append(f"weights arrive quantized, weight-only ({said}, dequantized by DequantizeLinear, no activation "
                     "quantization): expanded to float for this build, the bundle holds them at its precision")
    if loaded.renamed:  # (a message naming an inner tensor names it as renamed: -v says how; the
        # manifest's source.renamed_tensors how many; no assumption of the user's, so not one of
        # theirs: YOLOv8n's summary had opened on its 9 renamed inner tensors)
        old, new = next(iter(loaded.renamed.items()))
        log.info("%d inner tensor name(s) holding '__' or '/i8', which deploycomp names its own tensors with, "
                 "renamed (e.g. '%s' as '%s'); inputs and outputs keep theirs", len(loaded.renamed), old, new)
    return notes


def freeze_inputs(model: ir.Model, values: dict[str, Any]) -> dict[str, np.ndarray]:
    """Replace the named graph inputs by initializers holding ``values`` (cast to each input's
    dtype, shaped as its static shape when it has one); returns the arrays used."""
    inputs = {v.name: v for v in model.graph.inputs}
    frozen = {}
    for name, value in values.items():
        if name not in inputs:
            raise InputDataError(f"--freeze {name}: the model has no input named {name!r} (inputs: {few(inputs, 6)})")
        v = inputs[name]
        arr = np.asarray(value, dtype=np.dtype(v.dtype.numpy()))
        if v.shape is not None and all(isinstance(d, int) for d in v.shape):
            if arr.size != int(np.prod(list(v.shape), dtype=np.int64)):
                raise InputDataError(f"--freeze {name}: {arr.size} value(s) for an input of shape {list(v.shape)}")
            arr = arr.reshape(tuple(v.shape))
        elif v.shape is not None and (len(v.shape) > 1 or len(v.shape) == 0 and arr.size != 1):
            # a list of values cannot say the shape of an input with dynamic dims (2 values for
            # a [?, 3, ?, ?] image had become a vector, and OpenVINO's refusal of a Conv the error)
            raise InputDataError(f"--freeze {name}: the input has shape "
                                 f"{[d if isinstance(d, int) and d >= 0 else '?' for d in v.shape]}; --freeze takes a scalar, a "
                                 f"vector, or an input whose every dim the model fixes")
        model.graph.inputs.remove(v)
        v.const_value = ir.Tensor(np.require(arr, requirements="C"), name=name)  # (ascontiguousarray: ndim >= 1)
        model.graph.register_initializer(v)
        frozen[name] = arr
    return frozen


FROZEN_VALUES_KEPT = 64
"""A frozen input's values the manifest holds up to this many (its sha256 beyond)."""


def _frozen_record(frozen: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """The manifest's record of the inputs ``--freeze`` made constants: an application that
    feeds them as it fed the model (Silero's package passes ``sr`` every call) has them
    taken where they hold the built value (:meth:`deploycomp.runner.BundleRunner.run`)."""
    return {n: {"dtype": str(a.dtype), "shape": list(a.shape),
                **({"values": a.ravel().tolist()} if a.size <= FROZEN_VALUES_KEPT else {"sha256": array_sha256(a)})}
            for n, a in frozen.items()}


def _values_said(a: np.ndarray) -> str:
    """A frozen input's values as the assumptions say them: all of a few, else the first
    four and how many (32 values had read as the four alone)."""
    flat = a.ravel()
    if flat.size <= 4:
        return str(flat.tolist())
    return f"[{', '.join(map(str, flat[:4].tolist()))}, ... ({flat.size} values)]"


class PassFailure(RuntimeError):
    """A pass failed on a model ONNX's own checker accepts: a bug of deploycomp's, said as
    an internal error (exit 1), not as a bad model file."""


def _run_passes(loaded, pipeline):
    """:func:`run_passes` on a loaded model. A pass that fails is said as the model's fault
    (exit 3) only where ONNX's checker (full, with strict shape inference) refuses the file
    too: a valid opset-22 model whose AffineGrid the inliner refused had read "bad model
    file"."""
    from deploycomp.errors import ModelError

    try:
        return run_passes(loaded.model, pipeline)
    except ModelError as e:
        import onnx

        try:
            onnx.checker.check_model(str(loaded.path), full_check=True)
        except Exception:  # noqa: BLE001 - the checker's own refusal: the file is at fault, as said
            raise e from None
        raise PassFailure(f"{e} (on a model ONNX's checker accepts)") from e


def prepare(model_path: str | os.PathLike, target: TargetProfile, specs: Iterable[InputSpec] = (),
            pipeline: str | None = None, profiles: dict[str, tuple] | None = None,
            keep_initializer_inputs: bool = False, freeze: dict[str, Any] | None = None,
            data_shapes: Mapping[str, tuple[str, tuple[int, ...]]] | None = None, building: bool = True) -> Prepared:
    """Load, freeze inputs given values, pin shapes, optimize. ``profiles`` (``--profile``) is
    filled in with the TensorRT profiles made for dynamic batches; their varying dims stay symbolic
    in the optimized graph. ``building``: False for ``optimize``, whose errors speak of
    neither validation nor profiles."""
    loaded = load_model(model_path, keep_initializer_inputs)
    specs = list(specs)
    both = [name for name, _ in specs if name in (freeze or {})]
    if both:
        raise InputDataError(f"--input {both[0]}: the input is frozen by --freeze (its values give its shape); give one")
    frozen = freeze_inputs(loaded.model, freeze or {})
    profiles = profiles if profiles is not None else {}
    resolved = _resolve_shapes(loaded.model, specs, target, profiles, data_shapes, building)
    shapes, assumed = resolved.shapes, resolved.assumed
    check_sizes(loaded.model, shapes)
    pinned = dict(shapes)
    for name, (lo, _, hi) in profiles.items():
        pinned[name] = tuple(a if a == b else f"{name}_d{i}" for i, (a, b) in enumerate(zip(lo, hi)))
    # (a profiled input's varying dims stay dynamic in the reference too: PP-OCRv3 rec fixes
    # its batch as -1, and its reference, pinned at the validation lines' width, had refused
    # the calibration lines of another width inside the profile)
    repinned = {v.name: pinned[v.name] for v in loaded.model.graph.inputs
                if v.name in shapes and v.shape is not None and tuple(v.shape) != shapes[v.name]
                and any(isinstance(d, int) and d != want for d, want in zip(v.shape, shapes[v.name]))}
    assumed = _initializer_note(loaded) + [f"input '{n}' frozen to {_values_said(a)}" for n, a in frozen.items()] + assumed
    integer_ops = sum(1 for n in loaded.model.graph if n.op_type in INTEGER_OPS)
    nan_ok = analysis.nan_inputs(loaded.model)  # before tree ensembles become comparisons
    model, plog = _run_passes(loaded, build_pipeline(pipeline or target.pipeline_name, pinned))
    levels = frozenset(analysis.level_outputs(model))  # typed by the passes' shape inference
    left = sum(1 for n in model.graph if n.op_type in INTEGER_OPS)
    if any(r.name == "Float16ToFloat32Pass" and r.modified for r in plog.records):  # (a backend's pipeline)
        assumed.append("a float16 model: computed in float32 (each float16 weight widened exactly: the runtime has "
                       f"no float16 kernels for its ops), {io_types_kept(model)}")
    if integer_ops:
        assumed.append(f"the model arrives int8 through ONNX Runtime's dynamic quantization ({integer_ops} "
                       f"ConvInteger/MatMulInteger): {integer_ops - left} rewritten as float ops on their int8 weights' "
                       "values; judged with the int8 budget")
    return Prepared(model, loaded.path, loaded.sha256, loaded.source_opset, shapes, assumed, plog, profiles, frozen,
                    repinned, loaded.external_data, integer_ops, guessed=resolved.guessed, from_data=resolved.from_data,
                    levels=levels, nan_ok=nan_ok, renamed=len(loaded.renamed))


_BUILDING = threading.RLock()
"""Builds (and ``optimize``) in one process run one at a time. They share state that is not
per thread: onnxscript's rewrite rules keep their current match on the rule objects (two
threads' builds had failed inside each other's rules), a quiet logger's level is set and
restored around constant folding, a staging folder is named per process, and OpenVINO's
bindings hung two of nine runs of four threads' builds. A service builds in parallel with
processes (``deploycomp fleet`` does); loading and running bundles takes no lock."""


def _one_at_a_time(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with _BUILDING:
            return fn(*args, **kwargs)

    return locked


@_one_at_a_time
def optimize(model_path: str | os.PathLike, out: str | os.PathLike, specs: Iterable[InputSpec] = (),
             target: str | None = None, force: bool = True, keep_initializer_inputs: bool = False) -> dict[str, Any]:
    """Write the optimized ONNX (``deploycomp optimize``); returns the pass summary.

    Without a target the target-independent ``default`` pipeline runs and dynamic dims
    may stay dynamic; with one, its pipeline runs and its shape rules apply.
    """
    out = Path(os.path.abspath(out))
    if out.is_dir():
        raise OutputExistsError(f"{out}: is a folder; -o names the optimized .onnx file to write")
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: output exists; pass --force to replace it")
    if device_or_pipe(out):
        raise OutputExistsError(f"{out}: {DEVICE_OR_PIPE}; -o names the .onnx file to write")
    if out.exists() and out.samefile(model_path):  # (its external data, named otherwise, was left orphaned)
        raise OutputExistsError(f"{out}: -o names the model being optimized; write the optimized model elsewhere")
    if target is None:
        loaded = load_model(model_path, keep_initializer_inputs)
        shapes = check_specs(loaded.model, list(specs))
        model, plog = _run_passes(loaded, build_pipeline("default", shapes))
        prep = Prepared(model, loaded.path, loaded.sha256, loaded.source_opset, shapes, _initializer_note(loaded), plog,
                        external_data=loaded.external_data, renamed=len(loaded.renamed))
    else:
        prep = prepare(model_path, load_target(target), specs, keep_initializer_inputs=keep_initializer_inputs,
                       building=False)
    # (an -o naming the model's own weights file had replaced them with the optimized model)
    reads = {(Path(model_path).parent / location).resolve() for location in prep.external_data}
    if clash := reads & {out.resolve(), out.with_name(out.name + ".data").resolve()}:
        raise OutputExistsError(f"{out}: writing it would replace {next(iter(clash)).name}, the model's external "
                                "data; write the optimized model elsewhere")
    # missing folders are made, as build makes --out's (and removed again if nothing lands)
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    # written in a folder of its own, then moved: an external-data file keeps the name the
    # model refers to (OUT.data), and a process killed meanwhile leaves a folder the next
    # run removes (remove_abandoned)
    remove_abandoned(out)
    work = out.with_name(f".{out.name}.tmp-{process_tag()}")
    try:
        work.mkdir()
        files = save_model(prep.model, work / out.name)
        for written in files[1:] + files[:1]:  # the weights before the model that reads them
            os.replace(written, out.with_name(written.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not out.exists():
            for folder in made:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()
    recs = prep.pass_log.records
    return {"model": str(out), "nodes_before": recs[0].nodes_before if recs else None,
            "nodes_after": recs[-1].nodes_after if recs else None, "assumptions": prep.assumed,
            "passes": prep.pass_log.to_json()}


def _source_at(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> Path | bytes:
    """The original model for ONNX Runtime, its inputs in ``shapes`` declared at those
    sizes (ORT refuses a feed that contradicts a fixed dim) and the shapes the file
    records for the old sizes dropped; the file itself when there is nothing to change
    or it is too large to hold as one message."""
    if not shapes:
        return path
    import onnx

    proto = onnx.load(str(path))
    declare_input_shapes(proto, shapes)
    try:
        return proto.SerializeToString()
    except ValueError:  # over 2 GB: ORT will say what it thinks of the file
        return path


OWN_INT8_FLOAT_SHARE = 0.5
"""A model that arrives int8 whose own encodings leave more of its MACs than this float on
the target is warned about (an NNCF-quantized PP-OCR rec on TFLite: every convolution,
0% of its MACs int8, built "[ok]" as an int8 bundle)."""

REFERENCE_FP32 = "ONNX Runtime fp32"
REFERENCE_INT8 = "ONNX Runtime on the original int8 model"
"""What a host bundle's latency is said against (``measured.reference_latency.against``):
ONNX Runtime on the original model as it ships (default session options), fp32 unless
the model arrives int8."""


class _Reference:
    """The original model in ONNX Runtime fp32, fed the frozen inputs' values too."""

    def __init__(self, runner: ORTRunner, frozen: dict[str, np.ndarray], labels: dict[str, list[str]] | None = None):
        self.runner, self.frozen, self.labels = runner, frozen, labels or {}
        self.output_names = runner.output_names

    def run(self, feeds):
        outs = self.runner.run({**feeds, **self.frozen})
        # a classifier's string labels as the positions the bundle computes (passes.ml_labels)
        return label_positions(outs, self.labels) if self.labels else outs


def _io_spec(model: ir.Model, shapes: dict[str, tuple[int, ...]], reference: ORTRunner, sample: dict,
             levels: frozenset = frozenset(), nan_ok: frozenset = frozenset(),
             int64_range: tuple[int, int, str] | None = None) -> dict:
    """The bundle's inputs and outputs; an integer output of rounded float values says it
    is judged as numbers (``judged_as``: ``levels``), which a device check reads too; an
    input the model tests for NaN says so (``accepts_nan``), which ``deploycomp run`` reads,
    and ids a table is indexed by say its rows (``index_range``), which a bundle's runner
    checks (:func:`deploycomp.analysis.lookup_ranges`), as it checks an int64 input's
    ``value_range`` where the runtime computes int64 in fewer bits (``int64_range``: the
    backend's)."""
    outs = reference.run(sample)
    labels = getattr(reference, "labels", {})
    lookups = analysis.lookup_ranges(model)
    narrow = {"value_range": list(int64_range[:2]), "value_range_why": int64_range[2]} if int64_range else {}
    return {
        "inputs": [{"name": v.name, "dtype": str(np.dtype(v.dtype.numpy())), "shape": list(shapes[v.name]),
                    **({"accepts_nan": True} if v.name in nan_ok else {}),
                    **(narrow if v.dtype == ir.DataType.INT64 else {}),
                    **({"index_range": list(lookups[v.name][:2]), "index_table": lookups[v.name][2],
                        "index_rows": lookups[v.name][3]}
                       if v.name in lookups else {})} for v in model.graph.inputs],
        "outputs": [{"name": n, "dtype": "str" if n in labels else str(outs[n].dtype), "shape": list(outs[n].shape),
                     **({"judged_as": "levels"} if n in levels else {}),
                     **({"labels": labels[n]} if n in labels else {})} for n in reference.output_names],
    }


def _outputs_at_profile_ends(io: dict, reference, prep: Prepared, sample: Mapping[str, np.ndarray]) -> None:
    """Each output's shape with every ``--profile``d input at MIN and at MAX
    (``shape_at_profile_ends``), from the reference's runs there: an application sizes its
    buffers by them, and the manifest had given the outputs at OPT's shapes alone."""
    for end in ("min", "max"):
        shapes, feeds, resized = _at_profile_end(prep, sample, end)
        try:
            outs = _run_at_profile_end(reference.run, end, shapes, feeds, resized)
        except _SampleNotAtEnd as e:
            prep.assumed.append(f"{e}: its outputs' shapes there, its latency and memory are not given")
            continue
        for entry in io["outputs"]:
            if entry["name"] in outs:
                entry.setdefault("shape_at_profile_ends", {})[end] = list(np.shape(outs[entry["name"]]))


def _cost_at_shapes(prep: Prepared) -> analysis.GraphCost:
    """The model's cost at the build's shapes. A profile keeps its inputs' dims
    symbolic; the named ones are counted at the shapes (:func:`deploycomp.analysis.dim_values`),
    but a convolution over a symbolic length has no inferred output shape, and a
    speech enhancer's roofline estimate had counted 0 FLOPs (0.41 ms against 40.8 ms
    static, so a 10 ms latency budget passed): then a copy at the shapes is counted."""
    from onnx_ir.passes.common import ShapeInferencePass

    from deploycomp.passes.fix_input_shapes import FixInputShapesPass

    cost = analysis.analyze(prep.model, analysis.dim_values(prep.model.graph, prep.shapes))
    if cost.uncounted_nodes and prep.profiles:
        fixed, _ = run_passes(prep.model.clone(), [FixInputShapesPass(dict(prep.shapes)), ShapeInferencePass()],
                              max_steps=1)
        cost = analysis.analyze(fixed)
    return cost


INT8_ONLY = (("--keep-float", "keep_float"), ("--int8-range", "int8_range"), ("--int8-time-limit", "int8_time_limit"),
             ("--int8-boosters", "int8_boosters"))
"""Options only an int8 build reads (flag, :class:`BuildOptions` field)."""


def without_int8_options(opts: BuildOptions) -> BuildOptions:
    """``opts`` for a candidate of another precision than int8 (``--precision auto``): the
    int8 options left to the int8 candidate (``--int8-io`` had disqualified fp16 and fp32
    as usage errors)."""
    unset = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
             for f in fields(BuildOptions) if f.name in {key for _, key in INT8_ONLY}}
    return replace(opts, int8_io=None, **unset)


def unused_options(opts: BuildOptions) -> list[str]:
    """The options given that this build does not read, each with why: int8's on another
    precision, a box or mask budget without an output judged so."""
    unused = []
    # (auto: the int8 candidate's, which it builds only with calibration data: given without,
    # the options had gone unsaid, int8 with them)
    no_int8 = opts.precision == "auto" and opts.calibration is None and opts.sample_kind is None
    if opts.precision not in ("int8", "auto") or no_int8:
        given = [flag for flag, key in INT8_ONLY if getattr(opts, key) not in (None, [], ())]
        given += ["--int8-io"] if no_int8 and opts.int8_io else []
        if given:
            unused.append(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to int8 builds only"
                          + (", and auto builds int8 only with --calibration" if no_int8 else ""))
    for flag, key, judged, rule in (("--min-box-iou", "min_box_iou", opts.judge_boxes, "--judge-boxes"),
                                    ("--min-mask-iou", "min_mask_iou", opts.judge_masks, "--judge-mask"),
                                    ("--min-text-similarity", "min_text_similarity", opts.judge_ctc, "--judge-ctc")):
        if getattr(opts, key) is not None and not judged:
            unused.append(f"{flag} budgets the outputs {rule} judges, and no output is")
    return unused


def _check_precision(target: TargetProfile, precision: str) -> None:
    if precision not in target.precisions:
        raise UnsupportedError(
            f"target {target.name}{f' ({target.resolved_from})' if target.resolved_from else ''} does not support "
            f"precision {precision}; supported: {', '.join(target.precisions)}"
        )


@_one_at_a_time
def build(opts: BuildOptions) -> BuildResult:
    from deploycomp.quant import BOOSTERS
    from deploycomp.quant.observers import RANGE_METHODS

    unknown = sorted(set(opts.int8_boosters or ()) - set(BOOSTERS))
    if unknown:
        raise DeployError(f"unknown int8 booster(s) {', '.join(unknown)}; known: {', '.join(BOOSTERS)} (or none)")
    if opts.int8_range is not None and opts.int8_range != "auto" and opts.int8_range not in RANGE_METHODS:
        raise DeployError(f"unknown int8 range method {opts.int8_range}; known: auto, {', '.join(RANGE_METHODS)}")
    if opts.int8_time_limit is not None and not opts.int8_time_limit >= 0:
        raise DeployError(f"int8 time limit must be 0 or more seconds, not {opts.int8_time_limit}")
    for flag, value in (("--min-cosine", opts.min_cosine), ("--min-top1", opts.min_top1),
                        ("--min-box-iou", opts.min_box_iou), ("--min-mask-iou", opts.min_mask_iou),
                        ("--min-text-similarity", opts.min_text_similarity)):
        if value is not None and not 0 < value <= 1:
            raise DeployError(f"{flag} must be in (0, 1], got {value}")
    if opts.precision is None:
        opts = replace(opts, precision=default_precision(opts.target))
    if unused := unused_options(opts):  # (an fp16 build given --keep-float had said nothing of it)
        log.warning("%s: not used by this %s build", "; ".join(unused), opts.precision)
    if opts.precision == "auto":
        from deploycomp.auto import build_auto

        return build_auto(opts, _build)
    return _build(opts)


def default_precision(target: str) -> str:
    """fp32, or the target's preferred precision where it has no fp32: a build for the Edge
    TPU without ``--precision`` was refused for fp32."""
    profile = load_target(target)
    return "fp32" if "fp32" in profile.precisions else profile.preferred_precision


def _build(opts: BuildOptions) -> BuildResult:
    started, clock = time.time(), StageClock(opts.progress)
    opts = replace(opts, progress=clock)
    target = load_target(opts.target)
    check_op_names(target)
    _check_precision(target, opts.precision)
    backend = get_backend(target.backend)
    ensure_available(backend, f"target {target.name}: ")
    lowers = getattr(backend, "precisions", None)
    if lowers is not None and opts.precision not in lowers:
        raise UnsupportedError(f"target {target.name}: the {backend.name} lowering does not do {opts.precision} yet "
                               f"(it does {', '.join(lowers)})")
    if opts.io_layout is not None and backend.name != "tflite":
        raise UnsupportedError(f"--io-layout applies to TFLite targets; {target.name} uses {backend.name}")
    if opts.int8_io and (backend.name != "tflite" or opts.precision != "int8"):
        raise UnsupportedError(f"--int8-io needs --precision int8 on a TFLite target ({target.name}: "
                               f"{backend.name}, {opts.precision})")
    out = check_output(opts.out, opts.force)
    for what, read in (("the model", opts.model), ("--calibration", opts.calibration),
                       ("--validation-data", opts.validation_data)):
        # (--force replaces --out whole: a source model inside it had been deleted with it)
        if isinstance(read, (str, os.PathLike)) and Path(os.path.abspath(read)).is_relative_to(out):
            raise OutputExistsError(f"{out}: holds {what} the build reads ({read}); give another --out")
    for what, data in (("calibration", opts.calibration), ("validation data", opts.validation_data)):
        if isinstance(data, (str, os.PathLike)) and not Path(data).exists():
            raise InputDataError(f"{data}: {what} file not found")
    spec = load_spec(opts.preprocess) if opts.preprocess is not None else None
    arrays = [d for d in (opts.calibration, opts.validation_data) if d is not None]
    if spec is not None and arrays and all(isinstance(d, (str, os.PathLike)) and Path(d).suffix in (".npz", ".npy")
                                           for d in arrays):
        # (it had been ignored without a word: arrays are the model's inputs as they are)
        log.warning("--preprocess applies to image folders and built-in samples; %s hold%s the model's inputs as "
                    "they are: not applied", few(Path(d).name for d in arrays), "s" if len(arrays) == 1 else "")
        spec_used = None
    else:
        spec_used = _preprocessing_used(spec, arrays)

    profiles = {name: (lo, opt, hi) for name, lo, opt, hi in opts.profiles}
    for name, *shapes in opts.profiles:
        if tuple(shapes) != profiles[name]:
            raise InputDataError(f"--profile {name}: given twice, with other shapes; give one")
    if profiles and not takes_profiles(target):
        raise UnsupportedError(f"--profile applies to targets whose runtime takes dynamic shapes (TensorRT, "
                               f"OpenVINO); {target.name} ({backend.name}) runs static shapes only: --input fixes one")
    opts.progress("load + optimize")
    prep = prepare(opts.model, target, opts.inputs, profiles=profiles,
                   keep_initializer_inputs=opts.keep_initializer_inputs, freeze=opts.freeze,
                   data_shapes=_data_shapes(opts))
    opset = prep.model.opset_imports.get("", prep.model.opset_imports.get("ai.onnx"))
    if target.max_opset is not None and opset is not None and opset > target.max_opset:
        # (the field had been read by nothing: a profile saying 11 built opset-17 bundles)
        raise UnsupportedError(f"target {target.name} takes ONNX opsets up to {target.max_opset} (max_opset); the "
                               f"model is at opset {opset} after loading, and deploycomp's passes work at opset "
                               f"{MIN_OPSET} or later")
    own = own_quantization(prep, target)
    needs_calibration = opts.precision == "int8" and opts.calibration is None and own is None
    if needs_calibration and opts.sample_kind is None:
        # (coral-edgetpu's own precision is int8: said so where --precision was not given)
        raise InputDataError(NEEDS_CALIBRATION)
    opts.progress("check op support")
    support = backend.check(prep.model, target)
    try:
        support.raise_if_unsupported(target.name)
    except UnsupportedError as e:
        if (problem := _shape_problem(prep)) is not None:
            raise problem from None
        if prep.guessed:  # (a MaxPool longer than the 1 frame guessed from a file)
            raise UnsupportedError(f"{e} (at input shapes guessed: {'; '.join(prep.guessed.values())})") from None
        raise
    dtypes = {v.name: np.dtype(v.dtype.numpy()) for v in prep.model.graph.inputs}
    try:
        calibration = datasets.calibration_set(opts.calibration, _shapes_for(prep, opts.calibration), dtypes, spec,
                                               opts.sample_kind, prep.nan_ok)
        if needs_calibration and calibration is None:  # an example without a built-in set for its inputs
            raise InputDataError(f"{NEEDS_CALIBRATION}; the built-in {opts.sample_kind} samples have no calibration "
                                 "set for this model's inputs")
        # nothing calibrates a model that carries its own encodings (fp16's search judges on them)
        calibrates = own is None or opts.precision not in ("int8", "fp32")
        validation, calibration = datasets.validation_set(opts.validation_data, calibration,
                                                          _shapes_for(prep, opts.validation_data), dtypes, spec,
                                                          opts.sample_kind, prep.nan_ok, calibrates,
                                                          opts.validation_samples, in_order=bool(opts.feedback))
        # (what the data says of the check; only an int8 build is fitted to its calibration data)
        validation.notes = datasets.data_notes(calibration if opts.precision == "int8" else None, validation)
    except InputDataError as e:
        # a shape the other data file gave: say so, or the file that does not fit it is blamed
        # for a size it never claimed (calibration windows of 79 steps, validation of 59)
        if not prep.from_data:
            raise
        raise InputDataError(f"{e} (the shape expected: {'; '.join(prep.from_data.values())})") from None
    samples = validation.samples
    # a model that arrives int8 is judged as ONNX writes its QDQ (ONNX Runtime's own fused int8
    # kernels round differently, and no other runtime has them), with the int8 budget at any
    # precision: an fp32 build cannot make its int8 arithmetic exact
    source_ort = source_runner(_source_at(prep.source, prep.repinned), prep.source.name,
                               arithmetic="written" if own is not None else "fused")
    reference = _Reference(source_ort, prep.frozen, class_labels(prep.model))
    io = _io_spec(prep.model, prep.shapes, reference, samples[0], prep.levels, prep.nan_ok,
                  getattr(backend, "int64_range", None))
    if prep.profiles:
        _outputs_at_profile_ends(io, reference, prep, samples[0])
    if opts.feedback:
        check_feedback(opts.feedback, io, set(prep.profiles))
        prep.feedback = dict(opts.feedback)
        prep.assumed.append(f"validated as one stream: the {len(samples)} validation samples in order, each step "
                            f"after the first fed the step before's {describe_feedback(prep.feedback)} (the "
                            "reference its own, the bundle its own)")
    elif guess := suggested_feedback(io, list(prep.frozen)):
        flags = " ".join(f"--feedback {o}={i}" for o, i in guess.items())
        prep.assumed.append(f"{', '.join(repr(o) for o in guess)} look(s) like the next value of "
                            f"{', '.join(repr(i) for i in guess.values())} (the same shape): validated one step at "
                            f"a time from the data's own values, where a loop feeds its error back ({flags} "
                            "validates the samples as one stream)")
    try:
        check_where(opts.judge_where, {o["name"]: o["shape"] for o in io["outputs"]})
        check_boxes(opts.judge_boxes, {o["name"]: o["shape"] for o in io["outputs"]})
        typed = {o["name"]: (o["shape"], o["dtype"]) for o in io["outputs"]}
        check_masks(opts.judge_masks, typed)
        check_ctc(opts.judge_ctc, typed)
    except ValueError as e:
        raise InputDataError(str(e)) from None
    # an output judged by its boxes is judged where its detections are, as --judge-where would
    where = {**{k: (r.scores, r.threshold) for k, r in opts.judge_boxes.items()}, **opts.judge_where}
    prep.where = where
    prep.masks = dict(opts.judge_masks)
    prep.ctc = dict(opts.judge_ctc)
    refs: list[dict] = []  # the reference's outputs on the validation samples, once (here if a box format needs them)
    if opts.judge_boxes:
        if any(r.fmt in (None, "", "xyxy") for r in opts.judge_boxes.values()):
            refs = as_stream(reference.run, samples, prep.feedback)
        prep.boxes = {k: infer_format(refs, r) for k, r in opts.judge_boxes.items()}
        inferred = [r.text() for r in prep.boxes.values() if r.inferred]
        if inferred:
            prep.assumed.append(f"box format inferred from the reference's detections: {'; '.join(inferred)} "
                                "(give it as --judge-boxes NAME[A:B]=FORMAT:...)")
        for name, rule in prep.boxes.items():  # (a YOLO head given as xyxy had been blamed on the runtimes)
            if rule.fmt == "xyxy" and not rule.inferred and (share := not_corners(refs, rule)):
                prep.assumed.append(f"--judge-boxes {name}: given as xyxy, yet {share:.0%} of the reference's "
                                    "detections end left of or above where they start: they read as cxcywh (give "
                                    "=cxcywh, or no format to have it inferred)")
                prep.box_format_doubts.append(prep.assumed[-1])
                log.warning("%s", prep.assumed[-1])
    if opts.judge_channels:
        prep.channels = {o["name"]: axis for o in io["outputs"] if o["dtype"].startswith("float")
                         and o["name"] not in where and (axis := channel_axis(o["shape"])) is not None}
        if not prep.channels:  # (said, and recorded: a flag that did nothing was silent in the manifest)
            prep.assumed.append(f"--judge-channels: no output has channels to judge (2 to {MAX_CHANNELS} entries at "
                                "axis 1 or the last, fewer than any other axis but the batch, and not judged "
                                "--judge-where): each output is judged whole")
            log.warning("%s", prep.assumed[-1])
    if angle_names := analysis.angle_outputs(prep.model.graph):
        try:
            prep.angles = angle_periods(prep.model, samples[0])
        except Exception as e:  # noqa: BLE001 - a measurement that helps the comparison, not the build
            log.warning("could not tell which elements of %s hold angles (%s): compared as numbers",
                        few(angle_names), str(e).splitlines()[0][:200])
        for entry in io["outputs"]:
            if entry["name"] in prep.angles:
                entry["judged_as"] = "angles"  # a device check reads each element's turn from the reference file
        if prep.angles:
            prep.assumed.append(f"output(s) {few(sorted(prep.angles))} hold angles (an Atan's result): judged as "
                                f"angles, each difference taken to the nearest turn ({turns_in_words(prep.angles)})")
    measured_host = target.runs_here
    arrives_int8 = own is not None or prep.integer_ops > 0
    fidelity = target.fidelity["int8" if arrives_int8 and "int8" in target.fidelity else opts.precision]
    if own is not None:
        prep.assumed.append("judged against its QDQ arithmetic as ONNX defines it (ONNX Runtime, every node unfused) with "
                            "the int8 budget")
    fidelity = with_user_limits(fidelity, opts)
    model, quant_info, fp16_info, stricter = prep.model, None, None, None
    options = backend_options(opts, target, prep.profiles)
    if arrives_int8 and opts.precision == "fp16":
        # its int8 weights' values are float16 values: halved exactly; its float parts (scales,
        # norms, biases) are the model as written, kept float32 where a backend stores constants
        options["fp16_exact_weights"] = True
    fp16_compute = getattr(backend, "fp16_compute", None)  # see backends.base.Backend
    decisions = decision_tensors(prep.model) if opts.precision == "fp16" else {}
    if opts.precision == "fp16" and fp16_compute in ("tensors", "whole"):
        opts.progress("fp16 ranges")
        data = samples + (calibration.samples if calibration is not None else [])
        hot = fp32_tensors(prep.model, data[:MAX_RANGE_SAMPLES])
        options["fp32_tensors"] = sorted(set(hot) | set(decisions))
        fp16_info = {"fp32_tensors": hot, "judged_on_samples": min(len(data), MAX_RANGE_SAMPLES),
                     "rule": f"kept fp32: tensors past {FP16_MAX / HEADROOM:g} or non-zero below 2^-24 on real inputs"}
    f32_arithmetic = False  # f16 weights, f32 arithmetic (TFLite): its estimate at the fp32 peak
    if fp16_info is None and opts.precision == "fp16" and hasattr(backend, "fp16_reference"):
        f32_arithmetic = True
        options["fp32_tensors"] = sorted(decisions)
        fp16_info = {"fp32_tensors": {}, "rule": f"{backend.name} stores weights float16 and computes float32: no "
                                                 f"tensor leaves fp16's range"}
    if decisions and fp16_info is not None:
        fp16_info["decision_tensors"] = decisions
        fp16_info["rule"] += "; comparisons with thresholds fp16 would move kept fp32"
    if opts.precision == "int8" and own is not None:
        quant_info = own  # the model's own encodings are its int8: nothing to calibrate or search
    elif opts.precision == "int8":
        real = [] if validation.source == "random" else samples  # random data says nothing of coverage
        model, quant_info, stricter = search_int8(opts, prep, target, backend, reference, fidelity, calibration, real)

    opts.progress("reference outputs")
    # the validation inputs' runs, one after another, time ONNX Runtime where they are enough
    # (runs taken across the build mix its phases: LORE's took 0.9-2.0 s beside other work)
    reference_times = RunTimes()
    refs = refs or as_stream(lambda s: reference_times.run(reference.run, s), samples, prep.feedback)
    spread, spread_key = None, ""
    shipped = None  # (its run times, its run) for a model that arrives int8: ORT as the file ships
    floor = None  # what the budget is widened to: the model's own runtime's distance from it
    if own is not None:  # how far ONNX Runtime's own int8 kernels already are from the QDQ as written
        spread, floor, shipped = _own_runtime_floor(prep, samples, refs, fidelity)
        spread_key = "onnxruntime_own_int8_vs_written"
        if floor is not None:
            prep.assumed.append("ONNX Runtime's own int8 kernels (the runtime the model ships for) miss the int8 "
                                "budget against its QDQ as written on these inputs: a criterion they miss is held "
                                "to what they reach (validation.budgets: budget_limit is the budget's own)")
    elif prep.integer_ops and (floats := _float_form(prep)) is not None:  # what no build can be closer than
        spread = prep.compare(refs, as_stream(lambda s: floats.run({**s, **prep.frozen}), samples, prep.feedback))
        spread_key = "float_form_vs_onnxruntime_integer"
    with staged_bundle(opts.out, opts.force) as stage:
        def lowered_as(model: ir.Model, extra: Mapping[str, Any]):
            opts.progress(f"lower ({backend.name})")
            for old in stage.iterdir():  # a second try's files replace the first's
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            lowered = backend.lower(model, target, opts.precision, stage, {**options, **extra})
            f32 = getattr(backend, "f32_execution", lambda info: None)(lowered.info) if arrives_int8 else None
            if f32 is not None and fp16_info is not None:
                # a model that arrives int8 has no float weights to halve; its float parts in
                # f16 only round more (and OpenVINO's CPU ran Smart Turn's 333x slower so)
                fp16_info.setdefault("executes_fp32", "the model arrives int8: its float parts execute f32")
                lowered = replace(lowered, info=f32)
            elif own is not None and fp16_info is not None and getattr(backend, "fp16_compute", "") == "weights":
                # (TFLite's fp16 is float16 weights: an int8 model's are int8, and its fp16 build
                # had written its fp32 build's file without a word)
                fp16_info.setdefault("executes_fp32", "the model arrives int8: its weights stay int8 and its float "
                                                      "parts compute f32, as in its fp32 build")
            if target.cpu_fallback_ops and (split := analysis.cpu_split(model, target.cpu_fallback_ops)):
                lowered = replace(lowered, info={**lowered.info, "cpu_split": split})
            return validate(lowered)

        def lower_and_validate(model: ir.Model):
            """The bundle as the backend lowers it; where that misses the budget, each of the
            backend's other ways to lower (``fallback_lowerings``) in turn, the first that
            comes closer kept and said (OpenVINO's offline transformations had moved an
            ORT-quantized PP-OCRv4 det to cosine 0.891 where its ONNX frontend alone
            reaches 0.998)."""
            result = lowered_as(model, {})
            for extra in getattr(backend, "fallback_lowerings", ()):
                if fidelity_met(result[4], fidelity, floor=floor):
                    break
                missed, reached = budget_shortfall(result[4], fidelity), worst_cosine(result[4])
                result = None  # (its runtime released before the next is loaded: one in memory at a time)
                other = lowered_as(model, extra)
                if budget_shortfall(other[4], fidelity) < missed:
                    note = (f"{other[0].info.get('lowered_as', extra)}: the default lowering reached cosine "
                            f"{reached:.6f}, this one {worst_cosine(other[4]):.6f}")
                    log.warning("%s: %s", backend.name, note)
                    result = (replace(other[0], info={**other[0].info, "fallback": note}), *other[1:])
                else:
                    other = None
                    result = lowered_as(model, {})  # (its files again)
            return result

        # (weakly: a dict of runners had kept every runtime a build loaded alive to its end, a
        # TTS model's three compiled OpenVINO models 6.6 GB at once)
        bundle_times: weakref.WeakKeyDictionary[Any, RunTimes] = weakref.WeakKeyDictionary()

        def validate(lowered):
            opts.progress("validate")
            runner, memory_mb = peak_rss_growth(lambda: _load_and_run(backend, stage, lowered.info, samples[0]))
            bundle_times[runner] = RunTimes()  # (the latency of the runner kept, where its runs are enough)
            gots = as_stream(lambda s: bundle_times[runner].run(runner.run, s), samples, prep.feedback)
            return lowered, runner, memory_mb, gots, prep.compare(refs, gots)

        def executed_f32(lowered):
            """The same files executed f32 (an fp16 bundle's f16 weights, f32 execution): only
            the execution changes, so nothing is lowered again (1-3 s a build), only validated."""
            return validate(replace(lowered, info=backend.f32_execution(lowered.info)))

        lowered, runner, memory_mb, gots, metrics = lower_and_validate(model)
        tried: list[tuple[ir.Model, dict, float]] = []  # int8 choices the validation inputs rejected
        while stricter is not None and not fidelity_met(metrics, fidelity) and (again := stricter(metrics)):
            # the validation inputs missed what the calibration inputs met: the choice without
            # its dynamic-range layers, then stricter searches
            tried.append((model, quant_info, budget_shortfall(metrics, fidelity)))
            model, quant_info = again
            runner = None  # (the runtime it replaces released first: one loaded at a time)
            lowered, runner, memory_mb, gots, metrics = lower_and_validate(model)
        if (tried and not fidelity_met(metrics, fidelity)
                and min(t[2] for t in tried) < budget_shortfall(metrics, fidelity)):
            # every choice missed, and a later one by more (the judged inputs had nothing of
            # what failed): keep the one closest to the budget, say what came after it
            later = {"validation_min_cosine": round(worst_cosine(metrics), 6),
                     "validation_missed": fidelity_failures(metrics, fidelity)[0].describe(),
                     "float_layers": len(quant_info["float_layers"])}
            # (what else was tried after it stays said: the other range method's verdict had
            # gone with the later choice's record, and the log's "trying minmax" had no outcome)
            tried_after = {k: quant_info[k] for k in ("range_alternative_validated_worse",) if k in quant_info}
            model, quant_info, _ = min(tried, key=lambda t: t[2])
            quant_info = quant_info | tried_after | {"later_choice_validated_worse": later}
            runner = None  # (the runtime it replaces released first: one loaded at a time)
            lowered, runner, memory_mb, gots, metrics = lower_and_validate(model)
        if fp16_info is not None and _fp16_executes_fp32(fp16_info, backend, lowered.info, metrics, fidelity, runner,
                                                         floor):
            # f16 execution missed: the same f16 weights executed f32 first (every weight
            # stays f16), the search below only if that misses too. The one place this is
            # decided: what follows lowers with fp32 tensors (executed f32 by the lowering
            # itself) or arrives int8 (executed f32 by lower_and_validate)
            runner = None  # (the runtime it replaces released first: one loaded at a time)
            lowered, runner, memory_mb, gots, metrics = executed_f32(lowered)
        if (fp16_info is not None and not fidelity_met(metrics, fidelity, floor=floor)
                and hasattr(backend, "fp16_reference") and not prep.integer_ops):
            # nothing left fp16's range, yet its precision misses: keep the fewest layers fp32 (a
            # model that arrives int8 too: its float parts in fp16 moved Smart Turn's output by
            # 0.79 of its scale on TensorRT where its fp32 build moved it by 0.27)
            if calibration is not None:
                judged = calibration.samples[:MAX_RANGE_SAMPLES]
                judged_refs, source = [reference.run(s) for s in judged], "calibration"
                judged_floor = _own_runtime_floor(prep, judged, judged_refs, fidelity)[1] if own else None
            else:  # the validation samples, whose references are at hand
                judged, judged_refs, source = samples[:MAX_RANGE_SAMPLES], refs[:MAX_RANGE_SAMPLES], "validation"
                judged_floor = floor
            tensors, fp16_info["search"] = _fp16_search(
                opts, prep, target, backend, fidelity, options, judged, judged_refs, source, judged_floor)
            if fp16_info["search"]["met"]:  # else every segment fp32 would be an fp32 build called fp16: the miss stands
                options["fp32_tensors"] = tensors
                runner = None  # (the runtime it replaces released first: one loaded at a time)
                lowered, runner, memory_mb, gots, metrics = lower_and_validate(model)
                if lowered.info.get("execute") == "f32":
                    # what the bundle is, after why f32 execution came first (a CPU with native
                    # f16 had said only that its f16 execution missed: not that the searched
                    # layers' weights are f32 now)
                    said = (f"{backend.name} cannot keep single nodes fp32: the searched layers' weights f32, "
                            f"the rest f16, f32 execution")
                    earlier = fp16_info.get("executes_fp32")
                    fp16_info["executes_fp32"] = f"{earlier}; {said}" if earlier and said not in earlier else said
        if fp16_info is not None and arrives_int8 and not fidelity_met(metrics, fidelity, floor=floor):
            # ... except for a model that arrives int8 (its QDQ, or ONNX Runtime's integer ops): its
            # weights are int8 already, and its float parts (norms, softmax, scales, float tables)
            # kept fp32 are the model as written: on TensorRT as fp32 tensors, where constants are
            # stored (OpenVINO compresses every float constant or none) as fp32 weights
            from deploycomp.fp16_search import float_tensors

            if fp16_compute == "tensors":
                options["fp32_tensors"], how = float_tensors(model), ""
            else:
                options["fp16_weights"], how = False, ", weights and execution"
            missed = fidelity_failures(metrics, fidelity, floor=floor)[0]
            fp16_info["executes_fp32"] = (f"the model arrives int8 and its float parts in fp16 missed the budget "
                                          f"({missed.name} {missed.value:.3g}, limit {missed.limit:.3g}): they "
                                          f"stay fp32{how}")
            runner = None  # (the runtime it replaces released first: one loaded at a time)
            lowered, runner, memory_mb, gots, metrics = lower_and_validate(model)
        if (fp16_info is not None and measured_host and fidelity_met(metrics, fidelity, floor=floor)
                and _f32_execution_faster(fp16_info, backend, stage, lowered.info, runner, samples[0])):
            if "bf16" in target.precisions:  # the half precision this CPU runs fast
                fp16_info["executes_fp32"] += " (for speed here: --precision bf16, or auto)"
            runner = None  # (the runtime it replaces released first: one loaded at a time)
            lowered, runner, memory_mb, gots, metrics = executed_f32(lowered)
        if fp16_info is not None and not fp16_info.get("executes_fp32") and runner.info.get("executes_fp32_because"):
            fp16_info["executes_fp32"] = runner.info["executes_fp32_because"]  # the runtime's own choice, said
            # and kept in the bundle: loaded on a CPU with native f16 (the target, where it is
            # not this machine) it would otherwise execute f16, which nothing here validated (an
            # intel-xeon-amx fp16 bundle built on an AMD EPYC said "executes fp32" and ran f16
            # there); the same config as validated, so nothing is run again
            if pinned := getattr(backend, "f32_execution", lambda info: None)(lowered.info):
                lowered = replace(lowered, info=pinned)
                if not measured_host:
                    fp16_info["executes_fp32"] += (f"; f16 execution, where {target.name}'s CPU has it, was not "
                                                   "validated here: the bundle executes f32 there too")
        for name, through in pass_through(samples, refs, gots).items():
            metrics[name]["passes_through"] = through
            if through["residual_cosine"] < fidelity.min_cosine:
                log.warning("output '%s' is input '%s' passed through (cosine %.4f): its cosine measures mostly "
                            "the input; the model's own part (%s - %s) has cosine %.4f", name, through["input"],
                            through["input_cosine"], name, through["input"], through["residual_cosine"])
        ops = sum(n for op, n in (lowered.info.get("ops") or {}).items() if op not in ("QUANTIZE", "DEQUANTIZE"))
        if lowered.info.get("edgetpu_cpu_fallback", "none") != "none" and ops and lowered.info["int8_ops"] < ops / 2:
            # the bundle is valid, but an Edge TPU user expects the accelerator to run it (a
            # seizure detector's unrolled LSTMs: 9 of 4252 ops int8, said only in its precision)
            log.warning("%s: %d of %d ops int8; the rest would run on the host CPU, not the Edge TPU (%s)",
                        target.name, lowered.info["int8_ops"], ops, lowered.info["edgetpu_cpu_fallback"][:200])
        if split := lowered.info.get("cpu_split"):
            share = split["device_mac_share"]
            log.warning("%s: its compiler hands %s node '%s' and the %d nodes after it to the host CPU%s: the "
                        "latency estimate counts the device alone", target.name, split["op"], split["first_node"],
                        split["cpu_nodes"] - 1, "" if share is None else f" ({share:.0%} of the MACs on the device)")
        files = list(lowered.files)
        if lowered.info.get("reference"):  # checked again on the device (e.g. a TensorRT engine built there)
            files.append(_write_reference(stage / lowered.info["reference"], samples[0], refs[0], prep.angles))
        artifacts = artifact_entries(stage, files)
        artifact_mb = sum(a["bytes"] for a in artifacts) / 1e6
        measured: dict[str, Any] = {"peak_memory_mb": memory_mb, "pass_seconds": sum(r.seconds for r in prep.pass_log.records)}
        if fp16_info is not None and "execution_ms" in fp16_info:  # timings, not the build's identity
            measured["fp16_execution_ms"] = fp16_info.pop("execution_ms")
        if quant_info is not None:
            measured["calibration_seconds"] = quant_info.pop("calibration_seconds")
        executed_share, behind = _executed_int8(model, runner, quant_info if quant_info is not None else own, prep,
                                                own is not None)
        if own is not None and behind and executed_share is not None and executed_share < OWN_INT8_FLOAT_SHARE:
            log.warning("%s runs %d of the model's %d own int8 layers float (%.0f%% of its MACs int8): its "
                        "encodings do not fit %s's int8 kernels (e.g. a layer's input quantized, its output "
                        "not); the float model quantized here (--calibration) runs them int8", backend.name,
                        len(behind), own["int8_layers"], 100 * executed_share, backend.name)
        if behind and quant_info is not None:
            quant_info = quant_info | {"executed_float_behind_qdq": behind}
            if executed_share is not None:  # int8_mac_share is what was placed int8
                quant_info["executed_int8_mac_share"] = executed_share
        cost = _cost_at_shapes(prep)
        share = executed_share if executed_share is not None else (quant_info or {}).get("int8_mac_share")
        # a model that arrives int8 executes its int8 at any precision asked for where the
        # runtime runs its QDQ as int8 kernels (OpenVINO, TensorRT: an fp32 and an int8 build
        # had written the same file with estimates 4x apart; TFLite's fp32 lowering computes
        # float between its QUANTIZE/DEQUANTIZE pairs)
        executes_int8 = str(runner.info.get("executed_precision", "")).startswith("int8")
        estimated_as = opts.precision if own is None else "int8" if executes_int8 else "fp32"
        searched = (fp16_info or {}).get("search") or {}
        if opts.precision == "fp16" and searched.get("met"):  # the MACs its searched fp32 segments keep
            share = searched.get("fp16_mac_share")
        # TFLite's fp16 stores float16 weights and computes float32: timed at the fp32 peak (the
        # fp16 peak, twice it on a Pi 5, had halved the estimate of arithmetic it never does)
        f32_arithmetic = f32_arithmetic and own is None  # (an int8 model has no float16 weights to widen)
        estimate = analysis.roofline_ms(
            cost, estimated_as, _peak_tops(target, "fp32" if f32_arithmetic else estimated_as),
            target.compute.memory_bandwidth_gbps, target.compute.efficiency,
            int8_share=share if estimated_as in ("int8", "fp16") else None, float_tops=_peak_tops(target, "fp32"),
            kernel_us=target.compute.kernel_overhead_us, memory_efficiency=target.compute.memory_efficiency,
            on_chip_mb=target.compute.on_chip_mb,
            activation_share=(quant_info or {}).get("static_int8_mac_share") if estimated_as == "int8" else None,
        )
        if estimated_as != opts.precision:
            estimate["estimated_as"] = (f"{estimated_as}: the model arrives int8 and the runtime executes "
                                        + ("its own int8 layers" if executes_int8 else "it in float32"))
        if f32_arithmetic:
            estimate["peak"] = "fp32: float16 weights, float32 arithmetic"
        if target.runs_here and target.resolved_from:
            # host's datasheet figures are its profile's part (a 32-core Xeon), not this machine:
            # 1.4 ms estimated beside 19 ms measured on a 2-core EPYC, unlabelled in --json
            estimate["device"] = (f"{target.resolved_from}'s datasheet figures, the profile host resolves to; "
                                  "not this machine, whose latency is measured")
        if split := lowered.info.get("cpu_split"):  # the host CPU's part is not the device's to estimate
            estimate["lower_bound"] = True
            estimate.setdefault("not_counted", {})["nodes_on_the_host_cpu"] = split["cpu_nodes"]
        latency_ms = estimate["estimate_ms"]
        at_max = None
        if prep.profiles and memory_mb is not None and not runner.info.get("functional_reference"):
            # (before anything else runs the bundle at MAX: the growth of its first run there)
            if at_max := _memory_at_profile_max(runner, prep, samples[0], memory_mb):
                measured["peak_memory_at_profile_max"] = at_max
        if measured_host:
            opts.progress("measure latency")
            # each on its own: taken in turns, ORT's spinning threads slowed OpenVINO 3x; one
            # warm-up run each, as both have run every validation sample already; timed
            # again only where those runs do not time them well enough
            measured["latency"] = bundle_times[runner].latency_or_measured(runner.run, samples[0], LATENCY_SECONDS)
            # a model that arrives int8: not its reference, which computes the QDQ as written with
            # every node unfused as nobody runs it (a PP-OCR cls read "7.45x faster", 0.83 ms
            # against 6.2 ms, where ORT runs the file in 1.95 ms), but ORT as the file ships
            timed, run = shipped if shipped is not None else (reference_times, reference.run)
            measured["reference_latency"] = timed.latency_or_measured(run, samples[0], LATENCY_SECONDS)
            measured["reference_latency"]["against"] = REFERENCE_INT8 if arrives_int8 else REFERENCE_FP32
            measured["speedup_vs_onnxruntime"] = speedup_of(measured["reference_latency"]["median_ms"],
                                                            measured["latency"]["median_ms"])
            latency_ms = measured["latency"]["median_ms"]
            if prep.profiles:  # (the budget is OPT's; an application feeds the range)
                measured["latency_at_profile_ends"] = _latency_at_profile_ends(runner, prep, samples[0])
            if quant_info is not None and not arrives_int8:
                # the int8 bundle against this model's fp32 one in the same runtime: layers
                # kept float and the conversions around them can cost more than int8 saves (a
                # barcode detector's int8 ran 420 ms where fp32 ran 374, said against ONNX
                # Runtime only, 1.2x faster)
                with trial.trial_runner(backend, target, prep.model, "fp32", options) as floats:
                    measured["fp32_latency"] = measure_latency(lambda: floats.run(samples[0]), warmup=1,
                                                               max_seconds=LATENCY_SECONDS)
                measured["speedup_vs_fp32"] = speedup_of(measured["fp32_latency"]["median_ms"], latency_ms)
        elif not runner.info.get("functional_reference"):
            # the artifact runs here too (e.g. LiteRT on x86): useful, but not the device's number
            opts.progress("measure latency here")
            measured["latency_here"] = measure_latency(lambda: runner.run(samples[0]), max_seconds=1.0) | {
                "where": f"this machine ({_host_info()['cpu']}), not {target.name}"}
        opts.progress("write bundle")
        for name, channels in ({} if prep.channels else
                               weak_channels(refs, gots, metrics, fidelity, prep.where, prep.angles)).items():
            metrics[name]["weak_channels"] = channels  # (said by the summary and the report)
        # a functional reference's memory is this machine's (ONNX Runtime's CPU run of a
        # TensorRT bundle), not the device's: recorded, not held to the device's budget (it had
        # been "peak_memory 3.61 MB within 2048 MB, ok" of a Jetson that never ran it)
        simulated = bool(runner.info.get("functional_reference"))
        if simulated and memory_mb is not None:
            measured["peak_memory_of"] = "this machine's functional run of the bundle, not the device's: not budgeted"
        summary = summarize(metrics, fidelity, artifact_mb, None if simulated else memory_mb, latency_ms,
                            target.budgets, latency_measured=measured_host, floor=floor,
                            memory_at_max=at_max)
        # outputs that look like a detector's boxes and scores, judged by cosine alone: the rule
        # that would judge their boxes (the summary and the report name it)
        suggested = {name: rule.text() for name in metrics if name not in prep.boxes and all(name in r for r in refs)
                     and (rule := suggest_rule(name, [r[name] for r in refs])) is not None}
        # likewise a probability map judged by cosine alone: the mask that would judge it
        masks_suggested = {name: rule.text() for name in metrics if name not in prep.masks and name not in suggested
                           and all(name in r for r in refs)
                           and (rule := suggest_mask(name, [r[name] for r in refs])) is not None}
        # and a CTC recognizer's per-step scores: the text they decode to
        ctc_suggested = {name: rule.text() for name in metrics if name not in prep.ctc and name not in suggested
                         and name not in masks_suggested and all(name in r for r in refs)
                         and (rule := suggest_ctc(name, [r[name] for r in refs])) is not None}
        if (quant_info is not None and quant_info["int8_layers"] == 0 and not quant_info.get("dynamic_layers")
                and set(quant_info.get("float_layers") or ()) - set(quant_info.get("pinned_float") or ())):
            # the search met the budget only by keeping every layer float: an fp32 model in an
            # int8 bundle is not an int8 build (auto and fleets must not take it for one); so
            # whether or not a ranking ran (a time limit cuts it, and the verdict had then
            # turned on how far the search got: ok at 5 s, missed at 30 s)
            summary.checks.append(BudgetCheck("int8_layers", 0, 1, False, "",
                                              " (no layer stays int8 within the fidelity budget)", fidelity=True))
        measured["budgets"] = summary.to_json(measured=True)
        measured["stage_seconds"] = clock.stop()
        measured["build_seconds"] = round(time.time() - started, 3)
        fidelity_missed = any(c.fidelity for c in summary.failures)
        every_float = bool(quant_info and quant_info.get("every_layer_float_missed"))
        source = (_runtime_on_source(backend, target, prep, samples, refs, gots, fidelity)
                  if fidelity_missed and (opts.precision != "int8" or every_float) and own is None else None)
        manifest = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "versions": _versions(),
            "source": {"name": prep.source.name, "sha256": prep.sha256, "opset": prep.source_opset,
                       **({"external_data": prep.external_data} if prep.external_data else {}),
                       **({"renamed_tensors": prep.renamed} if prep.renamed else {}),
                       # (a model that arrives int8, at any precision: its fp32 build's manifest had
                       # said so only in prose, under assumptions)
                       **({"int8": {k: own[k] for k in ("source", "activation_dtype", "activation_symmetric",
                                                         "weights", "int8_layers") if k in own}} if own else {})},
            "target": {"name": target.name, "resolved_from": target.resolved_from, "profile_sha256": target.digest(),
                       "shipped": is_shipped(target.source_file) or bool(target.family_members),
                       "profile": target.model_dump(exclude={"source_file"})} | _family_record(target, backend.name),
            "precision": opts.precision,
            "io": io | ({"profiles": {n: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                                      for n, (lo, opt, hi) in prep.profiles.items()}} if prep.profiles else {})
                  | ({"frozen": _frozen_record(prep.frozen)} if prep.frozen else {}),
            "assumptions": prep.assumed,
            "quantization": quant_info,
            **({"fp16": fp16_info} if fp16_info is not None else {}),
            "backend": {"name": backend.name, "lowered": lowered.info, "runtime": runner.info},
            "support": support.to_json(),
            "artifacts": artifacts,
            "passes": [{k: v for k, v in r.items() if k != "seconds"} for r in prep.pass_log.to_json()],
            "graph": cost.to_json(),
            "validation": {**({spread_key: spread} if spread is not None else {}),
                           "inputs": validation.label, "data": validation.to_json(), "outputs": metrics, "budgets": summary.to_json(), "ok": summary.ok,
                           **({"preprocess": spec_used} if spec_used else {}),
                           # the samples judged as one stream, these outputs fed back (what the verdict is of)
                           **({"feedback": dict(prep.feedback)} if prep.feedback else {}),
                           # how the outputs were judged, for a check elsewhere (the engine on the device)
                           **({"judge_where": {k: list(v) for k, v in where.items()}} if where else {}),
                           **({"judge_channels": prep.channels} if prep.channels else {}),
                           **({"judge_boxes": {k: r.to_json() for k, r in prep.boxes.items()}} if prep.boxes else {}),
                           **({"judge_masks": {k: r.text() for k, r in prep.masks.items()}} if prep.masks else {}),
                           **({"judge_ctc": {k: r.text() for k, r in prep.ctc.items()}} if prep.ctc else {}),
                           **({"judge_boxes_suggested": suggested} if suggested else {}),
                           **({"judge_masks_suggested": masks_suggested} if masks_suggested else {}),
                           **({"judge_ctc_suggested": ctc_suggested} if ctc_suggested else {}),
                           # every budget ``ok`` answers for, measured ones included (a memory
                           # miss is under measured.budgets only: ``ok`` false, every budget here met)
                           "missed": [c.name for c in summary.checks if not c.ok],
                           "latency_estimate": estimate, **({"runtime_on_source": source} if source else {})},
            "measured": measured,
            "host": _host_info(),
        }
        write_manifest_and_report(stage, manifest)
        # a box format the detections contradict is the cause before any other (the runtimes had been blamed)
        hint = ("".join(f"{doubt}; " for doubt in prep.box_format_doubts)
                + _ranked_list_hint(summary, refs, where, suggested) + _int8_io_hint(opts, target, prep.model, refs)
                + int8_hint(quant_info) + coverage_hint(quant_info)
                + (_source_hint(source, backend.name, opts.precision) if source and not prep.box_format_doubts else "")
                + (_spread_hint(spread, spread_key) if spread is not None and not (quant_info or {}).get("search_relaxed")
                   else "")
                if fidelity_missed else "")
        if not summary.ok and not opts.no_fail:
            worst = summary.failures[0]
            raise BudgetError(f"target {target.name}, {opts.precision}: {worst.describe()}"
                              f"{f' (+{len(summary.failures) - 1} more)' if len(summary.failures) > 1 else ''}; "
                              f"{hint}no bundle written (--no-fail keeps it)")
        if hint and not opts.auto_candidate:
            log.warning("%s", hint.rstrip("; "))
    return BuildResult(Path(opts.out), manifest, samples[0])


MIXED_RANGE_STEPS = 4
"""An output's entries (:func:`deploycomp.validate.entry_axis`) whose own range spans fewer
than this many steps of the whole output's int8 encoding are lost to it (one clause of
:func:`_int8_io_hint`)."""


def _int8_io_hint(opts: BuildOptions, target: TargetProfile, model: ir.Model, refs: Sequence[Mapping] = ()) -> str:
    """With int8 inputs and outputs: the float inputs the model casts to integers (ids
    carried as floats), which an int8 encoding rounds, and the outputs whose entries span
    ranges one int8 encoding cannot hold (YOLOv8n's boxes in pixels beside its class scores
    in [0, 1]: on an Edge TPU build every score read 0, and its box budget missed with
    every layer float). One clause each, or ""."""
    if not trial.int8_io(opts, target):
        return ""
    ids = analysis.integer_valued_inputs(model)
    said = (f"input(s) {few(ids)} are cast to integers in the model (ids?), and --int8-io rounds them to int8 "
            f"steps: build without --int8-io; " if ids else "")
    for name in list(refs[0]) if refs else []:
        arrays = [np.asarray(r[name]) for r in refs]
        if not np.issubdtype(arrays[0].dtype, np.floating) or arrays[0].ndim < 2:
            continue
        axis = entry_axis(arrays[0].shape)
        rows = np.concatenate([np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis]) for a in arrays])
        if rows.shape[1] > 1024 or not np.isfinite(rows).all():
            continue
        lo, hi = rows.min(axis=0).astype(np.float64), rows.max(axis=0).astype(np.float64)
        step = (max(hi.max(), 0.0) - min(lo.min(), 0.0)) / 255  # (an int8 encoding holds 0)
        lost = [i for i in range(lo.size) if 0 < hi[i] - lo[i] < MIXED_RANGE_STEPS * step]
        if lost:
            said += (f"output {name}'s entries span ranges one int8 encoding cannot hold (its step {step:.3g}; entries "
                     f"{few([str(i) for i in lost])} span {max(hi[i] - lo[i] for i in lost):.3g} or less): build with "
                     "--float-io (the inputs' QUANTIZE and the outputs' DEQUANTIZE then run on the host CPU); ")
            break
    return said


def _at_shape(value: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``value`` cropped, or padded by repeating its own values, to ``shape``: an input of
    that size holding what the application feeds (zeros can take a data-dependent model
    down another path)."""
    value = np.asarray(value)[tuple(slice(0, n) for n in shape)]
    pads = [(0, n - d) for d, n in zip(value.shape, shape)]
    return np.pad(value, pads, mode="wrap") if any(after for _, after in pads) else value


class _SampleNotAtEnd(Exception):
    """The sample cut or repeated to a profile's end is no input the model takes: integers
    in it (a graph's edge indices into its atoms) point past the other inputs' new sizes.
    Not the range's fault, so not a refusal: that end is not run."""


def _at_profile_end(prep: Prepared, sample: Mapping[str, np.ndarray], end: str) -> tuple[dict, dict, list[str]]:
    """The profiled inputs' shapes at ``end`` (``min`` or ``max``), the sample's values at
    those sizes (:func:`_at_shape`), the other inputs as they are, and the integer inputs
    resized so (their values may index what was cut)."""
    k = {"min": 0, "max": 2}[end]
    shapes = {n: list(prep.profiles[n][k]) for n in prep.profiles if n in sample}
    feeds = {name: _at_shape(value, shapes[name]) if name in shapes else value for name, value in sample.items()}
    resized = [n for n in shapes if np.issubdtype(np.asarray(sample[n]).dtype, np.integer)
               and list(np.shape(sample[n])) != shapes[n]]
    return shapes, feeds, resized


def _run_at_profile_end(run: Callable[[dict], Any], end: str, shapes: dict, feeds: dict,
                        resized_integers: Sequence[str] = ()) -> Any:
    """``run(feeds)``; a failure is the user's range, said as such (it had been an internal
    error after the whole build had been said of the range), before the build where the
    reference fails there; unless integer inputs were resized to get there
    (:class:`_SampleNotAtEnd`: a graph model's indices cut with its atoms had been blamed on
    the range, which the model runs)."""
    try:
        return run(feeds)
    except InputDataError as e:  # (the reference's own words for inputs it fails on)
        why = str(e)
    except (MemoryError, DeployError):
        raise
    except Exception as e:
        why = runtime_message(e)
    said = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in shapes.items())
    if resized_integers:
        raise _SampleNotAtEnd(f"not run at its --profile's {end.upper()} ({said}): the sample's integer input(s) "
                              f"{', '.join(resized_integers)} cut or repeated to that size are no input the model "
                              f"takes ({why})")
    raise InputDataError(f"--profile: the model does not run at its {end.upper()} ({said}): {why}; give a range "
                         "the model runs at")


def _latency_at_profile_ends(runner, prep: Prepared, sample: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """The bundle's latency with every ``--profile``d input at its MIN and at its MAX (the
    sample's values at those sizes, :func:`_at_shape`): what a range costs at its ends, where
    validation and the latency budget take OPT (or the data's shape)."""
    out = {}
    for end in ("min", "max"):
        shapes, feeds, resized = _at_profile_end(prep, sample, end)
        try:
            _run_at_profile_end(runner.run, end, shapes, feeds, resized)
        except _SampleNotAtEnd:  # (said once, under assumptions, where the reference did not run there)
            continue
        timed = measure_latency(lambda: runner.run(feeds), warmup=0, max_seconds=LATENCY_ENDS_SECONDS)
        out[end] = {"shapes": shapes, **timed}
    return out


def _memory_at_profile_max(runner, prep: Prepared, sample: Mapping[str, np.ndarray], memory_mb: float) -> dict | None:
    """The bundle's peak memory where every ``--profile``d input is at its MAX: its peak at
    the validated shape (``memory_mb``, from its load on) and what its first run at MAX
    takes more (:func:`peak_rss_growth`), which the memory budget is held to as well (it had
    been checked at OPT alone: a text line's width 320 of a range to 1280, a batch of 1 of a
    range to 8). A fresh load at MAX would not do: the first load's growth holds the
    runtime's own start (OpenVINO's plugin: 66 MB for a one-layer model at OPT, 38 MB at
    MAX loaded second)."""
    shapes, feeds, resized = _at_profile_end(prep, sample, "max")
    try:
        _, grown = peak_rss_growth(lambda: _run_at_profile_end(runner.run, "max", shapes, feeds, resized))
    except _SampleNotAtEnd:  # (said under assumptions)
        return None
    return {"shapes": shapes, "mb": None if grown is None else round(memory_mb + grown, 2)}


def _runtime_on_source(backend, target: TargetProfile, prep: Prepared, samples: list, refs: list, gots: list,
                       fidelity: Fidelity) -> dict[str, Any] | None:
    """For a float bundle that missed: the target's runtime at fp32 on the unmodified ONNX
    file, against ONNX Runtime and against the bundle (None where the backend cannot run
    ONNX as it is, or fails to). The onnx wheel's IR 3 test weights (SqueezeNet: logits of
    1.9e10, all equal) give softmax outputs that any float32 summation order changes:
    OpenVINO 2026.4 gives one-hot where ONNX Runtime gives uniform, on the source file too."""
    make = getattr(backend, "source_runner", None)
    if make is None:
        return None
    try:
        runner = make(prep.source, target, list(refs[0]))
        outs = as_stream(lambda s: runner.run({**s, **prep.frozen}), samples, prep.feedback)
    except Exception as e:  # noqa: BLE001 - a diagnosis only; the miss stands either way
        log.info("runtime on the source model: %s", e)
        return None
    vs_ort = prep.compare(refs, outs)
    vs_bundle = prep.compare(outs, gots)
    return {"runtime": backend.name, "precision": "fp32",
            "vs_onnxruntime_min_cosine": round(worst_cosine(vs_ort), 6),
            "meets_budget_vs_onnxruntime": fidelity_met(vs_ort, fidelity),
            "bundle_vs_it_min_cosine": round(worst_cosine(vs_bundle), 6),
            "bundle_meets_budget_vs_it": fidelity_met(vs_bundle, fidelity),
            # the criterion it misses, where not cosine (a box budget: "cosine 1.000000" had read as no miss)
            **({"vs_onnxruntime_missed": missed[0].describe()}
               if (missed := fidelity_failures(vs_ort, fidelity)) else {}),
            # (the same of the bundle: an output judged by its error whose samples were flat
            # had read "the bundle differs from it too (cosine -1.000000)")
            **({"bundle_vs_it_missed": differs[0].describe()}
               if (differs := fidelity_failures(vs_bundle, fidelity)) else {})}


def _source_hint(source: dict[str, Any], runtime: str, precision: str = "fp32") -> str:
    """One clause: whether the target's runtime disagrees with ONNX Runtime on the model
    itself, and if not, what changed the outputs (a half precision's rounding, or the build)."""
    if source["meets_budget_vs_onnxruntime"]:
        cause = (f"{precision}'s rounding changed the outputs, not the runtime" if precision in ("fp16", "bf16")
                 else "the build changed the outputs")
        if precision == "bf16":
            # bf16 rounds every node to 8 mantissa bits, and no runtime here keeps single
            # nodes fp32 at bf16 (OpenVINO 2026.4's CPU plugin ignores its fp32 mark there:
            # PP-OCRv3 rec ran all 45 convs and FCs bf16 with every node marked)
            cause += " (fp16 keeps 11 bits: --precision fp16, or auto)"
        return (f"{runtime} at fp32 on the unmodified model meets the budget (cosine "
                f"{source['vs_onnxruntime_min_cosine']:.6f}): {cause}; ")
    agrees = "and the bundle matches it" if source["bundle_meets_budget_vs_it"] else "and the bundle differs from it too"
    how, differs = source_sides(source)
    return (f"{runtime} at fp32 on the unmodified model misses too ({how}) {agrees} ({differs}): the runtimes "
            "disagree on this model's outputs; ")


def _family_record(target: TargetProfile, backend: str) -> dict[str, Any]:
    """For ``--target FAMILY``: its members, what the build was checked against, and what
    the device step resolves (the manifest's ``target.family``)."""
    if not target.family_members:
        return {}
    device_step = ("deploycomp engine on the device builds the engine for its GPU, uses the DLA only if the device "
                   "has one, and records the module it ran on" if backend == "tensorrt"
                   else "the artifact is the same for every member; nothing is resolved on the device")
    return {"family": {"name": target.family, "members": target.family_members, "budgets_of": "tightest member",
                       "estimates_for": target.resolved_from, "device_step": device_step}}


def _ranked_list_hint(summary, refs: list, where: Mapping, suggested: Mapping[str, str]) -> str:
    """For a missed output that is a ranked list whose tail is ties (an NMS-free detector's
    top 300, :func:`deploycomp.validate.ranked_list_column`) or that looks like a detector's
    rows (``suggested``: :func:`deploycomp.boxes.suggest_rule`): the ``--judge-boxes`` or
    ``--judge-where`` rule that judges its detections (one clause, or "")."""
    from deploycomp.validate import ranked_list_column

    missed = list(dict.fromkeys(c.name.partition("[")[2][:-1] for c in summary.failures  # "cosine[output0]"
                                if c.fidelity and c.name.endswith("]")))
    for name in missed:
        if name in where or not all(name in r for r in refs):
            continue
        column = ranked_list_column([r[name] for r in refs])
        boxes = f'--judge-boxes "{suggested[name]}" judges its detections, their boxes by overlap' \
            if name in suggested else ""
        if column is not None:
            return (f"{name} is a ranked list whose column {column} falls to ~0 in most rows, where runtimes order "
                    f"ties as they like: {boxes + ' (or ' if boxes else ''}--judge-where {name}:{name}[{column}]>0.25 "
                    f"judges its top entries{')' if boxes else ''}; ")
        if boxes:
            return f"{name} looks like a detector's boxes and scores, judged whole: {boxes}; "
    return ""


def _fp16_search(opts: BuildOptions, prep: Prepared, target: TargetProfile, backend, fidelity: Fidelity,
                 options: dict, judged: list, refs: list, source: str,
                 floor: dict | None = None) -> tuple[list[str], dict]:
    """The fp32 tensors of an fp16 build that meets the budget on ``judged`` (``refs``: the
    fp32 reference's outputs on them; at :data:`SEARCH_MARGIN` of the budget, in the
    target's runtime; ``floor``: see :func:`deploycomp.validate.fidelity_met`), and the
    search's record (:mod:`deploycomp.fp16_search`)."""
    from deploycomp.fp16_search import search_fp32_segments
    from deploycomp.quant.sensitivity import Verdict

    opts.progress("fp16 search")
    scales = prep.scales(refs)
    trials: list[dict] = []

    def meets(tensors: list[str]) -> Verdict:
        try:
            with trial.trial_runner(backend, target, prep.model, "fp16", options | {"fp32_tensors": tensors}) as runner:
                metrics = prep.compare(refs, [runner.run(s) for s in judged], scales)
        except UnsupportedError as e:
            return trial.refused(trials, e, fp32_tensors=len(tensors))
        # (a judged channel by its own name: the search ranks it as an output of its own)
        failing = frozenset(k for k in metrics if not fidelity_met({k: metrics[k]}, fidelity, SEARCH_MARGIN, floor))
        trials.append({"fp32_tensors": len(tensors), "min_cosine": round(worst_cosine(metrics), 6),
                       "met": not failing})
        return Verdict(not failing, failing)

    hot = list(options.get("fp32_tensors") or ())
    searched, added = trial.with_channel_outputs(prep.model, prep.channels)
    if added:  # (the references and angles of the channels that searched model outputs)
        refs = [{**r, **c} for r, c in zip(refs, split_channels(refs, prep.channels))]
        angles = {**prep.angles, **split_channels([prep.angles], prep.channels)[0]} if prep.angles else prep.angles
    else:
        angles = prep.angles
    tensors, record = search_fp32_segments(searched, backend.fp16_reference, hot, judged, refs, meets, angles)
    tensors = [t for t in tensors if t not in added]
    record |= {"judged_on": f"{len(judged)} {source} samples", "margin": SEARCH_MARGIN, "trials": trials}
    if source == "validation":
        record["note"] = "no --calibration: the validation inputs chose the fp32 layers and are not held out"
    log.info("fp16: %d of %d segments kept fp32 for precision", len(record["fp32_segments"]), record["segments"])
    return tensors, record


def _compute_layers_named(graph: ir.Graph, names: Iterable[str], compute_ops: tuple[str, ...]) -> list[str]:
    """The compute layers a runtime's layer names stand for: a node's name or its output's,
    or, for a name of a node the runtime fused into the layer before it (OpenVINO names
    attention's fused ``q @ k * scale`` after its ``Mul``), the compute layer that
    produces its input."""
    by_key = {key: n for n in graph for key in (n.name, *(v.name for v in n.outputs))}
    found = []
    for key in names:
        frontier = [by_key[key]] if key in by_key else []
        for _ in range(2):
            hit = next((n for n in frontier if n.op_type in compute_ops), None)
            if hit is not None:
                if not float_only(hit):  # (float by design: no layer the record counts)
                    found.append(hit.name)
                break
            frontier = [v.producer() for n in frontier for v in n.inputs
                        if v is not None and v.producer() is not None and v.const_value is None]
    return found


def _executed_int8(model: ir.Model, runner, record: dict | None, prep: Prepared,
                   own: bool) -> tuple[float | None, list[str]]:
    """What of an int8 record's layers (a search's, or a model's own) the runtime executes
    int8: the share of the MACs (None where not counted: a float model, or one the runtime
    runs as placed) and the layers it runs float behind their QDQ anyway (a 1-D
    ConvTranspose in OpenVINO 2026.4; an NNCF-quantized PP-OCR rec's 42 convolutions on
    TFLite). The record counts what was placed; this is what runs. ``own``: the record is
    the model's own encodings (whose share is counted here, a search's is in its record)."""
    if record is None:
        return None, []
    from deploycomp.quant.policy import POLICIES

    compute_ops = POLICIES[record["policy"]].compute_ops  # the layers the record counts
    behind = sorted(set(_compute_layers_named(model.graph, runner.info.get("float_compute_layers") or [], compute_ops))
                    - set(record["float_layers"]) - set(record.get("dynamic_layers") or ()))
    if not behind and not own:
        return None, []
    floating = set(record["float_layers"]) | set(behind)
    return analysis.int8_mac_share(model.graph, compute_ops, floating, analysis.dim_values(model.graph, prep.shapes)), behind


def _own_runtime_floor(prep: Prepared, samples: list, refs: list,
                       fidelity: Fidelity) -> tuple[dict, dict | None, tuple[RunTimes, Callable]]:
    """For a model that arrives int8: how far ONNX Runtime's own fused int8 kernels are from
    its QDQ as written (``refs``) on ``samples``, and that as the floor the budget is widened
    to where those kernels miss it themselves (else None); and those runs' times with the
    run (ORT as the file ships: what the bundle's latency is said against)."""
    fused = ORTRunner(_source_at(prep.source, prep.repinned))

    def run(sample):
        return fused.run({**sample, **prep.frozen})

    times = RunTimes()
    spread = prep.compare(refs, as_stream(lambda s: times.run(run, s), samples, prep.feedback))
    return spread, (None if fidelity_met(spread, fidelity) else spread), (times, run)


def _fp16_executes_fp32(fp16_info: dict, backend, info: dict, metrics: dict, fidelity: Fidelity, runner,
                        floor: dict | None = None) -> bool:
    """Where the runtime cannot keep single nodes fp32 (OpenVINO's CPU plugin applies its
    f16 inference precision to every node), an fp16 bundle whose tensors leave fp16's
    range executes f32 on its f16 weights (the lowering did so), and so does one whose f16
    execution missed the budget: True asks to validate the same files executed f32
    (``backend.f32_execution(info)``). Says why in ``fp16_info["executes_fp32"]``."""
    f32_execution = getattr(backend, "f32_execution", None)
    if f32_execution is None or f32_execution(info) is None:
        return False
    if fp16_info.get("fp32_tensors"):
        fp16_info.setdefault("executes_fp32", f"{len(fp16_info['fp32_tensors'])} tensor(s) leave fp16's range and "
                                              f"{backend.name} cannot keep single nodes fp32: f16 weights, f32 "
                                              f"execution")
        return False
    if runner.info.get("executed_precision") != "fp16" or fidelity_met(metrics, fidelity, floor=floor):
        return False
    fp16_info["executes_fp32"] = (f"f16 execution missed the budget on the validation inputs (cosine "
                                  f"{worst_cosine(metrics):.6f}): f16 weights, f32 execution")
    return True


NEEDS_CALIBRATION = "precision int8 needs calibration data: pass --calibration (.npz, .npy or an image folder with --preprocess)"
"""The error of an int8 build given nothing to calibrate on (an example of Silero VAD, whose
three inputs no built-in set fills, had ended in an internal error)."""


F32_FASTER = 0.9, 0.05
"""f32 execution replaces f16 on the target's own CPU when its median is below this share
of f16's and faster by at least this many ms: past timing noise, not a tie (a tiny
model's microseconds must not flip the bundle between builds)."""


def _f32_execution_faster(fp16_info: dict, backend, stage: Path, info: dict, runner, sample: dict) -> bool:
    """On the machine the bundle is for, time its f16 execution against f32 execution on the
    same f16 weights (``backend.f32_execution(info)``); where f32 is faster, say so and
    return True (validate the same files executed f32). A CPU with AVX512-FP16 but no
    AMX-FP16 (Sapphire Rapids, OpenVINO 2026.4) runs f16 convolutions 1.5-1.9x slower than
    f32: an fp16 build there would be half the size and slower than fp32, which is not what
    anyone asks fp16 for. f32 execution keeps fp16's numbers or better, so fidelity holds
    (it is validated again)."""
    f32_info = getattr(backend, "f32_execution", lambda info: None)(info)
    if f32_info is None or runner.info.get("executed_precision") != "fp16":
        return False
    f32 = backend.load(stage, f32_info)
    f16_ms = measure_latency(lambda: runner.run(sample), max_seconds=1.0)["median_ms"]
    f32_ms = measure_latency(lambda: f32.run(sample), max_seconds=1.0)["median_ms"]
    del f32
    fp16_info["execution_ms"] = {"f16": f16_ms, "f32": f32_ms}
    share, ms = F32_FASTER
    if f32_ms >= share * f16_ms or f16_ms - f32_ms < ms:
        return False
    fp16_info["executes_fp32"] = (f"f32 execution measured faster on this CPU ({f32_ms:.3g} ms against "
                                  f"{f16_ms:.3g} ms for f16): f16 weights, f32 execution")
    return True


def _float_form(prep: Prepared) -> ORTRunner | None:
    """ONNX Runtime on the optimized model: for one that arrived with ONNX Runtime's
    dynamic quantization, its float form (None if it cannot be held as one message). Made
    once: the int8 search and the validation both measure against it."""
    if prep.float_form is None:
        try:
            prep.float_form = ORTRunner(ir.to_proto(prep.model).SerializeToString())
        except ValueError:
            prep.float_form = False
    return prep.float_form or None


def _spread_hint(spread: Mapping[str, dict], key: str) -> str:
    """A model that arrives int8 and missed: how far ONNX Runtime's own int8 kernels are
    from its QDQ as written, or its float form from ONNX Runtime's integer ops, on the same
    inputs (its outputs move with int8 rounding)."""
    def worst(m: dict) -> str:
        return f"{m['quiet_error']:.3g} of its scale" if "quiet_error" in m else f"cosine {m['cosine']:.6f}"
    name, m = min(spread.items(), key=lambda kv: -kv[1].get("quiet_error", 0.0) if "quiet_error" in kv[1]
                  else kv[1].get("cosine", 1.0) - 1)
    if key == "float_form_vs_onnxruntime_integer":
        return (f"the model arrives int8 through ONNX Runtime's dynamic quantization, and even its float form "
                f"differs from ONNX Runtime's integer ops by {worst(m)} ({name}) on these inputs; ")
    return (f"the model arrives int8 and its outputs move with each runtime's int8 rounding: ONNX Runtime's own "
            f"kernels differ from its QDQ as written by {worst(m)} ({name}) on these inputs; ")


def _write_reference(path: Path, sample: dict, outputs: dict, angles: Mapping[str, np.ndarray]) -> Path:
    """One validation input and its ONNX Runtime fp32 outputs, for a check on the device;
    the outputs holding angles with each element's turn (see :mod:`deploycomp.angles`)."""
    np.savez(path, **{f"input/{k}": v for k, v in sample.items()}, **{f"output/{k}": v for k, v in outputs.items()},
             **{f"angle/{k}": v for k, v in angles.items()})
    return path


def _peak_tops(target: TargetProfile, precision: str) -> float:
    """The profile's peak for ``precision``; an int8-only device (Edge TPU) has no fp32 row."""
    tops = target.compute.peak_tops
    return tops.get(precision) or tops.get("fp32") or max(tops.values())


def _load_and_run(backend, stage: Path, info: dict, sample: dict):
    runner = backend.load(stage, info)
    runner.run(sample)
    return runner
