"""A CTC recognizer's output judged by the text it decodes to, not by cosine.

An OCR line recognizer (PP-OCR's rec, a captcha reader) or a CTC speech model gives a score
per time step and class; the application takes each step's best class, merges repeats and
drops the blank (greedy CTC decoding) and reads the text. Cosine over the scores judges
neither way round: an int8 PP-OCRv5 rec emitted a character one step earlier, the same
text, and missed 0.98; another lost a character where fp32 itself was unsure and met it.
``--judge-ctc`` names the output and how it is read:

- ``NAME``: class scores, ``[N, T, C]`` (``[T, C]`` without a batch axis), classes last,
  the blank class 0 (PaddleOCR's, ddddocr's);
- ``NAME,blank=K``: another blank class (``-1``: the last, as many speech models put it);
- an integer output (the ``ArgMax`` already in the graph: ``[N, T]`` or ``[T]``) is read as
  the class ids themselves.

Each line (each row of a batch, on each sample) is read against fp32's text by edit
distance (a character inserted, lost or changed counts one). ``text_similarity`` is
``1 - the edits / the characters`` over every line (the longer side of each line counted;
1 where every line decodes to nothing on both sides): one minus a character error rate, as
OCR is scored, held in place of cosine to the budget's ``min_text_similarity``, else to its
cosine's number (:func:`text_limit`: int8's 0.98 lets 2 characters in 100 read otherwise,
fp16's 0.999 one in 1000). It is a rate over the lines, like top-1 agreement, so no part
of the samples decides it early (:func:`deploycomp.validate.decided_failures`). ``text``
records the share of lines read exactly alike, the worst line's similarity and the first
line read otherwise (as class ids: the model's character list is the application's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from deploycomp.datasets import miss_share_bound
from deploycomp.masks import softmax_over

__all__ = ["CtcRule", "check_ctc", "ctc_metrics", "decode", "describe_ctc", "describe_suggestion",
           "parse_ctc", "suggest_ctc", "text_limit"]


@dataclass(frozen=True)
class CtcRule:
    output: str
    blank: int = 0
    """The blank class (negative: counted from the last)."""

    def text(self) -> str:
        return self.output if self.blank == 0 else f"{self.output},blank={self.blank}"


def parse_ctc(texts) -> dict[str, CtcRule]:
    """``--judge-ctc NAME`` or ``--judge-ctc NAME,blank=K`` (repeatable) -> ``{output: rule}``."""
    rules: dict[str, CtcRule] = {}
    for text in texts or ():
        text = str(text).strip()
        name, comma, option = text.rpartition(",") if ",blank=" in text.replace(" ", "") else (text, "", "")
        name, blank = name.strip(), 0
        if comma:
            key, _, value = option.partition("=")
            try:
                blank = int(value.strip())
            except ValueError:
                name = ""
            if key.strip() != "blank":
                name = ""
        if not name:
            raise ValueError(f"--judge-ctc {text!r}: write NAME (class scores, the blank class 0) or "
                             "NAME,blank=K (e.g. logits,blank=-1: the last class)")
        if name in rules:
            raise ValueError(f"--judge-ctc {name}: given twice; give one rule per output")
        rules[name] = CtcRule(name, blank)
    return rules


def _integer(dtype: Any) -> bool:
    return str(dtype).startswith(("int", "uint"))


def check_ctc(rules: Mapping[str, CtcRule], outputs: Mapping[str, tuple[Sequence, str]]) -> None:
    """Raise ValueError naming the first rule whose output does not exist or is not read
    so (``outputs``: name -> (shape, dtype))."""
    for name, rule in rules.items():
        said = f"--judge-ctc {rule.text()}"
        if name not in outputs:
            raise ValueError(f"{said}: the model has no output {name!r} (outputs: {', '.join(list(outputs)[:8])})")
        shape, dtype = outputs[name]
        ranks = (1, 2) if _integer(dtype) else (2, 3)
        if len(shape) not in ranks:
            what = ("class ids [N, T], [T, 1] or [T]" if _integer(dtype) else
                    "class scores [N, T, C], [T, 1, C] or [T, C]")
            raise ValueError(f"{said}: {name} (shape {list(shape)}, {dtype}) is not {what}")
        classes = shape[-1]
        if not _integer(dtype) and isinstance(classes, int) and not -classes <= rule.blank < classes:
            raise ValueError(f"{said}: {name} has {classes} classes; blank={rule.blank} is none of them")
        if _integer(dtype) and rule.blank < 0:  # (no class axis to count from the end of)
            raise ValueError(f"{said}: {name} holds class ids, not scores: give the blank's own id, not a "
                             "count from the last class")


UNSURE = 0.1
"""A step where the class the bundle takes has a probability under fp32's best by less than
this, in fp32's own scores, is a toss fp32 itself nearly lost: the bundle's choice there is
read as fp32's (``unsure_steps``). PP-OCRv4 rec's int8 bundles flipped steps whose two
best classes fp32 scored 0.002 to 0.05 apart, a space between two words among them."""


def batch_major(values: np.ndarray) -> np.ndarray:
    """``values`` with its lines first: a time-major output (``[T, 1, C]`` scores, ``[T, 1]``
    ids: PyTorch's CTC layout, one line of T steps) as ``[1, T, C]`` / ``[1, T]``. A line of
    one step is no CTC reading, so a middle axis of 1 under a longer first one is the batch:
    a captcha reader's ``[20, 1, 8210]`` had been read as 20 lines of one step each (repeats
    never merged, "100% of 80 lines exactly as fp32" where 4 lines were judged)."""
    a = np.asarray(values)
    time_major = a.ndim == (2 if np.issubdtype(a.dtype, np.integer) else 3) and a.shape[1] == 1 < a.shape[0]
    return np.swapaxes(a, 0, 1) if time_major else a


def _steps(values: np.ndarray) -> np.ndarray:
    """Each line's best class at each step, ``[lines, T]`` (class ids as they are)."""
    a = batch_major(values)
    if np.issubdtype(a.dtype, np.integer):
        return a.reshape(1, -1) if a.ndim == 1 else a.reshape(-1, a.shape[-1])
    return a.reshape(-1, a.shape[-2], a.shape[-1]).argmax(axis=-1)


def _blank(values: np.ndarray, rule: CtcRule) -> int:
    a = np.asarray(values)
    return rule.blank if np.issubdtype(a.dtype, np.integer) else rule.blank % a.shape[-1]


def _collapsed(ids: np.ndarray, blank: int) -> list[tuple[int, ...]]:
    lines = []
    for row in ids:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        lines.append(tuple(int(c) for c in row[keep & (row != blank)]))
    return lines


def decode(values: np.ndarray, rule: CtcRule) -> list[tuple[int, ...]]:
    """Greedy CTC decoding: each line's class ids with repeats merged and the blank dropped
    (a row of a batch is a line)."""
    return _collapsed(_steps(values), _blank(values, rule))


def _as_fp32_would(ref: np.ndarray, want: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's best class at each step (``ids``), fp32's (``want``: :func:`_steps` of
    ``ref``, fp32's scores) where fp32's own scores put the bundle's choice within
    :data:`UNSURE` of its best (scores that are not probabilities taken through a softmax
    first); and which steps that changed."""
    if np.issubdtype(ref.dtype, np.integer):
        return ids, np.zeros(ids.shape, bool)
    ref = batch_major(ref)
    scores = ref.reshape(-1, *ref.shape[-2:]).astype(np.float64)
    if not softmax_over([ref], -1):
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
    lead = (np.take_along_axis(scores, want[..., None], -1) - np.take_along_axis(scores, ids[..., None], -1))[..., 0]
    unsure = (ids != want) & (lead < UNSURE)
    return np.where(unsure, want, ids), unsure


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (insertions, deletions and substitutions of one class each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def ctc_metrics(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
                rule: CtcRule) -> dict[str, Any]:
    """``text_similarity`` (``1 - edits / characters`` over every line, the steps fp32 was
    unsure of read as fp32's: :func:`_as_fp32_would`) and ``text``: the rule, the lines
    judged, the share read exactly as fp32 reads them, the worst line's similarity, how many
    lines fp32 reads as nothing, how many unsure steps were read as fp32's and the first
    line read otherwise."""
    values, exact, empty, edits, chars, unsure = [], 0, 0, 0, 0, 0
    first: dict[str, Any] | None = None
    for i, (ref, got) in enumerate(zip(refs, gots)):
        r, g = np.asarray(ref[rule.output]), np.asarray(got.get(rule.output))
        if r.shape != g.shape or not r.size:
            continue  # (judged as a shape mismatch)
        # each line read as the bundle gives it or with fp32's unsure steps read as fp32's,
        # whichever is closer (read step by step, a line emitted a step early would gain the
        # edits the step's shift makes)
        # (each side's best classes taken once: a search decodes every candidate's scores)
        want, ids, blank = _steps(r), _steps(g), _blank(r, rule)
        tolerant, tossed = _as_fp32_would(r, want, ids)
        lines = zip(_collapsed(want, blank), _collapsed(ids, blank), _collapsed(tolerant, blank), tossed)
        for line, (a, plain, tolerant, steps) in enumerate(lines):
            distance, b = edit_distance(a, plain), plain
            if (closer := edit_distance(a, tolerant)) < distance:
                distance, b = closer, tolerant
                unsure += int(np.count_nonzero(steps))
            longer = max(len(a), len(b))
            values.append(1 - distance / longer if longer else 1.0)
            edits, chars = edits + distance, chars + longer
            exact += a == b
            empty += not a
            if a != b and first is None:
                first = {"sample": i, "line": line, "reference": list(a), "bundle": list(b)}
    record: dict[str, Any] = {"rule": rule.text(), "lines": len(values)}
    if not values:
        return {"text": record}
    record |= {"exact": round(exact / len(values), 6), "worst_line": round(min(values), 6),
               "characters": chars, "edits": edits, "empty_reference_lines": empty, "unsure_steps": unsure}
    if exact == len(values):  # every line alike: how many lines like them could still read otherwise
        record["otherwise_share_95"] = round(miss_share_bound(len(values)), 4)
    if first is not None:
        record["first_difference"] = first
    return {"text": record, "text_similarity": 1 - edits / chars if chars else 1.0}


def text_limit(fidelity: Any) -> float:
    """The budget's ``min_text_similarity``, else its cosine's number (int8 0.98: 2
    characters in 100 read otherwise at most)."""
    given = getattr(fidelity, "min_text_similarity", None)
    return given if given is not None else fidelity.min_cosine


def describe_ctc(metrics: Mapping[str, Any]) -> str | None:
    """How an output judged by its text is said (summary, report)."""
    record = metrics.get("text")
    if not record:
        return None
    if "text_similarity" not in metrics:
        return f"CTC text {record['rule']}: no line to judge"
    said = (f"CTC text similarity {metrics['text_similarity']:.4f} ({record['edits']} of {record['characters']} "
            f"characters read otherwise; {record['exact']:.0%} of {record['lines']} line"
            f"{'' if record['lines'] == 1 else 's'} exactly as fp32")
    if "otherwise_share_95" in record:  # (16 of 16 exact had read as all; RapidOCR end to end read 4.6% otherwise)
        said += f", yet up to {record['otherwise_share_95']:.0%} of lines like them could read otherwise (95%)"
    if record["empty_reference_lines"]:
        said += f"; fp32 reads {record['empty_reference_lines']} as nothing"
    if record.get("unsure_steps"):  # (a toss fp32 nearly lost: UNSURE)
        said += f"; {record['unsure_steps']} step(s) fp32 was unsure of read as fp32's"
    return said + ")"


MIN_STEPS = 8
"""A suggested CTC output has at least this many time steps."""

MIN_CLASSES = 10
"""... and at least this many classes (digits and a blank)."""

BLANK_SHARE = 0.2
"""... and its blank class wins at least this share of the steps on every sample (CTC's
signature: a line's characters take a few of its steps, the blank the rest)."""


def suggest_ctc(name: str, values: Sequence[np.ndarray]) -> CtcRule | None:
    """A ``--judge-ctc`` rule for an output that looks like a CTC recognizer's per-step
    class scores on every sample, or None: floating point ``[N, T, C]``, at least
    :data:`MIN_STEPS` steps and :data:`MIN_CLASSES` classes, a softmax over the classes at
    each step (:func:`deploycomp.masks.softmax_over`: logits, a photo's rows and a
    transformer's hidden states are not suggested), and the first class (or the
    last: ``blank=-1``) the best at :data:`BLANK_SHARE` of the steps or more on every
    sample, while some sample has other classes win at some steps."""
    arrays = [batch_major(v) for v in values]
    if not arrays or any(a.shape != arrays[0].shape or not np.issubdtype(a.dtype, np.floating)
                         or not np.all(np.isfinite(a)) for a in arrays):
        return None
    shape = arrays[0].shape
    if len(shape) != 3 or shape[1] < MIN_STEPS or shape[2] < MIN_CLASSES or not softmax_over(arrays, -1):
        return None
    for blank in (0, -1):
        rule = CtcRule(name, blank)
        best = [a.argmax(axis=-1) for a in arrays]
        if (all(np.mean(b == blank % shape[2]) >= BLANK_SHARE for b in best)
                and any(any(decode(a, rule)) for a in arrays)):
            return rule
    return None


def describe_suggestion(rule: str) -> str:
    """How a suggested ``--judge-ctc`` rule is said (summary, report), after the output's name."""
    return (f'looks like a CTC recognizer\'s per-step class scores, and cosine judges neither a character moved a '
            f'step nor one lost: --judge-ctc "{rule}" judges the text it decodes to')
