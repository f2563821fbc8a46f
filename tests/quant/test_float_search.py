"""The float-layer search keeps as many layers float as the budget needs: no cap."""

from __future__ import annotations

import numpy as np

from deploycomp.quant.sensitivity import LayerSensitivity, select_float_layers


def _ranking(n: int) -> list[LayerSensitivity]:
    return [LayerSensitivity(f"l{i}", "Conv", (n - i) / n) for i in range(n)]


def test_all_layers_may_stay_float():
    """A three-layer audio front-end whose budget needs every layer float gets them; capped
    at half, the search used to stop at one and ship a MatMul on a power spectrum int8."""
    asked = []

    def meets(keep: set[str]) -> bool:
        asked.append(len(keep))
        return len(keep) == 3

    chosen, met = select_float_layers(_ranking(3), meets, start=1)
    assert met and chosen == {"l0", "l1", "l2"} and asked == [1, 2, 3]  # 2 missed, 3 met: nothing between


def test_the_fewest_are_kept_and_a_miss_is_reported():
    asked = []

    def five(keep: set[str]) -> bool:
        asked.append(len(keep))
        return len(keep) >= 5

    chosen, met = select_float_layers(_ranking(20), five, start=1)
    assert met and len(chosen) == 5 and asked == [1, 2, 4, 8, 6, 5]  # doubling, then bisection between 4 and 8
    assert len(select_float_layers(_ranking(20), lambda keep: len(keep) >= 5, start=1, refine=0)[0]) == 8
    asked.clear()  # the bisection goes down to the single node: 32 missed, 64 met, then 48, 40, 36, 38, 37
    chosen, met = select_float_layers(_ranking(200), lambda keep: asked.append(len(keep)) or len(keep) >= 37, start=1)
    assert met and len(chosen) == 37 and asked[-5:] == [48, 40, 36, 38, 37]
    chosen, met = select_float_layers(_ranking(20), lambda keep: False, start=1)
    assert not met and len(chosen) == 20
    chosen, met = select_float_layers(_ranking(20), lambda keep: False, max_float_fraction=0.5)
    assert not met and len(chosen) == 10  # a cap still works when asked for


def test_a_search_with_no_layer_to_rank_ends_missed():
    """A model whose only op on the way is a Gather (ids cast from int8 inputs): no compute
    layer to rank, the all-int8 candidate missed, and the search took nothing more forever."""
    import threading

    result = []
    worker = threading.Thread(target=lambda: result.append(select_float_layers(_ranking(0), lambda keep: False)),
                              daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert result == [(set(), False)]



def test_layers_are_taken_round_robin_over_outputs():
    """Every output must meet the budget: the worst output's best layer comes first, then
    the next output's, not the layers of whichever output dominates the summed error."""
    from deploycomp.quant.sensitivity import round_robin

    ranking = [LayerSensitivity("box1", "Conv", 0.9, {"boxes": 0.9, "scores": 0.0}),
               LayerSensitivity("box2", "Conv", 0.8, {"boxes": 0.8, "scores": 0.0}),
               LayerSensitivity("cls1", "Conv", 0.1, {"boxes": 0.0, "scores": 0.1}),
               LayerSensitivity("cls2", "Conv", 0.05, {"boxes": 0.0, "scores": 0.05})]
    base = {"boxes": 1.0, "scores": 0.1}  # scores' error is small in the sum, but it fails the budget too
    assert [s.node for s in round_robin(ranking, base)] == ["box1", "cls1", "box2", "cls2"]
    assert [s.node for s in round_robin(ranking, {"boxes": 1.0})] == ["box1", "box2", "cls1", "cls2"]  # one output


def _two_branch_model():
    """out = x1 @ W1 + x2 @ W2, where x2 carries one huge value beside small ones: a per-tensor
    int8 scale for x2 rounds its small values to zero, so its MatMul is the sensitive one."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), n) for n in ("w1", "w2"))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x1", "w1"], ["a"], name="mm_plain"),
         helper.make_node("MatMul", ["x2", "w2"], ["b"], name="mm_outlier"),
         helper.make_node("Add", ["a", "b"], ["out"], name="add")],
        "two_branch",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 32]) for n in ("x1", "x2")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16])], [w1, w2])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def sample(seed):
        r = np.random.default_rng(seed)
        x2 = r.standard_normal((1, 32)).astype(np.float32)
        x2[0, 0] = 2000.0
        return {"x1": r.standard_normal((1, 32)).astype(np.float32), "x2": x2}

    import onnx_ir as ir
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto)), sample


def test_ranking_measures_each_layer_quantized_alone():
    """The ranking is quantize-one: each node's error is the output NMSE of the model with
    only that node int8 (every other one float), so one layer's error is never buried in the
    others' (drop-one misordered PP-OCRv3 det so that 64 of 95 float layers missed 0.98)."""
    from deploycomp.quant.calibrate import Observers, Statistics, stream_into
    from deploycomp.quant.policy import POLICIES
    from deploycomp.quant.qdq import quantizable_tensors
    from deploycomp.quant.sensitivity import nmse_per_output, ort_outputs, quantized_copy, rank_layers

    model, sample = _two_branch_model()
    policy = POLICIES["openvino"]
    calib, held = [sample(i) for i in range(8)], [sample(100 + i) for i in range(3)]
    observers = Observers(list(quantizable_tensors(model, policy)))
    stream_into(model, [observers], calib)
    ranges = Statistics(observers.observers, len(calib)).ranges("minmax")
    refs = ort_outputs(model, held)
    ranking, base = rank_layers(model, policy, ranges, held, refs)
    assert [s.node for s in ranking][0] == "mm_outlier"
    assert ranking[0].error_alone > 100 * ranking[-1].error_alone
    for s in ranking:
        others = {r.node for r in ranking} - {s.node}
        alone = nmse_per_output(refs, ort_outputs(quantized_copy(model, policy, ranges, others), held))
        assert s.per_output == alone and s.error_alone == sum(alone.values())
    assert set(base) == {"out"} and base["out"] > 0


def test_an_output_that_meets_the_budget_takes_no_more_turns():
    """After a check, the next layers go to the outputs that missed it: a detector whose box
    outputs already hold spends its float layers on the score outputs that do not."""
    from deploycomp.quant.sensitivity import Verdict

    ranking = [LayerSensitivity(f"box{i}", "Conv", 1.0 - i / 10, {"boxes": 1.0 - i / 10, "scores": 0.0}) for i in range(4)]
    ranking += [LayerSensitivity(f"cls{i}", "Conv", 0.5 - i / 10, {"boxes": 0.0, "scores": 0.5 - i / 10}) for i in range(4)]
    base = {"boxes": 1.0, "scores": 0.5}
    asked = []

    def meets(keep: set[str]) -> Verdict:
        asked.append(sorted(keep))
        scores_ok = {"cls0", "cls1", "cls2"} <= keep
        boxes_ok = "box0" in keep
        failing = frozenset(k for k, ok in (("boxes", boxes_ok), ("scores", scores_ok)) if not ok)
        return Verdict(not failing, failing)

    chosen, met = select_float_layers(ranking, meets, start=1, base=base)
    assert met and chosen == {"box0", "cls0", "cls1", "cls2"}
    assert asked[:3] == [["box0"], ["box0", "cls0"], ["box0", "cls0", "cls1", "cls2"]]
    # turns over every output would have spent the third and fourth layers on box1 and cls1
    blind, _ = select_float_layers(ranking, lambda keep: bool(meets(keep)), start=1, base=base)
    assert len(blind) > len(chosen)


def test_a_stricter_check_continues_past_the_earlier_choice():
    """When the validation inputs miss what the calibration inputs met, the search goes on
    from the layers it chose: they stay float, are not checked alone again, and the sizes
    grow by 1, 2, 4, ... past them (PP-OCRv3 rec for TensorRT: 12 float layers met on the
    calibration lines, the validation lines needed 16)."""
    ranking = _ranking(49)
    first = {f"l{i}" for i in range(12)}
    asked = []

    def stricter(keep: set[str]) -> bool:
        asked.append(len(keep))
        assert first <= keep
        return len(keep) >= 16

    chosen, met = select_float_layers(ranking, stricter, start=1, after=first)
    assert met and len(chosen) == 16 and asked == [13, 14, 16, 15]
    chosen, met = select_float_layers(ranking, lambda keep: False, start=1, after=first)
    assert not met and len(chosen) == 49
    assert select_float_layers(ranking, lambda keep: True, after={s.node for s in ranking}) == (
        {s.node for s in ranking}, False)  # nothing left to add


def test_the_stricter_margin_follows_how_much_worse_validation_was():
    from deploycomp.int8_build import stricter_margin

    # rec for TensorRT: judged 0.9872, validation 0.9744 (error x2): aim at 0.9 / 2 of the budget
    assert abs(stricter_margin(0.75, 0.98, 0.9872, 0.9744) - 0.45) < 0.01
    assert abs(stricter_margin(0.75, 0.98, 0.9855, 0.9795) - 0.6) < 1e-9  # a near miss still tightens a step
    assert stricter_margin(0.75, 0.98, 0.99999, 0.5) == 0.05  # calibration said nothing: the floor
    assert stricter_margin(0.75, 0.98, 0.99, 0.99) == 0.375  # missed by another criterion (top-1): halve


def test_the_lazy_ranking_takes_what_quantize_one_would_measuring_less():
    """Nodes are measured in groups of four first; a node is measured alone only when its
    group could hold the next one the search takes. The order taken is the fully measured
    round-robin order, and a search that needs few layers measures few of them alone."""
    from deploycomp.quant.sensitivity import Ranking, round_robin

    rng = np.random.default_rng(1)
    outputs = ("boxes", "scores")
    alone = {f"l{i}": {o: float(rng.uniform(0, 1e-4)) for o in outputs} for i in range(40)}
    alone["l5"]["boxes"], alone["l17"]["scores"], alone["l30"]["boxes"] = 0.5, 0.2, 0.1  # a few sensitive nodes
    base = {"boxes": 1.0, "scores": 0.3}
    measured: list[list[str]] = []

    def measure(units):  # separate nodes' errors add (the premise the groups rest on)
        measured.extend(units)
        return [{o: sum(alone[n][o] for n in unit) for o in outputs} for unit in units]

    full = round_robin([LayerSensitivity(n, "Conv", sum(e.values()), e) for n, e in alone.items()], base)
    lazy = Ranking([(n, "Conv") for n in alone], base, measure)
    assert lazy.runs == 10  # one run per group of four
    assert lazy.take(3) == [s.node for s in full[:3]]
    assert sum(len(u) == 1 for u in measured) == 12  # only the three groups holding them, node by node
    first = lazy.take(3)
    assert lazy.take(5, first) == [s.node for s in full[3:8]]  # the search grows past what it took
    assert lazy.take(4, first, {"scores": 0.3}) == [s.node for s in round_robin(full, {"scores": 0.3})
                                                     if s.node not in first][:4]  # only the failing output's turns
    assert lazy.take(len(alone)) == [s.node for s in full]  # asked for all, it measures all
    assert {lazy_node.node for lazy_node in lazy.measured()} == set(alone)


def test_the_lazy_order_is_the_round_robin_order_on_any_ranking():
    """On random rankings (1-3 outputs, errors spread over 9 orders of magnitude, some
    nodes off an output's branch), every prefix the search asks for, past what it took and
    with turns for the failing outputs only, is the fully measured order's."""
    from deploycomp.quant.sensitivity import Ranking, round_robin

    for seed in range(60):
        rng = np.random.default_rng(seed)
        outputs = [f"o{i}" for i in range(rng.integers(1, 4))]
        alone = {f"l{i}": {o: float(rng.lognormal(-4, 3)) if rng.random() < 0.6 else 0.0 for o in outputs}
                 for i in range(rng.integers(1, 30))}
        base = {o: float(rng.random()) for o in outputs}

        def order(turns):
            return [s.node for s in round_robin([LayerSensitivity(n, "Conv", sum(e.values()), e)
                                                 for n, e in alone.items()], turns)]

        lazy = Ranking([(n, "Conv") for n in alone], base,
                       lambda units: [{o: sum(alone[n][o] for n in unit) for o in outputs} for unit in units])
        k, m = (int(v) for v in rng.integers(0, len(alone) + 1, 2))
        first = lazy.take(k)
        assert first == order(base)[:k]
        assert lazy.take(m, first) == order(base)[k:k + m]
        turns = {outputs[0]: base[outputs[0]]}
        assert lazy.take(m, first, turns) == [n for n in order(turns) if n not in first][:m]


def test_past_the_time_limit_groups_are_taken_whole_unmeasured():
    """Once the time limit has passed, a search that needs many more layers float stops
    measuring nodes alone: a group of neighbours whose error beats every node measured
    is taken whole, its nodes in graph order, none of them measured alone. What was
    taken before stays the exact order, and the limit says what it cut."""
    from deploycomp.quant.sensitivity import Hurry, Ranking, round_robin

    rng = np.random.default_rng(3)
    alone = {f"l{i:02d}": {"y": float(rng.lognormal(-6, 3))} for i in range(64)}
    base = {"y": 1.0}
    measured: list[list[str]] = []

    def measure(units):
        measured.extend(units)
        return [{"y": sum(alone[n]["y"] for n in unit)} for unit in units]

    full = [s.node for s in round_robin([LayerSensitivity(n, "Conv", e["y"], e) for n, e in alone.items()], base)]
    exact = Ranking([(n, "Conv") for n in alone], base, measure)
    assert exact.take(48) == full[:48]

    measured.clear()
    now = [0.0]
    hurry = Hurry(10.0, clock=lambda: now[0])
    lazy = Ranking([(n, "Conv") for n in alone], base, measure, hurry=hurry)
    first = lazy.take(8)
    assert first == full[:8] and not hurry.cut  # within the limit: the exact order
    runs = lazy.runs
    now[0] = 11.0
    deep = lazy.take(40, first)
    assert len(deep) == 40 and not set(deep) & set(first) and len(set(deep)) == 40
    assert lazy.runs == runs < exact.runs  # nothing more measured
    unmeasured = [n for n in deep if n not in lazy.known]
    groups = [u for u in measured if len(u) > 1]
    assert unmeasured and all(any(n in g for g in groups) for n in unmeasured)
    for g in groups:  # a group is taken whole: its unmeasured nodes sit together, in graph order
        at = [deep.index(n) for n in g if n in deep and n not in lazy.known]
        assert at == list(range(at[0], at[0] + len(at))) if at else True
    assert lazy.take(48)[8:48] == deep  # the search's prefixes stay prefixes
    assert hurry.cut == ["the ranking's later nodes measured alone (their groups taken whole)"]


def test_a_time_limit_that_passes_during_the_first_measuring_cuts_it_too():
    """The ranking's first runs (every group of four neighbours) were not cut by the time
    limit: PP-OCRv5 det's 188 nodes on TFLite ran 47 of them after a 10 s limit had passed
    in calibration. Measured a few groups at a time, the rest go in groups four times as
    large once the limit passes, and the search still gets every node it asks for."""
    from deploycomp.quant.sensitivity import GROUP_SIZE, HURRIED_UNITS, Hurry, Ranking

    alone = {f"l{i:03d}": {"y": 1.0 / (i + 1)} for i in range(188)}
    measured: list[list[str]] = []
    now = [0.0]

    def measure(units):
        measured.extend(units)
        now[0] += len(units)  # a second a run
        return [{"y": sum(alone[n]["y"] for n in unit)} for unit in units]

    hurry = Hurry(5.0, clock=lambda: now[0])
    lazy = Ranking([(n, "Conv") for n in alone], {"y": 1.0}, measure, hurry=hurry)
    first = HURRIED_UNITS * GROUP_SIZE  # nodes in the groups measured before the limit passed
    assert [len(u) for u in measured] == [GROUP_SIZE] * HURRIED_UNITS + [GROUP_SIZE ** 2] * ((188 - first) // 16) + [
        (188 - first) % 16]
    assert lazy.runs == len(measured) < 188 // GROUP_SIZE
    assert hurry.cut == [f"the ranking's groups at their size (the rest measured in groups {GROUP_SIZE} times larger)"]
    assert len(set(lazy.take(40))) == 40
    # no limit, or one not reached: every group at its size
    measured.clear()
    Ranking([(n, "Conv") for n in alone], {"y": 1.0}, measure, hurry=Hurry(None))
    assert len(measured) == 47 and {len(u) for u in measured} == {GROUP_SIZE}
    measured.clear()
    unreached = Hurry(1e9, clock=lambda: now[0])
    Ranking([(n, "Conv") for n in alone], {"y": 1.0}, measure, hurry=unreached)
    assert len(measured) == 47 and not unreached.cut


def test_past_the_time_limit_the_first_size_that_meets_the_budget_is_kept():
    """No bisection and no giving back once the limit has passed: the doubling's first
    size that meets the budget is the choice, and the limit records both cuts."""
    from deploycomp.quant.sensitivity import Hurry

    ranking = [LayerSensitivity(f"l{i}", "Conv", 1.0 / (i + 1)) for i in range(20)]

    def meets(keep):
        return len(keep) >= 5  # any 5 float layers meet it

    unhurried, _ = select_float_layers(ranking, meets, give_back=6)
    assert len(unhurried) == 5  # bisected between 4 (missed) and 8 (met)
    hurry = Hurry(0.0)
    hurried, met = select_float_layers(ranking, meets, give_back=6, hurry=hurry)
    assert met and len(hurried) == 8
    assert hurry.cut == ["the bisection of the float layers", "giving float layers back"]
    # a first size of every layer float is no int8 build: the bisection still finds one
    few = ranking[:6]
    hurried, met = select_float_layers(few, meets, hurry=Hurry(0.0))
    assert met and len(hurried) == 5  # 4 missed, 6 (all) met, 5 met


def test_float_layers_whose_error_cancels_go_back_to_int8():
    """Layer errors do not add: the budget here is met only with the least sensitive layer
    float (the others' int8 errors cancel), so the prefixes keep all four; giving back
    returns the three that were float for nothing, within its checks."""
    asked = []

    def needs_the_last(keep: set[str]) -> bool:
        asked.append(sorted(keep))
        return "l3" in keep

    chosen, met = select_float_layers(_ranking(4), needs_the_last, start=1)
    assert met and chosen == {"l0", "l1", "l2", "l3"}  # the prefixes alone
    asked.clear()
    chosen, met = select_float_layers(_ranking(4), needs_the_last, start=1, give_back=6)
    assert met and chosen == {"l3"}
    # after the prefixes (1, 2, 4 met, 3 missed): the less sensitive half [l3, l2] back
    # (the 2-prefix: known to miss, not checked again), l3 alone back (the 3-prefix: the
    # same), l2 back, then [l1, l0] together
    assert asked[4:] == [["l0", "l1", "l3"], ["l3"]] and len(asked) == len({tuple(a) for a in asked})
    asked.clear()
    chosen, met = select_float_layers(_ranking(4), needs_the_last, start=1, give_back=1)
    assert met and chosen == {"l0", "l1", "l3"} and len(asked) == 4 + 1  # the checks are capped


def test_giving_back_never_leaves_a_choice_that_missed():
    def five(keep: set[str]) -> bool:
        return len(keep) >= 5

    chosen, met = select_float_layers(_ranking(20), five, start=1, give_back=6)
    assert met and len(chosen) == 5  # every smaller set misses: nothing goes back


def test_an_output_turned_to_nan_counts_as_the_worst_finite_error():
    """A candidate whose output is NaN or Inf scores NONFINITE_NMSE, not NaN: ``base - NaN``
    read as no gain, and every part of an fp16 search that made NaN finite again ranked 0."""
    from deploycomp.quant.sensitivity import NONFINITE_NMSE, nmse_per_output

    ref = [{"y": np.ones((1, 4), np.float32)}, {"y": np.full((1, 4), 2.0, np.float32)}]
    nan = [{"y": np.array([[1, np.nan, 1, 1]], np.float32)}, {"y": np.full((1, 4), 2.0, np.float32)}]
    inf = [{"y": np.array([[1, np.inf, 1, 1]], np.float32)}, {"y": np.full((1, 4), 2.0, np.float32)}]
    assert nmse_per_output(ref, nan) == {"y": NONFINITE_NMSE / 2} == nmse_per_output(ref, inf)
    close = nmse_per_output(ref, [{"y": r["y"] * 1.01} for r in ref])
    assert 0 < close["y"] < nmse_per_output(ref, nan)["y"]


def test_an_output_of_another_length_counts_as_the_worst_error():
    """A TTS model's audio length follows its predicted durations; a candidate that rounds
    one the other way gives a shorter output, which the int8 search had met with an
    internal error (numpy could not broadcast 3020 against 3018)."""
    from deploycomp.quant.sensitivity import NONFINITE_NMSE, nmse_per_output

    refs = [{"audio": np.ones(3020, np.float32)}, {"audio": np.ones(10, np.float32)}]
    gots = [{"audio": np.ones(3018, np.float32)}, {"audio": np.ones(10, np.float32)}]
    assert nmse_per_output(refs, gots) == {"audio": NONFINITE_NMSE / 2}
