"""Which layers int8 hurts most, and the fewest to keep in float to meet a budget.

Ranking is quantize-one: with every other searchable node in float, quantize one and
measure the output error it alone adds (normalised MSE against the fp32 model, per
output, on held-out samples). The ranking is run in ONNX Runtime (cheap: one session per
layer); the selection then checks candidates with the target's own runtime, because a
backend can execute the same QDQ graph differently.

Why not drop-one (every other layer int8, this one float, how much error goes away):
on a model whose int8 error is spread over many layers, each layer's share is buried in
the others' noise, and errors that cancel make layers look harmless. Measured on
PP-OCRv3 det (95 nodes, TensorRT's encoding): drop-one gains summed to 3x the all-int8
error, and its first 64 float layers gave cosine 0.955 on the validation set (16 gave
0.875: *worse* than all-int8's 0.941), while the quantize-one order reached 0.993 at 24;
in TFLite's encoding (150 nodes) 0.98 at 12 instead of not at 64. Each layer measured
alone also costs less: its model has one QDQ group instead of all of them, and only the
part downstream of that group runs, on the float model's tensors at the cut
(:mod:`deploycomp.quant.downstream`; the same numbers, det's ranking 34 s -> 19 s).

The order serves the budget, which every output must meet: a detector's 8 heads (4 score
maps, 4 box maps) each fall short by their own layers, and a ranking by the error summed
over outputs spends its float layers on whichever head dominates the sum. So layers are
taken round robin over the outputs, the worst output (all-int8) first in each round,
each output's turn going to the layer that alone adds most to *its* error (measured with
drop-one on PP-PicoDet's layout detector, OpenVINO's encoding: the budget's 0.98 at 16 of
102 layers float instead of 64).

Selection keeps the top-k most sensitive layers in float for k = 0, 1, 2, 4, 8, ...
and returns the first k whose model meets the budget. There is no cap: a model whose
budget needs most layers float gets them (an audio front-end of three layers, capped at
half, kept a MatMul on a power spectrum int8 and validated to cosine -0.998), and the
manifest says what share of the MACs still runs int8.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.quant.bias_correction import apply_bias_shifts
from deploycomp.quant.calibrate import cores
from deploycomp.quant.downstream import FloatTaps, downstream_of_changes, frontier_of, tap_groups
from deploycomp.quant.exact import exact_qdq_options
from deploycomp.quant.policy import QDQPolicy
from deploycomp.quant.qdq import QDQPass, searchable_nodes

__all__ = ["LayerSensitivity", "nmse", "nmse_per_output", "ort_outputs", "outputs_of_each", "quantized_copy",
           "rank_layers", "round_robin",
           "select_float_layers", "Verdict"]

Feeds = Mapping[str, np.ndarray]


@dataclass
class LayerSensitivity:
    node: str
    op_type: str
    error_alone: float
    """Output NMSE (summed over outputs) with this node the only one quantized."""
    per_output: dict[str, float] | None = None
    """The same, per output."""


def nmse_per_output(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Each output's NMSE (squared error over the reference's energy), mean over samples."""
    out: dict[str, float] = {}
    for ref, got in zip(refs, gots):
        for name, r in ref.items():
            r = r.astype(np.float64)
            out[name] = out.get(name, 0.0) + float(np.sum((got[name].astype(np.float64) - r) ** 2) / max(np.sum(r**2), 1e-20))
    return {k: v / max(len(refs), 1) for k, v in out.items()}


def round_robin(ranking: Sequence[LayerSensitivity], base: Mapping[str, float]) -> list[LayerSensitivity]:
    """Layers in turns over the outputs, worst output first (see the module docstring)."""
    if not base or not all(s.per_output for s in ranking):
        return sorted(ranking, key=lambda s: s.error_alone, reverse=True)
    queues = {k: sorted(ranking, key=lambda s: s.per_output.get(k, 0.0), reverse=True) for k in base}
    order, taken = [], set()
    while len(order) < len(ranking):
        for k in sorted(base, key=base.get, reverse=True):
            for s in queues[k]:
                if s.node not in taken:
                    order.append(s)
                    taken.add(s.node)
                    break
    return order


def nmse(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]]) -> float:
    """The NMSE summed over outputs, mean over samples (:func:`nmse_per_output`, summed)."""
    return sum(nmse_per_output(refs, gots).values())


def quantized_copy(model: ir.Model, policy: QDQPolicy, ranges, keep_float: set[str],
                   bias_shifts: Mapping[str, np.ndarray] | None = None) -> ir.Model:
    """The QDQ model with ``keep_float`` layers in float; the other layers' biases
    corrected by ``bias_shifts`` (see :mod:`deploycomp.quant.bias_correction`)."""
    clone = model.clone()
    if bias_shifts:
        apply_bias_shifts(clone, bias_shifts, skip=set(keep_float))
    QDQPass(policy, ranges, set(keep_float))(clone)
    return clone


def _workers() -> int:
    """Concurrent single-threaded ONNX Runtime runs: one per available core, at most 4.
    One thread per run makes the judged QDQ arithmetic the same on every machine (ORT's
    intra-op threads change float summation order: PP-OCR rec's per-layer errors moved by
    up to 0.2 % between 1 and 2 threads); side by side, runs use the cores better than one
    run across them (rec's ranking on 2 cores: 19.6 s instead of 24.1 s)."""
    return cores()


def _session(model: ir.Model | bytes):
    """A single-threaded ONNX Runtime session computing the QDQ arithmetic as written
    (:mod:`deploycomp.quant.exact`): ORT's own fused int8 kernels differ from it far more
    than the runtimes we target do, which misranks layers."""
    import onnxruntime as ort

    if isinstance(model, ir.Model):
        model = ir.to_proto(model).SerializeToString()
    options = exact_qdq_options(threads=1)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _run(session, sample: Feeds) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(sample))))


def outputs_of_each(models: Iterable[ir.Model], samples: Sequence[Feeds],
                    workers: int | None = None) -> Iterator[list[dict[str, np.ndarray]]]:
    """Each model's outputs on ``samples`` (see :func:`ort_outputs`), in turn. The samples
    of one model run side by side while the next model is made (``models`` may be a lazy
    iterable: building a QDQ copy and its session is single-threaded Python) and its
    session created; at most two models' sessions and outputs are held at a time."""
    workers = max(1, min(workers or _workers(), len(samples) or 1))
    with ThreadPoolExecutor(workers) as pool:
        running = None
        for model in models:
            session = _session(model)
            queued = [pool.submit(_run, session, s) for s in samples]
            if running is not None:
                yield [f.result() for f in running]
            running = queued
        if running is not None:
            yield [f.result() for f in running]


def ort_outputs(model: ir.Model, samples: Sequence[Feeds], workers: int | None = None) -> list[dict[str, np.ndarray]]:
    """Outputs with the QDQ arithmetic as written (see :func:`_session`); samples run side by
    side on one single-threaded session (``workers``: how many at once)."""
    return next(outputs_of_each([model], samples, workers))


def rank_layers(model: ir.Model, policy: QDQPolicy, ranges, samples: Sequence[Feeds],
                refs: Sequence[Mapping[str, np.ndarray]], progress: Callable[[int, int], None] | None = None,
                bias_shifts: Mapping[str, np.ndarray] | None = None) -> tuple[list[LayerSensitivity], dict[str, float]]:
    """Quantize-one sensitivity of every searchable node, in the order the float search
    takes them (:func:`round_robin`), and the all-int8 model's NMSE per output."""
    base = nmse_per_output(refs, ort_outputs(quantized_copy(model, policy, ranges, set(), bias_shifts), samples))
    layers = searchable_nodes(model, policy)
    names = {n.name for n in layers}
    # each copy differs from the float model only downstream of its node: run that part,
    # on the float model's tensors at its frontier (see deploycomp.quant.downstream)
    float_proto = ir.to_proto(model)
    float_nodes = {n.name: list(n.input) for n in float_proto.graph.node}
    groups = tap_groups(model, {n.name: frontier_of(float_proto, n.name) for n in layers}, len(samples))
    by_name = {n.name: n for n in layers}

    def error_alone(node: ir.Node, taps: FloatTaps | None) -> dict[str, float]:
        # layers side by side (each building its model while another runs), samples in turn
        copy = quantized_copy(model, policy, ranges, names - {node.name}, bias_shifts)
        cut = taps and downstream_of_changes(float_nodes, ir.to_proto(copy), [node.name], taps.types)
        if not cut:
            return nmse_per_output(refs, ort_outputs(copy, samples, 1))
        session = _session(cut.model)
        gots = [{**ref, **dict(zip(cut.outputs, session.run(cut.outputs, {k: tapped[k] for k in cut.inputs})))}
                for ref, tapped in zip(refs, taps.values)]
        return nmse_per_output(refs, gots)

    errors: dict[str, dict[str, float]] = {}
    with ThreadPoolExecutor(_workers()) as pool:
        for group, tensors in groups:  # the float model's taps for one group of nodes at a time
            taps = FloatTaps.collect(model, tensors, samples, ort_outputs) if tensors is not None else None
            for name, err in zip(group, pool.map(lambda name: error_alone(by_name[name], taps), group)):
                errors[name] = err
                if progress:
                    progress(len(errors), len(layers))
    out = [LayerSensitivity(n.name, n.op_type, sum(errors[n.name].values()), errors[n.name]) for n in layers]
    return round_robin(out, base), base


REFINE_STEPS = 8
"""After the doubling finds a prefix that meets the budget (and half of it that does not),
up to this many bisection steps between the two look for the shortest one (8: to the
single node for any gap up to 256): at 32 of 102 layers after 16 failed, a step at 24 can
keep 8 more layers int8 for one more check. Three steps took PP-OCRv3 det on TensorRT
from 20 float nodes to 18 and on TFLite from 14 to 13; the steps that miss are the cheap
checks, dropped on their hardest samples (:data:`deploycomp.pipeline.FAIL_FAST_SAMPLES`)."""


@dataclass(frozen=True)
class Verdict:
    """A budget check's answer: truthy when met; ``failing`` names the outputs that missed
    (``None`` where the check cannot tell, e.g. a user's own metric)."""
    met: bool
    failing: frozenset[str] | None = None

    def __bool__(self) -> bool:
        return self.met


def select_float_layers(ranking: Sequence[LayerSensitivity], meets_budget: Callable[[set[str]], object],
                        max_float_fraction: float = 1.0, start: int = 0,
                        refine: int = REFINE_STEPS, base: Mapping[str, float] | None = None,
                        after: Collection[str] = ()) -> tuple[set[str], bool]:
    """The fewest layers of the ranking to keep float for the budget: sizes 0, 1, 2, 4, ...,
    all (from ``start``), then up to ``refine`` bisection steps between the last size that
    missed and the first that met it; ``max_float_fraction`` caps the count (none by
    default).

    Each growth takes its layers in turns over the outputs that missed the last check, when
    ``meets_budget`` says which (a :class:`Verdict`) and ``base`` gives each output's
    all-int8 error: an output that already meets the budget takes no more turns. Measured
    on the layout detector (OpenVINO's encoding): 8 float layers left its 4 box outputs at
    cosine >= 0.994 and its 4 score outputs at 0.980-0.985, yet turns over all 8 outputs
    gave half of the next layers to the boxes.

    ``after``: the layers an earlier search chose, which a stricter check has found
    wanting (the validation inputs missed what the calibration inputs met): they stay
    float, and the sizes 1, 2, 4, ... count from them (a stricter check mostly needs a
    few more layers, not twice as many), without checking them alone again."""
    limit = max(1, int(round(len(ranking) * max_float_fraction)))
    taken: list[str] = list(after)  # float layers in the order taken: every size checked is a prefix
    floor = len(taken)

    def grow(n: int, failing: frozenset[str] | None) -> None:
        turns = {k: base[k] for k in failing if k in base} if failing and base else base
        order = round_robin(ranking, turns or {}) if turns else list(ranking)
        for s in order:
            if len(taken) >= n:
                break
            if s.node not in taken:
                taken.append(s.node)

    if floor >= limit:
        return set(taken), False
    k = max(start, 1) if floor else start  # layers past the earlier choice
    missed = floor if floor else None
    grow(min(floor + k, limit), None)
    while not (verdict := meets_budget(set(taken))):
        if len(taken) >= limit:
            return set(taken), False
        missed = len(taken)
        k = 1 if k == 0 else 2 * k
        grow(min(floor + k, limit), getattr(verdict, "failing", None))
    met = len(taken)
    for _ in range(refine):
        if missed is None or met - missed <= 1:
            break
        mid = (missed + met) // 2
        if meets_budget(set(taken[:mid])):
            met = mid
        else:
            missed = mid
    return set(taken[:met]), True
