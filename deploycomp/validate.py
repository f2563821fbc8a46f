"""Validation: does the artifact compute what the original model computes, within budget?

The reference is the original ONNX file in ONNX Runtime fp32; the candidate is the
bundle's own runner. Per output we record cosine similarity (of the flattened
tensors), max absolute error, max error relative to the output's scale (its largest
magnitude over the samples: a scale-free number that does not explode near zero), and
top-1 agreement when the output looks like class scores (last axis > 1 on a 2-D or 3-D
float output).

Cosine alone is no test where the reference is (nearly) zero or constant: it then
measures noise. Such samples are flagged *uninformative* and held to an error bound
scaled to the output's range instead (in the spirit of Polygraphy's atol/rtol checks),
with the allowance the cosine budget implies (:func:`noise_allowance`). NaN or Inf
where fp32 is finite fails on its own (an fp16 overflow, typically), whatever cosine says.

Budgets come from the target profile: minimum cosine for the precision, artifact
size, memory, latency. Latency is measured when the target is this machine and
otherwise estimated with a roofline (labelled so everywhere it is shown). Memory is
the growth of this process's peak RSS while loading and running the artifact, which
on Linux can be reset through ``/proc/self/clear_refs``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np

from deploycomp.cpu_load import OthersCpu, busy_note
from deploycomp.angles import unwrap
from deploycomp.sums import all_finite, dot64, max_abs_diff, sum64

__all__ = ["QUIET", "BudgetCheck", "Where", "check_where", "escaped", "unescaped", "entry_axis", "entries_shape", "row_entries", "score_source", "split_rule", "ranked_list_column", "compare_outputs", "describe_one_class", "describe_top1", "describe_where", "masked_outputs", "parse_where", "budget_shortfall", "decided_failures", "describe_speedup", "speedup_of", "unsteady", "fidelity_failures", "fidelity_met", "with_user_limits", "LATENCY_PRECISION", "RunTimes", "latency_of", "measure_latency", "output_scales",
           "noise_allowance", "pass_through", "peak_rss_growth", "summarize", "weak_channels", "MAX_CHANNELS",
           "channel_axis", "channel_name", "channel_scales", "split_channels"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = math.sqrt(dot64(a, a)), math.sqrt(dot64(b, b))
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return dot64(a, b) / (na * nb)


OFFSET_MIN_SIZE = 3
"""A sample is judged about its mean (:func:`_centered_cosine`) only with at least this
many elements: two values about their mean are the sign of their difference (a 2-class
softmax ``[p, 1 - p]``: the sign of ``p - 0.5``)."""

SMALL_OUTPUT = 16
"""An output of fewer elements than this whose rows are probability distributions (in
[0, 1], each summing to 1: a 3- or 4-class softmax, whose mean is 1/K whatever the input)
is judged as it is, not about its mean. A few scores of another kind are judged about
their mean like any output: a speech-quality model's three scores near 4 (SIG, BAK, OVR)
met int8's cosine 0.98 raw with one score 0.69 off on a 1-5 scale (raw, 0.98 allows about
1.3 points)."""


def _distributions(r: np.ndarray) -> bool:
    """Whether ``r``'s rows (its last axis) are probability distributions."""
    return r.ndim >= 1 and float(r.min()) >= 0 and float(r.max()) <= 1 and \
        bool(np.allclose(r.sum(axis=-1, dtype=np.float64), 1.0, atol=1e-3))


def _centered_cosine(r: np.ndarray, g: np.ndarray, axis: int | None = None) -> float | None:
    """Cosine of ``r`` and ``g`` about ``r``'s mean, where ``r`` is *offset-dominated* (its
    mean's magnitude above its standard deviation, which is at least 1e-3 of the mean), else
    None. There the plain cosine measures mostly the offset: a ViT saliency map between 0.3
    and 0.71, int8 on host at cosine 0.9965, correlated 0.93 with fp32's and its region
    (min-max normalised, over 0.5) overlapping fp32's by 0.54; log-mel features around -9;
    basic-pitch's note maps at 0.10 +- 0.02 (there a cosine of 0.98 is one of ~0.45 about
    the mean). Both sides move by the reference's mean, so a shift of the bundle's values
    counts too. ``axis``: the output's channels (:func:`channel_axis`), each about its own
    mean: a per-pixel softmax over background and nucleus (channels near 1 and near 0) is
    about one mean of 0.5 what it is raw, and its int8 build passed at 0.992 while the
    nucleus channel alone was at 0.78 and the nuclei it marked overlapped fp32's by 0.35.
    From float64 sums (the searches compare often; a channel is taken apart once)."""
    n = r.size
    if n < OFFSET_MIN_SIZE or (n < SMALL_OUTPUT and _distributions(r)):
        return None
    parts = [(r, g)] if axis is None else [(np.take(r, c, axis), np.take(g, c, axis)) for c in range(r.shape[axis])]
    offset = spread = 0.0
    stats = []
    for rc, gc in parts:
        k, sr = rc.size, sum64(rc)
        mean = sr / k if k else 0.0
        offset += k * mean * mean
        spread += dot64(rc, rc) - k * mean * mean  # k x the variance
        stats.append((k, mean, sr, rc, gc))
    if not 1e-6 * offset <= spread < offset:
        return None
    num = about = 0.0
    for k, mean, sr, rc, gc in stats:
        sg = sum64(gc)
        about += dot64(gc, gc) - 2 * mean * sg + k * mean * mean
        num += dot64(rc, gc) - mean * (sg + sr) + k * mean * mean
    if about <= 0:
        return 0.0
    return num / math.sqrt(spread * about)


PASS_THROUGH_COSINE = 0.99
"""An output this close (cosine, on every sample) to an input of its shape is that input
passed through plus the model's own part (:func:`pass_through`)."""

PART_FLOOR = 1e-4
"""The model's own part of a pass-through output is compared only on samples where its
amplitude (norm) is at least this share of the output's: below it, it is float rounding
(a denoiser given a clean signal), and its cosine measures noise."""


def pass_through(samples: Sequence[Mapping[str, np.ndarray]], refs: Sequence[Mapping[str, np.ndarray]],
                 gots: Sequence[Mapping[str, np.ndarray]]) -> dict[str, dict]:
    """The float outputs that are an input passed through (:data:`PASS_THROUGH_COSINE`),
    with how the model's own part (output - input) compares: a watermark encoder returns
    its frame plus a faint mark, and its int8 TFLite bundle validated at cosine 0.9995
    while the mark alone was at 0.88-0.96 (the decoder read a bit wrong). The output's
    cosine measures the frame; ``residual_cosine``, the worst over samples where the
    reference's part is not rounding (:data:`PART_FLOOR`), measures the mark."""
    found: dict[str, dict] = {}
    if not samples or not refs or not gots:
        return found
    for name, first in refs[0].items():
        if not np.issubdtype(np.asarray(first).dtype, np.floating):
            continue
        for source, x in samples[0].items():
            if np.shape(x) != np.shape(first) or not np.issubdtype(np.asarray(x).dtype, np.floating):
                continue
            closeness = min(_cosine(np.asarray(ref[name], np.float32), np.asarray(sample[source], np.float32))
                            for sample, ref in zip(samples, refs))
            if closeness < PASS_THROUGH_COSINE:
                continue
            parts = [(np.asarray(got[name], np.float32) - sample[source], np.asarray(ref[name], np.float32) - sample[source],
                      np.asarray(ref[name], np.float32))
                     for sample, ref, got in zip(samples, refs, gots) if np.shape(got[name]) == np.shape(first)]
            # a part below PART_FLOOR of the output's amplitude is rounding, not the model's work
            residual = [_cosine(g, r) for g, r, whole in parts if dot64(r, r) > PART_FLOOR ** 2 * dot64(whole, whole)]
            if residual and all(np.isfinite(residual)):
                found[name] = {"input": source, "input_cosine": round(float(closeness), 6),
                               "residual_cosine": round(float(min(residual)), 6)}
            break
    return found


PADDING_SHARE = 0.5
"""An integer output's value that fills more than this share of the reference's positions
(over every sample) is its padding: a CTC path's blank, a class map's background."""


def padding_value(refs: Sequence[np.ndarray]) -> int | None:
    """The value an integer sequence or map output (rank >= 2, several positions a sample)
    is mostly padded with (:data:`PADDING_SHARE`), else None. Agreement is then counted over
    the positions either side holds something else: counted over all, a recognizer's 40
    CTC positions reading 8 characters, one of them wrong, had agreed 0.975 (the
    characters: 7 of 8). A classifier's labels (one per row, rank 1) have none: a common
    class is no padding."""
    if not refs or any(r.ndim < 2 or r.size < 8 for r in refs):
        return None
    values, counts = np.unique(np.concatenate([r.reshape(-1) for r in refs]), return_counts=True)
    top = int(counts.argmax())
    return int(values[top]) if counts[top] > PADDING_SHARE * counts.sum() else None


def _looks_like_scores(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.floating) and arr.ndim in (2, 3) and arr.shape[-1] > 1


QUIET = 1e-3
"""A sample's output is *uninformative* when its largest magnitude is below this share of
the output's scale (its largest magnitude on any sample), or when it is constant. There
cosine measures noise: PP-OCR det's probability map on a photo without text peaks at
2e-6 (the map's scale is 1), and an fp32 bundle off by 1e-7 scored cosine 0.9907."""


def iou_limit(fidelity: Any, field: str) -> float:
    """An overlap budget (``min_box_iou``, ``min_mask_iou``): the profile's ``field``, or the
    one its cosine implies: a box or a mask's edge may move by half the share of its size
    that :func:`noise_allowance` allows an output's error (IoU ``1 - allowance / 2``: fp32
    0.993, fp16 0.978, bf16 0.95, int8 0.9)."""
    given = getattr(fidelity, field, None)
    return given if given is not None else round(1 - noise_allowance(fidelity.min_cosine) / 2, 6)


def noise_allowance(min_cosine: float) -> float:
    """The error, as a share of an output's scale, that a cosine budget allows: a relative
    error e costs about e^2 / 2 of cosine, so ``sqrt(2 (1 - min_cosine))`` (fp32's 0.9999:
    1.4%; fp16's 0.999: 4.5%; int8's 0.98: 20%). Uninformative samples are held to it."""
    return math.sqrt(2 * (1 - min_cosine))


def _informative(r: np.ndarray, scale: float) -> bool:
    if r.size == 0:
        return False
    high, low = float(r.max()), float(r.min())
    peak = max(abs(high), abs(low))
    return peak >= QUIET * scale and high - low > 1e-6 * max(peak, 1e-30)


def _peak(a: np.ndarray, finite: bool | None = None) -> float:
    """The largest finite magnitude in ``a`` (0 when it has none); ``finite``: whether
    every value is, where the caller knows already."""
    if a.size and (all_finite(a) if finite is None else finite):
        return max(abs(float(a.max())), abs(float(a.min())))
    values = a[np.isfinite(a)]
    return float(np.abs(values).max()) if values.size else 0.0


def _scale(arrays: Sequence[np.ndarray]) -> float:
    return max((_peak(a) for a in arrays), default=0.0)


def output_scales(refs: Sequence[Mapping[str, np.ndarray]], channels: Mapping[str, int] | None = None) -> dict[str, float]:
    """Each numeric output's scale: its largest finite magnitude over ``refs`` (and each
    channel's of ``channels``, as :func:`compare_outputs` judges them)."""
    scales: dict[str, float] = {}
    if channels and refs:
        scales |= channel_scales(refs, channels)
    for name in refs[0] if refs else ():
        arrays = [np.asarray(ref[name]) for ref in refs]
        if all(np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_ for a in arrays):
            scales[name] = _scale(arrays)
    return scales


Where = Mapping[str, tuple[str, float]]
"""Output -> (a score output, threshold): judge the output only where the reference's
score output exceeds the threshold (``--judge-where``). The score may be one entry of
each row of an output, ``NAME[K]`` (a detection list's score column), or the largest of
several, ``NAME[A:B]`` (a row's class scores): :func:`entry_axis` says which axis."""


def entry_axis(shape: Sequence[int]) -> int:
    """The axis that holds a row's entries (a box's coordinates, its scores) in an output
    of this shape: the last, or the second-to-last where that is the shorter one (a
    channels-first detection head, YOLOv8's ``[1, 84, 8400]``: 84 entries for each of 8400
    anchors). A 2-D output is rows x entries: a batch of one row is no channels-first head."""
    return -2 if len(shape) >= 3 and isinstance(shape[-2], int) and isinstance(shape[-1], int) \
        and shape[-2] < shape[-1] else -1


def score_source(scores: str) -> tuple[str, int | slice | None]:
    """``NAME`` -> (NAME, None); ``NAME[K]`` -> (NAME, K): entry K of each row
    (:func:`entry_axis`); ``NAME[A:B]`` -> (NAME, slice(A, B)): the largest of entries
    A..B-1, a row's class scores."""
    if scores.endswith("]") and "[" in scores:
        name, _, index = scores[:-1].rpartition("[")
        first, colon, last = index.partition(":")
        try:
            if not colon:
                return name, int(index)
            if int(last) > int(first) >= 0:
                return name, slice(int(first), int(last))
        except ValueError:
            pass
    return scores, None


def row_entries(values: np.ndarray, index: int | slice) -> np.ndarray:
    """Entry ``index`` of each row (or the largest of a slice of them), kept as an axis of
    one so that it broadcasts over the rows."""
    axis = entry_axis(values.shape) % values.ndim
    if isinstance(index, int):
        return np.take(values, [index % values.shape[axis]], axis=axis)
    return np.take(values, range(*index.indices(values.shape[axis])), axis=axis).max(axis=axis, keepdims=True)


def _scores_of(output: Mapping[str, np.ndarray], scores: str) -> np.ndarray:
    name, index = score_source(scores)
    values = np.asarray(output[name])
    return values if index is None else row_entries(values, index)


_ESCAPES = {"\\:": "\x00", "\\,": "\x01", "\\=": "\x02", "\\>": "\x03"}
"""In a judging rule an output's name may hold ``:``, ``,``, ``=`` or ``>`` written with a
backslash before it (a TensorFlow export's ``Identity:0`` is ``Identity\\:0``)."""


def escaped(text: str) -> str:
    """``text`` with its backslash-escaped separators hidden from a rule's parsing."""
    for seq, mark in _ESCAPES.items():
        text = text.replace(seq, mark)
    return text


def unescaped(text: str) -> str:
    """A name parsed from an :func:`escaped` rule, as the model names it."""
    for seq, mark in _ESCAPES.items():
        text = text.replace(mark, seq[1])
    return text


def split_rule(text: str) -> tuple[str, str]:
    """``TARGETS:SCORES>T`` -> (TARGETS, SCORES>T), split at the last colon outside
    brackets (a slice of entries, ``output0[4:84]``, holds one)."""
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {"]": 1, "[": -1}.get(text[i], 0)
        if text[i] == ":" and depth == 0:
            return text[:i], text[i + 1:]
    return "", text


def parse_where(texts) -> dict[str, tuple[str, float]]:
    """``--judge-where OUT[,OUT...]:SCORES>T`` (repeatable) -> ``{OUT: (SCORES, T)}``.

    A dense detector's regression maps (CenterFace's box scales, centre offsets and
    landmarks) are read only where its heatmap finds a face; elsewhere they are noise
    that no application reads, and their whole-map cosine judges the noise (CenterFace
    all-int8: the offset map's cosine 0.83-0.95 over the map, 0.993-0.996 where the
    heatmap passes 0.2). ``SCORES`` may be a column of an output, ``output0[4]``: an
    NMS-free detector's list of its top 300 (a YOLO head ending in TopK) holds a handful
    of detections and then boxes of score ~0 in no particular order, which ONNX Runtime
    and OpenVINO order differently (cosine 0.80 over the list; the detections equal to
    6e-8): ``output0:output0[4]>0.25`` judges the rows that are detections."""
    out: dict[str, tuple[str, float]] = {}
    for text in texts or ():
        names, rule = split_rule(escaped(str(text)))
        scores, gt, threshold = rule.partition(">")
        scores = unescaped(scores)
        try:
            value = float(threshold)
        except ValueError:
            value = None
        if not names or not gt or not scores or value is None or not math.isfinite(value):
            raise ValueError(f"--judge-where {text!r}: write OUTPUT[,OUTPUT...]:SCORES>THRESHOLD, e.g. 539,540:537>0.2")
        for name in map(unescaped, names.split(",")):
            if name and out.get(name, (scores, value)) != (scores, value):
                raise ValueError(f"--judge-where {name}: given two rules ({out[name][0]}>{out[name][1]:g} and "
                                 f"{scores}>{value:g}); give one")
            if name:
                out[name] = (scores, value)
    return out


def ranked_list_column(values: Sequence[np.ndarray]) -> int | None:
    """The score column of an output that is a ranked list on every sample, or None: rows
    along the second-to-last axis (at least 20), a column of the last axis in [0, 1] that
    never rises from row to row and is below 0.01 in most rows. Such a list's tail (an
    NMS-free detector's top 300 after its few detections) is ties a runtime may order as
    it likes: ``--judge-where OUT:OUT[K]>T`` judges its head instead."""
    arrays = [np.asarray(v) for v in values]
    if not arrays or any(a.ndim < 2 or a.shape[-2] < 20 or not 2 <= a.shape[-1] <= 16 for a in arrays) \
            or not all(np.issubdtype(a.dtype, np.floating) for a in arrays):
        return None
    for column in range(arrays[0].shape[-1]):
        scores = [a[..., column] for a in arrays]
        if all(np.all((c >= 0) & (c <= 1)) and np.all(np.diff(c, axis=-1) <= 1e-6) and np.mean(c < 0.01) >= 0.5
               for c in scores):
            return column
    return None


def entries_shape(shape: tuple, index: int | slice | None, rule: str) -> tuple:
    """The shape of an output's entries ``index`` (:func:`score_source`): its entry axis
    (:func:`entry_axis`) cut to one; ValueError (``rule`` then the problem) where the
    output has no such entries."""
    if index is None:
        return shape
    axis = entry_axis(shape)
    size = shape[axis] if shape else None
    wanted = index if isinstance(index, int) else index.stop - 1
    if not isinstance(size, int) or not -size <= wanted < size:
        where = "last axis" if axis == -1 else "second-to-last axis (the shorter)"
        raise ValueError(f"{rule} (shape {list(shape)}) has no entry {wanted} on its {where}")
    cut = list(shape)
    cut[axis] = 1
    return tuple(cut)


def check_where(where: Where, shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise ValueError naming the first rule whose outputs do not exist or whose score
    output does not broadcast over the output it masks (as it is, or reduced over its
    channels: any channel passing)."""
    for name, (scores, threshold) in where.items():
        source, column = score_source(scores)
        for n in (name, source):
            if n not in shapes:
                raise ValueError(f"--judge-where {name}:{scores}>{threshold:g}: the model has no output {n!r} "
                                 f"(outputs: {', '.join(list(shapes)[:8])})")
        score_shape = entries_shape(tuple(shapes[source]), column,
                                    f"--judge-where {name}:{scores}>{threshold:g}: {source}")
        fits = False
        for score_shape in (score_shape, score_shape[:1] + (1,) + score_shape[2:]):
            try:
                fits = fits or np.broadcast_shapes(score_shape, tuple(shapes[name])) == tuple(shapes[name])
            except ValueError:
                pass
        if not fits:
            raise ValueError(f"--judge-where {name}:{scores}>{threshold:g}: {scores} (shape {list(shapes[source])}) "
                             f"does not broadcast over {name} (shape {list(shapes[name])})") from None


def _score_mask(scores: np.ndarray, threshold: float, shape) -> np.ndarray:
    """Where ``scores`` passes ``threshold``, shaped to broadcast over ``shape``: a score map
    of other channels than the output (a 2-class heatmap over 8 regression channels) counts
    where any of its channels passes."""
    mask = scores > threshold
    try:
        np.broadcast_shapes(mask.shape, tuple(shape))
        return mask
    except ValueError:
        return mask.any(axis=1, keepdims=True) if mask.ndim >= 2 else mask


def masked_outputs(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
                   where: Where, decisions: dict[str, dict[str, int]] | None = None) -> tuple[list[dict], list[dict]]:
    """Each output ruled by ``where`` cut to the elements where the reference's score
    output, or the bundle's, passes the threshold (flattened); a sample where neither does
    holds one zero in both, an uninformative sample with nothing to judge.

    The bundle's passes count as much as the reference's: judged only where the reference
    passes, an int8 detector that raised a row's score from 0.18 to 0.43 (a detection the
    reference does not make) was never judged there. ``decisions``, if given, receives per
    output how many score entries (rows of a list, pixels of a map) pass in the
    reference, in the bundle and in both, over all samples."""
    out_refs, out_gots = [], []
    for original, original_got in zip(refs, gots):
        ref, got = dict(original), dict(original_got)
        for name, (scores, threshold) in where.items():
            if name not in ref or score_source(scores)[0] not in ref:
                continue  # (scores read from the outputs as they came: one may mask itself)
            shape = np.shape(ref[name])
            ref_pass = _score_mask(_scores_of(original, scores), threshold, shape)
            got_pass = np.zeros_like(ref_pass)
            if score_source(scores)[0] in original_got:
                theirs = _score_mask(_scores_of(original_got, scores), threshold, shape)
                if theirs.shape == ref_pass.shape:  # (a bundle's other shape is judged as a mismatch)
                    got_pass = theirs
            if decisions is not None:
                counts = decisions.setdefault(name, {"reference": 0, "bundle": 0, "both": 0})
                counts["reference"] += int(np.count_nonzero(ref_pass))
                counts["bundle"] += int(np.count_nonzero(got_pass))
                counts["both"] += int(np.count_nonzero(ref_pass & got_pass))
            mask = np.broadcast_to(ref_pass | got_pass, shape)
            if mask.any() and np.shape(got[name]) == shape:
                ref[name], got[name] = np.asarray(ref[name])[mask], np.asarray(got[name])[mask]
            elif mask.any():
                ref[name] = np.asarray(ref[name])[mask]
            else:
                ref[name] = got[name] = np.zeros(1, np.asarray(ref[name]).dtype)
        out_refs.append(ref)
        out_gots.append(got)
    return out_refs, out_gots


def unjudged_outputs(outputs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Outputs no validation sample said anything of: every sample uninformative there (a
    ``--judge-boxes`` rule no row passed on any photo, a map ~0 on every input), so their
    cosine, 1.0 over nothing, checked nothing (a YOLO build read "[ok]" so)."""
    return [name for name, m in outputs.items()
            if m.get("samples") and m.get("uninformative_samples", 0) >= m["samples"]
            # one value per sample is judged by its error on every sample (a quality score's
            # 3.5-4.4 had read "NOTHING judged" beside "judged by its error"), unless 0 on all
            and not (m.get("single_value") and m.get("scale"))]


ONE_CLASS_SAMPLES = 3
"""A classifier's output (one row of scores a sample) whose reference picks the same class
on every one of at least this many informative samples is said to (``top1_one_class``):
its top-1 agreement and cosine then say how int8 or fp16 keeps that one answer, not the
model's others. Inputs the model was not given as it expects often do this (a detector fed
unscaled 0..255 images: one saturated class everywhere), as does a set of one kind."""


def describe_one_class(metrics: Mapping[str, Any]) -> str | None:
    """The one class every sample gave, where that was so (:data:`ONE_CLASS_SAMPLES`), as
    the summary and the report say it."""
    if (one := metrics.get("top1_one_class")) is None:
        return None
    return (f"class {one} on every sample: it says little of the model's other answers; validate on inputs of "
            "several classes")


def describe_top1(metrics: Mapping[str, Any]) -> str | None:
    """How an output's top-1 agreement is said (summary), with :func:`describe_one_class`."""
    if "top1_agreement" not in metrics:
        return None
    said = f"top-1 agreement {metrics['top1_agreement']:.3f}"
    return said + (f" ({one})" if (one := describe_one_class(metrics)) else "")


def describe_where(metrics: Mapping[str, Any]) -> str | None:
    """How an output judged ``where`` is said (summary, report): the rule, and where the
    bundle and the reference decide differently (:func:`masked_outputs`' ``decisions``)."""
    rule = metrics.get("judged_where")
    if not rule:
        return None
    seen = metrics.get("where_passing") or {}
    only = {who: seen[who] - seen.get("both", 0) for who in ("bundle", "reference") if who in seen}
    flips = ", ".join(f"{n} pass{'es' if n == 1 else ''} only in the {who}" for who, n in only.items() if n)
    return f"judged where {rule}" + (f" ({flips})" if flips else "")


MAX_CHANNELS = 16
"""An output's axis 1 or last axis of at most this many entries is read as channels that
may mean different things (:func:`channel_axis`); more is a map's width, a class list, a
sequence."""


def channel_axis(shape: Sequence[int]) -> int | None:
    """The axis of an output of this shape that holds channels, if one does: axis 1 or the
    last (NCHW and NHWC maps, [N, C, T] and [N, T, C] sequences) where it holds 2 to
    :data:`MAX_CHANNELS` entries, fewer than any other axis but the batch (a 16-wide map's
    columns are no channels); rank 3 or more."""
    if len(shape) < 3:
        return None
    for axis in (1, len(shape) - 1):
        others = [d for i, d in enumerate(shape) if i not in (0, axis)]
        if 2 <= shape[axis] <= MAX_CHANNELS and shape[axis] < min(others):
            return axis
    return None


def channel_name(output: str, axis: int, channel: int) -> str:
    """What a channel judged as an output of its own is called (``--judge-channels``)."""
    return f"{output}[channel {channel} of axis {axis}]"


def split_channels(outs: Sequence[Mapping[str, np.ndarray]], axes: Mapping[str, int]) -> list[dict[str, np.ndarray]]:
    """Each output of ``axes`` (output -> its channel axis) as one array per channel."""
    return [{channel_name(name, axis, c): np.take(np.asarray(out[name]), c, axis)
             for name, axis in axes.items() if name in out for c in range(np.shape(out[name])[axis])} for out in outs]


def channel_scales(refs: Sequence[Mapping[str, np.ndarray]], axes: Mapping[str, int],
                   scales: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each channel's scale (:func:`split_channels`): its own largest magnitude, or its
    output's where that is below :data:`QUIET` of the output's (a channel that is ~0 next
    to the others is as uninformative as a quiet sample; on its own scale its rounding
    noise was a 300% error). ``scales``: the outputs' scales, where known."""
    out: dict[str, float] = {}
    for name, axis in axes.items():
        arrays = [np.asarray(r[name]) for r in refs if name in r]
        whole = scales[name] if scales and name in scales else _scale(arrays)
        for c in range(arrays[0].shape[axis] if arrays else 0):
            own = _scale([np.take(a, c, axis) for a in arrays])
            out[channel_name(name, axis, c)] = own if own >= QUIET * whole else whole
    return out


def _as_judged(refs: list, gots: list, where: Where | None, angles: Mapping[str, np.ndarray] | None,
               decisions: dict | None = None) -> tuple[list, list]:
    """The outputs as they are compared: angles taken to the nearest turn of the
    reference's, outputs judged ``where`` masked (``decisions``: :func:`masked_outputs`)."""
    if angles:
        gots = [{**got, **{k: unwrap(np.asarray(ref[k]), np.asarray(got[k]), turn) for k, turn in angles.items()
                           if k in ref and k in got}} for ref, got in zip(refs, gots)]
    if where:
        refs, gots = masked_outputs(refs, gots, where, decisions)
    return refs, gots


def compare_outputs(refs: list[Mapping[str, np.ndarray]], gots: list[Mapping[str, np.ndarray]],
                    scales: Mapping[str, float] | None = None,
                    per_sample: dict[str, list[float | None]] | None = None,
                    where: Where | None = None, levels: Collection[str] = (),
                    angles: Mapping[str, np.ndarray] | None = None,
                    channels: Mapping[str, int] | None = None, boxes: Mapping[str, Any] | None = None,
                    masks: Mapping[str, Any] | None = None, ctc: Mapping[str, Any] | None = None,
                    states: Collection[str] = ()) -> dict[str, dict]:
    """Per-output metrics over all samples. ``states``: outputs fed back as inputs (a
    recurrent state: :mod:`deploycomp.feedback`), whose largest entry is no answer, so no
    top-1 agreement is taken of them (a GRU's hidden state had read 0.188, and ``--min-top1``
    kept layers float for it).

    ``scales`` (:func:`output_scales` of a larger set these samples are part of) makes
    every per-sample judgement the one the whole set gets, so that a part of the samples
    can already decide a failure (:func:`decided_failures`).

    ``cosine`` is the worst over the informative samples (all samples if none is); for an
    integer output (ids, counts) it is the share of elements equal over all samples, also
    given as ``agreement`` (a mean, like top-1 agreement);
    ``max_abs_error`` / ``max_rel_error`` are over all samples, the latter against the
    output's scale; ``top1_agreement`` is the mean over informative samples of score-like
    outputs. Where samples are uninformative (:data:`QUIET`), ``uninformative_samples``
    counts them and ``quiet_error`` is their largest error as a share of the output's
    scale, which :func:`fidelity_met` holds to :func:`noise_allowance` instead of cosine.
    NaN or Inf where the reference is finite (or the reverse, or another non-finite value
    than the reference's there) is counted in ``nonfinite``. A sample on which the output's
    shape differs from the reference's is counted in ``shape_mismatch`` (with the first
    pair of shapes), a failure whatever the rest says.
    An output of one value per sample (``single_value``) is judged by the bound alone.

    ``per_sample``, if given, receives each float output's cosine on each sample in turn
    (None for an uninformative one), for a caller that orders samples by difficulty.
    ``where``: outputs judged only where a score output passes a threshold
    (:func:`masked_outputs`); their metrics say so (``judged_where``).
    ``levels``: integer outputs that are rounded float values
    (:func:`deploycomp.analysis.level_outputs`), judged as float outputs are
    (``judged_as: levels``): a uint8 spectrogram one level off in 10% of its bins is
    numerical noise, where an id one off is a wrong answer.
    ``angles``: outputs whose elements hold angles, each element's turn (0 where it holds
    none: :func:`deploycomp.angles.angle_periods`); a difference is taken to the nearest
    turn before anything is measured (``judged_as: angles``).
    ``channels``: outputs whose channels are judged as outputs of their own too (output ->
    its channel axis, ``--judge-channels``; named by :func:`channel_name`), on their own
    scales (:func:`channel_scales`), after the angles; an output judged ``where`` is not
    split (what is judged of it is a list of elements).
    ``boxes``: outputs holding a detector's boxes -> their :class:`deploycomp.boxes.BoxRule`;
    each gets ``box_iou`` and ``boxes`` (:func:`deploycomp.boxes.box_metrics`), measured on
    the outputs as they came; where the two sides hold another number of rows (NMS in the
    graph), the bundle's rows are matched to the reference's first
    (:func:`deploycomp.boxes.aligned_rows`, ``rows_aligned``: on how many samples), not a
    shape mismatch.
    ``masks``: dense maps judged by the mask cut from them -> their
    :class:`deploycomp.masks.MaskRule`; each gets ``mask_iou`` and ``mask``
    (:func:`deploycomp.masks.mask_metrics`), on the outputs as they came.
    ``ctc``: a CTC recognizer's per-step scores judged by the text they decode to -> their
    :class:`deploycomp.ctc.CtcRule`; each gets ``text_similarity`` and ``text``
    (:func:`deploycomp.ctc.ctc_metrics`), which :func:`fidelity_met` holds to the budget
    in place of cosine.
    """
    decisions: dict[str, dict[str, int]] = {}
    as_given = (refs, gots)
    aligned: dict[str, int] = {}
    if boxes:  # a detector's NMS in the graph: as many rows as it found, on each side
        from deploycomp.boxes import aligned_rows, infer_format

        boxes = {k: infer_format(refs, r) for k, r in boxes.items()}  # (once, for the rows and the metrics)
        gots, aligned = aligned_rows(refs, gots, boxes)
    refs, gots = _as_judged(refs, gots, where, angles, decisions)
    metrics: dict[str, dict] = {}
    reshaped: dict[str, dict] = {}
    for name in refs[0]:
        pairs = []
        for ref, got in zip(refs, gots):
            r, g = np.asarray(ref[name]), np.asarray(got[name])
            if r.shape != g.shape:
                # a size the model computes from its data (a TTS model's audio length from its
                # predicted durations, one of which rounded the other way): a failure of its
                # own (``shape_mismatch``), the sample measured as if the output were zeros
                seen = reshaped.setdefault(name, {"samples": 0, "bundle": list(g.shape), "reference": list(r.shape)})
                seen["samples"] += 1
                g = np.zeros_like(r)
            pairs.append((r, g))
        if name in levels:
            pairs = [(r.astype(np.float64), g.astype(np.float64)) for r, g in pairs]
        if any(r.dtype == np.bool_ or not np.issubdtype(r.dtype, np.number) for r, _ in pairs):
            cos = [1.0 if np.array_equal(r, g) else 0.0 for r, g in pairs]
            if per_sample is not None:
                per_sample[name] = cos
            metrics[name] = {"cosine": min(cos), "samples": len(cos)}
            continue
        if all(np.issubdtype(r.dtype, np.integer) for r, _ in pairs):
            # ids (an ArgMax's classes, a CTC path's characters) or counts: near is not
            # right, character 5 for 6 is a wrong read with cosine 0.99. Judged as the share
            # of elements equal over all samples (as top-1 agreement is a mean: one sample's
            # 20 CTC positions make a worst-sample share move in steps of 5%), held to the
            # cosine budget.
            pad = padding_value([r for r, _ in pairs])
            counted = [np.ones(r.shape, bool) if pad is None else (r != pad) | (g != pad) for r, g in pairs]
            if per_sample is not None:
                per_sample[name] = [float(np.count_nonzero((r == g) & c)) / n if (n := np.count_nonzero(c)) else 1.0
                                    for (r, g), c in zip(pairs, counted)]
            equal = sum(int(np.count_nonzero((r == g) & c)) for (r, g), c in zip(pairs, counted))
            total = sum(int(np.count_nonzero(c)) for c in counted)
            share = equal / total if total else 1.0
            metrics[name] = {"cosine": share, "agreement": share, "samples": len(pairs),
                             "max_abs_error": max((float(np.abs(r.astype(np.float64) - g).max()) if r.size else 0.0)
                                                  for r, g in pairs)}
            if pad is not None:  # (the share over the positions that hold something, on either side)
                metrics[name] |= {"padding_value": int(pad), "agreement_positions": total}
            continue
        finite = [True if all_finite(r) else np.isfinite(r) for r, _ in pairs]  # a mask only where needed
        scale = (scales[name] if scales is not None and name in scales
                 else max((_peak(r, f is True) for (r, _), f in zip(pairs, finite)), default=0.0))
        cos_all, cos, quiet, max_abs, top1, nonfinite, centered = [], [], [], [], [], 0, []
        classes: set[int] = set()  # the reference's top-1 of a one-row classifier output, over the samples
        # a map's channels each about its own mean (rank 4: NCHW / NHWC; a detector head's
        # [1, N, 6] entries are no channels of a map, and judged so kept 4 more of ddddocr's
        # layers float on TFLite and 14% more of a layout detector's heavy layers)
        axis = channel_axis(pairs[0][0].shape) if pairs and pairs[0][0].ndim >= 4 else None
        for (r, g), f in zip(pairs, finite):
            if f is True and all_finite(g):  # the common case: float64 sums, no copies (a search compares often)
                bad = 0
                max_abs.append(max_abs_diff(r, g))
                c = _cosine(r, g)
                informative = _informative(r, scale)
                judged = (r, g, axis)
            else:
                r64, g64 = r.astype(np.float64), g.astype(np.float64)
                f, fg = np.isfinite(r64), np.isfinite(g64)
                same = (r64 == g64) | (np.isnan(r64) & np.isnan(g64))  # NaN where the reference has NaN agrees
                bad = int(np.count_nonzero(f != fg) + np.count_nonzero(~f & ~fg & ~same))
                both = f & fg
                diff = np.abs(r64[both] - g64[both])
                max_abs.append(float(diff.max()) if diff.size else 0.0)
                c = _cosine(np.where(both, r64, 0.0), np.where(both, g64, 0.0))
                informative = _informative(r64[f], scale)
                # (over the values both sides have: a map's channels only while it is whole)
                judged = (r64, g64, axis) if both.all() else (r64[both], g64[both], None)
            if informative and name not in levels and (about := _centered_cosine(*judged)) is not None:
                centered.append(about)  # an offset-dominated sample: judged about its mean too
                c = min(c, about)
            nonfinite += bad
            if per_sample is not None:
                per_sample.setdefault(name, []).append(-1.0 if bad else c if informative else None)
            cos_all.append(c)
            if informative:
                cos.append(c)
                if _looks_like_scores(r) and name not in levels and name not in states:
                    top1.append(float(np.mean(r.argmax(-1) == g.argmax(-1))))
                    if r.size == r.shape[-1]:
                        classes.add(int(r.argmax()))
            else:
                quiet.append(max_abs[-1] / scale if scale else max_abs[-1])
        entry: dict[str, Any] = {"cosine": min(cos) if cos else min(cos_all), "samples": len(pairs),
                                 "max_abs_error": max(max_abs), "max_rel_error": max(max_abs) / (scale or 1.0)}
        if quiet:
            entry |= {"uninformative_samples": len(quiet), "quiet_error": max(quiet), "scale": scale}
            if all(r.size == 1 for r, _ in pairs):  # a probability, a count: cosine of one number is its sign
                # (0 where the reference is exactly 0); what is recorded is the cosine of the
                # values over the samples, for diff, fleets and people (judged by the bound)
                r_all = np.array([float(r.reshape(-1)[0]) for r, _ in pairs])
                g_all = np.array([float(g.reshape(-1)[0]) for _, g in pairs])
                both = np.isfinite(r_all) & np.isfinite(g_all)
                entry |= {"single_value": True, "cosine": _cosine(r_all[both], g_all[both]),
                          "cosine_over": "samples"}
        if centered:  # (``cosine`` holds it where it is the lower)
            entry |= {"centered_cosine": min(centered), "offset_dominated_samples": len(centered)}
        if top1:
            entry["top1_agreement"] = float(np.mean(top1))
            if len(classes) == 1 and len(top1) >= ONE_CLASS_SAMPLES:
                entry["top1_one_class"] = next(iter(classes))
        if nonfinite:
            entry["nonfinite"] = nonfinite
        if name in levels:
            entry["judged_as"] = "levels"
        elif angles and name in angles:
            entry["judged_as"] = "angles"
        if where and name in where:
            entry["judged_where"] = f"{where[name][0]} > {where[name][1]:g}"
            if name in decisions:
                entry["where_passing"] = decisions[name]
        metrics[name] = entry
    for name, seen in reshaped.items():
        metrics[name]["shape_mismatch"] = seen
    if boxes:
        from deploycomp.boxes import box_metrics

        for name, rule in boxes.items():
            if name in metrics:
                metrics[name] |= box_metrics(*as_given, rule)
                if aligned.get(name):
                    metrics[name]["rows_aligned"] = aligned[name]
    if masks:
        from deploycomp.masks import mask_metrics

        for name, rule in masks.items():
            if name in metrics:
                metrics[name] |= mask_metrics(*as_given, rule)
    if ctc:
        from deploycomp.ctc import ctc_metrics

        for name, rule in ctc.items():
            if name in metrics:
                metrics[name] |= ctc_metrics(*as_given, rule)
    if channels:
        # (an output judged ``where`` is a list of the elements judged: no channels left)
        axes = {k: a for k, a in channels.items() if k in metrics and k not in reshaped and k not in (where or {})}
        names = [channel_name(k, a, c) for k, a in axes.items() for c in range(np.shape(refs[0][k])[a])]
        if scales and all(n in scales for n in names):  # the whole set's (a search's checks: not measured again)
            judged = {n: scales[n] for n in names}
        else:
            judged = channel_scales(refs, axes, scales)
            judged |= {k: scales[k] for k in judged if scales and k in scales}
        metrics |= compare_outputs(split_channels(refs, axes), split_channels(gots, axes), judged)
    return metrics


def weak_channels(refs: list[Mapping[str, np.ndarray]], gots: list[Mapping[str, np.ndarray]],
                  metrics: Mapping[str, Mapping[str, Any]], fidelity: Any, where: Where | None = None,
                  angles: Mapping[str, np.ndarray] | None = None) -> dict[str, list[dict]]:
    """The channels (:func:`channel_axis`) of outputs that meet the budget whose values
    alone miss it: output -> [{axis, channel, cosine, max_rel_error}]. One cosine per
    output is dominated by its largest channel: a fingerprint model's angle and quality
    maps share one output, and its int8 quality channel fell to cosine 0.81 inside an
    output judged 0.996. Each channel is compared as an output of its own (on its own
    scale, or its output's where it is ~0 next to the others: :func:`channel_scales`), by
    :func:`compare_outputs` with ``channels``. What the bundle records
    (``validation.outputs[].weak_channels``) and says; the verdict stays the output's
    unless the build judges channels (``--judge-channels``)."""
    axes = {name: axis for name, m in metrics.items()
            if name in refs[0] and np.issubdtype(np.asarray(refs[0][name]).dtype, np.floating)
            and "agreement" not in m and not m.get("shape_mismatch") and fidelity_met({name: m}, fidelity)
            and name not in (where or {})
            and (axis := channel_axis(np.shape(refs[0][name]))) is not None}
    if not axes:
        return {}
    per_channel = compare_outputs(refs, gots, where=where, angles=angles, channels=axes)
    found: dict[str, list[dict]] = {}
    for name, axis in axes.items():
        for c in range(np.shape(refs[0][name])[axis]):
            m = per_channel[channel_name(name, axis, c)]
            if not fidelity_met({"_": m}, fidelity):
                found.setdefault(name, []).append({"axis": axis, "channel": c, "cosine": round(m["cosine"], 6),
                                                   "max_rel_error": round(m.get("max_rel_error", 0.0), 6)})
    return found


LATENCY_PRECISION = 0.02
"""Timing stops early once the median is known to this fraction: the half-width of its
~95% interval, 1.57 IQR / sqrt(n) (McGill, Tukey & Larsen 1978, the notch of a box plot),
at most this share of the median. The int8 bundle of PP-OCRv3 det on host (26 runs of
11 ms in OpenVINO, 10 of 30 ms in ONNX Runtime) settles at the 0.3 s minimum: timing each
for the whole 1.5 s took 3 s of a 20 s build, now 0.6 s."""


MIN_SLOW_RUNS, SLOW_RUNS_FACTOR = 3, 2
"""A latency measurement takes ``min_runs`` runs unless they pass this many times
``max_seconds``; then it stops after at least this many: ``min_runs`` of a runtime taking
11 s a run (OpenVINO on an int8 model at f16 precision) held a build for 2.5 minutes, and
ten times ``max_seconds`` still timed LORE's 1.6 s ONNX Runtime reference 10 times (18 s
of a 106 s int8 build): runs that long vary by a few percent, which 3 of them show."""


def _timed_enough(times: Sequence[float], elapsed: float, min_runs: int, max_seconds: float, min_seconds: float,
                  precision: float) -> bool:
    """Whether runs taking ``times`` (ms) over ``elapsed`` seconds time a latency well
    enough (:func:`measure_latency`'s rule)."""
    n = len(times)
    if n < min_runs and not (n >= MIN_SLOW_RUNS and elapsed >= SLOW_RUNS_FACTOR * max_seconds):
        return False
    if elapsed >= max_seconds or n >= 200:
        return True
    if elapsed < min_seconds:
        return False
    q1, _, q3 = statistics.quantiles(times, n=4)
    return 1.57 * (q3 - q1) / n ** 0.5 <= precision * statistics.median(times)


MIN_LATENCY_SECONDS = 0.3
"""How long a latency is timed at least (unless its runs are slow: :data:`MIN_SLOW_RUNS`)."""


def measure_latency(run: Callable[[], Any], warmup: int = 3, min_runs: int = 10, max_seconds: float = 3.0,
                    min_seconds: float = MIN_LATENCY_SECONDS, precision: float = LATENCY_PRECISION,
                    prior: Sequence[float] = (), prior_busy: float | None = None) -> dict:
    """Median and p90 wall time of ``run`` (ms): at least ``min_runs`` runs and
    ``min_seconds``, then until the median is known to ``precision``
    (:data:`LATENCY_PRECISION`), ``max_seconds`` or 200 runs; a runtime so slow that
    ``min_runs`` pass ten times ``max_seconds`` stops there (:data:`MIN_SLOW_RUNS`).
    ``prior``: warm runs already timed (ms), counted as this measurement's first (with the
    share of the CPUs others used meanwhile, ``prior_busy``): only the runs they lack are
    made."""
    start = time.perf_counter()
    for i in range(warmup):
        run()
        if i == 0 and time.perf_counter() - start > max_seconds:
            break  # a run longer than the whole budget: one warm-up is enough
    times: list[float] = list(prior)
    others = OthersCpu()
    others.start()
    start = time.perf_counter() - sum(times) / 1e3
    while True:
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
        if _timed_enough(times, time.perf_counter() - start, min_runs, max_seconds, min_seconds, precision):
            others.stop()
            shares = [s for s in (others.share(), prior_busy if prior else None) if s is not None]
            return latency_of(times, max(shares) if shares else None)


class RunTimes:
    """Wall times of runs a build makes anyway (the reference's and the bundle's over the
    validation inputs), by input shapes, the first at each shape its warm-up: where they
    time a latency as well as :func:`measure_latency` would, it is not timed again
    (LORE's host int8 build had spent 11 s of 118 timing ONNX Runtime and the bundle just
    after running both on its 6 validation inputs)."""

    def __init__(self):
        self.times: dict[tuple, list[float]] = {}
        self.others: dict[tuple, OthersCpu] = {}

    @staticmethod
    def _shapes(feeds: Mapping[str, Any]) -> tuple:
        return tuple(sorted((k, np.shape(v)) for k, v in feeds.items()))

    def run(self, fn: Callable[[Any], Any], feeds: Mapping[str, Any]) -> Any:
        shapes = self._shapes(feeds)
        others = self.others.setdefault(shapes, OthersCpu())
        others.start()
        start = time.perf_counter()
        out = fn(feeds)
        self.times.setdefault(shapes, []).append((time.perf_counter() - start) * 1e3)
        others.stop()
        return out

    def latency(self, feeds: Mapping[str, Any], max_seconds: float, min_runs: int = 10) -> dict | None:
        """The latency of the warm runs at ``feeds``' shapes, if :func:`measure_latency`
        would have stopped at as many (its ``min_seconds`` and precision), else None."""
        times = self.times.get(self._shapes(feeds), [])[1:]
        if not times or not _timed_enough(times, sum(times) / 1e3, min_runs, max_seconds, MIN_LATENCY_SECONDS,
                                          LATENCY_PRECISION):
            return None
        return latency_of(times, self.others[self._shapes(feeds)].share()) | {"timed": "its runs on the build's inputs"}

    def latency_or_measured(self, fn: Callable[[Any], Any], feeds: Mapping[str, Any], max_seconds: float) -> dict:
        """:meth:`latency`, or where the runs made are not enough, ``fn`` on ``feeds`` timed
        for the runs they lack (:func:`measure_latency` from the warm runs made, one warm-up:
        it has run them already). DNSMOS's host int8 build (160 ms a run) had timed 10 runs
        of the bundle and 10 of ONNX Runtime after 5 warm runs of each on its validation
        inputs: 1.7 s of 52 spent again."""
        shapes = self._shapes(feeds)
        return self.latency(feeds, max_seconds) or measure_latency(
            lambda: fn(feeds), warmup=1, max_seconds=max_seconds, prior=self.times.get(shapes, [])[1:],
            prior_busy=self.others[shapes].share() if shapes in self.others else None)


def latency_of(times: Sequence[float], busy_elsewhere: float | None = None) -> dict:
    """The latency record of runs taking ``times`` (ms): median, p90, how many, and the
    share of this process's CPUs other processes used meanwhile (:mod:`deploycomp.cpu_load`)."""
    times = sorted(times)
    return {
        "median_ms": round(statistics.median(times), 4),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 4),
        "runs": len(times),
        "kind": "measured",
        **({} if busy_elsewhere is None else {"busy_elsewhere": busy_elsewhere}),
    }


def speedup_of(reference_ms: float, bundle_ms: float) -> float:
    """reference time / bundle time to four significant figures (three decimals had made
    968x slower 0.001, said "1000.00x slower", and over 2000x slower 0.0)."""
    return float(f"{reference_ms / bundle_ms:.4g}")


UNSTEADY_SPREAD = 2.0
"""A latency record whose p90 is this many times its median was timed while something else
ran (another build, a test run): its median, and a speedup from it, say little (a probe's
O-Net bundle read "22x slower than ONNX Runtime" on a busy machine, p90 4x its median)."""


def unsteady(*records: Mapping[str, Any] | None) -> str | None:
    """Where any latency record is unsteady (:data:`UNSTEADY_SPREAD`) or was timed while
    other processes kept this machine busy (:func:`deploycomp.cpu_load.busy_note`): a note
    saying so."""
    if busy := busy_note(*records):
        return busy
    spread = max((r["p90_ms"] / r["median_ms"] for r in records if r and r.get("median_ms")), default=0.0)
    if spread < UNSTEADY_SPREAD:
        return None
    return f"timing unsteady (a p90 {spread:.1f}x its median): the machine was busy? build again to time it"


def reference_label(measured: Mapping[str, Any]) -> str:
    """What a host bundle's latency was measured against (``reference_latency.against``;
    a manifest from before it: ONNX Runtime fp32)."""
    return (measured.get("reference_latency") or {}).get("against", "ONNX Runtime fp32")


def describe_speedup(speedup: float, against: str = "ONNX Runtime fp32") -> str:
    """The one way latency against a reference is said, everywhere (CLI, report, docs):
    ``speedup`` is reference time / bundle time, so "1.19x faster", "1.63x slower"."""
    if speedup >= 1:
        return f"{speedup:.2f}x faster than {against} on this machine"
    if speedup <= 0:  # (a manifest from before :func:`speedup_of`: 0.0 for over 2000x slower)
        return f"over 2000x slower than {against} on this machine"
    return f"{1 / speedup:.2f}x slower than {against} on this machine"


def _rss_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_freed_memory() -> None:
    """Hand memory the process has freed back to the system (Python's garbage, then
    glibc's free lists), so that what a load takes next shows as growth: freed pages stay
    resident otherwise, and a load that reuses them grows nothing (an int8 build had loaded
    its search's candidates before the bundle's, and measured 24 MB for a bundle that takes
    189 MB in a fresh process)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measured as it stands
        pass


def peak_rss_growth(fn: Callable[[], Any]) -> tuple[Any, float | None]:
    """Run ``fn``; return its result and how far peak RSS rose above the start (MB), the
    memory the process had freed handed back first (:func:`_release_freed_memory`)."""
    _release_freed_memory()
    base = _rss_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        resettable = True
    except OSError:
        resettable = False
    result = fn()
    peak = _rss_kb("VmHWM")
    if not resettable or base is None or peak is None:
        return result, None
    return result, round(max(0, peak - base) / 1024, 2)


@dataclass
class BudgetCheck:
    name: str
    value: float | None
    limit: float
    ok: bool
    unit: str = ""
    detail: str = ""
    measured: bool = False
    """Checked against a timing or memory measurement, which varies run to run."""
    fidelity: bool = False
    """A fidelity criterion (outputs against fp32), not a size, memory or latency budget."""
    widened_from: float | None = None
    """The budget's own limit, where a floor (:func:`fidelity_met`) widened it."""
    at_most: bool = False
    """The value must stay at or under the limit (an error), not reach it (a cosine)."""

    def describe(self) -> str:
        was = f" (widened from {self.widened_from:g}{self.unit})" if self.widened_from is not None else ""
        if self.ok:
            return f"{self.name}: {self.value:g}{self.unit} within {self.limit:g}{self.unit}{was}"
        return f"{self.name}: {self.value:g}{self.unit} misses the budget {self.limit:g}{self.unit}{was}{self.detail}"


def _at_least(name: str, value: float, limit: float) -> BudgetCheck:
    ok = value >= limit
    return BudgetCheck(name, value, limit, ok, detail="" if ok else f" by {limit - value:.3g}")


def _at_most(name: str, value: float, limit: float, unit: str, measured: bool = False) -> BudgetCheck:
    ok = value <= limit
    return BudgetCheck(name, value, limit, ok, unit, "" if ok else f" by {value - limit:.3g}{unit}", measured,
                       at_most=True)


@dataclass
class ValidationSummary:
    checks: list[BudgetCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[BudgetCheck]:
        return [c for c in self.checks if not c.ok]

    def to_json(self, measured: bool = False) -> list[dict]:
        return [
            {"budget": c.name, "value": c.value, "limit": c.limit, "ok": c.ok, "unit": c.unit}
            | ({"budget_limit": c.widened_from} if c.widened_from is not None else {})
            | ({"at_most": True} if c.at_most else {})
            for c in self.checks
            if c.measured == measured
        ]


def _fidelity_checks(metrics: Mapping[str, Mapping[str, float]], fidelity: Any,
                     margin: float = 1.0, floor: Mapping[str, Mapping[str, float]] | None = None) -> list[BudgetCheck]:
    """A check per output and fidelity criterion the budget sets (cosine on informative
    samples, the noise bound on uninformative ones, finiteness, and relative error and
    top-1 agreement where set), each allowance shrunk to ``margin`` of itself. ``floor``:
    another runtime's metrics on the same samples (:func:`fidelity_met`); where its value
    for a criterion is worse than the limit, that value is the limit."""
    def at_least(limit: float) -> float:  # the limit itself at margin 1, not 1 - (1 - limit)
        return limit if margin == 1 else 1 - (1 - limit) * margin

    def least(name: str, kind: str, value: float, limit: float, key: str) -> BudgetCheck:
        floor_value = (floor or {}).get(name, {}).get(key)
        if floor_value is None or not floor_value < limit:
            return _at_least(f"{kind}[{name}]", value, limit)
        return replace(_at_least(f"{kind}[{name}]", value, floor_value), widened_from=limit)

    def most(name: str, kind: str, value: float, limit: float, key: str) -> BudgetCheck:
        floor_value = (floor or {}).get(name, {}).get(key)
        if floor_value is None or not floor_value > limit:
            return _at_most(f"{kind}[{name}]", value, limit, "")
        return replace(_at_most(f"{kind}[{name}]", value, floor_value, ""), widened_from=limit)

    checks = []
    for name, m in metrics.items():
        if m.get("shape_mismatch"):
            seen = m["shape_mismatch"]
            checks.append(BudgetCheck(f"shape[{name}]", seen["samples"], 0, False, " samples of another shape",
                                      f" (the bundle gives {seen['bundle']} where ONNX Runtime fp32 gives "
                                      f"{seen['reference']}: a size the model computes from its data)", at_most=True))
        if m.get("nonfinite"):
            checks.append(BudgetCheck(f"finite[{name}]", m["nonfinite"], 0, False, " NaN/Inf values",
                                      " where ONNX Runtime fp32 is finite (out of the precision's range?)",
                                      at_most=True))
        quiet = m.get("uninformative_samples", 0)
        if "text" in m:  # a CTC recognizer's scores: the text they decode to, not their cosine
            from deploycomp.ctc import text_limit

            if "text_similarity" in m:
                checks.append(least(name, "text", m["text_similarity"], at_least(text_limit(fidelity)),
                                    "text_similarity"))
        elif quiet < m.get("samples", 1) or not quiet:
            kind = "agreement" if "agreement" in m else "cosine"
            checks.append(least(name, kind, m["cosine"], at_least(fidelity.min_cosine), "cosine"))
        if quiet and "text" not in m:
            checks.append(most(name, "quiet_error", m["quiet_error"], noise_allowance(fidelity.min_cosine) * margin,
                               "quiet_error"))
        if fidelity.max_rel_error is not None and "max_rel_error" in m:
            checks.append(most(name, "max_rel_error", m["max_rel_error"], fidelity.max_rel_error * margin,
                               "max_rel_error"))
        if "box_iou" in m:
            from deploycomp.boxes import box_iou_limit

            checks.append(least(name, "box_iou", m["box_iou"], at_least(box_iou_limit(fidelity)), "box_iou"))
        if "mask_iou" in m or "mask_regions" in m:  # (a mask's pixels, and its regions: one budget)
            from deploycomp.masks import mask_iou_limit

            for key in ("mask_iou", "mask_regions"):
                if key in m:
                    checks.append(least(name, key, m[key], at_least(mask_iou_limit(fidelity)), key))
        if fidelity.min_top1_agreement is not None and "top1_agreement" in m:
            checks.append(least(name, "top1", m["top1_agreement"], at_least(fidelity.min_top1_agreement),
                                "top1_agreement"))
    for c in checks:
        c.fidelity = True
    return checks


def fidelity_failures(metrics: Mapping[str, Mapping[str, float]], fidelity: Any, margin: float = 1.0,
                      floor: Mapping[str, Mapping[str, float]] | None = None) -> list[BudgetCheck]:
    """The fidelity criteria ``metrics`` miss (see :func:`fidelity_met`)."""
    return [c for c in _fidelity_checks(metrics, fidelity, margin, floor) if not c.ok]


def budget_shortfall(metrics: Mapping[str, Mapping[str, float]], fidelity: Any) -> float:
    """How far ``metrics`` are from the fidelity budget: the worst criterion's error as a
    multiple of its allowance (at most 1 where it is met; infinite for NaN/Inf). A
    cosine or an agreement counts ``1 - value`` against ``1 - limit``, an error bound its
    value against its limit. What compares two misses when cosine is blind to them: a
    single number's cosine is its sign (a regressor's one output, judged by the bound)."""
    worst = 0.0
    for c in _fidelity_checks(metrics, fidelity):
        if c.at_most:
            ratio = c.value / c.limit if c.limit > 0 else (0.0 if c.value <= 0 else math.inf)
        else:
            ratio = (1 - c.value) / (1 - c.limit) if c.limit < 1 else (0.0 if c.value >= 1 else math.inf)
        worst = max(worst, ratio)
    return worst


def decided_failures(metrics: Mapping[str, Mapping[str, float]], fidelity: Any, margin: float = 1.0) -> frozenset[str]:
    """The outputs that miss the budget already on a part of the samples, compared on the
    whole set's scales (:func:`compare_outputs`): by the criteria that are a worst case over
    samples (cosine, the noise bound, relative error, finiteness), which more samples can
    only make worse; top-1 agreement, an integer output's agreement and a text's similarity
    (:mod:`deploycomp.ctc`) are rates and wait for every sample."""
    worst_case = {name: {k: v for k, v in m.items() if k not in ("top1_agreement", "text_similarity")}
                  for name, m in metrics.items() if "agreement" not in m}
    return frozenset(name for name, m in worst_case.items() if not fidelity_met({name: m}, fidelity, margin))


def with_user_limits(fidelity: Any, opts: Any) -> Any:
    """A profile's fidelity budget with the limits a build's options set (``--min-cosine``,
    ``--min-top1``, ``--min-box-iou``, ``--min-mask-iou``, ``--min-text-similarity``) in place of its own: for the
    precision built, and for an alternative a build quotes (an int8 miss's "fp16 meets its
    budget" had been judged at the profile's 0.999 where the user asked 0.99999)."""
    update = {k: getattr(opts, k) for k in ("min_cosine", "min_top1", "min_box_iou", "min_mask_iou",
                                            "min_text_similarity") if getattr(opts, k, None) is not None}
    if "min_top1" in update:
        update["min_top1_agreement"] = update.pop("min_top1")
    return fidelity.model_copy(update=update) if update else fidelity


def fidelity_met(metrics: Mapping[str, Mapping[str, float]], fidelity: Any, margin: float = 1.0,
                 floor: Mapping[str, Mapping[str, float]] | None = None) -> bool:
    """Whether outputs meet every fidelity criterion the budget sets, each allowance
    shrunk to ``margin`` of itself (the int8 search judges candidates against three
    quarters of the budget). The same checks as :func:`summarize`: a search that checked
    cosine alone kept layers int8 that then failed a profile's top-1 budget at validation.

    ``floor``: the metrics of the model's own runtime against the same reference on the
    same samples, where that runtime is itself no exact implementation of it (a model that
    arrives int8: ONNX Runtime's fused int8 kernels round otherwise than its QDQ as ONNX
    writes it). A criterion that runtime misses is held to what it reaches instead: a
    build no further from the model than the runtime its authors ship is not a miss
    (finiteness is never widened)."""
    return all(c.ok for c in _fidelity_checks(metrics, fidelity, margin, floor))


def summarize(
    metrics: Mapping[str, Mapping[str, float]],
    fidelity: Any,
    artifact_mb: float,
    memory_mb: float | None,
    latency_ms: float | None,
    budgets: Any,
    latency_measured: bool = False,
    floor: Mapping[str, Mapping[str, float]] | None = None,
    memory_at_max: Mapping[str, Any] | None = None,
) -> ValidationSummary:
    """Every budget the profile sets, checked against what validation found (``floor``:
    see :func:`fidelity_met`; ``memory_at_max``: the peak memory (``mb``) with
    ``--profile``d inputs at their MAX (``shapes``), held to the memory budget too)."""
    summary = ValidationSummary()
    # judged unrounded, as the int8 and fp16 searches judge: a cosine of 0.9999897 shown as
    # 0.99999 had passed a budget of 0.99999 that the search's own check said it missed
    summary.checks += _fidelity_checks(metrics, fidelity, floor=floor)
    if budgets.max_artifact_mb is not None:
        summary.checks.append(_at_most("artifact_size", round(artifact_mb, 3), budgets.max_artifact_mb, " MB"))
    if budgets.max_memory_mb is not None and memory_mb is not None:
        summary.checks.append(_at_most("peak_memory", memory_mb, budgets.max_memory_mb, " MB", measured=True))
    if budgets.max_memory_mb is not None and memory_at_max and memory_at_max["mb"] is not None:
        check = _at_most("peak_memory_at_profile_max", memory_at_max["mb"], budgets.max_memory_mb, " MB", measured=True)
        if not check.ok:
            shapes = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in memory_at_max["shapes"].items())
            check.detail += f" (inputs at their MAX: {shapes})"
        summary.checks.append(check)
    if budgets.max_latency_ms is not None and latency_ms is not None:
        summary.checks.append(_at_most("latency", latency_ms, budgets.max_latency_ms, " ms", measured=latency_measured))
    return summary
