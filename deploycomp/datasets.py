"""Which inputs a build calibrates on and validates on, and what to call them.

A build validates on the user's data whenever the user gave any, and says plainly when it
had to guess. In order of preference:

1. ``--validation-data`` (an .npz/.npy, or an image folder with a preprocessing spec);
2. ``--calibration`` without ``--validation-data``: a part of the user's calibration data
   held out (:func:`split_held_out`), never used to fit ranges or choose float layers;
3. ``--preprocess SPEC``: the built-in sample photos, turned into inputs by the user's
   spec (real images and the model's own preprocessing, but not the user's data);
4. the inputs a known example needs (``deploycomp example``: photos, rendered text lines,
   a voiced signal), preprocessed as that model expects;
5. for an unknown image-shaped input, the built-in photos scaled to 0..1, RGB, NCHW:
   *guessed* preprocessing;
6. seeded random data.

Every :class:`DataSet` carries a ``source``; the manifest, the report and the summary
line say when validation ran on anything but the user's data (3-6), and for 5-6 that
the budget was checked on guessed inputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Collection, Iterable, Mapping, Sequence

import numpy as np

from deploycomp import sample_data
from deploycomp.errors import InputDataError, few
from deploycomp.preprocess import PreprocessSpec

__all__ = ["CONFIDENCE", "FEW_VALIDATION_SAMPLES", "MAX_CALIBRATION_SAMPLES", "MAX_VALIDATION_SAMPLES", "miss_share_bound", "SOURCES", "DataSet", "batch_size", "built_in_validation", "calibration_set", "digest", "distinct_inputs", "items",
           "split_held_out", "user_set", "validation_set"]

log = logging.getLogger(__name__)

MAX_VALIDATION_SAMPLES = 16
"""Validation runs at most this many samples (spread over the set), reference and artifact.
A budget met on n samples bounds the share of inputs like them that miss it only at
:func:`miss_share_bound` (95%: 31% at 8 samples, 17% at 16): a CenterFace int8 build met
0.98 on 6 photos (0.9826) and fell to 0.9554 on one of 13 fresh ones; validated on 20 it
kept 50 layers float and held at 0.9977 on the fresh ones too. (8 until 2026-12-07.)"""

CONFIDENCE = 0.95
"""The confidence of :func:`miss_share_bound`."""

FEW_VALIDATION_SAMPLES = 14
"""Fewer of the user's validation samples than this leave :func:`miss_share_bound` over 20%:
the data notes say so (:func:`data_notes`)."""


def miss_share_bound(n: int, confidence: float = CONFIDENCE) -> float:
    """The largest share of inputs like ``n`` samples, every one of which met a budget, that
    could miss it at ``confidence`` (no failure in ``n`` draws: ``1 - (1 - c)^(1/n)``,
    about 3/n at 95%)."""
    return 1.0 - (1.0 - confidence) ** (1.0 / max(1, n))

MAX_CALIBRATION_SAMPLES = 300
"""int8 calibrates on at most this many of the user's samples, spread over the set (NNCF's
default subset): a folder of 520 images took 164 s and 1.2 GB to read whole."""

SOURCES = {
    "user": "your validation data",
    "held-out": "held out of your calibration data",
    "built-in": "built-in samples, not your data",
    "guessed": "built-in photos with GUESSED preprocessing (0..1, RGB, NCHW)",
    "random": "RANDOM data",
}
"""Where validation inputs came from, as the summary line says it."""


@dataclass
class DataSet:
    samples: list[dict[str, np.ndarray]]
    label: str
    """What they are, for the manifest and report (file name, count, how they were split)."""
    source: str
    """A key of :data:`SOURCES`."""
    notes: list[str] = field(default_factory=list)
    """What the data itself says about how much a check on it is worth (:func:`data_notes`)."""

    @property
    def guessed(self) -> bool:
        """The budget was checked on inputs chosen without knowing the model's preprocessing."""
        return self.source in ("guessed", "random")

    def to_json(self) -> dict:
        n = distinct_inputs(self.samples)
        return {"label": self.label, "source": self.source, "samples": len(self.samples), "guessed": self.guessed,
                "said": SOURCES[self.source], "sha256": digest(self.samples),
                **({"miss_share_95": round(miss_share_bound(n), 3)} if n and not self.guessed else {}),
                **({"notes": self.notes} if self.notes else {})}


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (a set ordered by class keeps every class)."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def split_held_out(calibration: DataSet, most: int | None = MAX_VALIDATION_SAMPLES,
                   in_order: bool = False) -> tuple[DataSet, DataSet]:
    """(what calibration keeps, what validation gets): a quarter of the user's samples
    (1 to ``most``, :data:`MAX_VALIDATION_SAMPLES` unless the user said; None: no cap),
    spread over the set, or ``in_order`` its last ones in a row (a stream's steps). A set
    of one sample serves both, and says so."""
    n = len(calibration.samples)
    if n < 2:
        return calibration, DataSet(calibration.samples, f"{calibration.label}: the only sample, also calibrated on",
                                    "held-out")
    k = min(most or n, max(1, round(n / 4)))
    held = list(range(n - k, n)) if in_order else spread(n, k)
    keep = [s for i, s in enumerate(calibration.samples) if i not in held]
    val = [calibration.samples[i] for i in held]
    return (DataSet(keep, f"{calibration.label}, {len(val)} held out for validation", calibration.source),
            DataSet(val, f"{len(val)} of {n} samples of {calibration.label.split(' (')[0]} held out of calibration "
                         "(no --validation-data)", "held-out"))


def user_set(source: str | os.PathLike | Iterable[Mapping[str, np.ndarray]], shapes: dict[str, tuple[int, ...]],
             dtypes: dict[str, np.dtype], spec: PreprocessSpec | None, what: str,
             nan_ok: Collection[str] = (), limit: int | None = None) -> DataSet:
    """The user's samples; at most ``limit`` of them, spread over the set (an image folder's
    other files are not read), the label saying how many of how many."""
    from deploycomp.quant.data import load_samples

    counted: list[int] = []
    samples = load_samples(source, shapes, dtypes, spec, what, nan_ok, limit=limit, counted=counted)
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "Python iterable"
    total = counted[0] if counted else len(samples)
    if total > len(samples):
        log.info("%s: %d of its %d samples used, spread over the set", name, len(samples), total)
        return DataSet(samples, f"{name} ({len(samples)} of {total} samples, spread over the set)", "user")
    return DataSet(samples, f"{name} ({len(samples)} samples)", "user")


def _limit(data: DataSet, most: int | None = MAX_VALIDATION_SAMPLES, in_order: bool = False) -> DataSet:
    """At most ``most`` of ``data``'s samples: spread over the set, or ``in_order`` its first
    ones (a stream's steps, each fed the step before's output: :mod:`deploycomp.feedback`)."""
    if most is None or len(data.samples) <= most:
        return data
    if in_order:
        return DataSet(data.samples[:most], f"{data.label}, its first {most} in order", data.source)
    picked = [data.samples[i] for i in spread(len(data.samples), most)]
    return DataSet(picked, f"{data.label}, {len(picked)} of them spread over the set", data.source)


def _as_typed(data: DataSet, dtypes: dict[str, np.dtype]) -> DataSet:
    """Built-in float samples in the float type each input takes: a float16 export given
    float32 photos failed in ONNX Runtime ("Unexpected input data type"), blamed on
    inputs the user never gave. (The user's own data is converted where it is read.)"""
    def typed(name: str, array: np.ndarray) -> np.ndarray:
        want = dtypes.get(name)
        if want is not None and np.issubdtype(want, np.floating) and np.issubdtype(array.dtype, np.floating):
            return array.astype(want, copy=False)
        return array

    return replace(data, samples=[{k: typed(k, v) for k, v in s.items()} for s in data.samples])


def built_in_validation(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype], kind: str | None,
                        spec: PreprocessSpec | None) -> DataSet:
    """Steps 3-6 of the module docstring, each sample in the float types the inputs take."""
    return _as_typed(_built_in_validation(shapes, dtypes, kind, spec), dtypes)


def _built_in_validation(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype], kind: str | None,
                         spec: PreprocessSpec | None) -> DataSet:
    if spec is not None and len(shapes) == 1:
        (name, shape), = shapes.items()
        arrays = [spec.apply(img, shape) for img in sample_data.photos()]
        samples = [{name: np.concatenate([a] * shape[0])} for a in arrays]
        return DataSet(samples, f"built-in photos ({len(samples)}) preprocessed by --preprocess", "built-in")
    if kind in sample_data.MULTI_INPUT_SAMPLERS:  # only the inputs the model still has (others may be frozen)
        samples = [{k: v for k, v in s.items() if k in shapes} for s in sample_data.MULTI_INPUT_SAMPLERS[kind](shapes)]
        return DataSet(samples, f"built-in {kind} samples ({len(samples)})", "built-in")
    if kind is None and len(shapes) == 1 and all(len(s) == 4 and s[1] in (1, 3) for s in shapes.values()):
        kind = "image"
    if kind is not None and len(shapes) == 1:
        (name, shape), = shapes.items()
        try:
            samples = sample_data.samples_for(kind, name, shape)
            sample_data.check_finite(samples, f"{kind} samples")
            if kind == "image":
                return DataSet(samples, f"built-in photos ({len(samples)}), guessed preprocessing", "guessed")
            return DataSet(samples, f"built-in {kind} samples ({len(samples)})", "built-in")
        except InputDataError as e:
            log.warning("no real samples (%s); falling back to random data", e)
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(2):
        feeds = {}
        for name, shape in shapes.items():
            dt = dtypes[name]
            feeds[name] = (rng.random(shape) if np.issubdtype(dt, np.floating) else rng.integers(0, 2, shape)).astype(dt)
        samples.append(feeds)
    return DataSet(samples, "RANDOM data (no validation data given and no real samples fit this model)", "random")


def calibration_set(source, shapes, dtypes, spec: PreprocessSpec | None, kind: str | None,
                    nan_ok: Collection[str] = ()) -> DataSet | None:
    """The user's calibration data, or a known example's built-in set, or None. ``nan_ok``:
    inputs the model tests for NaN, which the user's data may hold."""
    if source is not None:
        return user_set(source, shapes, dtypes, spec, "calibration data", nan_ok, MAX_CALIBRATION_SAMPLES)
    if kind is not None and len(shapes) == 1 and kind in sample_data.CALIBRATION_SAMPLERS:
        (name, shape), = shapes.items()
        samples = sample_data.calibration_samples_for(kind, name, shape)
        return _as_typed(DataSet(samples, f"built-in {kind} calibration set ({len(samples)} samples)", "built-in"),
                         dtypes)
    return None


def validation_set(validation_source, calibration: DataSet | None, shapes, dtypes, spec: PreprocessSpec | None,
                   kind: str | None, nan_ok: Collection[str] = (),
                   calibrates: bool = True, most: int | None = MAX_VALIDATION_SAMPLES,
                   in_order: bool = False) -> tuple[DataSet, DataSet | None]:
    """(validation set, calibration set left after any hold-out), per the module docstring.
    ``calibrates``: False where nothing is calibrated (a model that carries its own int8
    encodings): the user's calibration data validates whole, none of it held out.
    ``most``: the samples validated at most, spread over the set (None: every one; a rare
    flip, a space a recognizer drops once in fifty lines, shows only over many).
    ``in_order``: the samples are a stream's steps (``--feedback``): the first ``most`` in
    order, or the calibration set's last ones held out, never spread."""
    most = most or None  # (0, as the command line says "every one")
    if validation_source is not None:  # (read at most ``most``, spread over the set, or all of it for a stream)
        data = user_set(validation_source, shapes, dtypes, spec, "validation data", nan_ok,
                        None if in_order else most)
        return _limit(data, most, in_order), calibration
    if calibration is not None and calibration.source == "user" and not calibrates:
        whole = DataSet(calibration.samples, f"{calibration.label}: all of it (the model carries its own int8 "
                                             "encodings; nothing is calibrated on it)", "user")
        return _limit(whole, most, in_order), calibration
    if calibration is not None and calibration.source == "user":
        kept, held = split_held_out(calibration, most, in_order)
        return _limit(held, most, in_order), kept
    return _limit(built_in_validation(shapes, dtypes, kind, spec), most, in_order), calibration


def batch_size(shapes: Iterable[Sequence[object]]) -> int | None:
    """The batch of inputs of these shapes: the first dim every one shares, where it is a
    number above 1 (else None: one input)."""
    firsts = {s[0] if len(s) and isinstance(s[0], (int, np.integer)) else None for s in shapes}
    first = firsts.pop() if len(firsts) == 1 else None
    return int(first) if first is not None and first > 1 else None


def items(samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The inputs a set holds, one per batch row (:func:`batch_size`): a sample of a model
    built at batch 8 is 8 of them; any other sample is one. What the data notes count: at
    batch 32 the 32 photos of a validation set had read "1 sample: up to 95% of inputs like
    them could miss"."""
    out: list[dict[str, np.ndarray]] = []
    for sample in samples:
        arrays = {k: np.asarray(v) for k, v in sample.items()}
        if b := batch_size([a.shape for a in arrays.values()]):
            out.extend({k: a[i] for k, a in arrays.items()} for i in range(b))
        else:
            out.append(arrays)
    return out


def distinct_inputs(samples: list[dict[str, np.ndarray]]) -> int:
    """How many different inputs a set holds (:func:`items`, told apart by content): what a
    check on it is worth, as the data notes and ``miss_share_95`` count it."""
    return len(set(_sample_digests(items(samples))))


def _sample_digests(samples: list[dict[str, np.ndarray]]) -> list[str]:
    """Each sample's :func:`digest`, to tell samples apart by content."""
    return [digest([s]) for s in samples]


def _constant(samples: list[dict[str, np.ndarray]]) -> list[str]:
    """The float inputs that are constant within every sample (all zeros, one grey)."""
    names = [k for k, v in samples[0].items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    return [k for k in names if all(np.asarray(s[k]).size and np.ptp(np.asarray(s[k])) == 0 for s in samples)]


def data_notes(calibration: DataSet | None, validation: DataSet) -> list[str]:
    """What the user's data says about how much a check on it is worth, for the summary
    and the manifest (``validation.data.notes``): a validation set under
    :data:`FEW_VALIDATION_SAMPLES` (said, not logged as a warning: a CI log of builds on a
    few held-out samples is not a log of faults), samples that repeat, validation samples
    that are calibration ones, constant inputs (each also a warning). Raises InputDataError where calibration
    data holds nothing to calibrate on (every float input constant in every sample and no
    other input varying: an all-zero set built ok at cosine 0.99999 on itself, and its
    bundle found nothing in a photo; a text model's constant float mask beside its token
    ids is data)."""
    notes = []
    if calibration is not None and calibration.source == "user":
        floats = [k for k, v in calibration.samples[0].items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
        constant = _constant(calibration.samples)
        varying = [k for k, v in calibration.samples[0].items() if k not in floats  # (token ids beside a float mask)
                   and any(not np.array_equal(s[k], v) for s in calibration.samples)]
        if floats and set(floats) <= set(constant) and not varying:
            raise InputDataError(f"calibration data {calibration.label}: input(s) {few(constant)} constant in every "
                                 "sample: int8 ranges calibrated on it hold nothing; give inputs the model sees")
    sets = [(what, d) for what, d in (("calibration data", calibration), ("validation data", validation))
            if d is not None and d.source in ("user", "held-out")]
    digests = {what: _sample_digests(d.samples) for what, d in sets}
    for what, d in sets:
        n, distinct = len(d.samples), len(set(digests[what]))
        if n > 1 and distinct <= n / 2:
            notes.append(f"{what}: {distinct} distinct of {n} samples (the same inputs repeated)")
    few_samples = []  # said with the rest, not warned of: a small set is no fault of the data
    if validation.source in ("user", "held-out"):
        n = distinct_inputs(validation.samples)
        if n < FEW_VALIDATION_SAMPLES:
            few_samples.append(f"validation data: {n} sample{'' if n == 1 else 's'}: even where each meets the "
                               f"budget, up to {miss_share_bound(n):.0%} of inputs like them could miss it "
                               f"({CONFIDENCE:.0%} confidence; 30 samples bound it at {miss_share_bound(30):.0%})")
        if constant := _constant(validation.samples):
            notes.append(f"validation data: input(s) {few(constant)} constant in every sample: the check says little "
                         "of inputs the model sees")
        if calibration is not None and "calibration data" in digests and validation.source == "user":
            seen = set(digests["calibration data"])
            both = sum(1 for d in digests["validation data"] if d in seen)
            if both:
                notes.append(f"validation data: {both} of {len(validation.samples)} samples are calibration samples too: "
                             "the budget is checked on inputs the build was fitted to, not on unseen ones "
                             "(--calibration alone holds a part of it out)")
    for note in notes:
        log.warning("%s", note)
    return few_samples + notes


def digest(samples: list[dict[str, np.ndarray]]) -> str:
    """sha256 over the samples' names and bytes, for the manifest (and the build cache)."""
    h = hashlib.sha256()
    for sample in samples:
        for name in sorted(sample):
            h.update(name.encode() + np.ascontiguousarray(sample[name]).tobytes())
    return h.hexdigest()
