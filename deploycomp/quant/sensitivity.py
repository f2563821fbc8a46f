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
And most searches need only the first few layers of the order, so it is measured lazily
(:class:`Ranking`): neighbours in groups of four first, a group's nodes alone only when
the group could hold the next layer taken. The order taken is the same; det on host
measures 39 units instead of 74 nodes.

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

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.angles import unwrap
from deploycomp.quant.bias_correction import apply_bias_shifts
from deploycomp.quant.calibrate import cores
from deploycomp.quant.downstream import FloatTaps, downstream_of_changes, frontier_of, tap_groups
from deploycomp.quant.exact import exact_qdq_options
from deploycomp.quant.policy import QDQPolicy
from deploycomp.quant.qdq import QDQPass, searchable_nodes
from deploycomp.quant.sessions import session as ort_session
from deploycomp.sums import dot64, squared_error64

__all__ = ["Angles", "GIVE_BACK_CHECKS", "Hurry", "LayerSensitivity", "Ranking", "nmse", "nmse_per_output", "ort_outputs", "outputs_of_each", "quantized_copy",
           "rank_layers", "round_robin", "sensitivity_ranking",
           "select_float_layers", "Verdict"]

Feeds = Mapping[str, np.ndarray]
Angles = Mapping[str, np.ndarray]
"""Outputs holding angles: each element's turn, 0 where it holds none (:mod:`deploycomp.angles`)."""


@dataclass
class LayerSensitivity:
    node: str
    op_type: str
    error_alone: float
    """Output NMSE (summed over outputs) with this node the only one quantized."""
    per_output: dict[str, float] | None = None
    """The same, per output."""


NONFINITE_NMSE = 1e6
"""The NMSE counted for a sample whose output has NaN or Inf: worse than any finite
error (noise in place of the output is ~1-2), and still a number, so a candidate that
makes the output finite again gains by it (an fp16 pitch tracker's NaN had made every
segment's gain NaN - base, read as 0: the search took segments in graph order)."""


def nmse_per_output(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
                    angles: Angles | None = None) -> dict[str, float]:
    """Each float output's NMSE (squared error over the reference's energy), mean over
    samples (:data:`NONFINITE_NMSE` for a sample where it is not finite, or of another
    shape: a length the model computes from its data). Integer outputs (ids, counts) are
    left out: their error is a step, zero until an id flips (see
    :mod:`deploycomp.quant.scores` for what stands in for them). ``angles``: outputs whose
    elements hold angles, each element's turn (:mod:`deploycomp.angles`): an element's
    error is taken to the nearest turn, as the budget check takes it (a direction that
    wrapped from pi to -pi is no error)."""
    out: dict[str, float] = {}
    for ref, got in zip(refs, gots):
        for name, r in ref.items():
            if not np.issubdtype(r.dtype, np.floating):
                continue
            if np.shape(got[name]) != r.shape:  # a size computed from the data came out otherwise
                out[name] = out.get(name, 0.0) + NONFINITE_NMSE
                continue
            g = unwrap(r, got[name], angles[name]) if angles and name in angles else got[name]
            error = squared_error64(g, r) / max(dot64(r, r), 1e-20)
            out[name] = out.get(name, 0.0) + (error if np.isfinite(error) else NONFINITE_NMSE)
    return {k: v / max(len(refs), 1) for k, v in out.items()}


def round_robin(ranking: Sequence[LayerSensitivity], base: Mapping[str, float]) -> list[LayerSensitivity]:
    """Layers in turns over the outputs, worst output first (see the module docstring).

    An output whose remaining layers add nothing to its error passes its turn (a layer on
    another head's branch does not help it); once every output passes, the rest follow by
    summed error. Ties keep the ranking's (graph) order."""
    if not base or not all(s.per_output for s in ranking):
        return sorted(ranking, key=lambda s: s.error_alone, reverse=True)
    queues = {k: sorted(ranking, key=lambda s: s.per_output.get(k, 0.0), reverse=True) for k in base}
    order, taken = [], set()
    while len(order) < len(ranking):
        before = len(order)
        for k in sorted(base, key=base.get, reverse=True):
            s = next((s for s in queues[k] if s.node not in taken), None)
            if s is not None and s.per_output.get(k, 0.0) > 0:
                order.append(s)
                taken.add(s.node)
        if len(order) == before:
            order += sorted((s for s in ranking if s.node not in taken), key=lambda s: s.error_alone, reverse=True)
    return order


def nmse(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
         angles: Angles | None = None) -> float:
    """The NMSE summed over outputs, mean over samples (:func:`nmse_per_output`, summed)."""
    return sum(nmse_per_output(refs, gots, angles).values())


def quantized_copy(model: ir.Model, policy: QDQPolicy, ranges, keep_float: set[str],
                   bias_shifts: Mapping[str, np.ndarray] | None = None,
                   weights_only: set[str] = frozenset()) -> ir.Model:
    """The QDQ model with ``keep_float`` layers in float (those also in ``weights_only``
    with int8 weights, for hybrid kernels); the other layers' biases corrected by
    ``bias_shifts`` (see :mod:`deploycomp.quant.bias_correction`)."""
    clone = model.clone()
    if bias_shifts:
        apply_bias_shifts(clone, bias_shifts, skip=set(keep_float))
    QDQPass(policy, ranges, set(keep_float), set(weights_only))(clone)
    return clone


def _workers() -> int:
    """Concurrent single-threaded ONNX Runtime runs: one per available core, at most 4.
    One thread per run makes the judged QDQ arithmetic the same on every machine (ORT's
    intra-op threads change float summation order: PP-OCR rec's per-layer errors moved by
    up to 0.2 % between 1 and 2 threads); side by side, runs use the cores better than one
    run across them (rec's ranking on 2 cores: 19.6 s instead of 24.1 s)."""
    return cores()


def _session(model: ir.Model | bytes, weights: Sequence[tuple[str, np.ndarray]] = ()):
    """A single-threaded ONNX Runtime session computing the QDQ arithmetic as written
    (:mod:`deploycomp.quant.exact`): ORT's own fused int8 kernels differ from it far more
    than the runtimes we target do, which misranks layers. ``weights``: a cut's in-place
    tensors (:class:`deploycomp.quant.downstream.Cut`)."""
    options = exact_qdq_options(threads=1)
    options.inter_op_num_threads = 1
    return ort_session(model, options, weights=weights)


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


GROUP_SIZE = 4
"""The lazy ranking (:class:`Ranking`) first measures searchable nodes this many at a time
(graph order), then each node of a group only when the search could take it. Measured on
PP-OCRv3 det (OpenVINO's encoding, 74 nodes): the search's first 2 and 8 nodes, exactly as
quantize-one orders them, cost 27 and 43 runs instead of 74; groups of 8 cost more (34 and
58: a sensitive node makes its whole group run again)."""

GROUP_SAFETY = 3.0
"""A group's error is compared at this multiple with the nodes already measured: a node's
error alone can exceed its group's, where the group's errors cancel (on det, groups of 4
measured 0.33-2.8x their members' summed errors)."""


HURRIED_UNITS = 8
"""Under a time limit the ranking's groups are measured this many at a time, so that a
limit that passes while they are measured cuts the rest (:class:`Ranking`)."""


class Hurry:
    """A time limit on the int8 search (``--int8-time-limit``): true once it has passed,
    and what each step the search cut short says it left out (the manifest's
    ``quantization.time_limit``). Where the search stops early it keeps what met the budget
    and gives up what would only have kept more layers int8: the ranking measures its
    remaining groups of neighbours in larger groups and stops measuring nodes alone
    (:class:`Ranking`, ``hurry``), the bisection and giving back are skipped
    (:func:`select_float_layers`), and so is the search for dynamic-range layers. A
    budget is never traded for time: the search still grows its float layers until one
    meets it."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] | None = None):
        self.clock = clock or time.perf_counter
        self.seconds = seconds
        self.deadline = None if seconds is None else self.clock() + seconds
        self.cut: list[str] = []

    def __call__(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def skip(self, what: str) -> bool:
        """True (and ``what`` recorded, once) when the limit has passed."""
        if not self():
            return False
        if what not in self.cut:
            self.cut.append(what)
        return True


class Ranking:
    """Quantize-one sensitivity of the searchable nodes, measured as the search asks for it.

    Every node's error alone is what the search orders by, but most searches take only the
    first few nodes of the order: a node whose group of :data:`GROUP_SIZE` neighbours,
    quantized together, adds less error than the nodes already measured can never come
    next (errors of separate nodes add, up to :data:`GROUP_SAFETY`), so it is not measured
    alone. ``measure(units)`` gives each unit's (list of nodes) output NMSE per output with
    only those nodes quantized. A fully measured list (:meth:`of`) needs no ``measure``.

    ``hurry`` (a :class:`Hurry`): once it says the time is up, the groups not yet measured
    are measured :data:`GROUP_SIZE` times larger (PP-OCRv5 det's 188 nodes on TFLite, its
    10 s limit passed during calibration: 12 runs instead of 47, the search 17.6 -> 8.7 s), and where the exact order would
    measure a group's nodes alone, the group's unplaced nodes are taken together, in graph
    order, when the group's error (what they add quantized together) beats the best node
    measured alone. Measured on PP-OCRv5 det in TFLite's encoding (188 searchable nodes,
    over 40 float to meet the budget), that way from the 16th node on: 123 runs of the
    model from a cut instead of 235, and 11 compute layers int8 instead of 19 (76% of the
    MACs static or dynamic instead of 81%): whole groups go float. The nodes taken
    unmeasured are the first the search gives back (:func:`select_float_layers`)."""

    def __init__(self, nodes: Sequence[tuple[str, str]], base: Mapping[str, float],
                 measure: Callable[[list[list[str]]], list[dict[str, float]]] | None = None,
                 group_size: int = GROUP_SIZE, hurry: Hurry | None = None):
        self.hurry = hurry
        self.ops = dict(nodes)
        self.index = {name: i for i, (name, _) in enumerate(nodes)}
        self.base = dict(base)
        self.measure = measure
        self.known: dict[str, LayerSensitivity] = {}
        self.groups: list[tuple[list[str], dict[str, float]]] = []
        self.runs = 0
        names = [name for name, _ in nodes]
        units = [names[i:i + group_size] for i in range(0, len(names), max(1, group_size))] if measure else []
        if hurry is None or hurry.deadline is None or group_size < 2:
            self._add(units)
            return
        for start in range(0, len(units), HURRIED_UNITS):  # (a limit that passes cuts this too)
            if hurry.skip("the ranking's groups at their size (the rest measured in groups "
                          f"{GROUP_SIZE} times larger)"):
                rest = [n for unit in units[start:] for n in unit]
                wide = group_size * GROUP_SIZE
                self._add([rest[i:i + wide] for i in range(0, len(rest), wide)])
                return
            self._add(units[start:start + HURRIED_UNITS])

    @classmethod
    def of(cls, ranking: Sequence[LayerSensitivity], base: Mapping[str, float] | None = None) -> "Ranking":
        made = cls([(s.node, s.op_type) for s in ranking], base or {})
        made.known = {s.node: s for s in ranking}
        return made

    def __len__(self) -> int:
        return len(self.ops)

    def _add(self, units: list[list[str]]) -> None:
        if not units:
            return
        self.runs += len(units)
        for unit, errors in zip(units, self.measure(units)):
            if len(unit) == 1:
                self.known[unit[0]] = LayerSensitivity(unit[0], self.ops[unit[0]], sum(errors.values()), errors)
            else:
                self.groups.append((unit, errors))

    def _value(self, errors: Mapping[str, float] | None, total: float, output: str | None) -> float:
        return total if output is None or errors is None else errors.get(output, 0.0)

    def _best(self, output: str | None, exclude: set[str], coarse: bool = False) -> list[str]:
        """The node not in ``exclude`` that alone adds most to ``output``'s error (the
        summed error for ``None``; ties to the earlier node in graph order), measuring the
        groups that could hold it; none when no node adds anything to it. ``coarse``:
        where that would measure a group's nodes alone, the group's nodes not in
        ``exclude`` instead when the group's error beats the best node measured."""
        while True:
            node, value = None, 0.0
            for n, s in self.known.items():
                v = self._value(s.per_output, s.error_alone, output)
                if n not in exclude and (v > value or (v == value and node is not None and self.index[n] < self.index[node])):
                    node, value = n, v
            group, bound = None, 0.0
            for members, errors in self.groups:
                open_members = [n for n in members if n not in exclude]
                v = GROUP_SAFETY * self._value(errors, sum(errors.values()), output)
                if open_members and (v > bound or (v == bound and group is not None and self.index[members[0]] < self.index[group[0][0]])):
                    group, bound = (members, errors), v
            if group is None or bound < value or bound == 0.0:
                return [] if node is None else [node]
            if coarse:  # the group with the largest bound has the largest error too
                return [n for n in group[0] if n not in exclude] if bound / GROUP_SAFETY > value else [node]
            self.groups.remove(group)
            self._add([[n] for n in group[0]])

    def _coarse(self) -> bool:
        return self.hurry is not None and self.hurry.skip("the ranking's later nodes measured alone (their groups "
                                                          "taken whole)")

    def take(self, count: int, exclude: Collection[str] = (), turns: Mapping[str, float] | None = None) -> list[str]:
        """The first ``count`` nodes not in ``exclude`` of the order :func:`round_robin`
        gives the fully measured ranking over the outputs of ``turns`` (their all-int8
        errors; the whole ranking's base when ``None``), measuring only what that prefix
        needs."""
        turns = self.base if turns is None else turns
        per_output = bool(turns) and all(s.per_output for s in self.known.values())
        outputs: list[str | None] = sorted(turns, key=turns.get, reverse=True) if per_output else [None]
        out: list[str] = []
        placed: set[str] = set()  # the order so far, taken earlier or now
        exclude = set(exclude)

        def place(nodes: list[str]) -> None:
            for node in nodes:
                placed.add(node)
                if node not in exclude and len(out) < count:
                    out.append(node)

        while len(out) < count and len(placed) < len(self.ops):
            before = len(placed)
            for output in outputs:
                place(self._best(output, placed, self._coarse()))
                if len(out) >= count:
                    break
            if len(placed) == before:  # every output passed its turn: the rest by summed error
                outputs = [None]
                nodes = self._best(None, placed, self._coarse())
                # nothing adds any error: graph order
                place(nodes or [min((n for n in self.ops if n not in placed), key=self.index.get)])
        return out

    def release(self) -> None:
        """Drop what the measuring keeps between calls (the float tensors at the cuts, up to
        :func:`deploycomp.quant.downstream.tap_budget`); a later measure takes them again."""
        getattr(self.measure, "release", lambda: None)()

    def measured(self) -> list[LayerSensitivity]:
        """The nodes measured alone, most sensitive first."""
        return sorted(self.known.values(), key=lambda s: s.error_alone, reverse=True)


def _measurer(model: ir.Model, policy: QDQPolicy, ranges, samples: Sequence[Feeds],
              refs: Sequence[Mapping[str, np.ndarray]], bias_shifts: Mapping[str, np.ndarray] | None,
              progress: Callable[[int], None] | None = None,
              copy_for: Callable[[list[str]], ir.Model] | None = None,
              angles: Angles | None = None) -> Callable[[list[list[str]]], list[dict[str, float]]]:
    """``measure(units)`` for :class:`Ranking`: each unit's output NMSE per output with only
    its nodes quantized, every other searchable node float. Each copy runs from its cut
    down on the float model's tensors there (see :mod:`deploycomp.quant.downstream`);
    copies side by side (each building its model while another runs), samples in turn.
    ``copy_for(unit)``: another way to change the unit's nodes (the default: static QDQ),
    e.g. :func:`deploycomp.quant.dynamic.dynamic_copy`."""
    order = [n.name for n in searchable_nodes(model, policy)]
    names = set(order)
    float_proto = ir.to_proto(model)
    float_nodes = {n.name: list(n.input) for n in float_proto.graph.node}

    def error_of(unit: list[str], taps: FloatTaps | None) -> dict[str, float]:
        copy = copy_for(unit) if copy_for else quantized_copy(model, policy, ranges, names - set(unit), bias_shifts)
        cut = taps and downstream_of_changes(float_nodes, copy, unit, taps.types)
        if not cut:
            return nmse_per_output(refs, ort_outputs(copy, samples, 1), angles)
        session = _session(cut.model, cut.weights)
        gots = [{**ref, **dict(zip(cut.outputs, session.run(cut.outputs, {k: tapped[k] for k in cut.inputs})))}
                for ref, tapped in zip(refs, taps.values)]
        return nmse_per_output(refs, gots, angles)

    kept: dict[str, FloatTaps | None] = {}

    def all_taps() -> FloatTaps | None:
        # every unit's frontier lies in the union of its nodes' frontiers: when the float
        # tensors at every node's cut fit at once, one float run per sample serves every
        # later measure (the lazy ranking measures a few units at a time)
        if "all" not in kept:
            frontiers = {n: frontier_of(float_proto, n) for n in order}
            groups = tap_groups(model, frontiers, len(samples))
            kept["all"] = (FloatTaps.collect(model, groups[0][1], samples, ort_outputs)
                           if len(groups) == 1 and groups[0][1] is not None else None)
        return kept["all"]

    def measure(units: list[list[str]]) -> list[dict[str, float]]:
        keys = {str(i): unit for i, unit in enumerate(units)}
        errors: dict[str, dict[str, float]] = {}
        shared = all_taps()
        batches = ([(list(keys), None)] if shared is not None else
                   tap_groups(model, {k: frontier_of(float_proto, u) for k, u in keys.items()}, len(samples)))
        with ThreadPoolExecutor(_workers()) as pool:
            for group, tensors in batches:  # the float model's taps for one group of units at a time
                taps = shared or (FloatTaps.collect(model, tensors, samples, ort_outputs) if tensors is not None else None)
                for key, err in zip(group, pool.map(lambda key: error_of(keys[key], taps), group)):
                    errors[key] = err
                    if progress:
                        progress(1)
        return [errors[k] for k in keys]

    measure.release = kept.clear  # type: ignore[attr-defined]
    return measure


def sensitivity_ranking(model: ir.Model, policy: QDQPolicy, ranges, samples: Sequence[Feeds],
                        refs: Sequence[Mapping[str, np.ndarray]], bias_shifts: Mapping[str, np.ndarray] | None = None,
                        group_size: int = GROUP_SIZE, hurry: Hurry | None = None,
                        angles: Angles | None = None) -> Ranking:
    """The lazy quantize-one ranking (:class:`Ranking`) the float-layer search takes its
    nodes from; the all-int8 model's NMSE per output is its ``base``."""
    base = nmse_per_output(refs, ort_outputs(quantized_copy(model, policy, ranges, set(), bias_shifts), samples),
                           angles)
    layers = searchable_nodes(model, policy)
    return Ranking([(n.name, n.op_type) for n in layers], base,
                   _measurer(model, policy, ranges, samples, refs, bias_shifts, angles=angles), group_size, hurry)


def rank_layers(model: ir.Model, policy: QDQPolicy, ranges, samples: Sequence[Feeds],
                refs: Sequence[Mapping[str, np.ndarray]], progress: Callable[[int, int], None] | None = None,
                bias_shifts: Mapping[str, np.ndarray] | None = None) -> tuple[list[LayerSensitivity], dict[str, float]]:
    """Quantize-one sensitivity of every searchable node, each measured alone, in the order
    the float search takes them (:func:`round_robin`), and the all-int8 model's NMSE per
    output."""
    base = nmse_per_output(refs, ort_outputs(quantized_copy(model, policy, ranges, set(), bias_shifts), samples))
    layers = searchable_nodes(model, policy)
    done = [0]

    def counted(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(layers))

    ranking = Ranking([(n.name, n.op_type) for n in layers], base,
                      _measurer(model, policy, ranges, samples, refs, bias_shifts, counted), group_size=1)
    out = [ranking.known[n.name] for n in layers]
    return round_robin(out, base), base


REFINE_STEPS = 8
"""After the doubling finds a prefix that meets the budget (and half of it that does not),
up to this many bisection steps between the two look for the shortest one (8: to the
single node for any gap up to 256): at 32 of 102 layers after 16 failed, a step at 24 can
keep 8 more layers int8 for one more check. Three steps took PP-OCRv3 det on TensorRT
from 20 float nodes to 18 and on TFLite from 14 to 13; the steps that miss are the cheap
checks, dropped on their hardest samples (:data:`deploycomp.int8_build.FAIL_FAST_SAMPLES`)."""


@dataclass(frozen=True)
class Verdict:
    """A budget check's answer: truthy when met; ``failing`` names the outputs that missed
    (``None`` where the check cannot tell, e.g. a user's own metric); ``score``: how close
    it came, higher is better (the worst cosine over outputs and samples; ``None`` where
    the check cannot tell)."""
    met: bool
    failing: frozenset[str] | None = None
    score: float | None = None

    def __bool__(self) -> bool:
        return self.met


def select_float_layers(ranking: "Ranking | Sequence[LayerSensitivity]", meets_budget: Callable[[set[str]], object],
                        max_float_fraction: float = 1.0, start: int = 0,
                        refine: int = REFINE_STEPS, base: Mapping[str, float] | None = None,
                        after: Collection[str] = (), give_back: int = 0,
                        given_back: list[str] | None = None, hurry: Hurry | None = None) -> tuple[set[str], bool]:
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
    few more layers, not twice as many), without checking them alone again.

    ``give_back``: up to this many more checks return float layers to int8 where the
    budget still holds (:func:`_give_back`; none by default); ``given_back``, a list,
    receives them (the choice before giving back is the result plus them).

    ``hurry``: once its time is up, the first size that meets the budget is the choice
    (no bisection, no giving back), unless it is every layer: then the bisection runs
    until a size with a layer int8 meets it."""
    ranking = ranking if isinstance(ranking, Ranking) else Ranking.of(ranking, base)
    limit = max(1, int(round(len(ranking) * max_float_fraction)))
    verdicts: dict[frozenset[str], object] = {}
    check = meets_budget

    def meets_budget(keep: set[str]) -> object:  # noqa: F811 - each set is checked once
        key = frozenset(keep)
        if key not in verdicts:
            verdicts[key] = check(keep)
        return verdicts[key]

    taken: list[str] = list(after)  # float layers in the order taken: every size checked is a prefix
    floor = len(taken)

    def grow(n: int, failing: frozenset[str] | None) -> None:
        turns = {k: base[k] for k in failing if k in base} if failing and base else base
        taken.extend(ranking.take(n - len(taken), taken, turns or None))

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
        if len(taken) == missed:  # nothing left to take (a model with no layer to rank: it had looped forever)
            return set(taken), False
    met = len(taken)
    for _ in range(refine):
        if missed is None or met - missed <= 1:
            break
        if met < len(ranking) and hurry and hurry.skip("the bisection of the float layers"):
            break  # (with every layer float there is no int8 build yet: that much bisection stays)
        mid = (missed + met) // 2
        if meets_budget(set(taken[:mid])):
            met = mid
        else:
            missed = mid
    chosen = taken[:met]
    if give_back and met - floor > 1 and not (hurry and hurry.skip("giving float layers back")):
        known = ranking.known  # ties: the later taken first
        order = {n: i for i, n in enumerate(chosen)}
        least_first = sorted(chosen[floor:], key=lambda n: (known[n].error_alone if n in known else 0.0, -order[n]))
        kept = _give_back(chosen, least_first, meets_budget, give_back, verdicts)
        if given_back is not None:
            given_back.extend(n for n in chosen if n not in kept)
        chosen = kept
    return set(chosen), True


GIVE_BACK_CHECKS = 6
"""Checks the float-layer search may spend returning its float layers to int8
(:func:`_give_back`). Layer errors do not add: on PP-OCRv5 rec (OpenVINO), keeping the
one layer that added most error alone float took the worst cosine from 0.985 to 0.945,
and the budget was met only once the 7th layer went float, so the 6 before it were kept
float for nothing."""


def _give_back(chosen: list[str], candidates: list[str], meets_budget: Callable[[set[str]], object],
               checks: int, checked: Collection[frozenset[str]] = ()) -> list[str]:
    """``chosen`` (float layers that meet the budget) less those of ``candidates`` (least
    sensitive first) that can go back to int8 with the budget still met: halves first,
    a half that misses split again, at most ``checks`` checks (a set in ``checked``, whose
    verdict is known, costs none). The search's prefixes assume errors add; a prefix can
    hold layers whose int8 error cancels another's."""
    def halves(names: list[str]) -> list[list[str]]:
        half = (len(names) + 1) // 2
        return [names[:half], names[half:]]

    floats = list(chosen)
    groups = halves(candidates)
    while groups and checks > 0:
        group = [n for n in groups.pop(0) if n in floats]
        if not group:
            continue
        trial = [n for n in floats if n not in group]
        checks -= frozenset(trial) not in checked
        if trial and meets_budget(set(trial)):
            floats = trial
        elif len(group) > 1:
            groups[:0] = halves(group)
    return floats
