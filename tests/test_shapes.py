"""``--input NAME:SHAPE``: parsing, and the checks against the model's inputs."""

from __future__ import annotations

import pytest
import onnx_ir as ir

from deploycomp.errors import InputDataError
from deploycomp.ir import load_model
from deploycomp.shapes import check_specs, dynamic_dims, parse_input_spec


def test_parse_named_and_bare_specs():
    assert parse_input_spec("images:1x3x320x320") == ("images", (1, 3, 320, 320))
    assert parse_input_spec("1x3x8x8") == (None, (1, 3, 8, 8))
    assert parse_input_spec("save/x:0:2x4") == ("save/x:0", (2, 4))


@pytest.mark.parametrize("bad", ["x:1xax3", "x:", "x:1x0x3", "x:-1x3"])
def test_parse_rejects_malformed(bad):
    with pytest.raises(InputDataError, match="--input"):
        parse_input_spec(bad)


def test_checks_against_model(tiny_conv):
    model = load_model(tiny_conv).model
    assert dynamic_dims(model) == {"x": [0]}
    assert check_specs(model, [(None, (2, 3, 16, 16))]) == {"x": (2, 3, 16, 16)}
    with pytest.raises(InputDataError, match="no input named 'y'"):
        check_specs(model, [("y", (1, 3, 16, 16))])
    with pytest.raises(InputDataError, match="rank 3 given"):
        check_specs(model, [("x", (1, 3, 16))])
    # its conv reads 3 channels: ONNX Runtime's run on zeros names the model's node that refuses
    # 4 (unfused: fused with its Relu, ONNX Runtime named a node of its own making)
    with pytest.raises(InputDataError, match=r"fixes Nx3x16x16 and its graph does not run at 1x4x16x16: .*"
                                             r"Conv node 'conv': .*[Cc]hannels"):
        check_specs(model, [("x", (1, 4, 16, 16))])


def test_an_input_given_twice_or_none_left_to_shape_is_said(tiny_conv):
    """`--input x:4 --input x:5` took the last one silently; a bare shape on a model whose
    every input --freeze had given was "the model has 0 inputs (); write NAME:SHAPE"."""
    model = load_model(tiny_conv).model
    assert check_specs(model, [("x", (2, 3, 16, 16)), (None, (2, 3, 16, 16))]) == {"x": (2, 3, 16, 16)}
    with pytest.raises(InputDataError, match=r"^--input x: given twice, as 2x3x16x16 and 1x3x16x16; give one$"):
        check_specs(model, [("x", (2, 3, 16, 16)), (None, (1, 3, 16, 16))])
    model.graph.inputs.clear()
    with pytest.raises(InputDataError, match=r"^--input 2x3: the model has no input left to shape \(--freeze"):
        check_specs(model, [(None, (2, 3))])


def test_a_fixed_dim_takes_another_size_where_the_graph_runs_at_it(tiny_conv):
    """Exporters fix the example's shape (CenterFace: 10x3x32x32); a conv net with a global
    pool runs at any size, so --input may re-pin it, and the build notes that it did."""
    model = load_model(tiny_conv).model
    notes: list[str] = []
    assert check_specs(model, [("x", (1, 3, 40, 24))], notes) == {"x": (1, 3, 40, 24)}
    assert notes and "fixes Nx3x16x16; built for 1x3x40x24" in notes[0]
    notes.clear()
    check_specs(model, [("x", (2, 3, 16, 16))], notes)  # only the dynamic batch given: nothing re-pinned
    assert notes == []
    # a long symbolic name (paddle2onnx's) is listed, not run into the sizes with x
    model.graph.inputs[0].shape = ir.Shape([ir.SymbolicDim("p2o.DynamicDimension.0"), 3, 16, 16])
    check_specs(model, [("x", (1, 3, 40, 24))], notes)
    assert "fixes [p2o.DynamicDimension.0, 3, 16, 16]; built for 1x3x40x24" in notes[0]


def test_an_input_that_is_itself_a_size_is_not_tried_at_zeros():
    """A model whose input is a size (AffineGrid's ``size``, a Reshape's target) does not
    run on zeros: a TFLite build of ONNX's AffineGrid case said "the model does not run at
    input shape(s) ..., in ONNX Runtime either" (exit 4) where TFLite has no AffineGrid
    (exit 6). Only strict shape inference judges such a model's shapes."""
    import onnx_ir as ir
    from onnx import TensorProto as T, helper

    from deploycomp.shapes import shape_error

    graph = helper.make_graph([helper.make_node("AffineGrid", ["theta", "size"], ["grid"])], "g",
                              [helper.make_tensor_value_info("theta", T.FLOAT, [2, 2, 3]),
                               helper.make_tensor_value_info("size", T.INT64, [4])],
                              [helper.make_tensor_value_info("grid", T.FLOAT, None)])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    assert shape_error(model, {"theta": (2, 2, 3), "size": (4,)}) is None
    # nor where the size reaches its op through what is computed from it (an AffineGrid
    # written out splits its size before its Reshapes read it)
    through = helper.make_graph([helper.make_node("Split", ["size"], ["n", "rest"], num_outputs=2),
                                 helper.make_node("Concat", ["n", "rest"], ["again"], axis=0),
                                 helper.make_node("Reshape", ["x", "again"], ["y"])], "g",
                                [helper.make_tensor_value_info("x", T.FLOAT, [2, 6]),
                                 helper.make_tensor_value_info("size", T.INT64, [2])],
                                [helper.make_tensor_value_info("y", T.FLOAT, None)])
    model = ir.serde.deserialize_model(helper.make_model(through, opset_imports=[helper.make_opsetid("", 18)]))
    from deploycomp.shapes import _sizes_given_at_run_time

    assert _sizes_given_at_run_time(model)
    # a conv's channels that do not fit are still found
    conv = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                             [helper.make_tensor_value_info("y", T.FLOAT, None)],
                             [helper.make_tensor("w", T.FLOAT, [4, 3, 1, 1], [0.0] * 12)])
    model = ir.serde.deserialize_model(helper.make_model(conv, opset_imports=[helper.make_opsetid("", 17)]))
    assert shape_error(model, {"x": (1, 5, 8, 8)}) is not None


def test_a_profile_names_an_input_whose_name_holds_a_colon():
    """A TensorFlow export's ``input_1:0`` had been refused ("expected NAME:MIN:OPT:MAX"),
    though the build's own hint for its dynamic batch recommends ``--profile``."""
    from deploycomp.shapes import parse_profile_spec

    assert parse_profile_spec("input_1:0:1x3x32x32:2x3x32x32:4x3x32x32") == (
        "input_1:0", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    assert parse_input_spec("input_1:0:1x3x32x32") == ("input_1:0", (1, 3, 32, 32))


def test_a_profile_given_as_the_hint_spells_it_says_what_a_profile_takes():
    """The hint's ``--profile images:MIN:OPT:MAX``, passed as written, was refused as
    "--input 'images:MIN': shape must look like ..." (another option's error)."""
    from deploycomp.errors import InputDataError
    from deploycomp.shapes import parse_profile_spec

    with pytest.raises(InputDataError, match=r"^--profile 'images:MIN:OPT:MAX': MIN, OPT and MAX must each be a "
                                             r"shape, e\.g\. images:1x3x320x320:4x3x320x320:8x3x320x320$"):
        parse_profile_spec("images:MIN:OPT:MAX")


def test_a_profile_is_checked_at_each_shape_the_model_fixes_otherwise(tmp_path):
    """A ResNet-50 of IR 3 whose Reshape bakes in batch 1: ``--profile x:1x..:1x..:8x..``
    on a TensorRT target built "[ok]" at OPT 1 and failed in that Reshape at every other
    batch the bundle took. Each of MIN, OPT and MAX that re-sizes a fixed dim is checked
    as --input's shape is, naming which."""
    import onnx
    from onnx import TensorProto, helper

    from deploycomp.shapes import check_profile

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 16])])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = load_model(path).model
    check_profile(model, "x", {"MIN": (1, 4, 2, 2), "OPT": (1, 4, 2, 2), "MAX": (1, 4, 2, 2)}, {})  # its own shape
    with pytest.raises(InputDataError, match=r"^--profile x: the model fixes 1x4x2x2 and its graph does not run at "
                                             r"8x4x2x2 \(the profile's MAX\): .*Reshape"):
        check_profile(model, "x", {"MIN": (1, 4, 2, 2), "OPT": (1, 4, 2, 2), "MAX": (8, 4, 2, 2)}, {})
    # a MAX too large to run here on zeros (16 GB a sample) is left to the device, not run
    check_profile(model, "x", {"MIN": (1, 4, 2, 2), "OPT": (1, 4, 2, 2), "MAX": (10**9, 4, 2, 2)}, {})
    import deploycomp

    with pytest.raises(InputDataError, match=r"the profile's MAX"):  # through a build: refused before any pass
        deploycomp.build(path, tmp_path / "b", target="nvidia-t4", profiles=["x:1x4x2x2:1x4x2x2:8x4x2x2"])
    assert not (tmp_path / "b").exists()


def test_one_sample_larger_than_half_the_memory_is_refused_by_its_size():
    """A model declaring a dim of 10^12 had ended in an out-of-memory exit; an input's size
    is counted once (``input_bytes``) for this check, a profile's MAX and its memory note."""
    from onnx import TensorProto, helper

    from deploycomp.shapes import check_sizes, input_bytes

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("s", TensorProto.STRING, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x, s = model.graph.inputs
    assert input_bytes(x, (8, 4)) == 128 and input_bytes(x, None) is None and input_bytes(s, (1,)) is None
    check_sizes(model, {"x": (8, 4), "s": (1,)})
    with pytest.raises(InputDataError, match=r"^input 'x' at 1000000000000x4 is 16000 GB a sample, more than half "
                                             r"this machine's memory: give --input a size the model takes$"):
        check_sizes(model, {"x": (10**12, 4)})
