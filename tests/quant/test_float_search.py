"""The float-layer search keeps as many layers float as the budget needs: no cap."""

from __future__ import annotations

from deploycomp.quant.sensitivity import LayerSensitivity, select_float_layers


def _ranking(n: int) -> list[LayerSensitivity]:
    return [LayerSensitivity(f"l{i}", "Conv", 1.0, 1.0 - (n - i) / n) for i in range(n)]


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
    chosen, met = select_float_layers(_ranking(20), lambda keep: False, start=1)
    assert not met and len(chosen) == 20
    chosen, met = select_float_layers(_ranking(20), lambda keep: False, max_float_fraction=0.5)
    assert not met and len(chosen) == 10  # a cap still works when asked for


def test_layers_are_taken_round_robin_over_outputs():
    """Every output must meet the budget: the worst output's best layer comes first, then
    the next output's, not the layers of whichever output dominates the summed error."""
    from deploycomp.quant.sensitivity import round_robin

    ranking = [LayerSensitivity("box1", "Conv", 1.1, 0.2, {"boxes": 0.9, "scores": 0.0}),
               LayerSensitivity("box2", "Conv", 1.1, 0.3, {"boxes": 0.8, "scores": 0.0}),
               LayerSensitivity("cls1", "Conv", 1.1, 1.0, {"boxes": 0.0, "scores": 0.1}),
               LayerSensitivity("cls2", "Conv", 1.1, 1.05, {"boxes": 0.0, "scores": 0.05})]
    base = {"boxes": 1.0, "scores": 0.1}  # scores' error is small in the sum, but it fails the budget too
    assert [s.node for s in round_robin(ranking, base)] == ["box1", "cls1", "box2", "cls2"]
    assert [s.node for s in round_robin(ranking, {"boxes": 1.0})] == ["box1", "box2", "cls1", "cls2"]  # one output
