"""Outputs holding angles are compared as angles (deploycomp.angles)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import deploycomp
from deploycomp.angles import angle_periods, unwrap
from deploycomp.validate import compare_outputs


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _angles_model() -> onnx.ModelProto:
    """tf2onnx's atan2 (``Atan`` of a ratio, a ``Where`` adding pi) concatenated with another
    map into a head; the same angle in degrees; a bare ``Atan`` of the ratio; its sine."""
    nodes = [helper.make_node("Div", ["y", "x"], ["ratio"]), helper.make_node("Atan", ["ratio"], ["a"]),
             helper.make_node("Less", ["x", "zero"], ["left"]), helper.make_node("Add", ["a", "pi"], ["turned"]),
             helper.make_node("Where", ["left", "turned", "a"], ["angle"]),
             helper.make_node("Concat", ["angle", "x"], ["head"], axis=1),
             helper.make_node("Mul", ["angle", "to_degrees"], ["degrees"]),
             helper.make_node("Identity", ["a"], ["bare"]),
             helper.make_node("Sin", ["angle"], ["sine"])]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(np.pi, np.float32), "pi"),
             numpy_helper.from_array(np.array(180 / np.pi, np.float32), "to_degrees")]
    graph = helper.make_graph(nodes, "g", [_f("y", [1, 1, 64]), _f("x", [1, 1, 64])],
                              [_f("head", [1, 2, 64]), _f("degrees", [1, 1, 64]), _f("bare", [1, 1, 64]),
                               _f("sine", [1, 1, 64])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _directions(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Unit vectors all round the circle."""
    theta = np.random.default_rng(seed).uniform(-np.pi, np.pi, n)
    return {"y": np.sin(theta).reshape(1, 1, n).astype(np.float32),
            "x": np.cos(theta).reshape(1, 1, n).astype(np.float32)}


def test_the_elements_holding_an_angle_and_their_turn_are_measured():
    """The angle's channel of the head turns at 2 pi (atan2's angles span more than a
    half-turn), the other channel holds none; in degrees it turns at 360; a bare Atan at
    pi; a sine of the angle is no angle."""
    periods = angle_periods(ir.from_proto(_angles_model()), _directions())
    assert sorted(periods) == ["bare", "degrees", "head"]
    np.testing.assert_allclose(periods["head"][:, 0], 2 * np.pi, rtol=1e-5)
    assert not periods["head"][:, 1].any()
    np.testing.assert_allclose(periods["degrees"], 360.0, rtol=1e-5)
    np.testing.assert_allclose(periods["bare"], np.pi, rtol=1e-5)


def test_a_float16_angle_is_nudged_in_float16_and_read_at_one_turn():
    nodes = [helper.make_node("Div", ["y", "x"], ["ratio"]), helper.make_node("Atan", ["ratio"], ["angle"])]
    half = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT16, [1, 64])  # noqa: E731
    model = helper.make_model(helper.make_graph(nodes, "g", [half("y"), half("x")], [half("angle")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    sample = {k: v.reshape(1, 64).astype(np.float16) for k, v in _directions().items()}
    periods = angle_periods(ir.from_proto(model), sample)
    assert list(periods) == ["angle"] and np.all(periods["angle"] == periods["angle"].flat[0])
    assert periods["angle"].flat[0] == pytest.approx(np.pi, rel=0.02)


def test_a_direction_across_the_cut_is_no_error_but_a_wrong_one_still_is():
    """The same direction 2 pi apart compares equal as an angle; a direction that moved by a
    quarter turn, or a non-angle element 2 pi off, is still an error."""
    ref = {"angle": np.array([[3.13, -1.0, 0.5, 2.0]], np.float32)}
    turn = np.full((1, 4), 2 * np.pi)
    across = {"angle": np.array([[-3.13, -1.0, 0.5, 2.0]], np.float32)}  # 3.13 read as -3.13: 0.0232 rad apart
    as_numbers = compare_outputs([ref], [across])["angle"]
    as_angles = compare_outputs([ref], [across], angles={"angle": turn})["angle"]
    assert as_numbers["cosine"] < 0.3 and as_numbers["max_abs_error"] > 6
    assert as_angles["cosine"] > 0.9999 and as_angles["max_abs_error"] < 0.03 and as_angles["judged_as"] == "angles"
    moved = {"angle": np.array([[3.13, -1.0 + math.pi / 2, 0.5, 2.0]], np.float32)}
    assert compare_outputs([ref], [moved], angles={"angle": turn})["angle"]["max_abs_error"] > 1.5
    partly = turn.copy()
    partly[0, 0] = 0.0  # the first element holds no angle: 2 pi there is an error
    assert compare_outputs([ref], [across], angles={"angle": partly})["angle"]["max_abs_error"] > 6


def test_unwrap_moves_whole_turns_only_where_an_angle_is_held():
    got = np.array([7.0, -3.0, 10.0], np.float32)
    out = unwrap(np.array([0.8, 3.0, 0.0]), got, np.array([2 * np.pi, 2 * np.pi, 0.0]))
    np.testing.assert_allclose(out, [7.0 - 2 * np.pi, -3.0 + 2 * np.pi, 10.0], rtol=1e-6)
    assert out.dtype == np.float32
    assert unwrap(np.zeros(2), got, np.ones(3)) is got  # shapes that do not match: as given
    odd = unwrap(np.array([np.nan, 0.0, 0.0]), np.array([7.0, np.inf, 7.0], np.float32), np.full(3, 2 * np.pi))
    assert odd[0] == 7.0 and odd[1] == np.inf and odd[2] == pytest.approx(7.0 - 2 * np.pi)  # NaN, Inf: as given


@pytest.mark.parametrize("target", ["host", "jetson-orin-nano"])
def test_a_build_judges_angle_outputs_as_angles_and_says_so(tmp_path, target):
    """The manifest marks the outputs (``judged_as: angles``) and says how they wrap; a
    TensorRT bundle's reference file carries each element's turn for the check on the
    device."""
    onnx.save(_angles_model(), tmp_path / "angles.onnx")
    np.savez(tmp_path / "val.npz", **{k: np.concatenate([_directions(seed=s)[k] for s in range(3)])
                                      for k in ("x", "y")})
    deploycomp.build(tmp_path / "angles.onnx", tmp_path / "out", target=target, precision="fp32",
                              validation_data=tmp_path / "val.npz")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    judged = {o["name"]: o.get("judged_as") for o in manifest["io"]["outputs"]}
    assert judged == {"head": "angles", "degrees": "angles", "bare": "angles", "sine": None}
    said = [a for a in manifest["assumptions"] if "hold angles" in a]
    assert len(said) == 1 and "2 pi on 64 of 128 elements" in said[0] and "pi on 64 of 64" in said[0] and "360 on 64 of 64" in said[0], said
    assert manifest["validation"]["ok"]
    reference = manifest["backend"].get("lowered", {}).get("reference")
    if target == "host":
        assert reference is None
    else:
        with np.load(tmp_path / "out" / reference) as data:
            assert sorted(k for k in data.files if k.startswith("angle/")) == ["angle/bare", "angle/degrees",
                                                                                  "angle/head"]
        from deploycomp.engine import _reference_parts, read_reference

        parts = _reference_parts(tmp_path / "out" / reference)  # what the device check reads
        assert sorted(parts["angle"]) == ["bare", "degrees", "head"] and sorted(parts["input"]) == ["x", "y"]
        np.testing.assert_allclose(parts["angle"]["degrees"], 360.0, rtol=1e-5)
        inputs, outputs = read_reference(tmp_path / "out" / reference)
        assert inputs.keys() == parts["input"].keys() and outputs.keys() == parts["output"].keys()


def test_the_searches_measure_a_wrapped_direction_as_the_budget_does():
    """The int8 ranking's and the fp16 search's NMSE take each angle to the nearest turn
    too: otherwise the layer that flips one element across the cut looks like the worst."""
    from deploycomp.quant.sensitivity import nmse, nmse_per_output

    ref = {"angle": np.array([[3.13, -1.0, 0.5, 2.0]], np.float32)}
    got = {"angle": np.array([[-3.13, -1.01, 0.5, 2.0]], np.float32)}
    turn = {"angle": np.full((1, 4), 2 * np.pi)}
    assert nmse_per_output([ref], [got])["angle"] > 2.0
    assert nmse_per_output([ref], [got], turn)["angle"] < 1e-4
    assert nmse([ref], [got], turn) == pytest.approx(nmse_per_output([ref], [got], turn)["angle"])
