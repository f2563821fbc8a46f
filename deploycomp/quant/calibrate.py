"""Collect activation statistics by running the float model on calibration data.

The optimized fp32 model is run in ONNX Runtime with every tensor the QDQ policy will
quantize exposed as an extra output; each sample's values update that tensor's
:class:`~deploycomp.quant.observers.Observer` and are dropped before the next sample,
so memory stays flat however large the calibration set.

Everything calibration learns from data is a *consumer* of such a run (``tensors`` it
reads, ``update(values)`` per sample): the observers here, bias correction's input
means, smoothing's sampled rows. :func:`stream_into` feeds several from one run, so each
extra need costs numpy work, not another pass of the model (PP-OCR det: one pass of its
6 calibration samples is ~1 s of its ~10 s calibration).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.quant.observers import Observer, compute_range, finite_extremes
from deploycomp.quant.sessions import session as ort_session

__all__ = ["SENTINEL", "STREAM_BUDGET_BYTES", "ChannelExtremes", "Consumer", "Observers", "Statistics", "collect_statistics",
           "cores", "extremes_in_graph", "observe_inputs", "streamed_in_parts", "range_coverage", "stream_into", "stream_parts", "stream_tensors", "tensor_bytes"]


def cores() -> int:
    """The cores this process may use, at most 4: how many numpy updates or single-threaded
    ONNX Runtime runs go side by side."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(4, count))


SENTINEL = 1e30
"""A tensor reaching this magnitude carries sentinel values, not a signal (an attention mask
of -3.4e38, an infinity stand-in): no int8 scale can hold it and the values it marks, so
it is left float (a transformer's mask Add quantized took its embedding to cosine 0.70).
So is a tensor holding infinities themselves (a causal mask of -inf, what ONNX's own
``Attention`` body folds to), which the statistics leave out."""


@dataclass
class Statistics:
    observers: dict[str, Observer]
    samples: int

    def ranges(self, method: str) -> dict[str, tuple[float, float]]:
        """Each observed tensor's range by ``method``; sentinel-carrying tensors have none
        (:data:`SENTINEL`), so they stay float."""
        return {name: compute_range(obs, method) for name, obs in self.observers.items()
                if obs.hist is not None and name not in self.sentinels()}

    def quietest(self) -> dict[str, float]:
        """Each observed tensor's narrowest span on one calibration sample (:attr:`Observer.quietest`)."""
        return {name: obs.quietest for name, obs in self.observers.items() if obs.hist is not None}

    def sentinels(self) -> list[str]:
        return sorted(name for name, obs in self.observers.items()
                      if obs.hist is not None and (obs.nonfinite or max(abs(obs.lo), abs(obs.hi)) >= SENTINEL))


STREAM_BUDGET_BYTES = 1 << 30
"""Most bytes of streamed tensors one run of the model returns at once. A run that returns
every tensor holds them all: an fp16 build's range check of a 4 MB U-Net at 512 x 416
(1337 nodes) peaked at 10.9 GB and spent 8 s a sample. Beyond this the tensors are
streamed in parts, a session each, each part's values dropped before the next runs. A
constant, not a share of the memory free now: what a build streams, and so what it
chooses, should not depend on the machine's load."""


def tensor_bytes(model: ir.Model, names: Iterable[str]) -> dict[str, int | None]:
    """Bytes of each named tensor for one sample (graph inputs: 0, the samples hold them;
    ``None`` where the model does not say)."""
    inputs = {v.name for v in model.graph.inputs}
    by_name = {v.name: v for node in model.graph for v in node.outputs}
    sizes: dict[str, int | None] = {}
    for name in names:
        value = by_name.get(name)
        if name in inputs:
            sizes[name] = 0
        elif value is None or value.shape is None or not value.shape.is_static() or value.dtype is None:
            sizes[name] = None
        else:
            sizes[name] = int(np.prod(value.shape.numpy(), dtype=np.int64)) * value.dtype.itemsize
    return sizes


def _stream_groups(model: ir.Model, tensors: Sequence[str], budget: int) -> list[list[str]]:
    """``tensors`` in order, cut into groups whose bytes on one sample fit ``budget`` (a
    tensor of unknown size counts nothing; one larger than the budget is a group alone)."""
    sizes = tensor_bytes(model, tensors)
    groups: list[list[str]] = [[]]
    used = 0
    for name in tensors:
        size = sizes[name] or 0
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


def stream_parts(model: ir.Model, tensors: Sequence[str], samples: Iterable[Mapping[str, np.ndarray]],
                 threads: int | None = None,
                 budget: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray], bool]]:
    """The named tensors (those that exist) of the float model, sample by sample, in parts
    whose values on one sample fit ``budget`` (:data:`STREAM_BUDGET_BYTES`): (the sample's
    index, a part, whether it is the sample's last). Most models' tensors come in one part."""
    import onnxruntime as ort

    sessions = []
    groups = _stream_groups(model, list(dict.fromkeys(tensors)), STREAM_BUDGET_BYTES if budget is None else budget)
    for group in groups:
        options = ort.SessionOptions()  # one per session: the in-place weights are registered on it
        options.log_severity_level = 4  # (errors are raised and said in one line; printed, they had added a red ANSI line)
        if len(groups) > 1:  # each session's arena would keep its outputs' memory after its run
            options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = threads
        session = ort_session(model, options, group)
        sessions.append((session, [o.name for o in session.get_outputs() if o.name in set(group)]))
    for index, feeds in enumerate(samples):
        for i, (session, wanted) in enumerate(sessions):
            yield index, dict(zip(wanted, session.run(wanted, dict(feeds)))), i == len(sessions) - 1


def stream_tensors(model: ir.Model, tensors: list[str], samples: Iterable[Mapping[str, np.ndarray]],
                   threads: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The named tensors (those that exist) of the float model, one whole sample at a time
    (a sample's parts joined: :func:`stream_parts` holds less)."""
    whole: dict[str, np.ndarray] = {}
    for _, part, last in stream_parts(model, tensors, samples, threads):
        whole.update(part)
        if last:
            yield whole
            whole = {}


class Consumer(Protocol):
    """Reads ``tensors`` of each sample's float values. A consumer whose state is kept per
    tensor, independent of the order tensors come in, says so with ``per_tensor = True``:
    its update may then be called with a part of a sample's values at a time, parts side by
    side in threads."""

    tensors: Sequence[str]

    def update(self, values: Mapping[str, np.ndarray]) -> None: ...


class Observers:
    """An :class:`Observer` per tensor. ``transform``: tensor name -> what to observe
    instead of the streamed value (e.g. the value a rewritten model would have there,
    computed from this model's)."""

    per_tensor = True

    def __init__(self, tensors: Iterable[str], transform: Mapping[str, Callable] | None = None):
        self.tensors = sorted(set(tensors))
        self.transform = dict(transform or {})
        self.observers: dict[str, Observer] = {}

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        for name in self.tensors:
            if name in values:
                x = self.transform[name](values[name]) if name in self.transform else values[name]
                self.observers.setdefault(name, Observer()).update(x)


def _parts(values: Mapping[str, np.ndarray], tensors: Sequence[str], count: int) -> list[dict[str, np.ndarray]]:
    """``values``' entries among ``tensors`` in ``count`` parts of about equal size (largest
    first, each to the lightest part so far: deterministic)."""
    parts: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
    load = [0] * count
    for name in sorted((n for n in tensors if n in values), key=lambda n: (-values[n].size, n)):
        lightest = load.index(min(load))
        parts[lightest][name] = values[name]
        load[lightest] += values[name].size
    return [p for p in parts if p]


def stream_into(model: ir.Model, consumers: Sequence[Consumer], samples: Iterable[Mapping[str, np.ndarray]],
                threads: int | None = None, progress=None) -> int:
    """One run of the float model over ``samples`` feeding every consumer; the samples seen.

    Between two runs, the consumers' numpy work is spread over the cores: per-tensor
    consumers (``per_tensor``) get their tensors in parts, one thread each, the others
    run whole, each in a thread. Every tensor's state still sees the samples in order, so
    the result is the same as one thread's (PP-OCR det, 6 samples, statistics and two range
    sets' bias sums: 2.9 -> 1.9 s on 2 cores). Where the tensors come in several parts a
    sample (:func:`stream_parts`), per-tensor consumers take each part as it comes and the
    others their tensors of the whole sample once its last part is in."""
    count = 0
    names = sorted(set().union(*(c.tensors for c in consumers)))
    workers = cores()
    whole = [c for c in consumers if not getattr(c, "per_tensor", False)]
    held_names = set().union(*(c.tensors for c in whole)) if whole else set()
    held: dict[str, np.ndarray] = {}  # the sample so far, for the consumers that take it whole
    with ThreadPoolExecutor(workers) as pool:
        for _, values, last in stream_parts(model, names, samples, threads):
            held.update((k, v) for k, v in values.items() if k in held_names)
            jobs = [(c, part) for c in consumers if getattr(c, "per_tensor", False)
                    for part in _parts(values, c.tensors, workers)]
            jobs += [(c, held) for c in whole] if last else []
            for done in [pool.submit(c.update, part) for c, part in jobs]:
                done.result()
            if last:
                held = {}
                count += 1
                if progress:
                    progress(count)
    return count


def collect_statistics(model: ir.Model, tensors: list[str], samples: Iterable[Mapping[str, np.ndarray]],
                       threads: int | None = None, progress=None) -> Statistics:
    """Observers for ``tensors``, from a run of their own."""
    observed = Observers(tensors)
    count = stream_into(model, [observed], samples, threads, progress)
    return Statistics(observed.observers, count)


class ChannelExtremes:
    """Running min and max per channel of each tensor (a consumer): the ranges of the
    tensors encoded per channel (:func:`deploycomp.quant.qdq.per_channel_tensors`, channel
    axis 1) and the channel spreads equalization levels (its sites' axes, given as a
    mapping). Non-finite values are left out of the extremes; the tensors that had any
    are in ``nonfinite`` (equalization leaves those alone)."""

    per_tensor = True

    def __init__(self, tensors: Iterable[str] | Mapping[str, int]):
        self.axis = dict(tensors) if isinstance(tensors, Mapping) else {name: 1 for name in tensors}
        self.tensors = sorted(self.axis)
        self.lo: dict[str, np.ndarray] = {}
        self.hi: dict[str, np.ndarray] = {}
        self.nonfinite: set[str] = set()

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        for name in self.tensors:
            x = values.get(name)
            if x is None or x.ndim < 2:
                continue
            channel = self.axis[name] % x.ndim
            axes = tuple(i for i in range(x.ndim) if i != channel)
            finite = np.isfinite(x)
            if finite.all():
                lo, hi = x.min(axis=axes), x.max(axis=axes)
            else:
                self.nonfinite.add(name)
                lo, hi = np.where(finite, x, np.inf).min(axis=axes), np.where(finite, x, -np.inf).max(axis=axes)
            lo, hi = lo.astype(np.float64), hi.astype(np.float64)
            self.lo[name] = np.minimum(self.lo[name], lo) if name in self.lo else lo
            self.hi[name] = np.maximum(self.hi[name], hi) if name in self.hi else hi

    def amax(self, name: str) -> np.ndarray | None:
        """Each channel's largest magnitude; None for a tensor not seen or with non-finite values."""
        if name not in self.hi or name in self.nonfinite:
            return None
        return np.maximum(np.abs(self.lo[name]), np.abs(self.hi[name]))

    def within(self, ranges: Mapping[str, tuple]) -> dict[str, tuple]:
        """``ranges`` with these tensors' ranges per channel: each channel's own extremes
        inside its tensor's range (a percentile range still clips a channel's outliers),
        and at least one of the tensor's own int8 steps wide (a channel quiet on the
        calibration set keeps what one scale per tensor would have given it)."""
        out = dict(ranges)
        for name, channel_lo in self.lo.items():
            if name not in ranges:
                continue
            lo_t, hi_t = min(float(ranges[name][0]), 0.0), max(float(ranges[name][1]), 0.0)
            lo = np.clip(np.minimum(channel_lo, 0.0), lo_t, 0.0)
            hi = np.clip(np.maximum(self.hi[name], 0.0), 0.0, hi_t)
            hi = np.minimum(np.maximum(hi, lo + (hi_t - lo_t) / 255), max(hi_t, 1e-12))
            out[name] = (lo, hi)
        return out


class _Extremes:
    """Running min and max per tensor, and each sample's span (max - min) in turn (a consumer)."""

    per_tensor = True

    def __init__(self, tensors: Iterable[str]):
        self.tensors = sorted(set(tensors))
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.spans: dict[str, list[float]] = {}

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        for name in self.tensors:
            if name not in values:  # (a part of a sample's values: another part has it)
                continue
            found = finite_extremes(values[name])
            if found is not None:
                _, lo, hi = found
                self.lo[name] = min(self.lo.get(name, np.inf), lo)
                self.hi[name] = max(self.hi.get(name, -np.inf), hi)
            self.spans.setdefault(name, []).append(found[2] - found[1] if found is not None else np.nan)


QUIET_STEPS, QUIET_FACTOR = 4, 10
"""An input is *quieter than the calibration set* in a tensor where its values span fewer
than ``QUIET_STEPS`` of the tensor's int8 steps and less than 1/``QUIET_FACTOR`` of what the
quietest calibration sample spanned there. Its values then round to a few levels, though
they lie inside the range, where a check of values beyond it sees nothing: basic-pitch
(host int8) with one of five validation recordings turned 50 dB down named that
recording alone, its constant-Q filters' outputs at 0.4 of a step where calibration
spanned 8-11 (the five's worst cosine 0.9856; 0.99896 on the corpus's own windows)."""


def extremes_in_graph(model: ir.Model, tensors: Sequence[str], samples: Sequence[Mapping[str, np.ndarray]]
                      ) -> tuple[dict[str, list[tuple[float, float]]], set[str]]:
    """Each of ``tensors``' min and max on each sample, reduced inside a copy of ``model``
    whose outputs are each tensor's ``ReduceMin`` and ``ReduceMax`` (one run per sample;
    two numbers per tensor leave ONNX Runtime); and the tensors to stream out whole
    instead: those with a non-finite extreme on some sample (their finite extremes are
    what counts) and, where the copy does not run, all of them. Streaming every tensor
    kept all of them alive at once and, past :data:`STREAM_BUDGET_BYTES`, ran the model
    once per part: an fp16 build of a 1280x1280 detector spent 37 s measuring ranges, 15
    s this way. Tensors of a known empty shape have no extremes and are left out."""
    import onnxruntime as ort

    if not tensors:
        return {}, set()
    copy = model.clone()
    values = {v.name: v for node in copy.graph for v in node.outputs if v.name}
    values.update({v.name: v for v in copy.graph.inputs})
    reduced: list[tuple[str, str, str]] = []
    outputs: list[ir.Value] = []
    for name in tensors:
        value = values.get(name)
        if value is None or (value.shape is not None and any(d == 0 for d in value.shape)):
            continue
        pair = []
        for op in ("ReduceMin", "ReduceMax"):
            node = ir.node(op, [value], attributes={"keepdims": 0}, name=f"{name}__extreme_{op}")
            node.outputs[0].name = f"{name}__extreme_{op}"
            copy.graph.append(node)
            outputs.append(node.outputs[0])
            pair.append(node.outputs[0].name)
        reduced.append((name, *pair))
    copy.graph.outputs.clear()
    copy.graph.outputs.extend(outputs)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # (errors are raised and said in one line; printed, they had added a red ANSI line)
    found: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in reduced}
    whole: set[str] = set()
    try:
        made = ort_session(copy, options)
        wanted = [o.name for o in outputs]
        for feeds in samples:
            got = dict(zip(wanted, made.run(wanted, dict(feeds))))
            for name, low, high in reduced:
                lo, hi = float(got[low]), float(got[high])
                if np.isfinite(lo) and np.isfinite(hi):
                    found[name].append((lo, hi))
                else:
                    whole.add(name)
    except Exception:  # noqa: BLE001 - ONNX Runtime refused the copy: every tensor streamed, as before
        return {}, set(tensors)
    return {n: v for n, v in found.items() if n not in whole}, whole


def streamed_in_parts(model: ir.Model, tensors: Sequence[str]) -> bool:
    """Whether streaming ``tensors`` out takes more than one run per sample
    (:data:`STREAM_BUDGET_BYTES`): where extremes are all that is wanted, reducing them in
    the graph (:func:`extremes_in_graph`) then costs one run instead of several (a
    1280x1280 detector: 37.5 against 15.3 s). Below that, streaming is faster on small
    models and little slower on large ones (MiniLM 0.27 against 0.41 s; LORE's 768x768
    maps, in one part, 19.5 against 17.3 s)."""
    return len(_stream_groups(model, list(dict.fromkeys(tensors)), STREAM_BUDGET_BYTES)) > 1


def observe_inputs(model: ir.Model, tensors: Iterable[str], samples: Sequence[Mapping[str, np.ndarray]]) -> _Extremes:
    """The extremes and each sample's span of ``tensors`` on other inputs, for
    :func:`range_coverage`: one run of the float model streaming them out, or, where that
    takes a run per part (:func:`streamed_in_parts`), reduced in the graph, the tensors it
    leaves streamed."""
    names = sorted(set(tensors))
    seen = _Extremes(names)
    per_sample, whole = extremes_in_graph(model, names, samples) if streamed_in_parts(model, names) else ({}, set(names))
    for name, pairs in per_sample.items():
        seen.lo[name] = min(lo for lo, _ in pairs)
        seen.hi[name] = max(hi for _, hi in pairs)
        seen.spans[name] = [hi - lo for lo, hi in pairs]
    if whole:
        streamed = _Extremes(sorted(whole))
        stream_into(model, [streamed], samples)
        seen.lo |= streamed.lo
        seen.hi |= streamed.hi
        seen.spans |= streamed.spans
    return seen


def range_coverage(model: ir.Model, extremes: Mapping[str, tuple[float, float]],
                   samples: Sequence[Mapping[str, np.ndarray]], tolerance: float = 0.25, worst: int = 5,
                   quietest: Mapping[str, float] | None = None, quantized: Collection[str] | None = None,
                   observed: _Extremes | None = None) -> dict:
    """How far other inputs (e.g. the validation set) go beyond what calibration saw: the
    tensors whose values there pass the calibration set's extremes (``extremes``: min, max
    per tensor, widened to hold 0 as the int8 encoding is) by more than ``tolerance`` of
    that span, worst first. Not against the clipped ranges: a percentile range is meant
    to be passed by a new input's own extremes. Ranges fitted to one kind of input clip
    another's: PP-OCR det calibrated on photos with text lost much of its text mask on a
    scanned page (mask IoU 0.63 against 0.98 on photos), which only calibrating on such
    pages can fix; this says so at build time.

    ``quietest`` (each tensor's narrowest span on one calibration sample): also the inputs
    quieter than any calibration sample (:data:`QUIET_STEPS`), as ``quiet``: each such
    sample (its index among ``samples``) with how many tensors, and the quietest tensors;
    of the ``quantized`` tensors only, where given (a tensor left float rounds nothing).
    ``observed``: :func:`observe_inputs` of these samples, where it was run already."""
    seen = observed if observed is not None else observe_inputs(model, extremes, samples)
    beyond = []
    for name, (lo, hi) in extremes.items():
        if name not in seen.lo:
            continue
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        over = max(seen.hi[name] - hi, lo - seen.lo[name], 0.0) / max(hi - lo, 1e-12)
        if over > tolerance:
            beyond.append({"tensor": name, "beyond_range": round(over, 3), "range": [round(lo, 4), round(hi, 4)],
                           "seen": [round(seen.lo[name], 4), round(seen.hi[name], 4)]})
    beyond.sort(key=lambda c: -c["beyond_range"])
    out = {"samples": len(samples), "tensors": len(extremes), "tolerance": tolerance,
           "tensors_beyond": len(beyond), "worst": beyond[:worst]}
    if quietest is not None:
        judged = extremes if quantized is None else {k: v for k, v in extremes.items() if k in quantized}
        out["quiet"] = _quiet_inputs(judged, quietest, seen.spans, len(samples), worst)
    return out


def _quiet_inputs(extremes: Mapping[str, tuple[float, float]], quietest: Mapping[str, float],
                  spans: Mapping[str, list[float]], count: int, worst: int) -> dict:
    """The samples quieter than the calibration set (:data:`QUIET_STEPS`), per sample."""
    per_sample: dict[int, int] = {}
    found = []  # (how much quieter than calibration, sample, tensor, record)
    for name, (lo, hi) in extremes.items():
        step = (max(hi, 0.0) - min(lo, 0.0)) / 255
        calibrated = quietest.get(name, 0.0)
        if name not in spans or not step > 0 or not np.isfinite(calibrated) or calibrated <= 0:
            continue
        for i, span in enumerate(spans[name]):
            if span < QUIET_STEPS * step and span * QUIET_FACTOR < calibrated:
                per_sample[i] = per_sample.get(i, 0) + 1
                found.append((span / calibrated, i, name, {"tensor": name, "sample": i, "steps": round(span / step, 3),
                                                          "calibration_steps": round(calibrated / step, 1)}))
    # ordered by the exact ratio: the rounded steps can both be 0 (a nucleus segmenter's
    # calibration span of a few 1e-4 steps made this a division by zero)
    found.sort(key=lambda q: q[:3])
    return {"samples": [{"sample": i, "tensors": n} for i, n in sorted(per_sample.items())],
            "checked_samples": count, "worst": [q[3] for q in found[:worst]]}
