"""A dense map judged by the mask an application cuts from it, not by cosine.

Cosine over a per-pixel map is dominated by the pixels far from any decision: a
salient-object model's int8 build flipped 8-22% of its pixels across 0.5 at cosine 0.984
(U2-Net-p, host). ``--judge-mask`` names the map and how it is read:

- ``NAME>T``: a probability or alpha map; the mask is where it exceeds ``T`` (every
  element, whatever the channels: a multi-label map's masks are judged together);
- ``NAME``: a class map; each pixel's class is the largest entry on the channel axis
  (:func:`class_axis`), or the value itself where the output holds integers (an
  ``ArgMax`` in the graph). The classes are judged by their mean IoU, the one that
  covers most of fp32's map (its background) left out where others are there.

Each sample is judged by the IoU of the bundle's mask with fp32's (for classes, the mean
over the classes either side gives a noticeable area); ``mask_iou`` is the worst sample's,
held to the precision's budget (:func:`mask_iou_limit`, the same as a box's). An area under
:data:`SPECK` of the map on both sides is a speck, not a mask: a text detector's map of a
photo without text, where fp32 finds 3 pixels and the bundle 5, is not judged by it.

A thresholded map is also judged by its regions (``mask_regions``, held to the same
budget): an application cuts boxes from the mask's connected regions (a text detector's
words and lines), and two words merged or one split moves few pixels. Each sample's
regions (8-connected, in each 2-D plane of the map) are matched one to one where their
IoU is 0.5 or more; the sample's score is the F1 of those matches. PP-OCRv4 det's int8
bundles kept mask IoU 0.95-0.97 while RapidOCR read other lines on 13-16 of 27 pages
(words merged or split, lines made up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from deploycomp.validate import channel_axis, iou_limit

__all__ = ["MaskRule", "SPECK", "check_masks", "class_axis", "describe_mask", "describe_suggestion", "mask_iou_limit",
           "mask_metrics", "parse_masks", "softmax_over", "suggest_mask"]

SPECK = 1e-3
"""A mask (or a class's area) smaller than this share of the map's elements on both sides
is not judged: its IoU is that of a few pixels."""


@dataclass(frozen=True)
class MaskRule:
    output: str
    threshold: float | None = None
    """Where the map exceeds it, the mask; None: a class map."""
    dilate: int = 0
    """The side of the square the application dilates the mask by before it cuts regions
    (RapidOCR: 2, ``use_dilation``), as OpenCV's ``dilate`` with its centred anchor; 0: none."""

    def text(self) -> str:
        if self.threshold is None:
            return self.output
        return f"{self.output}>{self.threshold:g}" + (f",dilate={self.dilate}" if self.dilate else "")


def parse_masks(texts) -> dict[str, MaskRule]:
    """``--judge-mask NAME>T[,dilate=K]`` or ``--judge-mask NAME`` (repeatable) -> ``{output: rule}``."""
    rules: dict[str, MaskRule] = {}
    for text in texts or ():
        text = str(text).strip()
        body, comma, option = text.rpartition(",") if ",dilate=" in text.replace(" ", "") else (text, "", "")
        name, gt, threshold = body.rpartition(">") if ">" in body else (body, "", "")
        name, value, dilate = name.strip(), None, 0
        if gt:
            try:
                value = float(threshold)
            except ValueError:
                value = None
        if comma:
            try:
                dilate = int(option.partition("=")[2])
            except ValueError:
                dilate = -1
        if not name or (gt and (value is None or not np.isfinite(value))) or dilate < 0 or (comma and not gt):
            raise ValueError(f"--judge-mask {text!r}: write NAME>THRESHOLD (a probability map, e.g. mask>0.5; "
                             "NAME>THRESHOLD,dilate=K where the application dilates it by a K x K square) "
                             "or NAME (a class map)")
        if name in rules:
            raise ValueError(f"--judge-mask {name}: given twice; give one rule per output")
        rules[name] = MaskRule(name, value, dilate)
    return rules


def class_axis(shape: Sequence[int]) -> int | None:
    """The axis of a class map's per-class scores: 1 (``[N, C, H, W]``) unless the last is
    the shorter (``[N, H, W, C]``); None for a map of fewer than 3 axes or one class."""
    if len(shape) < 3:
        return None
    axis = 1 if shape[1] <= shape[-1] else len(shape) - 1
    return axis if shape[axis] >= 2 else None


def check_masks(rules: Mapping[str, MaskRule], outputs: Mapping[str, tuple[Sequence, str]]) -> None:
    """Raise ValueError naming the first rule whose output does not exist or cannot be
    read so (``outputs``: name -> (shape, dtype))."""
    for name, rule in rules.items():
        said = f"--judge-mask {rule.text()}"
        if name not in outputs:
            raise ValueError(f"{said}: the model has no output {name!r} (outputs: {', '.join(list(outputs)[:8])})")
        shape, dtype = outputs[name]
        if rule.threshold is None and not dtype.startswith(("int", "uint")):
            if not all(isinstance(d, int) for d in shape) or class_axis(shape) is None:
                raise ValueError(f"{said}: {name} (shape {list(shape)}) has no axis of class scores to take the "
                                 "largest of (1, or the last: [N, C, H, W] or [N, H, W, C]); a probability map "
                                 f"is judged as {name}>THRESHOLD")


def dilated(mask: np.ndarray, side: int) -> np.ndarray:
    """``mask`` dilated in each 2-D plane (:func:`_planes`' axes) by a ``side`` x ``side``
    square anchored at its centre, as OpenCV's ``cv2.dilate`` (a pixel is set where any
    pixel of the square from ``side // 2`` before it is)."""
    if side <= 1 or mask.ndim < 2:
        return mask
    last = mask.ndim >= 3 and mask.shape[-1] <= 16 < mask.shape[-2]  # (channels last)
    planes = np.moveaxis(mask, -1, 0) if last else mask
    h, w = planes.shape[-2:]
    anchor = side // 2
    padded = np.pad(planes, [(0, 0)] * (planes.ndim - 2) + [(anchor, side - 1 - anchor)] * 2)
    out = np.zeros_like(planes)
    for dy in range(side):
        for dx in range(side):
            out |= padded[..., dy:dy + h, dx:dx + w]
    return np.moveaxis(out, 0, -1) if last else out


def _labels(values: np.ndarray, rule: MaskRule) -> np.ndarray:
    values = np.asarray(values)
    if rule.threshold is not None:
        return dilated(values > rule.threshold, rule.dilate)
    if np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_:
        return values
    return values.argmax(axis=class_axis(values.shape))


def _sample_iou(r: np.ndarray, g: np.ndarray, binary: bool) -> float | None:
    """IoU of two masks (a binary mask's foreground), or the mean over the classes either
    side covers by :data:`SPECK` of the map but the one that covers most of fp32's (the
    background, as a rule: near 1 whatever happens to the rest, it had halved what a
    nucleus segmenter's int8 lost: nuclei 0.37, the mean with the background 0.68),
    which is judged only where nothing else is; None where nothing is that large."""
    least = SPECK * r.size
    if binary:
        union = int(np.count_nonzero(r | g))
        return None if union <= least else int(np.count_nonzero(r & g)) / union
    classes, counts = np.unique(np.concatenate([r.reshape(-1), g.reshape(-1)]), return_counts=True)
    present, area = np.unique(r, return_counts=True)
    background = present[area.argmax()]
    ious = {}
    for c, n in zip(classes, counts):
        if n <= least:
            continue
        a, b = r == c, g == c
        ious[c] = int(np.count_nonzero(a & b)) / int(np.count_nonzero(a | b))
    if len(ious) > 1:
        ious.pop(background, None)
    return float(np.mean(list(ious.values()))) if ious else None


REGION = 1e-4
"""A region smaller than this share of its plane on both sides is not judged (a few pixels
of noise at the threshold); a short word's region on a 640 x 640 text map is ~150 pixels."""

REGION_IOU = 0.5
"""Two regions are the same region where their IoU reaches this (then the match is one to one)."""

MAX_RUNS = 20_000
"""A plane whose mask breaks into more row runs than this is noise at the threshold, not
regions an application cuts (labelling a random map's 640 x 640 plane took 0.2 s): its
regions are not judged."""


def _planes(mask: np.ndarray) -> np.ndarray | None:
    """The mask as 2-D planes ``[k, H, W]``: its last two axes, or, channels last (the last
    axis 16 or fewer, the one before longer), the two before; None under 2 axes."""
    if mask.ndim < 2:
        return None
    if mask.ndim >= 3 and mask.shape[-1] <= 16 < mask.shape[-2]:
        mask = np.moveaxis(mask, -1, 0)
    return mask.reshape(-1, *mask.shape[-2:])


def _regions(plane: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The 8-connected regions of a 2-D boolean plane: (labels, 0 outside and 1..n, n), or
    None past :data:`MAX_RUNS`. Runs of each row are joined with the runs of the row above
    they touch (union-find over runs: a text map of a page has a few thousand)."""
    h, w = plane.shape
    edges = np.diff(np.pad(plane, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    if len(rows) > MAX_RUNS:
        return None
    ends = np.nonzero(edges == -1)[1]  # (exclusive; paired with the starts, row by row)
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(h + 1))
    for y in range(1, h):
        i, i_end, j, j_end = first[y - 1], first[y], first[y], first[y + 1]
        while i < i_end and j < j_end:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # touching, diagonals too
                parent[root(i)] = root(j)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    labels = np.zeros((h, w), np.int32)
    ids: dict[int, int] = {}
    for k, (y, a, b) in enumerate(zip(rows, starts, ends)):
        labels[y, a:b] = ids.setdefault(root(k), len(ids) + 1)
    return labels, len(ids)


def _region_f1(r: np.ndarray, g: np.ndarray) -> float | None:
    """The F1 of one-to-one region matches (:data:`REGION_IOU`) between two boolean masks,
    over their planes; None where neither has a region of :data:`REGION` of its plane."""
    planes_r, planes_g = _planes(r), _planes(g)
    if planes_r is None:
        return None
    matched = counted_r = counted_g = 0
    for pr, pg in zip(planes_r, planes_g):
        if (found_r := _regions(pr)) is None or (found_g := _regions(pg)) is None:
            return None
        (lr, nr), (lg, ng) = found_r, found_g
        least = REGION * pr.size
        area_r, area_g = np.bincount(lr.ravel(), minlength=nr + 1), np.bincount(lg.ravel(), minlength=ng + 1)
        big_r, big_g = area_r[1:] >= least, area_g[1:] >= least
        counted_r, counted_g = counted_r + int(big_r.sum()), counted_g + int(big_g.sum())
        if not big_r.any() or not big_g.any():
            continue
        inter = np.bincount(lr.ravel().astype(np.int64) * (ng + 1) + lg.ravel(),
                            minlength=(nr + 1) * (ng + 1)).reshape(nr + 1, ng + 1)[1:, 1:]
        iou = inter / (area_r[1:, None] + area_g[None, 1:] - inter)
        iou = iou[big_r][:, big_g]
        matched += int(np.count_nonzero(iou.max(axis=1) >= REGION_IOU))
    if not counted_r and not counted_g:
        return None
    return 2 * matched / (counted_r + counted_g)


def mask_metrics(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
                 rule: MaskRule) -> dict[str, Any]:
    """``mask_iou`` (the worst judged sample's; absent where none is judged), for a
    thresholded map ``mask_regions`` (the worst sample's region F1), and ``mask``: the
    rule, the mean IoU, the largest share of elements on the other side of the decision
    (``flipped``: of the threshold, or another class) and the samples judged."""
    ious, regions, flipped = [], [], 0.0
    for ref, got in zip(refs, gots):
        r, g = np.asarray(ref[rule.output]), np.asarray(got.get(rule.output))
        if r.shape != g.shape or not r.size:
            continue  # (judged as a shape mismatch)
        a, b = _labels(r, rule), _labels(g, rule)
        flipped = max(flipped, float(np.count_nonzero(a != b)) / a.size)
        if (iou := _sample_iou(a, b, rule.threshold is not None)) is not None:
            ious.append(iou)
        if rule.threshold is not None and (f1 := _region_f1(a, b)) is not None:
            regions.append(f1)
    record = {"rule": rule.text(), "read_as": "classes" if rule.threshold is None else "threshold",
              "flipped": round(flipped, 6), "samples_judged": len(ious)}
    out: dict[str, Any] = {"mask": record}
    if regions:
        record["mean_region_f1"] = float(np.mean(regions))
        out["mask_regions"] = min(regions)
    if ious:
        record["mean_iou"] = float(np.mean(ious))
        out["mask_iou"] = min(ious)
    return out


def mask_iou_limit(fidelity: Any) -> float:
    """The budget's ``min_mask_iou``, or the one its cosine implies, as a box's (:func:`deploycomp.validate.iou_limit`)."""
    return iou_limit(fidelity, "min_mask_iou")


def describe_mask(metrics: Mapping[str, Any]) -> str | None:
    """How an output judged by its mask is said (summary, report)."""
    record = metrics.get("mask")
    if not record:
        return None
    what = "classes" if record["read_as"] == "classes" else "mask"
    if "mask_iou" not in metrics:
        return (f"{what} {record['rule']}: NO sample has a {what} of {SPECK:.1%} of the map on either side: "
                "not judged")
    regions = (f"; its regions matched one to one at F1 {metrics['mask_regions']:.3f} (worst sample; words "
               "merged or split, regions lost or made up lower it)" if "mask_regions" in metrics else "")
    return (f"{what} IoU {metrics['mask_iou']:.3f} (worst sample; mean {record['mean_iou']:.3f}; up to "
            f"{record['flipped']:.1%} of elements flipped){regions}")


MIN_SIDE = 32
"""A suggested mask's map has at least this many elements on each of its last two axes."""


def suggest_mask(name: str, values: Sequence[np.ndarray]) -> MaskRule | None:
    """A ``--judge-mask NAME>0.5`` rule for an output that looks like a probability map on
    every sample, ``--judge-mask NAME`` for one that looks like a per-pixel softmax
    (:func:`_suggest_classes`), or None. A probability map: floating point, ``[N, H, W]``,
    ``[N, 1, H, W]`` or one of a few channels (:func:`deploycomp.validate.channel_axis`:
    CRAFT's text and link maps) with H and W at least :data:`MIN_SIDE`, every value within
    [-0.1, 1.1] (a regressed heatmap overshoots a little), most of them decided (under a
    quarter between 0.1 and 0.9 on every sample: a grey image or a normalised depth map is
    no mask), and on some sample more than a speck (:data:`SPECK`) of it over 0.5 and
    more than a speck under. Cosine barely sees its edges move (the summary names the
    rule; the threshold is the application's)."""
    arrays = [np.asarray(v) for v in values]
    if not arrays or any(a.shape != arrays[0].shape or not np.issubdtype(a.dtype, np.floating) for a in arrays):
        return None
    shape = arrays[0].shape
    axis = channel_axis(shape) if len(shape) == 4 else None
    if not (len(shape) == 3 or (len(shape) == 4 and (shape[1] == 1 or axis is not None))):
        return None
    channels = axis if axis is not None else 1 if len(shape) == 4 else None  # ([N, H, W]: none)
    if min(d for i, d in enumerate(shape) if i not in (0, channels)) < MIN_SIDE:
        return None
    if axis is not None and softmax_over(arrays, axis):
        return _suggest_classes(name, arrays, axis)
    decided = False
    for a in arrays:
        if not np.all(np.isfinite(a)) or float(a.min()) < -0.1 or float(a.max()) > 1.1:
            return None
        if np.count_nonzero((a > 0.1) & (a < 0.9)) > a.size / 4:
            return None
        share = float(np.count_nonzero(a > 0.5)) / a.size
        decided = decided or SPECK < share < 1 - SPECK
    return MaskRule(name, 0.5) if decided else None


def softmax_over(arrays: Sequence[np.ndarray], axis: int) -> bool:
    """Every value within [0, 1] and the entries along ``axis`` summing to 1 everywhere (a
    per-pixel softmax's channels, a CTC recognizer's classes at each step)."""
    return all(np.all(np.isfinite(a)) and float(a.min()) >= 0 and float(a.max()) <= 1
               and np.allclose(a.sum(axis=axis, dtype=np.float64), 1.0, atol=1e-3) for a in arrays)


def _suggest_classes(name: str, arrays: list[np.ndarray], axis: int) -> MaskRule | None:
    """``--judge-mask NAME`` for a per-pixel softmax (:func:`softmax_over`) whose argmax gives
    two classes more than a speck on some sample: a segmenter's class map."""
    decided = False
    for a in arrays:
        counts = np.bincount(a.argmax(axis=axis).reshape(-1), minlength=a.shape[axis])
        decided = decided or np.count_nonzero(counts > SPECK * counts.sum()) >= 2
    return MaskRule(name) if decided else None


def describe_suggestion(rule: str) -> str:
    """How a suggested ``--judge-mask`` rule is said (summary, report), after the output's name."""
    if ">" in rule:
        return (f'looks like a probability map, and cosine barely sees its edges move: --judge-mask "{rule}" judges '
                "the mask cut from it (at your application's threshold)")
    return (f'looks like a per-pixel softmax, and cosine barely sees a pixel change class: --judge-mask "{rule}" '
            "judges the classes it gives")
