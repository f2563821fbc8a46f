"""Which parts of the network an fp16 build keeps fp32 when fp16's precision, not its
range, misses the budget.

:mod:`deploycomp.fp16_ranges` keeps fp32 what leaves fp16's range. A model can miss its
fp16 budget with nothing out of range: PP-OCRv5 det on TensorRT validated to cosine
0.99883 against 0.999, its largest tensor at 429; fp16 weights alone cost 1.1e-4 of
cosine, rounded activations alone as much, both together ten times that. Then the build
keeps the fewest parts of the network fp32 that meet the budget, as int8's float-layer
search does (:func:`deploycomp.quant.sensitivity.select_float_layers`: sizes 1, 2, 4, ...
then bisection, turns over the outputs that miss), each candidate judged in the
target's own runtime.

The parts are :data:`SEGMENTS` runs of the graph in order, each holding about as many
compute layers, with every node between them: fp16's error is spread over element-wise
nodes as much as over the layers (on det, every Conv kept fp32 with its readers still
missed, 0.99875 on the calibration pages, while its first two segments met at 0.99975).
The order is drop-one on the backend's fp16 reference (TensorRT: the typed ONNX with
every fp16 tensor rounded, which is also what its check runs where no GPU is): each
segment kept fp32 in turn and how much each output's NMSE against fp32 falls, 17 runs.
fp16's error is a small perturbation, so the gains nearly add, and one part's does not
drown in the others' as int8's did under drop-one.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.analysis import dim_values, mac_share
from deploycomp.quant.sensitivity import (Angles, LayerSensitivity, Ranking, Verdict, nmse_per_output, ort_outputs, outputs_of_each,
                                         select_float_layers)

__all__ = ["COMPUTE_OPS", "SEGMENTS", "float_tensors", "fp16_mac_share", "nodes_keeping_fp32", "nonfinite_sources",
           "search_fp32_segments", "segments", "weights_rounded"]

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
SEGMENTS = 16
"""How many parts the search chooses among (17 reference runs rank them)."""

Feeds = Mapping[str, np.ndarray]
Reference = Callable[[ir.Model, Sequence[str]], ir.Model]
"""``reference(model, fp32_tensors)``: an fp32 ONNX model computing what the backend's
fp16 build of ``model`` computes with ``fp32_tensors`` (their producers and readers)
kept fp32. It keeps the model's tensor names: for each value as computed, or for its
rounded copy, named with a ``__`` suffix (TensorRT's ``x__r32``)."""

NONFINITE_STEPS = 12
"""How many tensors (or steps upstream) :func:`nonfinite_sources` may add before the segment
search takes over."""

_FLOAT = (ir.DataType.FLOAT, None)


def segments(model: ir.Model, count: int = SEGMENTS) -> dict[str, list[str]]:
    """The main graph cut, in graph order, into up to ``count`` runs of about as many
    compute layers each (a layer with the nodes after it up to the next layer; what comes
    before the first joins the first), every node with a float output or a float input in
    one: segment name -> the tensors that keep its nodes fp32. A node that reads floats
    into another type is there by its own outputs (a comparison's booleans): Swift-F0's
    pitch bins, a float table compared with the requested range, rounded to f16 took its
    pitch output to cosine 0.86, and no float tensor's reader or writer reaches them."""
    def floats(values) -> bool:
        return any(v is not None and v.name and v.dtype in _FLOAT for v in values)

    nodes = [n for n in model.graph if floats(n.outputs) or floats(n.inputs)]
    per = max(1, -(-sum(n.op_type in COMPUTE_OPS for n in nodes) // count))
    out: dict[str, list[str]] = {}
    seen = 0
    for n in nodes:  # a compute layer opens a segment; what follows it up to the next one joins it
        seen += n.op_type in COMPUTE_OPS
        out.setdefault(f"segment{min(max(0, seen - 1) // per, count - 1):02d}", []).extend(
            v.name for v in n.outputs if v.name and (v.dtype in _FLOAT or not floats(n.outputs)))
    return out


def float_tensors(model: ir.Model) -> list[str]:
    """Every float tensor a node of the main graph writes: with these fp32 an fp16 build
    halves only its weights."""
    written = {v.name: v.dtype for n in model.graph for v in n.outputs if v.name}
    return sorted(t for t in set().union(*segments(model).values()) if written.get(t) in _FLOAT)


def nodes_keeping_fp32(model: ir.Model, fp32_tensors: Sequence[str]) -> frozenset[int]:
    """The main graph's nodes (by ``id``) that read or write one of ``fp32_tensors`` (by
    name): the nodes an fp16 build keeps fp32, their weights too where a backend stores
    weights float16 and computes float32 (OpenVINO on a CPU without native f16, TFLite)."""
    kept = set(fp32_tensors)
    return frozenset(id(n) for n in model.graph if any(v is not None and v.name in kept for v in (*n.inputs, *n.outputs)))


def weights_rounded(model: ir.Model, fp32_tensors: Sequence[str],
                    stored_fp16: Callable[[np.ndarray], bool]) -> ir.Model:
    """What a backend computes that stores float weights as float16 and computes float32, as
    an fp32 ONNX model: a copy with each float32 initializer the backend stores float16
    (``stored_fp16(values)``) rounded through float16, except those a node of
    :func:`nodes_keeping_fp32` reads (its ``fp16_reference``; the fp16 search ranks segments
    on it). On U²-Netp every weight rounded so gave its worst validation image cosine
    0.99743 in ONNX Runtime, its OpenVINO bundle (f16 weights, f32 execution) 0.99742."""
    copy = model.clone()
    keep = nodes_keeping_fp32(copy, fp32_tensors)
    for value in copy.graph.initializers.values():
        data = value.const_value
        if data is None or value.dtype != ir.DataType.FLOAT or any(id(user) in keep for user, _ in value.uses()):
            continue
        array = data.numpy()
        if stored_fp16(array):
            with np.errstate(over="ignore"):
                value.const_value = ir.tensor(array.astype(np.float16).astype(np.float32), name=value.name)
    return copy


def fp16_mac_share(model: ir.Model, fp32_tensors: Sequence[str], sample: Feeds | None = None) -> float | None:
    """The share of the compute layers' MACs that still runs fp16 (a layer runs fp32 when
    it reads or writes an fp32 tensor); None without static shapes (a dynamic dim kept is
    counted at ``sample``'s size)."""
    kept = set(fp32_tensors)
    dims = dim_values(model.graph, {k: np.shape(v) for k, v in sample.items()}) if sample else None
    return mac_share((n for n in model.graph if n.op_type in COMPUTE_OPS),
                     lambda n: not any(v is not None and v.name in kept for v in (*n.inputs, *n.outputs)), dims)


def _ranking(model: ir.Model, parts: Mapping[str, list[str]], reference: Reference, hot: Sequence[str],
             samples: Sequence[Feeds], refs: Sequence[Mapping[str, np.ndarray]],
             angles: Angles | None = None) -> tuple[list[LayerSensitivity], dict]:
    """Each part's drop-one gain per output (graph order), and the fp16 model's NMSE per
    output (the base the search's turns go by); ``angles`` as in
    :func:`deploycomp.quant.sensitivity.nmse_per_output`."""
    runs = outputs_of_each((reference(model, sorted(set(hot).union(extra))) for extra in [[], *parts.values()]),
                           samples)
    base = nmse_per_output(refs, next(runs), angles)
    ranking = []
    for name, gots in zip(parts, runs):
        errors = nmse_per_output(refs, gots, angles)
        gain = {k: max(0.0, base[k] - errors.get(k, 0.0)) for k in base}
        ranking.append(LayerSensitivity(name, "segment", sum(gain.values()), gain))
    return ranking, base


def _first_nonfinite(model: ir.Model, reference: ir.Model,
                     samples: Sequence[Feeds]) -> tuple[str | None, list[dict[str, np.ndarray]]]:
    """The first tensor of ``model`` (in the reference's graph order) that the reference
    computes as NaN or Inf on any of ``samples`` (None when every output is finite), and the
    reference's outputs on each sample (the same run)."""
    from deploycomp.quant.calibrate import stream_parts

    originals = {v.name for n in model.graph for v in n.outputs if v.name}
    order: list[tuple[str, str]] = []  # (reference tensor, the model's tensor it computes)
    for node in reference.graph:
        for v in node.outputs:
            name = v.name if v.name in originals else (v.name or "").split("__")[0]
            if name in originals and v.dtype in _FLOAT:
                order.append((v.name, name))
    outputs = [v.name for v in reference.graph.outputs]
    bad: set[str] = set()
    gots = []
    got: dict[str, np.ndarray] = {}
    for _, values, last in stream_parts(reference, list(dict.fromkeys([r for r, _ in order] + outputs)), samples):
        bad |= {k for k, a in values.items() if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()}
        got.update((k, values[k]) for k in outputs if k in values)
        if last:
            gots.append(got)
            got = {}
    return next((name for r, name in order if r in bad), None), gots


def nonfinite_sources(model: ir.Model, reference: Reference, hot: Sequence[str],
                      samples: Sequence[Feeds]) -> tuple[list[str], list[dict[str, np.ndarray]] | None]:
    """Tensors to keep fp32, beyond ``hot``, where the fp16 build computes NaN or Inf on
    ``samples`` though nothing leaves fp16's range in fp32 (:mod:`deploycomp.fp16_ranges`
    judges each tensor's float32 values; a quiet frame's power spectrum underflows to 0 in
    fp16 only, and its log is -Inf): the first tensor that turns non-finite, and, where
    keeping it fp32 is not enough, its producer's float inputs, step by step up to
    :data:`NONFINITE_STEPS`. Swift-F0 on TensorRT: every calibration clip gave NaN, no
    single segment fp32 made any finite, so the segment ranking read zero everywhere and
    took 7 of 13 segments in graph order. Empty when the outputs are finite. Also the fp16
    reference's outputs on ``samples`` with ``hot`` and those fp32, where they came out
    finite (else None): the search picks its ranking samples by them."""
    producer = {v.name: n for n in model.graph for v in n.outputs if v.name}
    extra: list[str] = []

    def upstream(tensor: str) -> list[str]:
        """The float tensors nearest above ``tensor`` that are not fp32 yet (through those that are)."""
        found, stack, seen = [], [tensor], {tensor}
        while stack:
            for v in producer[stack.pop()].inputs:
                if v is None or v.name not in producer or v.dtype not in _FLOAT or v.name in seen:
                    continue
                seen.add(v.name)
                (stack if v.name in extra else found).append(v.name)
        return found

    for _ in range(NONFINITE_STEPS):
        first, gots = _first_nonfinite(model, reference(model, sorted({*hot, *extra})), samples)
        if first is None:
            return extra, gots
        # fp32 already: what it reads was rounded to nothing (or Inf) before it
        more = [first] if first not in extra else upstream(first)
        if not more:
            break
        extra.extend(more)
    return extra, None


RANKING_SAMPLES = 4
"""The segment ranking runs on this many samples: those the fp16 build misses most."""


def search_fp32_segments(model: ir.Model, reference: Reference, hot: Sequence[str], samples: Sequence[Feeds],
                         refs: Sequence[Mapping[str, np.ndarray]],
                         meets_budget: Callable[[list[str]], Verdict],
                         angles: Angles | None = None) -> tuple[list[str], dict]:
    """The fp32 tensors (``hot``, those where the fp16 build turns non-finite on
    ``samples``: :func:`nonfinite_sources`, and those of the fewest segments) whose fp16
    build meets ``meets_budget`` (called with candidate ``fp32_tensors``), ranked on the
    :data:`RANKING_SAMPLES` of ``samples`` (``refs``: the fp32 outputs) where the fp16
    reference's error is largest; and the search's record. ``met: False`` where no mix with
    a segment left fp16 meets it (the caller keeps the plain fp16 build then, whose miss is
    the honest answer). ``angles``: outputs holding angles, measured as the budget measures
    them (:func:`deploycomp.quant.sensitivity.nmse_per_output`). Swift-F0 on TensorRT ranked on the first four of 12 clips (its worst
    pitch cosine there 0.965) took 12 of 13 segments to lift the ninth clip's 0.714."""
    parts = segments(model)
    sources, gots = nonfinite_sources(model, reference, hot, samples)
    hot = sorted({*hot, *sources})
    found = {"nonfinite_kept_fp32": sources} if sources else {}
    if sources and meets_budget(hot):  # the NaN's sources alone: no segment needed
        return hot, {"met": True, "fp32_segments": [], "segments": len(parts),
                     "fp16_mac_share": fp16_mac_share(model, hot, samples[0] if samples else None), **found}
    if len(samples) > RANKING_SAMPLES:
        gots = gots or ort_outputs(reference(model, hot), samples)
        error = [sum(nmse_per_output([r], [g], angles).values()) for r, g in zip(refs, gots)]
        worst = sorted(sorted(range(len(samples)), key=error.__getitem__, reverse=True)[:RANKING_SAMPLES])
        samples, refs = [samples[i] for i in worst], [refs[i] for i in worst]
    ranking, base = _ranking(model, parts, reference, hot, samples, refs, angles)
    chosen, met = select_float_layers(Ranking.of(ranking, base),
                                      lambda keep: meets_budget(sorted(set(hot).union(*(parts[p] for p in keep)))),
                                      start=1, base=base)
    kept = sorted(chosen)
    met = met and len(kept) < len(parts)  # every segment fp32 is an fp32 model, not an fp16 mix
    tensors = sorted(set(hot).union(*(parts[p] for p in kept)))
    record = {"met": met, "fp32_segments": kept, "segments": len(parts),
              "fp16_mac_share": fp16_mac_share(model, tensors, samples[0] if samples else None), "nmse_fp16": base, **found,
              "ranking": [{"segment": s.node, "nmse_gain": s.error_alone}
                          for s in sorted(ranking, key=lambda s: s.error_alone, reverse=True)]}
    return tensors, record
