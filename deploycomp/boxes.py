"""A detector's boxes judged by how they overlap fp32's, not by cosine.

Cosine over a detection output is dominated by its largest numbers, the boxes' pixel
coordinates: a barcode detector's int8 TFLite build moved boxes by up to 28 px (mean IoU
with fp32's 0.82) at cosine 0.9998 over the boxes it found. ``--judge-boxes`` names the
output's box coordinates and the score that makes a row a detection; each sample is then
judged by the mean, over every detection either side makes, of its best IoU with the
other side's detections of the same class (0 where it has none: a detection lost or
made up counts in full). The worst sample's mean is ``box_iou``, held to the precision's
budget (:func:`box_iou_limit`).

Each side's detections are first reduced as an application reduces them, by greedy NMS
per class (:data:`NMS_IOU`): a dense head passes the threshold on a dozen anchors per
object, and matched row by row, a box whose top anchor changed class in int8 still found
a neighbouring anchor of the old class (a layout detector's TensorRT int8: 1 row missed of
619, mean IoU 0.98, where its package's decoding saw 4 of 67 boxes change class).

A detection near the threshold may fall just under it on the other side (0.26 against
0.24): a row of the other side under the threshold is still the same detection where it
scores within half the threshold of it, judged by its box; its score is cosine's to judge
(the output is also judged where the scores pass, as ``--judge-where`` would). One that
falls further (0.6 to 0.2) is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from deploycomp.validate import (entries_shape, entry_axis, escaped, iou_limit, row_entries, score_source, split_rule,
                                 unescaped)

__all__ = ["BoxRule", "FORMATS", "MATCH_IOU", "box_iou_limit", "box_metrics", "check_boxes", "describe_boxes",
           "aligned_rows", "infer_format", "parse_boxes", "suggest_rule"]

FORMATS = ("xyxy", "cxcywh", "xywh")
"""Corners; centre and size (YOLO heads); top-left corner and size (COCO)."""

MATCH_IOU = 0.5
"""A detection whose best overlap on the other side is under this is counted as missed
(by the bundle) or extra (made by the bundle only): the usual threshold of a match."""

NMS_IOU = 0.5
"""Two detections of a class overlapping by more than this are one object, the
higher-scoring kept (greedy NMS; detectors' own decoders use 0.45 to 0.7, and the same
reduction on both sides is what matters)."""

MAX_DETECTIONS = 1000
"""Per sample and side, the most detections NMS keeps (highest scores first): a threshold low enough to pass
every anchor of a dense head would otherwise compare 8400 x 8400 boxes."""


@dataclass(frozen=True)
class BoxRule:
    boxes: str
    """The output holding the boxes."""
    start: int
    """Entry of each row where its four coordinates begin (:func:`deploycomp.validate.entry_axis`)."""
    scores: str
    """What makes a row a detection: an output, ``NAME[K]`` or ``NAME[A:B]`` (the largest
    class score, the classes then matched too)."""
    threshold: float
    fmt: str | None = None
    """One of :data:`FORMATS`; None until inferred from the reference (:func:`infer_format`)."""
    inferred: bool = False
    nms_iou: float = NMS_IOU
    """The overlap past which NMS takes two detections for one (:data:`NMS_IOU` unless the
    rule says ``,nms=X``: the application's own)."""
    agnostic: bool = False
    """NMS across classes (``,agnostic``), as an application that keeps one box per object
    whatever its class does; per class otherwise."""

    def text(self) -> str:
        """The rule as written on the command line (the format as given or inferred)."""
        options = (f",nms={self.nms_iou:g}" if self.nms_iou != NMS_IOU else "") + (",agnostic" if self.agnostic else "")
        return f"{self.boxes}[{self.start}:{self.start + 4}]" + (f"={self.fmt}" if self.fmt else "") + \
            f":{self.scores}>{self.threshold:g}{options}"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.text(), "format": self.fmt, "format_inferred": self.inferred}


def parse_boxes(texts) -> dict[str, BoxRule]:
    """``--judge-boxes BOXES[=FORMAT]:SCORES>T[,nms=X][,agnostic]`` (repeatable) ->
    ``{output: rule}``. BOXES is an output (its first four entries) or ``NAME[A:A+4]``;
    FORMAT one of :data:`FORMATS` (inferred from the reference when omitted); ``nms=X``
    the application's NMS overlap (default :data:`NMS_IOU`), ``agnostic`` its NMS across
    classes."""
    rules: dict[str, BoxRule] = {}
    for text in texts or ():
        text = str(text)
        target, rule = split_rule(escaped(text))
        target, _, fmt = target.partition("=")
        target = unescaped(target)
        scores, gt, threshold = rule.partition(">")
        scores = unescaped(scores)
        threshold, *options = threshold.split(",")
        name, index = score_source(target)
        try:
            value = float(threshold)
        except ValueError:
            value = None
        nms_iou, agnostic, problem = NMS_IOU, False, None
        for option in (o.strip() for o in options):
            key, _, number = option.partition("=")
            if option == "agnostic":
                agnostic = True
            elif key == "nms" and _fraction(number) is not None:
                nms_iou = _fraction(number)
            else:
                problem = f"option {option!r}: write ,nms=IOU (0 to 1) or ,agnostic after the threshold"
        if problem:
            pass
        elif not name or not gt or not scores or value is None or not np.isfinite(value) or value <= 0:
            problem = "write BOXES[=FORMAT]:SCORES>THRESHOLD, e.g. output0[0:4]=cxcywh:output0[4:84]>0.25"
        elif fmt and fmt not in FORMATS:
            problem = f"format {fmt!r} is not one of {', '.join(FORMATS)}"
        elif isinstance(index, int) or (isinstance(index, slice) and index.stop - index.start != 4):
            problem = "the boxes are four entries, NAME[A:A+4] (or NAME alone: entries 0 to 3)"
        if problem:
            raise ValueError(f"--judge-boxes {text!r}: {problem}")
        if name in rules:
            raise ValueError(f"--judge-boxes {name}: given twice; give one rule per output")
        rules[name] = BoxRule(name, index.start if index else 0, scores, value, fmt or None, nms_iou=nms_iou,
                              agnostic=agnostic)
    return rules


def _fraction(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value <= 1 else None


def _rows_shape(shape: tuple) -> tuple[int, int]:
    axis = entry_axis(shape)
    return int(np.prod(shape)) // shape[axis], shape[axis]


def check_boxes(rules: Mapping[str, BoxRule], shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise ValueError naming the first rule whose outputs do not exist, whose boxes do
    not fit the output's entries or whose scores are not one per row of boxes."""
    for name, rule in rules.items():
        said = f"--judge-boxes {rule.text()}"
        source, index = score_source(rule.scores)
        for n in (name, source):
            if n not in shapes:
                raise ValueError(f"{said}: the model has no output {n!r} (outputs: {', '.join(list(shapes)[:8])})")
        shape = tuple(shapes[name])
        if not shape or not all(isinstance(d, int) for d in shape):
            raise ValueError(f"{said}: {name} has no fixed shape ({list(shape)})")
        entries_shape(shape, slice(rule.start, rule.start + 4), f"{said}: {name}")
        rows = _rows_shape(shape)[0]
        score_rows = int(np.prod(entries_shape(tuple(shapes[source]), index, f"{said}: {source}")))
        if score_rows != rows:
            raise ValueError(f"{said}: {rule.scores} gives {score_rows} score(s) for the {rows} rows of boxes in "
                             f"{name} (shape {list(shape)}); name one score per row")


def _rows(values: np.ndarray) -> np.ndarray:
    """An output as rows x entries (entries moved last from :func:`entry_axis`)."""
    values = np.asarray(values)
    axis = entry_axis(values.shape) % values.ndim
    return np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])


def _detections(output: Mapping[str, np.ndarray], rule: BoxRule) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(boxes as rows x 4 in float64, each row's score, each row's class or None)."""
    boxes = _rows(output[rule.boxes])[:, rule.start:rule.start + 4].astype(np.float64)
    source, index = score_source(rule.scores)
    values = np.asarray(output[source])
    classes = None
    if isinstance(index, slice):
        rows = _rows(values)[:, index]
        classes = rows.argmax(axis=1)
        scores = rows.max(axis=1)
    else:
        scores = (values if index is None else row_entries(values, index)).reshape(-1)
    return boxes, scores.astype(np.float64), classes


def infer_format(refs: Sequence[Mapping[str, np.ndarray]], rule: BoxRule) -> BoxRule:
    """``rule`` with its format: as given, or ``xyxy`` where every detection of the
    reference has its third entry at least its first and its fourth at least its second
    (corners), otherwise ``cxcywh`` (a centre is rarely left of its width: a YOLO head's
    boxes). ``xywh`` is never inferred; read as ``cxcywh`` it moves each box by half its
    size on both sides alike, which changes an IoU little."""
    if rule.fmt:
        return rule
    corners = True
    for ref in refs:
        boxes, scores, _ = _detections(ref, rule)
        found = boxes[scores > rule.threshold]
        if found.size and (np.any(found[:, 2] < found[:, 0]) or np.any(found[:, 3] < found[:, 1])):
            corners = False
            break
    return replace(rule, fmt="xyxy" if corners else "cxcywh", inferred=True)


def not_corners(refs: Sequence[Mapping[str, np.ndarray]], rule: BoxRule) -> float:
    """The share of the reference's detections (over the rule's threshold) whose third
    entry is below its first or fourth below its second: no corners (:func:`infer_format`)."""
    bad = total = 0
    for ref in refs:
        boxes, scores, _ = _detections(ref, rule)
        found = boxes[scores > rule.threshold]
        total += len(found)
        bad += int(np.count_nonzero((found[:, 2] < found[:, 0]) | (found[:, 3] < found[:, 1]))) if found.size else 0
    return bad / total if total else 0.0


def _corners(boxes: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "xyxy":
        return boxes
    x, y, w, h = boxes.T
    if fmt == "cxcywh":
        x, y = x - w / 2, y - h / 2
    return np.stack([x, y, x + w, y + h], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n x 4 corners) with every box of ``b`` (m x 4): n x m."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda c: np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _kept(found: tuple, floor: float, fmt: str, nms_iou: float = NMS_IOU, agnostic: bool = False) -> np.ndarray:
    """Rows of ``found`` (detections as :func:`_detections` gives them) scoring over
    ``floor`` that greedy NMS keeps (two overlapping by over ``nms_iou`` one object; per
    class where known, unless ``agnostic``), highest score first, at most
    :data:`MAX_DETECTIONS` of them. A row's survival depends on the
    higher-scoring rows only, so the rows kept over a higher floor are these, cut there."""
    scores = found[1]
    rows = np.flatnonzero(scores > floor)
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    if rows.size <= 1:
        return rows
    # (a dense head passes a low floor on thousands of anchors: reduced a few thousand at a time)
    kept: list[np.ndarray] = []
    while rows.size and sum(k.size for k in kept) < MAX_DETECTIONS:
        block, rows = rows[:2048], rows[2048:]
        if kept:
            done = np.concatenate(kept)
            block = block[_overlaps(found, block, found, done, fmt, not agnostic).max(axis=1) <= nms_iou]
        iou = _overlaps(found, block, found, block, fmt, not agnostic)
        alive = np.ones(block.size, bool)
        for i in range(block.size):
            if alive[i]:
                alive[i + 1:] &= iou[i, i + 1:] <= nms_iou
        kept.append(block[alive])
    return np.concatenate(kept)[:MAX_DETECTIONS]


def _overlaps(found: tuple, mine: np.ndarray, other: tuple, theirs: np.ndarray, fmt: str,
              by_class: bool = True) -> np.ndarray:
    """IoU of ``found``'s rows ``mine`` with ``other``'s rows ``theirs`` (detections as
    :func:`_detections` gives them), 0 between rows of different classes where both know
    their classes (and ``by_class``)."""
    iou = _iou(_corners(found[0][mine], fmt), _corners(other[0][theirs], fmt))
    if by_class and found[2] is not None and other[2] is not None:
        iou = np.where(found[2][mine][:, None] == other[2][theirs][None, :], iou, 0.0)
    return iou


def _best_overlaps(found: tuple, mine: np.ndarray, other: tuple, theirs: np.ndarray, threshold: float,
                   fmt: str) -> np.ndarray:
    """For each detection ``mine`` of ``found`` (kept rows scoring over the threshold), its
    best IoU with a row ``theirs`` of ``other`` (kept rows over half the threshold) of the
    same class where classes are known, that passes the threshold or scores within half
    the threshold of this detection (one at 0.26 coming out 0.24 is the same detection)."""
    if not mine.size:
        return np.zeros(0)
    if not theirs.size:
        return np.zeros(mine.size)
    near = (other[1][theirs][None, :] > threshold) | \
        (other[1][theirs][None, :] >= found[1][mine][:, None] - threshold / 2)
    return np.where(near, _overlaps(found, mine, other, theirs, fmt), 0.0).max(axis=1)


def _align_rows(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], rule: BoxRule) -> np.ndarray | None:
    """The bundle's boxes output with its rows in the reference's order and number, where
    the two hold another number of rows (a detector with its NMS in the graph: ``[K, 6]``,
    K what it found), or None where they hold as many (or differ otherwise). Each
    reference row takes the bundle row that overlaps it best (same class where known), if
    by :data:`MATCH_IOU` at least, else zeros: a detection the bundle lost then costs
    cosine, and one it made up is counted by ``box_iou`` (``extra``)."""
    r, g = np.asarray(ref[rule.boxes]), np.asarray(got.get(rule.boxes))
    if r.shape == g.shape or r.ndim != g.ndim or r.ndim < 2:
        return None
    axis = entry_axis(r.shape) % r.ndim
    if r.shape[axis] != g.shape[axis] or r.dtype != g.dtype:
        return None
    rows_axis = axis - 1 if axis == r.ndim - 1 else axis + 1
    if [d for i, d in enumerate(r.shape) if i != rows_axis] != [d for i, d in enumerate(g.shape) if i != rows_axis]:
        return None
    mine, theirs = _detections(ref, rule), _detections(got, rule)
    aligned = np.zeros((mine[0].shape[0], g.shape[axis]), g.dtype)
    if mine[0].shape[0] and theirs[0].shape[0]:
        iou = _overlaps(mine, np.arange(mine[0].shape[0]), theirs, np.arange(theirs[0].shape[0]), rule.fmt)
        best = iou.argmax(axis=1)
        found = iou[np.arange(iou.shape[0]), best] >= MATCH_IOU
        aligned[found] = _rows(g)[best[found]]
    moved = np.moveaxis(r, axis, -1).shape  # the reference's layout, entries last
    return np.moveaxis(aligned.reshape(moved), -1, axis)


def aligned_rows(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
                 rules: Mapping[str, BoxRule]) -> tuple[list[dict], dict[str, int]]:
    """``gots`` with each boxes output of another number of rows than the reference's
    (a detector's NMS in the graph) matched to the reference's rows (:func:`_align_rows`;
    ``rules`` with their formats resolved), and on how many samples each was."""
    aligned: dict[str, int] = {}
    out = [dict(got) for got in gots]
    for ref, got in zip(refs, out):
        for name, rule in rules.items():
            if name in ref and name in got and (rows := _align_rows(ref, got, rule)) is not None:
                got[name] = rows
                aligned[name] = aligned.get(name, 0) + 1
    return out, aligned


def box_metrics(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
                rule: BoxRule) -> dict[str, Any]:
    """``box_iou`` (the worst sample's mean best-IoU over both sides' detections after
    NMS; absent where no sample has a detection) and ``boxes``: the rule, the detections
    each side made, those missed and made up (best IoU under :data:`MATCH_IOU`), the mean
    IoU over every detection, and the samples that had any."""
    fmt = rule.fmt or infer_format(refs, rule).fmt
    per_sample, every = [], []
    counts = {"reference": 0, "bundle": 0, "missed": 0, "extra": 0}
    for ref, got in zip(refs, gots):
        r, g = np.shape(ref[rule.boxes]), np.shape(got.get(rule.boxes))
        if len(r) != len(g) or r[entry_axis(r)] != g[entry_axis(r)]:
            continue  # (judged as a shape mismatch; another number of rows is compared: NMS in the graph)
        mine, theirs = _detections(ref, rule), _detections(got, rule)
        # each side's detections over half the threshold, reduced by NMS once
        ours, others = (_kept(found, rule.threshold / 2, fmt, rule.nms_iou, rule.agnostic) for found in (mine, theirs))
        passing = lambda found, rows: rows[found[1][rows] > rule.threshold]  # noqa: E731
        kept = _best_overlaps(mine, passing(mine, ours), theirs, others, rule.threshold, fmt)
        made = _best_overlaps(theirs, passing(theirs, others), mine, ours, rule.threshold, fmt)
        counts["reference"] += kept.size
        counts["bundle"] += made.size
        counts["missed"] += int(np.count_nonzero(kept < MATCH_IOU))
        counts["extra"] += int(np.count_nonzero(made < MATCH_IOU))
        if kept.size or made.size:
            terms = np.concatenate([kept, made])
            per_sample.append(float(terms.mean()))
            every.append(terms)
    record = {"rule": replace(rule, fmt=fmt).text(), "format": fmt, "format_inferred": not rule.fmt or rule.inferred,
              "nms_iou": rule.nms_iou, "nms": "class-agnostic" if rule.agnostic else "per class", **counts,
              "samples_with_detections": len(per_sample)}
    if not per_sample:
        return {"boxes": record}
    record["mean_iou"] = float(np.concatenate(every).mean())
    return {"box_iou": min(per_sample), "boxes": record}


def box_iou_limit(fidelity: Any) -> float:
    """The budget's ``min_box_iou``, or the one its cosine implies (:func:`deploycomp.validate.iou_limit`)."""
    return iou_limit(fidelity, "min_box_iou")


def describe_boxes(metrics: Mapping[str, Any]) -> str | None:
    """How an output judged by its boxes is said (summary, report)."""
    record = metrics.get("boxes")
    if not record:
        return None
    if "box_iou" not in metrics:
        return f"boxes {record['rule']}: NO row passes the threshold on any sample: the boxes were not judged"
    lost = ", ".join(f"{record[k]} {k}" for k in ("missed", "extra") if record.get(k))
    return (f"box IoU {metrics['box_iou']:.3f} (worst sample; mean {record['mean_iou']:.3f} over "
            f"{record['reference']} detections after NMS, {record['bundle']} in the bundle"
            f"{', ' + lost if lost else ''})")


SUGGEST_THRESHOLD = 0.25
"""The score threshold a suggested rule names (the usual default of YOLO exports)."""

CROWDED = 0.05
"""Where a row's largest class score passes :data:`SUGGEST_THRESHOLD` on more than this
share of the rows, they are not detections: a YOLOX barcode detector's 15 entries after
its box passed on 2,894-5,524 of 8,400 anchors, its objectness entry alone on 0-38."""


def suggest_rule(name: str, values: Sequence[np.ndarray]) -> BoxRule | None:
    """A ``--judge-boxes`` rule for an output that looks like a detector's rows on every
    sample, or None: rank 3, at least 20 rows of 5 to 1024 entries (:func:`entry_axis`),
    the first four not all within [0, 1] (pixel coordinates), then a run of entries that
    all are (scores: one, or a class slice; YOLOv8's ``[1, 84, 8400]``, an NMS-free list's
    ``[1, 300, 6]``), and some row passing :data:`SUGGEST_THRESHOLD`. A probability
    sequence (an OCR line's ``[1, 40, 6625]``) has its first entries within [0, 1] too and
    is no detector. The summary names the rule: cosine barely sees a box move."""
    arrays = [np.asarray(v) for v in values]
    if not arrays or any(a.ndim != 3 or a.shape != arrays[0].shape or not np.issubdtype(a.dtype, np.floating)
                         for a in arrays):
        return None
    rows_count, entries = _rows_shape(arrays[0].shape)
    if not 5 <= entries <= 1024 or rows_count < 20 or rows_count <= entries:
        return None
    axis = entry_axis(arrays[0].shape) % 3

    def entry(first: int, last: int) -> np.ndarray:
        """Entries ``first``..``last - 1`` of every row of every sample, rows x entries (read
        entry by entry: a build's every output passes here, and a feature map's whole
        rows matrix would be a copy of all its samples)."""
        return np.concatenate([np.moveaxis(np.take(a, range(first, last), axis=axis), axis, -1).reshape(-1, last - first)
                               for a in arrays])

    box = entry(0, 4)
    if not np.all(np.isfinite(box)) or float(np.abs(box).max()) <= 1.5:
        return None
    end = 4
    while end < entries:
        column = entry(end, end + 1)
        if not (np.all(np.isfinite(column)) and float(column.min()) >= 0 and float(column.max()) <= 1) \
                or np.all((column == 0) | (column == 1)):  # (a class id of 0 or 1 is no score)
            break
        end += 1
    best = entry(4, end).max(axis=1) if end > 4 else None
    if best is None or float(best.max()) <= SUGGEST_THRESHOLD:
        return None
    scores = f"{name}[4]" if end == 5 else f"{name}[4:{end}]"
    if end > 5 and np.mean(best > SUGGEST_THRESHOLD) > CROWDED:
        # an objectness column, then class scores conditional on it (YOLOX, YOLOv5): the
        # classes pass on thousands of background anchors; objectness alone is the score
        scores = f"{name}[4]"
    return infer_format([{name: a} for a in arrays], BoxRule(name, 0, scores, SUGGEST_THRESHOLD))
