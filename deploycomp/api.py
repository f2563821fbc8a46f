"""The Python API: ``deploycomp.build``, ``deploycomp.optimize``, ``deploycomp.load``."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Callable, Iterable

from deploycomp import datasets, pipeline
from deploycomp.quiet import libraries_quiet
from deploycomp.runner import BundleRunner, load
from deploycomp.shapes import parse_input_spec, parse_profile_spec
from deploycomp.feedback import parse_feedback

__all__ = ["build", "load", "optimize"]


def _specs(inputs: dict[str, Iterable[int]] | Iterable[str] | None):
    """``inputs`` as the command line's ``--input`` takes them, checked as it checks them
    (a dim of -1 had been a raw IndexError, 0 a raw ValueError, 1.5 silently 1)."""
    from deploycomp.errors import InputDataError

    if inputs is None:
        return []
    if isinstance(inputs, dict):
        specs = []
        for name, shape in inputs.items():
            if isinstance(shape, str):  # "1x3x320x320"
                specs.append(parse_input_spec(f"{name}:{shape}"))
                continue
            dims = tuple(shape) if isinstance(shape, Iterable) else (shape,)
            if not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims):
                raise InputDataError(f"inputs[{name!r}]: {shape!r}: give the shape as positive integers, "
                                     "e.g. (1, 3, 320, 320)")
            specs.append((name, tuple(int(d) for d in dims)))
        return specs
    return [parse_input_spec(s) for s in _listed(inputs)]


def _listed(value):
    """A list of names or specs: one string is one (``keep_float="conv1"`` had been read as
    the layers 'c', 'o', 'n', 'v', '1')."""
    return [value] if isinstance(value, str) else list(value)


def _parsed(parse, texts) -> dict:
    """Rules as the command line writes them (one string or several) parsed by ``parse``;
    a bad one is the documented input error (exit 4)."""
    from deploycomp.errors import InputDataError

    try:
        return parse(None if texts is None else _listed(texts))
    except ValueError as e:
        raise InputDataError(str(e)) from None


def where_rules(judge_where) -> dict:
    """``--judge-where`` rules (strings, or a ready ``{output: (scores, threshold)}``)."""
    from deploycomp.validate import parse_where

    if isinstance(judge_where, dict):
        return {k: (str(v[0]), float(v[1])) for k, v in judge_where.items()}
    return _parsed(parse_where, judge_where)


def box_rules(judge_boxes) -> dict:
    """``--judge-boxes`` rules (strings)."""
    from deploycomp.boxes import parse_boxes

    return _parsed(parse_boxes, judge_boxes)


def mask_rules(judge_masks) -> dict:
    """``--judge-mask`` rules (strings)."""
    from deploycomp.masks import parse_masks

    return _parsed(parse_masks, judge_masks)


def ctc_rules(judge_ctc) -> dict:
    """``--judge-ctc`` rules (strings)."""
    from deploycomp.ctc import parse_ctc

    return _parsed(parse_ctc, judge_ctc)


def build(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    target: str = "host",
    precision: str | None = None,
    inputs: dict[str, Iterable[int]] | Iterable[str] | None = None,
    calibration: str | os.PathLike | Iterable[dict] | None = None,
    validation_data: str | os.PathLike | Iterable[dict] | None = None,
    validation_samples: int | None = datasets.MAX_VALIDATION_SAMPLES,
    preprocess: str | os.PathLike | dict | None = None,
    force: bool = False,
    no_fail: bool = False,
    sample_kind: str | None = None,
    keep_float: Iterable[str] = (),
    min_cosine: float | None = None,
    min_top1: float | None = None,
    judge_where: Iterable[str] | dict | None = None,
    judge_channels: bool = False,
    judge_boxes: Iterable[str] | str | None = None,
    min_box_iou: float | None = None,
    judge_masks: Iterable[str] | str | None = None,
    min_mask_iou: float | None = None,
    judge_ctc: Iterable[str] | str | None = None,
    min_text_similarity: float | None = None,
    int8_boosters: Iterable[str] | None = None,
    int8_range: str | None = None,
    int8_time_limit: float | None = None,
    int8_accept: Callable[[list[dict], list[dict]], bool] | None = None,
    io_layout: str | None = None,
    int8_io: bool | None = None,
    profiles: Iterable[str] | None = None,
    keep_initializer_inputs: bool = False,
    freeze: dict[str, object] | None = None,
    feedback: dict[str, str] | Iterable[str] | str | None = None,
) -> BundleRunner:
    """Compile ``model`` for ``target`` into the bundle folder ``out`` and return its runner.

    ``inputs`` fixes dynamic dims: ``{"images": (1, 3, 320, 320)}`` or ``["images:1x3x320x320"]``.
    ``calibration`` (int8) is a path (.npz, .npy, image folder), an iterable of
    ``{input: array}``, one such dict of stacked samples (as an .npz holds them) or, for a
    model of one input, an array of its samples stacked (as an .npy holds them);
    ``validation_data`` likewise (default: a part of ``calibration`` held out, else built-in
    samples, labelled as such), of which ``validation_samples`` are run at most, spread over
    the set (``0`` or None: every one); ``preprocess`` a spec (:mod:`deploycomp.preprocess`)
    that turns images into inputs.
    ``int8_boosters``: training-free int8 boosters to run (``"equalize"``, ``"smooth"``,
    ``"bias-correction"``); default: the backend policy's, ``()`` for none.
    ``int8_range``: the activation range method, ``"percentile"``, ``"minmax"``, ``"mean_minmax"``,
    ``"mse"``, ``"entropy"`` or ``"auto"`` (the better of percentile and minmax by the whole int8
    model's error on held-out samples); default: the backend policy's.
    ``int8_time_limit``: seconds after which the int8 search keeps the first choice that
    meets the budget instead of looking for one with more layers int8 (default: none).
    ``min_cosine`` / ``min_top1`` override the target's fidelity budget (cosine; top-1
    agreement of score-like outputs, per position for sequences such as OCR lines); the
    int8 search keeps layers float until the budget's every criterion is met.
    ``judge_where``: outputs judged only where a score output of the reference passes a
    threshold, ``["538,539,540:537>0.2"]`` or ``{"539": ("537", 0.2)}`` (a dense detector's
    regression maps, read only where its heatmap finds something).
    ``judge_boxes``: a detector's boxes judged by their overlap with fp32's,
    ``"output0[0:4]=cxcywh:output0[4:84]>0.25"`` (boxes, their format, the score that
    makes a row a detection: ``deploycomp build --help``); ``min_box_iou`` overrides its
    budget (the worst sample's mean IoU; default implied by the cosine budget).
    ``judge_masks``: dense maps judged by the mask an application cuts from them,
    ``"mask>0.5"`` (a probability or alpha map, where it exceeds 0.5) or ``"logits"`` (a
    class map: each pixel's largest class score); ``min_mask_iou`` overrides its budget
    (the worst sample's IoU with fp32's mask; default implied by the cosine budget).
    ``judge_ctc``: a CTC recognizer's per-step class scores judged by the text they decode
    to (greedy: each step's best class, repeats merged, the blank dropped), in place of
    cosine: ``"logits"`` (blank class 0) or ``"logits,blank=-1"``; ``min_text_similarity``
    overrides its budget (``1 - edits / characters`` against fp32's text over the lines;
    default the cosine budget's number: int8 0.98).
    ``judge_channels``: each channel of an output that has them (2 to 16 at axis 1 or the
    last) judged as an output of its own too, by every budget check.
    ``int8_accept(references, outputs) -> bool`` is a task metric for int8: it sees the fp32
    reference outputs and a candidate's outputs on the calibration samples (lists of
    ``{output: array}``), and layers are kept in float until it returns True.
    ``freeze``: ``{input: value}`` builds those inputs as constants (branches on them fold).
    ``feedback``: outputs a loop feeds back as inputs, ``{"stateN": "state"}`` or
    ``["stateN=state"]``: the validation samples are judged as one stream, in order, each
    step after the first fed the step before's output (:mod:`deploycomp.feedback`).
    ``keep_initializer_inputs``: keep initializers listed as graph inputs (IR < 4 models) as
    runtime inputs; by default they are constants, as ONNX Runtime treats them.
    ``keep_float``, ``int8_boosters``, ``judge_where``, ``judge_boxes``, ``judge_masks``, ``judge_ctc`` and
    ``profiles`` take one string or a list.
    Raises a :class:`deploycomp.errors.DeployError` subclass on bad input or a missed budget.
    Log lines go to the ``deploycomp`` logger (the application's logging decides where).
    """
    options = pipeline.BuildOptions(
        model=Path(model), out=Path(out), target=str(target), precision=precision, inputs=_specs(inputs),
        calibration=Path(calibration) if isinstance(calibration, (str, os.PathLike)) else calibration,
        validation_data=Path(validation_data) if isinstance(validation_data, (str, os.PathLike)) else validation_data,
        validation_samples=validation_samples or None, preprocess=preprocess,
        sample_kind=sample_kind, force=force, no_fail=no_fail, keep_float=_listed(keep_float),
        min_cosine=min_cosine, min_top1=min_top1, int8_accept=int8_accept, io_layout=io_layout,
        judge_where=where_rules(judge_where), judge_channels=judge_channels, judge_boxes=box_rules(judge_boxes),
        min_box_iou=min_box_iou, judge_masks=mask_rules(judge_masks), min_mask_iou=min_mask_iou,
        judge_ctc=ctc_rules(judge_ctc), min_text_similarity=min_text_similarity,
        int8_boosters=None if int8_boosters is None else _listed(int8_boosters), int8_range=int8_range,
        int8_time_limit=int8_time_limit,
        int8_io=int8_io, profiles=[parse_profile_spec(p) for p in _listed(profiles or ())],
        keep_initializer_inputs=keep_initializer_inputs, freeze=dict(freeze or {}), feedback=parse_feedback(feedback),
    )
    with libraries_quiet():
        result = pipeline.build(options)
    return load(result.bundle, verify=False)  # the build has just hashed every file


def optimize(model: str | os.PathLike, out: str | os.PathLike, *, inputs=None, target: str | None = None,
             keep_initializer_inputs: bool = False) -> dict:
    """Optimize ``model`` (the ``default`` pipeline, or ``target``'s) and write ONNX to ``out``."""
    specs = _specs(inputs)
    with libraries_quiet():
        return pipeline.optimize(model, out, specs, target=target, keep_initializer_inputs=keep_initializer_inputs)
